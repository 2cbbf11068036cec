"""The Paddle source kind: a Paddle inference folder, converted with paddle2onnx in a child process.

A C++ abort inside paddle2onnx becomes an ExportError naming the cause, not a core dump.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from detector.errors import ExportError, callers_sigterm_handler_kept
from tools.export import REPO_ROOT, progress

DEFAULT_OPSET = 14  # the lowest opset paddle2onnx 2.0.1 accepts for PP-OCRv4 (11 aborts asking for 14)
MIN_OPSET, MAX_OPSET = 7, 21  # the opsets paddle2onnx 2.0.1 knows ("The Opset Version must be between 7 and 21")
PROVEN_VERSIONS = {"paddlepaddle": "3.0.0", "paddle2onnx": "2.0.1"}
VERSIONS_HINT = (
    "paddlepaddle 3.3.1 + paddle2onnx 2.1.0 fail on legacy models: "
    "install paddlepaddle==3.0.0 paddle2onnx==2.0.1 (`pip install '.[export]'` or `make paddle-env`)"
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
            f"(or inference.pdmodel), {PARAMS_FILE} and {CONFIG_FILE}, as in PaddleX's *_infer.tar downloads"
        )
    return PaddleModel(folder, origin, program, folder / PARAMS_FILE, folder / CONFIG_FILE)


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
            f"run `make paddle-env` and use .venv-paddle/bin/python, or `pip install '.[export]'`"
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


def conversion_failure(output: str, returncode: int, opset: int, versions: dict[str, Optional[str]]) -> ExportError:
    """An ExportError saying why paddle2onnx failed, read from its output."""
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)  # its log lines carry terminal colours
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
