"""What every model source shares (tools/export's Paddle path and the ONNX import here): reading
inference.yml, tidying the graph, writing the detector.* metadata and the file, hashing the sources."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import DetectorError, ExportError, OutputNotWritableError, os_reason
from ..precision import DEFAULT_PRECISION, PRECISIONS, made_from_sha256, variant_path
from ..result import write_atomically
from ..settings import (
    LONG_SIDE_MODELS,
    METADATA_EXPORT_KEY,
    METADATA_INFERENCE_YML_KEY,
    METADATA_MODEL_NAME_KEY,
    METADATA_SETTINGS_KEY,
    METADATA_SOURCE_KEY,
    DetectionSettings,
    declared_model_name,
    read_inference_yml,
)

_HASH_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_variants(output: Path, replaced_sha256: Optional[str] = None) -> list[tuple[str, Path]]:
    """Remove the int8 / fp16 files beside a freshly written fp32 file that were made from another fp32 file, and
    return (precision, path) of each: made from other weights, another model, another CPU's channel block, they
    would be loaded by precision= without a word. A variant whose record holds the sha256 of the fp32 file it was
    made from is kept where that is the new file's (a deployment folder holding the variant alone, the matching
    fp32 file exported into it); one without (made before the record held it) is kept where the new file has the
    bytes of the one it replaced (``replaced_sha256``): the export is deterministic, so `make` re-exporting the
    default model after a venv rebuild leaves the user's variants."""
    from ..onnx_messages import model_metadata

    siblings = [
        (precision, variant_path(output, precision)) for precision in PRECISIONS if precision != DEFAULT_PRECISION
    ]
    variants = [(precision, variant) for precision, variant in siblings if variant != output and variant.is_file()]
    written = sha256_of(output) if variants else None
    removed = []
    for precision, variant in variants:
        try:
            made_from = made_from_sha256(model_metadata(variant.read_bytes()))
        except Exception:  # no model's bytes: nothing says what it was made from
            made_from = None
        if (made_from or replaced_sha256) != written:
            variant.unlink()
            removed.append((precision, variant))
    return removed


def read_inference_config(path: Path) -> tuple[dict, str]:
    """The parsed inference.yml and its text (the runtime's reader; its errors become ExportErrors). Its
    PreProcess and PostProcess sections are required, as the model downloads hold them to: without them the
    export recorded PaddleX's fallback settings in place of the model's own (unclip_ratio 2.0 for its 1.5)."""
    try:
        config, text = read_inference_yml(path)
    except DetectorError as exc:
        raise ExportError(str(exc)) from None
    missing = [section for section in ("PreProcess", "PostProcess") if not isinstance(config.get(section), dict)]
    if missing:
        raise ExportError(
            f"{path} has no {' or '.join(missing)} section: a detection model's inference.yml (PaddleX's) holds "
            f"its resize and normalization (PreProcess) and its DBPostProcess settings (PostProcess)"
        )
    return config, text


def model_name_from_config(
    config: dict, requested: str, config_path: Path, report: Callable[[str], None], name_must_match: bool = False
) -> str:
    """The model name the yml declares (PaddleX builds its defaults from it); warns when --model differs.
    name_must_match (make export's default output, models/<MODEL>/, is named after --model): a yml naming
    another known model than a known --model is refused instead."""
    from ..catalog import KNOWN_MODELS

    declared = declared_model_name(config)
    if not declared:
        _warn_if_short_side(requested, report)
        return requested
    if name_must_match and declared != requested and requested in KNOWN_MODELS:
        # another model under a known one's name (models/<MODEL>/, what TextDetection(model_name=…) finds, with
        # the other model's name and settings): a fine-tuned 'my_det' replaced the checkout's default model
        raise ExportError(
            f"{config_path} names the model {declared!r}, not {requested!r}: pass --model {declared} "
            f"(a fine-tuned model: a name of your own), or an --output of your own"
        )
    if declared != requested:
        report(
            f"warning: {config_path} names the model {declared!r}, not {requested!r}; "
            f"the file records {declared!r} and takes its settings"
        )
    _warn_if_short_side(declared, report)
    return declared


def _warn_if_short_side(name: str, report: Callable[[str], None]) -> None:
    """A name PaddleX does not list resizes by the short side (settings.LONG_SIDE_MODELS): a fine-tuned model
    renamed in its yml ('my_det') went from 960 on the long side to its resize_long on the short side, slower
    and with other boxes, without a word."""
    if name not in LONG_SIDE_MODELS:
        report(
            f"warning: {name!r} is no model PaddleX lists, so its images are resized by their short side "
            f"(limit_type 'min'), where the PP-OCR detection models go by their long side; keep the base model's "
            f"name in Global.model_name for its rule, or pass limit_type / limit_side_len when detecting"
        )


