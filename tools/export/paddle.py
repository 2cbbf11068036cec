"""The Paddle source kind: a Paddle inference folder, converted with paddle2onnx in a child process.

A C++ abort inside paddle2onnx becomes an ExportError naming the cause, not a core dump.
"""

from __future__ import annotations

import math
import os
import re
import struct
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from detector.errors import ExportError, callers_sigterm_handler_kept
from tools.export import REPO_ROOT, progress

DEFAULT_OPSET = 14  # the lowest opset paddle2onnx 2.0.1 accepts for PP-OCRv4 (11 aborts asking for 14)
MIN_OPSET, MAX_OPSET = 7, 21  # the opsets paddle2onnx 2.0.1 knows ("The Opset Version must be between 7 and 21")
PROVEN_VERSIONS = {"paddlepaddle": "3.0.0", "paddle2onnx": "2.0.1"}
VERSIONS_HINT = (
    "paddlepaddle 3.3.1 + paddle2onnx 2.1.0 fail on legacy models: "
    "install paddlepaddle==3.0.0 paddle2onnx==2.0.1 (`pip install '.[cpu,export]'` or `make paddle-env`)"
)
CONVERSION_TIMEOUT_S = 1200
PARAMS_FILE = "inference.pdiparams"
CONFIG_FILE = "inference.yml"
PROGRAM_FILES = ("inference.json", "inference.pdmodel")  # PIR first, as Paddle 3 itself prefers


@dataclass(frozen=True)
class PaddleModel:
    """A Paddle inference folder: where it came from and the files that make it."""

    folder: Path
    origin: str  # the path given, or the wheel/URL it was unpacked from
    program: Path  # inference.json (PIR) or inference.pdmodel (legacy)
    params: Path
    config: Path

    @property
    def program_format(self) -> str:
        return "pir" if self.program.suffix == ".json" else "legacy"


