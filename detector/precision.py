"""Precision variants of an exported model: inference.onnx (fp32) and its siblings inference.int8.onnx
(static QDQ int8, for CPUs) and inference.fp16.onnx (float16 weights and compute, float32 inputs and
outputs, for GPUs), written by ``make export MODEL=… PRECISION=…``."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from .errors import InvalidParameterError, ModelNotFoundError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp32"
# ONNX metadata key tools/export/precision_variant.py writes: JSON with the precision and its measured accuracy cost.
METADATA_PRECISION_KEY = "detector.precision"
# Its field holding the sha256 of the fp32 file the variant was made from (variants made before 2026-12-07 lack it).
MADE_FROM_SHA256_FIELD = "fp32_sha256"


def validate_precision(precision: Optional[str]) -> str:
    value = DEFAULT_PRECISION if precision is None else str(precision).strip().lower()
    if value not in PRECISIONS:
        raise InvalidParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return value


def _base_stem(path: Path) -> str:
    """'inference' for inference.onnx, inference.int8.onnx and inference.fp16.onnx."""
    stem = path.stem
    for precision in PRECISIONS:
        if stem.endswith(f".{precision}"):
            return stem[: -len(precision) - 1]
    return stem


def precision_of(model_path: Path) -> str:
    """The precision a model file holds, from its name (inference.int8.onnx -> "int8"; else "fp32")."""
    stem = model_path.stem
    return next((p for p in PRECISIONS if stem.endswith(f".{p}")), DEFAULT_PRECISION)


def variant_path(model_path: Path, precision: str) -> Path:
    """The sibling of an exported fp32 model file for ``precision`` (the path itself for fp32)."""
    return model_path.with_name(
        f"{_base_stem(model_path)}.onnx" if precision == "fp32" else f"{_base_stem(model_path)}.{precision}.onnx"
    )


def fp32_output_refusal(output: Path, variants_made_by: str) -> Optional[str]:
    """Why ``output`` cannot be written as an fp32 model file (None: it can): the variants pair with it by name,
    <name>.int8.onnx / <name>.fp16.onnx beside <name>.onnx. One not ending in .onnx could not be found by its
    variants, nor they by it (an fp32 file written to m.bin removed m.onnx's variants as its own); one named as a
    variant would be written over by its own variant, or removed as one. ``variants_made_by`` says what makes
    the variants (the flag or tool)."""
    if output.suffix != ".onnx":
        likely = output / "inference.onnx" if output.expanduser().is_dir() or not output.suffix else None
        return (
            f"{output} does not end in .onnx: the int8 / fp16 variants are written beside the fp32 file as "
            f"<name>.int8.onnx / <name>.fp16.onnx and find it by <name>.onnx (as re-exporting it finds and removes "
            f"them); give the fp32 file's path, e.g. {likely or output.with_suffix('.onnx')}"
        )
    named = precision_of(output)
    if named != DEFAULT_PRECISION:
        return (
            f"{output} is named as an {named} variant: give the fp32 file's path "
            f"({variant_path(output, DEFAULT_PRECISION).name}); {variants_made_by} writes the variant beside it"
        )
    return None


def select_precision(model_path: Path, precision: Optional[str], model_name: Optional[str]) -> Path:
    """The file to load for ``precision`` (None keeps ``model_path`` as resolved); a clear error,
    saying how to make it beside ``model_path``, when that variant was not exported."""
    if precision is None:
        return model_path
    precision = validate_precision(precision)
    path = variant_path(model_path, precision)
    if not path.is_file():
        # PaddleOCR's precision='fp16' is TensorRT's, and leaves its CPU runs in fp32: migrated code passes it
        paddleocr = (
            " (PaddleOCR's precision='fp16' is a TensorRT setting, with no effect on the CPU: leave it out there)"
            if precision == "fp16"
            else ""
        )
        raise ModelNotFoundError(
            f"no {precision} variant: {path} does not exist{paddleocr}. "
            + how_to_make_variant(model_path, precision, model_name)
        )
    return path


def made_from_sha256(variant_metadata: Mapping[str, str]) -> Optional[str]:
    """The sha256 of the fp32 file a variant was made from, as its detector.precision record says (None: no
    record, an unreadable one, or one from before the field)."""
    try:
        record = json.loads(variant_metadata[METADATA_PRECISION_KEY])
    except (KeyError, ValueError):
        return None
    made_from = record.get(MADE_FROM_SHA256_FIELD) if isinstance(record, dict) else None
    return made_from if isinstance(made_from, str) else None


def variant_made_from_another_file(
    variant: Path, variant_metadata: Mapping[str, str], model_name: Optional[str]
) -> Optional[str]:
    """Why the int8 / fp16 file ``variant`` must not load as the variant of the fp32 file beside it: its
    record names another fp32 file (one replaced since by a copy, a fine-tuned model: the variant would run the
    old weights without a word), and how to make it again; None where it matches, or nothing says otherwise
    (no fp32 file beside it, a variant made before the record held the hash)."""
    from .optimize.model_file import sha256_of

    made_from = made_from_sha256(variant_metadata)
    fp32 = variant_path(variant, DEFAULT_PRECISION)
    if made_from is None or fp32 == variant or not fp32.is_file():
        return None
    try:
        beside = sha256_of(fp32)
    except OSError:  # an fp32 file that cannot be read says nothing against the variant, which loads alone
        return None
    if beside == made_from:
        return None
    precision = precision_of(variant)
    return (
        f"{variant} was made from another fp32 file than the {fp32.name} beside it (sha256 {made_from[:12]}… "
        f"recorded, {beside[:12]}… there): it would run the old file's weights. "
        + how_to_make_variant(fp32, precision, model_name)
        + f", or remove {variant.name}"
    )


def _recorded_metadata(model_path: Path) -> Optional[dict[str, str]]:
    """The file's metadata (what tools/export recorded: model name, settings), None where it cannot be read."""
    from .onnx_messages import model_metadata

    try:
        return dict(model_metadata(model_path.read_bytes()))
    except Exception:  # an unreadable file: the hint keeps its placeholder, the error stays the missing variant
        return None


def written_by_this_export(metadata: Mapping[str, str]) -> bool:
    """Whether a model file's metadata is what this package's export writes: the settings a variant carries along
    (a release's inference.onnx has none; the variant export refuses it)."""
    from .settings import METADATA_SETTINGS_KEY

    return METADATA_SETTINGS_KEY in metadata


def import_it_first(model_path: Path, precision: str) -> str:
    """What to do with an fp32 file this package's export did not write, to make its ``precision`` variant."""
    from .settings import METADATA_SETTINGS_KEY

    return (
        f"{model_path} is not a file this package's export wrote (no {METADATA_SETTINGS_KEY} metadata: its settings "
        f"would not reach the variant): import it first (`detect optimize {shlex.quote(str(model_path.parent))} -o "
        f"<folder>/inference.onnx`), then make the {precision} variant beside that file"
    )


def how_to_make_variant(model_path: Path, precision: str, model_name: Optional[str]) -> str:
    """The export command that writes the variant beside model_path (make's form for the checkout's models/)."""
    from .hub import CHECKOUT_MODELS_DIR, IN_CHECKOUT
    from .settings import METADATA_MODEL_NAME_KEY

    model_path = variant_path(model_path, "fp32")  # the export takes the fp32 file's path (given a variant's too)
    metadata = _recorded_metadata(model_path)
    # words a shell takes as they are: a name or folder with a space ('my det', ~/My Models) pasted unquoted split
    known_name = model_name or (metadata or {}).get(METADATA_MODEL_NAME_KEY)
    name = shlex.quote(known_name) if known_name else "<its model name>"
    if metadata is not None and not written_by_this_export(metadata):  # a release's file: the export refuses it
        return (
            f"{import_it_first(model_path, precision)} with `python -m tools.export --model {name} --output "
            f"<folder>/inference.onnx --precision {precision}`"
        )
    tool = f"python -m tools.export --model {name} --output {shlex.quote(str(model_path))} --precision {precision}"
    if not IN_CHECKOUT:
        return f"Make it with the export tool of a detector source checkout: `{tool}`"
    if model_name and model_path == CHECKOUT_MODELS_DIR / model_name / model_path.name:
        return f"Make it with `make export {shlex.quote(f'MODEL={model_name}')} PRECISION={precision}` (or `{tool}`)"
    return f"Make it with `{tool}`"