def real_inputs(model: Any) -> list[Any]:
    """The graph inputs that are not its weights (older exporters, and
    torch.onnx.export(keep_initializers_as_inputs=True), list every initializer as an input too)."""
    weights = {initializer.name for initializer in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in weights]


def drop_initializer_inputs(model: Any) -> Any:
    """model without the graph inputs that only name its weights (real_inputs); returns model."""
    kept = real_inputs(model)
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)
    return model


def unknown_sizes_unset(model: Any) -> Any:
    """model with every size below 1 in its inputs' and outputs' shapes made an unknown one; returns model.
    paddle2onnx has written -1 for a dynamic size (RapidOCR's PP-OCRv3 det file: input [-1, 3, -1, -1]),
    which ONNX leaves undefined and onnxruntime, like Paddle, takes as dynamic."""
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value < 1:
                dim.ClearField("dim_value")
    return model


def check_dynamic_signature(model: Any, what: str = "converted") -> None:
    """One float32 NCHW input with N, H, W dynamic and C = 3; one output of rank 4 with one channel: a DB
    detector. (Inputs that name initializers are weights, not inputs: drop_initializer_inputs.)"""
    from onnx import TensorProto

    graph = model.graph
    inputs = real_inputs(model)
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(
            f"{what} model has {len(inputs)} inputs and {len(graph.output)} outputs, a DB detector has one of each"
        )
    image = inputs[0].type.tensor_type
    if image.elem_type != TensorProto.FLOAT:
        raise ExportError(
            f"{what} model takes {TensorProto.DataType.Name(image.elem_type).lower()} input; a DB detector takes "
            f"float32 images (N, 3, H, W) (a float16 model keeps float32 inputs: keep_io_types)"
        )
    in_dims = image.shape.dim
    out_dims = graph.output[0].type.tensor_type.shape.dim
    fixed = [
        axis
        for axis, index in (("N", 0), ("H", 2), ("W", 3))
        if len(in_dims) == 4 and in_dims[index].HasField("dim_value") and in_dims[index].dim_value > 0
    ]
    if len(in_dims) != 4 or in_dims[1].dim_value != 3 or fixed:
        raise ExportError(
            f"{what} input is {[d.dim_param or d.dim_value for d in in_dims]}, expected "
            f"(N, 3, H, W) with N, H, W dynamic"
            + (
                f" (fixed: {', '.join(fixed)}); TextDetection(model_dir=…) runs such a file as it is, without the "
                f"rewrites"
                if fixed and len(in_dims) == 4 and in_dims[1].dim_value == 3
                else ""
            )
        )
    if len(out_dims) != 4 or out_dims[1].dim_value not in (0, 1):
        raise ExportError(f"{what} output is {[d.dim_param or d.dim_value for d in out_dims]}, expected (N, 1, H, W)")


def set_metadata(model: Any, entries: dict[str, str]) -> Any:
    """model with entries set in its metadata_props (replacing same-named keys); returns model."""
    kept = [(prop.key, prop.value) for prop in model.metadata_props if prop.key not in entries]
    del model.metadata_props[:]
    for key, value in kept + sorted(entries.items()):
        model.metadata_props.add(key=key, value=value)
    return model


def check_output_writable(output: Path) -> None:
    """Before any work: the output's folder made, and a file written and removed in it (os.access says yes to
    root on a read-only mount); an OutputNotWritableError where that fails, found at the end before (after the
    conversion and its verification: minutes for the server model)."""
    try:
        if output.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=".detect-probe-"):
            pass
    except OSError as exc:
        raise OutputNotWritableError(output, os_reason(exc)) from None


def save_model(model: Any, output: Path) -> None:
    """Write the model atomically (temp file + rename): readers never see half a model."""
    try:
        write_atomically(output, model.SerializeToString())
    except OSError as exc:  # write_atomically's message names the file already: the reason alone here
        raise OutputNotWritableError(output, os_reason(exc)) from None


def save_exported_model(
    model: Any,
    output: Path,
    name: str,
    settings: DetectionSettings,
    source_files: Mapping[str, str],
    origin: str,
    record: Mapping[str, object],
    config_text: Optional[str],
) -> None:
    """Write the detector.* metadata every source kind records (see models/README.md), then the file."""
    entries = {
        METADATA_MODEL_NAME_KEY: name,
        METADATA_SETTINGS_KEY: settings.to_json(),
        METADATA_SOURCE_KEY: json.dumps({"files": dict(source_files), "origin": origin}, sort_keys=True),
        METADATA_EXPORT_KEY: json.dumps(record, sort_keys=True),
    }
    if config_text is not None:
        entries[METADATA_INFERENCE_YML_KEY] = config_text
    save_model(set_metadata(model, entries), output)