def find_model_files(folder: Path, origin: str) -> PaddleModel:
    """The files of a Paddle inference folder, or an ExportError naming what is missing."""
    if not folder.is_dir():
        raise ExportError(f"source {folder} is not a folder: pass --source DIR holding a Paddle inference model")
    program = next((folder / name for name in PROGRAM_FILES if (folder / name).is_file()), None)
    missing = [name for name in (PARAMS_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if program is None:
        missing.insert(0, " or ".join(PROGRAM_FILES))
    if missing:
        raise ExportError(
            f"{folder} has no {', '.join(missing)}: a Paddle inference model folder holds inference.json "
            f"(or inference.pdmodel), {PARAMS_FILE} and {CONFIG_FILE}, as in PaddleX's *_infer.tar downloads "
            f"(an ONNX source: an .onnx file, or a folder holding one)"
        )
    params = folder / PARAMS_FILE
    shortfall = params_shortfall(params)
    if shortfall is not None:
        needed, size = shortfall
        need = f"{needed:,} bytes" if needed else "more"
        raise ExportError(
            f"{params} is cut short: its tensors need {need}, the file has {size:,} bytes (a download or copy "
            f"that stopped early): fetch it again"
        )
    return PaddleModel(folder, origin, program, params, folder / CONFIG_FILE)


# Bytes per element of Paddle's VarType data types (framework.proto): BOOL, INT16, INT32, INT64, FP16, FP32,
# FP64, UINT8, INT8, BF16, COMPLEX64, COMPLEX128.
PADDLE_DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16}
MAX_LOD_LEVELS = 16  # weights have none; a header claiming more is not this format


def params_shortfall(path: Path) -> Optional[tuple[int, int]]:
    """(bytes its tensors need, 0 where it ends inside a header; bytes it has) where a combined-params file
    (save_combine's format, legacy and PIR alike) ends before its last tensor does; None where it is whole,
    or is not in a format read here (the converter then says what it finds).

    Paddle Inference and paddle2onnx both read a file cut by a few bytes without a word (the last weights
    then come out wrong: an audit measured a folded bias 0.146 off, and the export verified, since both
    sides read the same short file). Per tensor: uint32 version, uint64 LoD levels (each a uint64 byte
    count and its bytes), uint32 version, int32 size of a TensorDesc message (data type, dims), the data.
    """
    size = path.stat().st_size
    offset = 0
    try:
        with open(path, "rb") as file:
            while offset < size:
                file.seek(offset)
                if size - offset < 12 and any(file.read(4)):  # bytes after the last tensor, not a header's start
                    return None
                file.seek(offset)
                version, levels = struct.unpack("<IQ", _exactly(file, 12))
                if version != 0 or levels > MAX_LOD_LEVELS:
                    raise ValueError("not a combined-params tensor header")
                offset += 12
                for _ in range(levels):
                    file.seek(offset)
                    (level_bytes,) = struct.unpack("<Q", _exactly(file, 8))
                    offset += 8 + level_bytes
                file.seek(offset)
                version, desc_bytes = struct.unpack("<Ii", _exactly(file, 8))
                if version != 0:
                    raise ValueError("not a combined-params tensor header")
                dtype, dims = _tensor_desc(_exactly(file, desc_bytes))
                offset += 8 + desc_bytes + math.prod(dims) * PADDLE_DTYPE_BYTES[dtype]
    except _CutShort:
        return (0, size)
    except (ValueError, KeyError, IndexError, OverflowError, OSError, struct.error):  # not this format
        return None
    return (offset, size) if offset > size else None


class _CutShort(Exception):
    pass


def _exactly(file: Any, count: int) -> bytes:
    if count < 0:
        raise ValueError("negative size")
    data = file.read(count)
    if len(data) < count:
        raise _CutShort
    return data


def _tensor_desc(message: bytes) -> tuple[int, list[int]]:
    """(data type, dims) of a TensorDesc protobuf message (field 1: data_type, field 2: dims, packed or not)."""
    dtype, dims, index = None, [], 0

    def varint() -> int:
        nonlocal index
        value = shift = 0
        while True:
            byte = message[index]
            index += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value - (1 << 64) if value >= 1 << 63 else value

    while index < len(message):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(value)
        elif wire == 2:
            end = varint() + index
            while field == 2 and index < end:
                dims.append(varint())
            index = end
        else:
            raise ValueError(f"wire type {wire}")
    if dtype is None or any(dim < 0 for dim in dims):
        raise ValueError("no data type, or a negative dimension")
    return dtype, dims


def installed_version(package: str) -> Optional[str]:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return None


def paddle_versions() -> dict[str, Optional[str]]:
    versions = {name: installed_version(name) for name in PROVEN_VERSIONS}
    if versions["paddlepaddle"] is None:  # the GPU build is the same package under another name
        versions["paddlepaddle"] = installed_version("paddlepaddle-gpu")
    return versions


def check_export_tools() -> dict[str, Optional[str]]:
    versions = paddle_versions()
    absent = [name for name, version in versions.items() if version is None]
    if absent:
        raise ExportError(
            f"{' and '.join(absent)} not installed here: export needs the [export] extra — "
            f"run `make paddle-env` and use .venv-paddle/bin/python, or `pip install '.[cpu,export]'`"
        )
    if versions != PROVEN_VERSIONS:
        progress(
            f"warning: paddlepaddle {versions['paddlepaddle']} + paddle2onnx {versions['paddle2onnx']} "
            f"are not the proven pair 3.0.0 + 2.0.1; {VERSIONS_HINT}"
        )
    return versions


def run_conversion_child(argv: Sequence[str]) -> int:
    """Child-process side of convert_to_onnx: program params opset out. Exit 0 with out written, or fail."""
    program, params, opset, out = argv
    import paddle2onnx

    onnx_bytes = paddle2onnx.export(
        program, params, save_file=None, opset_version=int(opset), auto_upgrade_opset=False, enable_onnx_checker=True
    )
    if not onnx_bytes:
        return 3
    Path(out).write_bytes(onnx_bytes)
    return 0


# What Paddle says when inference.pdiparams holds other tensors than the program reads (another model's weights):
# a legacy program refuses them in paddle2onnx, a PIR one when Paddle Inference loads them
OTHER_WEIGHTS_SIGNS = ("load_combine", "Cannot read tensor desc size")
OTHER_WEIGHTS_HINT = "inference.pdiparams does not belong to this program (another model's weights?)"


def paddle_load_failure(folder: object, exc: BaseException) -> ExportError:
    """Paddle Inference failing to load a model folder, in one line (Paddle's messages run over several), saying
    so where the weights are another program's."""
    said = " ".join(str(exc).split())
    hint = f"{OTHER_WEIGHTS_HINT}: " if any(sign in said for sign in OTHER_WEIGHTS_SIGNS) else ""
    return ExportError(f"Paddle Inference cannot load {folder}: {hint}{said}")


def conversion_failure(output: str, returncode: int, opset: int, versions: dict[str, Optional[str]]) -> ExportError:
    """An ExportError saying why paddle2onnx failed, read from its output."""
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)  # its log lines carry terminal colours
    if any(sign in output for sign in OTHER_WEIGHTS_SIGNS):
        reason = failure_reason(output, returncode)
        return ExportError(f"{OTHER_WEIGHTS_HINT}: paddle2onnx could not load it ({reason})")
    needed = re.search(r"set the opset_version to (\d+)", output)
    if needed:
        return ExportError(
            f"paddle2onnx cannot convert this model at opset {opset}: run again with "
            f"--opset {needed.group(1)} (or higher)"
        )
    unsupported = re.search(r"not supported yet, including ([^\n]*)", output)
    ops = sorted({op.strip() for op in unsupported.group(1).split(",") if op.strip()}) if unsupported else []
    if ops:  # some paddle2onnx builds print the line with an empty list even when all is well
        return ExportError(
            f"paddle2onnx {versions['paddle2onnx']} has no ONNX conversion for operator(s) "
            f"{', '.join(ops)} at opset {opset}; try a higher --opset, or {VERSIONS_HINT}"
        )
    reason = failure_reason(output, returncode)
    hint = VERSIONS_HINT if versions != PROVEN_VERSIONS else "run again with --debug to see paddle2onnx's output"
    return ExportError(
        f"paddle2onnx failed ({reason}) with paddlepaddle {versions['paddlepaddle']} + "
        f"paddle2onnx {versions['paddle2onnx']}; {hint}"
    )


