"""A precision variant of an exported fp32 model written beside it: made (int8 by quantize.py, or by
int8_choice.py for AUTO_RULE; fp16 by quantize.py), scored (variant_scoring.py) and recorded.

    python -m tools.export --model NAME --precision int8|fp16

Either way the variant is scored against the fp32 model on a rendered labelled set (detect eval's
metric) and the result is written into the variant's metadata under ``detector.precision``; the fp32
model's own metadata (settings, source, export record) is kept.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from detector.cpu_features import cpu_flags, int8_sums_saturate
from detector.errors import ExportError
from detector.onnx_messages import model_metadata
from detector.optimize.model_file import check_output_writable, save_model, set_metadata, sha256_of
from detector.precision import (
    MADE_FROM_SHA256_FIELD,
    METADATA_PRECISION_KEY,
    import_it_first,
    variant_path,
    written_by_this_export,
)
from tools.export import progress
from tools.export.int8_rules import AUTO_RULE, DEFAULT_INT8_RULE
from tools.export.partial_folders import remove_abandoned, work_folder
from tools.export.quantize import convert_fp16, quantize_int8
from tools.export.variant_scoring import accuracy_delta

DEFAULT_EVALUATION_IMAGES = 80


def export_variant(
    fp32_path: Path,
    precision: str,
    output: Optional[Path] = None,
    evaluation_images: int = DEFAULT_EVALUATION_IMAGES,
    **int8_options,
) -> dict[str, object]:
    """Make the ``precision`` sibling of an exported fp32 model, score it, record both in its metadata."""
    if not fp32_path.is_file():
        raise ExportError(f"{fp32_path} does not exist: export the fp32 model first")
    if not written_by_this_export(model_metadata(fp32_path.read_bytes())):
        # a release copied in as inference.onnx: the variant would carry no settings, found only after every
        # quantization, when it is scored (an audit: 12 s to 'carries no detector.settings metadata')
        raise ExportError(import_it_first(fp32_path, precision))
    output = output or variant_path(fp32_path, precision)
    # made and scored in a folder beside it, under its own name: a failure leaves the previous variant
    # (or none), never an unscored file that loads as the variant
    check_output_writable(output)  # before the minutes of calibration and scoring, as the fp32 export does
    progress(f"[1/2] writing the {precision} variant of {fp32_path} -> {output}")
    for left in remove_abandoned(output.parent):  # SIGKILL skips a TemporaryDirectory's removal
        progress(f"      removed {left.name}, the work folder of an export killed there")
    with work_folder(output) as partial:
        record = _make_scored_variant(
            fp32_path, precision, Path(partial) / output.name, evaluation_images, **int8_options
        )
        os.replace(Path(partial) / output.name, output)
    return record


def _make_scored_variant(
    fp32_path: Path, precision: str, output: Path, evaluation_images: int, **int8_options
) -> dict[str, object]:
    import onnx

    started = time.monotonic()
    made_from = sha256_of(fp32_path)  # before the minutes of work: the file the variant is made from
    if precision == "int8" and int8_options.get("float_rule", DEFAULT_INT8_RULE) == AUTO_RULE:
        from tools.export.int8_choice import quantize_int8_auto

        options = {key: value for key, value in int8_options.items() if key != "float_rule"}
        record = quantize_int8_auto(fp32_path, output, **options)
    elif precision == "int8":
        record = quantize_int8(fp32_path, output, **int8_options)
    elif precision == "fp16":
        record = convert_fp16(fp32_path, output)
    else:
        raise ExportError(f"precision {precision!r} has no variant to make (int8, fp16)")
    progress(f"[2/2] scoring fp32 and {precision} on {evaluation_images} rendered images")
    record.update(
        precision=precision,
        accuracy=accuracy_delta(fp32_path, output, evaluation_images),
        **{MADE_FROM_SHA256_FIELD: made_from},
    )
    accuracy = record["accuracy"]
    progress(
        f"      Hmean fp32 {accuracy['fp32_hmean']:.4f}, {precision} {accuracy['hmean']:.4f} "
        f"(delta {accuracy['hmean_delta']:+.4f}); time ratio on this CPU {accuracy['time_ratio_cpu']}"
    )
    progress(
        f"      maps: mean |diff| {accuracy['map_mean_abs_diff']}, max {accuracy['map_max_abs_diff']}, "
        f"{100 * float(accuracy['map_flipped_share']):.2f} % of pixels on the other side of thresh"
    )
    if precision == "int8":
        # the Hmean and time above are this CPU's kernels': without VNNI some int8 sums saturate (None: its flags
        # could not be read, not Linux)
        flags = cpu_flags()
        accuracy["int8_sums_saturated"] = None if flags is None else int8_sums_saturate(flags)
        if accuracy["int8_sums_saturated"]:
            progress(
                "      note: measured on a CPU without VNNI, where some int8 sums saturate; "
                "a CPU with VNNI runs this file faster and closer to fp32"
            )
    model = onnx.load(str(output))
    save_model(set_metadata(model, {METADATA_PRECISION_KEY: json.dumps(record, sort_keys=True)}), output)
    progress(f"done in {time.monotonic() - started:.1f} s")
    return record
