"""The click options and parameter types the commands share (detect, detect eval, detect serve, detect batch),
defined once, the reading of --model / --model_dir they all take, and PaddleOCR's engine options detect takes."""

from __future__ import annotations

from typing import Any, Optional

import click

from .errors import InvalidParameterError
from .load_options import DEFAULT_LOAD_OPTIONS
from .model_opening import DEFAULT_MODEL_NAME
from .paddleocr_compat import PADDLEOCR_ENGINES
from .precision import PRECISIONS
from .session import parse_device
from .settings import LIMIT_TYPES


def _check_device(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    try:
        parse_device(value)
    except InvalidParameterError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def model_arguments(models: tuple[str, ...], model_dir: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(model_name, model_dir) from --model / --model_name (its spellings, repeatable) and --model_dir.

    A value is a name unless it ends in .onnx (then it is the file); a file and a name together are the
    file run as that model (its settings, where the file records none), as model_dir= and model_name= are
    in the API. More than one of either is a usage error: one option with several spellings would
    otherwise keep the last and drop the rest without a word. A name is never tried as a path: a folder
    in the working directory that happens to carry a model's name (a Paddle model, say) must not change
    which model runs.
    """
    files = list(dict.fromkeys(value for value in models if value.lower().endswith(".onnx")))
    names = list(dict.fromkeys(value for value in models if not value.lower().endswith(".onnx")))
    for kind, given in (("files", files), ("names", names)):
        if len(given) > 1:
            raise click.UsageError(
                f"--model / --model_name given two model {kind} ({', '.join(given)}): give one "
                f"(a file and a name together run the file as that model)"
            )
    if files and model_dir:
        raise click.UsageError(f"--model {files[0]} names a file, and so does --model_dir {model_dir}: give one")
    return (names[0] if names else None), (files[0] if files else model_dir)


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}

# The options several commands share (detect, detect eval, detect serve, detect batch), defined once.
model_option = click.option(
    "--model",
    "--model_name",
    "--model-name",
    "model",
    multiple=True,
    metavar="NAME|PATH.onnx",
    help=f"Exported model name (default {DEFAULT_MODEL_NAME}) or path to an .onnx file; both (the option twice) "
    "run the file as that model.",
)


def cpu_threads_option_saying(help_text: str) -> Any:
    """--cpu-threads, with the help that fits the command (per inference for detect serve)."""
    return click.option(
        "--cpu-threads", "--cpu_threads", "cpu_threads", default=None, type=click.IntRange(min=1), help=help_text
    )


cpu_threads_option = cpu_threads_option_saying(
    "onnxruntime's intra-op threads on the CPU [default: onnxruntime's choice]."
)
precision_option = click.option(
    "--precision",
    default=None,
    type=click.Choice(PRECISIONS, case_sensitive=False),  # INT8 as the API takes it
    help="Model variant: fp32 (default), int8 (CPU) or fp16 (GPU), a file beside the fp32 one made by the "
    "export tool of a source checkout (make export PRECISION=…).",
)
recursive_option = click.option(
    "--recursive/--no-recursive",
    "-r/-R",
    default=DEFAULT_LOAD_OPTIONS.recursive,
    help="Read folders with their subfolders, as PaddleOCR does (-R: only the folder's own files).",
)
model_dir_option = click.option(
    "--model-dir",
    "--model_dir",
    "model_dir",
    default=None,
    metavar="DIR",
    help="Folder holding inference.onnx (or the .onnx file itself).",
)


def device_option_saying(help_text: str) -> Any:
    return click.option("--device", default=None, callback=_check_device, metavar="cpu|gpu|gpu:N", help=help_text)


device_option = device_option_saying("Where to run; default: GPU if onnxruntime can use one, else CPU.")
max_pixels_option = click.option(
    "--max-pixels",
    "--max_pixels",
    "max_pixels",
    default=None,
    type=click.IntRange(min=1),
    help=f"Refuse images larger than this many pixels [default: {DEFAULT_LOAD_OPTIONS.max_pixels}].",
)


class _ZeroMeansTheModelsValue:
    """A range whose refusal of 0 says what PaddleOCR's 0 meant: the model's own value, which here is the
    option left out (mixed into click's FloatRange / IntRange)."""

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        try:
            return super().convert(value, param, ctx)  # type: ignore[misc]
        except click.BadParameter as exc:
            try:
                zero = float(value) == 0
            except (TypeError, ValueError):
                zero = False
            if not zero:
                raise
            raise click.BadParameter(
                f"{exc.message.rstrip('.')}: PaddleOCR takes 0 as the model's default, here leave the option out",
                ctx,
                param,
            ) from None


class _FloatSetting(_ZeroMeansTheModelsValue, click.FloatRange):
    pass


class _IntSetting(_ZeroMeansTheModelsValue, click.IntRange):
    pass


# The DB settings detect, detect eval and detect batch take, under PaddleOCR's names (dashes or
# underscores); None keeps the model's own value.
_DETECTION_SETTING_OPTIONS = (
    click.option(
        "--limit-side-len",
        "--limit_side_len",
        "limit_side_len",
        default=None,
        type=_IntSetting(min=1),
    ),
    click.option("--limit-type", "--limit_type", "limit_type", default=None, type=click.Choice(LIMIT_TYPES)),
    click.option("--thresh", default=None, type=_FloatSetting(0, 1, min_open=True)),
    click.option(
        "--box-thresh",
        "--box_thresh",
        "box_thresh",
        default=None,
        type=_FloatSetting(0, 1, min_open=True),
    ),
    click.option(
        "--unclip-ratio",
        "--unclip_ratio",
        "unclip_ratio",
        default=None,
        type=_FloatSetting(0, min_open=True),
    ),
    click.option("--max-side-limit", "--max_side_limit", "max_side_limit", default=None, type=click.IntRange(min=1)),
)


def detection_setting_options(command: Any) -> Any:
    """Add the shared DB setting options to a click command (in the order they are listed)."""
    for option in reversed(_DETECTION_SETTING_OPTIONS):
        command = option(command)
    return command


# One definition each for the commands that take them (TextDetection's keywords): --input-shape for detect
# and detect eval, --shape-bucket for those and detect serve and detect batch.
input_shape_option = click.option(
    "--input-shape",
    "--input_shape",
    "input_shape",
    default=None,
    nargs=3,
    type=int,
    metavar="C H W",
    help="Resize every image to exactly H x W (multiples of 32), as PaddleOCR does.",
)
shape_bucket_option = click.option(
    "--shape-bucket",
    "--shape_bucket",
    "shape_bucket",
    default=None,
    type=int,
    metavar="N",
    help="Pad each resized image (bottom, right) up to multiples of N (a multiple of 32), so that mixed "
    "sizes share a few network shapes (GPU); the boxes change: measure with detect eval (README: Shape buckets). "
    "[default: off]",
)


# PaddleOCR's engine options for detect, in its own order (paddleocr/_common_args.py): --precision chooses the
# exported variant; the others mean nothing on onnxruntime, accepted and ignored with one warning each
# (paddleocr_compat.py).
_PADDLEOCR_ENGINE_OPTIONS = (
    click.option(
        "--engine",
        default=None,
        type=click.Choice(PADDLEOCR_ENGINES),
        help="PaddleOCR's engine choice; accepted, always onnxruntime here.",
    ),
    click.option(
        "--enable-hpi",
        "--enable_hpi",
        "enable_hpi",
        default=None,
        type=click.BOOL,
        help="Accepted for PaddleOCR; ignored (with a warning).",
    ),
    click.option(
        "--use-tensorrt",
        "--use_tensorrt",
        "use_tensorrt",
        default=None,
        type=click.BOOL,
        help="Accepted for PaddleOCR; ignored (with a warning).",
    ),
    precision_option,
    click.option(
        "--enable-mkldnn",
        "--enable_mkldnn",
        "enable_mkldnn",
        default=None,
        type=click.BOOL,
        help="Accepted for PaddleOCR; ignored (with a warning).",
    ),
    click.option(
        "--mkldnn-cache-capacity",
        "--mkldnn_cache_capacity",
        "mkldnn_cache_capacity",
        default=None,
        type=int,
        help="Accepted for PaddleOCR; ignored (with a warning).",
    ),
    click.option(
        "--enable-cinn",
        "--enable_cinn",
        "enable_cinn",
        default=None,
        type=click.BOOL,
        help="Accepted for PaddleOCR; ignored (with a warning).",
    ),
)


def paddleocr_engine_options(command: Any) -> Any:
    """Add PaddleOCR's engine options (--engine … --enable-cinn) to a click command, in the order they are listed."""
    for option in reversed(_PADDLEOCR_ENGINE_OPTIONS):
        command = option(command)
    return command