def failure_reason(output: str, returncode: int) -> str:
    """The most telling line of a failed conversion: paddle2onnx's own error, else the exception, else the exit."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    patterns = (
        r"\[ERROR\]\[Paddle2ONNX\]\s*(.+)",
        r"Failed to convert PaddlePaddle model: (.+?)\.?$",
        r"^(\w*(?:Error|Exception): .+)",
    )
    for pattern in patterns:
        found = [match.group(1) for match in map(lambda line: re.search(pattern, line), lines) if match]
        found = [reason for reason in found if not reason.rstrip().endswith(":")]  # "In user code:", a header
        if found:
            return found[0][:300]
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


def convert_to_onnx(model: PaddleModel, opset: int, versions: dict[str, Optional[str]], debug: bool) -> bytes:
    """paddle2onnx's conversion, in a child process so that a C++ abort cannot take this one down."""
    with tempfile.TemporaryDirectory(prefix="detector-export.") as tmp:
        out = Path(tmp) / "converted.onnx"
        code = (
            "import sys; from tools.export.paddle import run_conversion_child;"
            " sys.exit(run_conversion_child(sys.argv[1:]))"
        )
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            GLOG_minloglevel=os.environ.get("GLOG_minloglevel", "2"),  # noqa: SIM112 (glog reads this exact, mixed-case name)
            # paddle2onnx copies the model into a mkdtemp() folder it removes in a finally: a child killed by
            # a C++ abort left it (4.7 MB a time) in the system's temp folder; here it goes with this one
            TMPDIR=tmp,
            TEMP=tmp,
            TMP=tmp,
        )
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, str(model.program), str(model.params), str(opset), str(out)],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=CONVERSION_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise ExportError(f"paddle2onnx ran over {CONVERSION_TIMEOUT_S} s on {model.program}") from None
        if debug:
            sys.stderr.write(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            raise conversion_failure(proc.stdout + proc.stderr, proc.returncode, opset, versions)
        return out.read_bytes()


# PaddleX probes model hosts on import unless told not to; glog chatter is noise on stderr.
REFERENCE_ENVIRONMENT = {
    "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True",
    "GLOG_minloglevel": "2",
    "GLOG_v": "0",
}


def quiet_offline_environment() -> None:
    for key, value in REFERENCE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # Paddle warns on import that it cannot find ccache: about building extensions, irrelevant here.
    warnings.filterwarnings("ignore", message="No ccache found")


def paddle_model_file(model_dir: Path) -> Path:
    """The program file of a Paddle inference folder: PIR inference.json, else legacy inference.pdmodel."""
    for name in ("inference.json", "inference.pdmodel"):
        if (Path(model_dir) / name).is_file():
            return Path(model_dir) / name
    raise FileNotFoundError(f"{model_dir} holds neither inference.json nor inference.pdmodel")


def paddle_predictor(
    model_dir: Path, threads: Optional[int] = None, mkldnn: bool = False, ir_optim: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """A function NCHW float32 -> the model's first output, on Paddle Inference (CPU).

    mkldnn=False keeps Paddle's plain CPU kernels; PaddleOCR enables oneDNN on CPU for speed, which
    moves probabilities by ~1e-5 — fine for boxes, too loose to check a conversion with.
    """
    quiet_offline_environment()
    # Paddle installs its C++ SIGTERM handler at import (a C++ traceback, then death, where the export would stop
    # in one line and kill its converter); held back meanwhile, so that one arriving during the import reaches ours
    with callers_sigterm_handler_kept(hold=True):
        import paddle.inference as paddle_infer

    config = paddle_infer.Config(str(paddle_model_file(model_dir)), str(Path(model_dir) / "inference.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads or os.cpu_count() or 1)
    if mkldnn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    config.switch_ir_optim(ir_optim)
    predictor = paddle_infer.create_predictor(config)
    input_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output_handle = predictor.get_output_handle(predictor.get_output_names()[0])

    def run(batch: np.ndarray) -> np.ndarray:
        input_handle.reshape(list(batch.shape))
        input_handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        predictor.run()
        return output_handle.copy_to_cpu()

    return run
