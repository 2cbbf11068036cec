"""`detect eval`: precision, recall and Hmean of a model (or two, side by side) on a labelled set."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Optional

import click

from ..api import TextDetection
from ..command_options import (
    cpu_threads_option,
    detection_setting_options,
    device_option,
    input_shape_option,
    max_pixels_option,
    model_arguments,
    model_dir_option,
    model_option,
    precision_option,
    shape_bucket_option,
)
from ..errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DetectorError,
    InputNotFoundError,
    InvalidParameterError,
    UnreadableImageError,
    UnsupportedInputError,
)
from ..model_opening import DEFAULT_MODEL_NAME
from ..precision import PRECISIONS
from ..progress import progress_bar

# a labelled image that cannot be read is the set's fault, like a bad label line, though found mid-run
_INPUT_ERRORS = (InputNotFoundError, UnreadableImageError, UnsupportedInputError)


def _model_keywords(model: tuple[str, ...], model_dir: Optional[str] = None) -> dict[str, Optional[str]]:
    """--model is a name unless it ends in .onnx, and --model-dir a path, as for `detect`."""
    model_name, model_dir = model_arguments(model, model_dir)
    return {"model_name": model_name, "model_dir": model_dir}


def _compared_model(item: str) -> dict[str, Optional[str]]:
    """A --compare model: a path (to an .onnx file or a model folder) if it has a separator, else a name."""
    if "/" in item or os.sep in item:
        return {"model_name": None, "model_dir": item}
    return _model_keywords((item,))


def _detector_specs(
    model: tuple[str, ...], model_dir: Optional[str], precision: Optional[str], compare: Optional[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """name -> TextDetection keywords. --compare takes two precisions of --model, or two models."""
    if not compare:
        keywords = _model_keywords(model, model_dir)
        named_file = keywords["model_dir"] if keywords["model_dir"] != model_dir else None  # --model FILE.onnx
        name = precision or named_file or keywords["model_name"] or model_dir or DEFAULT_MODEL_NAME
        return {name: {**keywords, "precision": precision}}
    first, second = compare
    if first == second:
        raise InvalidParameterError(f"--compare needs two different models or precisions, got {first!r} twice")
    if precision is not None and first in PRECISIONS and second in PRECISIONS:
        raise InvalidParameterError(
            f"--precision {precision} with --compare {first} {second}: the two precisions compared are the ones "
            f"used; leave --precision out (it applies to models compared by name)"
        )
    specs = {}
    for item in compare:
        if item in PRECISIONS:
            specs[item] = {**_model_keywords(model, model_dir), "precision": item}
        else:
            specs[item] = {**_compared_model(item), "precision": precision}
    return specs


@click.command("eval", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--labels",
    "labels",
    required=True,
    metavar="FILE|DIR",
    help="PaddleOCR det label file (image_path<TAB>[{transcription, points}, ...]) "
    "or an ICDAR 2015 folder of gt_<image>.txt.",
)
@click.option(
    "--image-dir",
    "--image_dir",
    "image_dir",
    default=None,
    metavar="DIR",
    help="Folder the label file's image paths are relative to [default: the label file's folder].",
)
@model_option
@model_dir_option
@precision_option
@click.option(
    "--compare",
    nargs=2,
    default=None,
    metavar="A B",
    help="Evaluate two precisions (fp32 int8) of the model, or two models (names, or paths to an .onnx file or "
    "a model folder), side by side.",
)
@device_option
@cpu_threads_option
@max_pixels_option
@detection_setting_options
@click.option("--max-candidates", "--max_candidates", "max_candidates", default=None, type=click.IntRange(min=1))
@input_shape_option
@shape_bucket_option
@click.option("--json", "json_format", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def eval_command(
    labels: str,
    image_dir: Optional[str],
    model: tuple[str, ...],
    model_dir: Optional[str],
    precision: Optional[str],
    compare: Optional[tuple[str, str]],
    device: Optional[str],
    cpu_threads: Optional[int],
    max_pixels: Optional[int],
    limit_side_len: Optional[int],
    limit_type: Optional[str],
    thresh: Optional[float],
    box_thresh: Optional[float],
    unclip_ratio: Optional[float],
    max_side_limit: Optional[int],
    max_candidates: Optional[int],
    input_shape: Optional[tuple[int, int, int]],
    shape_bucket: Optional[int],
    json_format: bool,
    debug: bool,
) -> None:
    """Score detection on labelled images by PaddleOCR's DetMetric rules (IoU > 0.5, one-to-one, ### don't care)."""
    from .evaluate import check_labelled_images_exist, evaluate
    from .labels import read_labels
    from .report import format_json, format_table

    settings: dict[str, Any] = dict(
        limit_side_len=limit_side_len,
        limit_type=limit_type,
        thresh=thresh,
        box_thresh=box_thresh,
        unclip_ratio=unclip_ratio,
        max_side_limit=max_side_limit,
        max_candidates=max_candidates,
    )
    try:
        specs = _detector_specs(model, model_dir, precision, compare)
        labelled = read_labels(labels, image_dir)
        check_labelled_images_exist(labelled)  # a stat each: images are decoded one at a time, during the run
        detectors = {
            name: TextDetection(
                device=device,
                cpu_threads=cpu_threads,
                max_pixels=max_pixels,
                input_shape=input_shape or None,
                shape_bucket=shape_bucket,
                **keywords,
                **settings,
            )
            for name, keywords in specs.items()
        }
    except DetectorError as exc:
        _fail(exc, debug, EXIT_USAGE)
    try:
        with progress_bar(len(labelled), "evaluating", len(labelled) > 1) as progress:  # on stderr: --json stays clean
            rows = evaluate(detectors, labelled, on_image=lambda: progress.update(1))
    except DetectorError as exc:
        _fail(exc, debug, EXIT_USAGE if isinstance(exc, _INPUT_ERRORS) else EXIT_FAILED)
    click.echo(format_json(rows) if json_format else format_table(rows))
    sys.exit(EXIT_OK)


def _fail(exc: BaseException, debug: bool, code: int) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"detect eval: error: {exc}", err=True)
    sys.exit(code)
