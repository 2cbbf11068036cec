"""The `detect` command: PaddleOCR-style text detection from the shell.

`detect -i …` detects (the default action); subcommands (`detect eval`, `detect serve`,
`detect batch`, `detect optimize`) are thin wrappers over library functions, each imported only when invoked so that
optional extras stay optional. Exit codes: 0 every input succeeded, 1 some input failed (each
failure one line on stderr, the rest still processed and saved), 2 usage error (bad option value,
model or device unusable), 130 interrupted, 143 terminated, 141 stdout closed by its reader.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import errno
import importlib
import logging
import os
import signal
import sys
import traceback
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, Optional, Union

import click

from . import __version__
from .api import TextDetection
from .catalog import KNOWN_MODELS, exported_models
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DetectorError,
    InvalidParameterError,
    Terminated,
    pip_install,
    raise_terminated,
)
from .inputs import (
    LoadedImage,
    Source,
    expand_inputs,
    group_sources,
    load_source,
    may_give_several_images,
    stored_bytes,
)
from .load_options import DEFAULT_LOAD_OPTIONS, LoadOptions
from .model_opening import DEFAULT_MODEL_NAME
from .paddleocr_compat import PADDLEOCR_ENGINES
from .precision import PRECISIONS
from .prefetch import ordered_map, prefetch
from .progress import progress_bar
from .result import DetectionResult, can_write_image, is_image_name, is_json_name, names_file
from .session import parse_device
from .settings import LIMIT_TYPES
from .urls import shown_path

EXIT_SOME_FAILED = EXIT_FAILED  # detect: one line per failed input, the others still done
DETECT_COMMAND = "predict"  # the default action: `detect -i x.png` is `detect predict -i x.png`
# PaddleOCR's name for the same action: `paddleocr text_detection -i x.png` runs here with `paddleocr` replaced
PADDLEOCR_DETECT_COMMAND = "text_detection"
# Subcommands: name -> "module:attribute" of a click command, imported only when that name is invoked.
SUBCOMMANDS: dict[str, str] = {
    "serve": "detector.serve.command:serve",
    "batch": "detector.batch_command:batch",
    "eval": "detector.evaluation.command:eval_command",
    "optimize": "detector.optimize.command:optimize_command",
}


class DetectGroup(click.Group):
    """A click group whose default action is detection: arguments that do not start with a
    subcommand name go to the `predict` command, so `detect -i …` keeps working unchanged."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [DETECT_COMMAND, *sorted(SUBCOMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name == DETECT_COMMAND:
            return detect
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] == PADDLEOCR_DETECT_COMMAND:
            args = [DETECT_COMMAND, *args[1:]]
        elif not args or args[0] not in self.list_commands(ctx):
            args = [DETECT_COMMAND, *args]
        return super().parse_args(ctx, args)


def _check_device(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    try:
        parse_device(value)
    except InvalidParameterError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _list_models(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .hub import IN_CHECKOUT, downloads_enabled

    exported = exported_models()
    names = list(KNOWN_MODELS) + sorted(set(exported) - set(KNOWN_MODELS))
    width = max(len(name) for name in names)
    for name in names:
        known = KNOWN_MODELS.get(name)
        if name in exported:
            where = str(exported[name])
        elif known is not None and known.onnx_release and downloads_enabled():
            where = "not here yet (downloads on first use)"
        elif IN_CHECKOUT:
            where = f"not exported (make export MODEL={name})"
        else:
            where = "not here (pass --model-dir)"
        summary = known.summary if known is not None else "exported locally"
        click.echo(f"{name:<{width}}  {where}\n{'':<{width}}  {summary}")
    ctx.exit(EXIT_OK)


def _model_arguments(models: tuple[str, ...], model_dir: Optional[str]) -> tuple[Optional[str], Optional[str]]:
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


class DetectCommand(click.Command):
    """The default action: its usage reads `detect [OPTIONS]`, not `detect predict [OPTIONS]`,
    and its help ends with the subcommands."""

    class context_class(click.Context):
        @property
        def command_path(self) -> str:
            # `predict` is only the routing name of the default action; users type `detect -i …`
            return self.parent.command_path if self.parent is not None else super().command_path

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if SUBCOMMANDS:
            formatter.write_paragraph()
            formatter.write_text(
                "Subcommands: "
                + ", ".join(f"{ctx.command_path} {name}" for name in sorted(SUBCOMMANDS))
                + f" (each with --help). `{ctx.command_path} {DETECT_COMMAND}` and PaddleOCR's"
                + f" `{ctx.command_path} {PADDLEOCR_DETECT_COMMAND}` are this command."
            )


def _save_target(save_path: Optional[str]) -> tuple[Optional[str], bool]:
    """(save_path, whether it names one file: result.names_file)."""
    if not save_path:
        return None, False
    one_file = names_file(save_path, is_json_name) or names_file(save_path, is_image_name)
    suffix = Path(save_path).suffix
    if names_file(save_path, is_image_name) and not can_write_image(suffix):  # found after inference before
        raise click.BadParameter(
            f"{save_path!r}: no writer for {suffix} images here; give a .png, .jpg, … file or a folder",
            param_hint="'--save_path'",
        )
    if not one_file and Path(save_path).exists() and not Path(save_path).is_dir():
        raise click.BadParameter(
            f"{save_path!r} is a file; give a folder, or a .json or image file name", param_hint="'--save_path'"
        )
    return save_path, one_file


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


class _EchoedWarnings(logging.Handler):
    """The package's logged warnings, printed like the command's own (``detect: warning: …``) on the
    stderr of the moment."""

    echoes_for_the_command_line = True  # detect serve puts its own handler in its place (log_beside_uvicorn)

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{_line_start()}detect: {record.levelname.lower()}: {record.getMessage()}", err=True)


def _show_package_warnings() -> None:
    """Print the package's logged warnings (a resize past max_side_limit, say) with the command's prefix,
    unless logging was set up already (then it decides)."""
    package = logging.getLogger(__package__)
    if package.handlers or logging.getLogger().handlers:
        return
    package.addHandler(_EchoedWarnings(logging.WARNING))


@click.group(cls=DetectGroup, context_settings=CONTEXT_SETTINGS)
def cli() -> None:
    """Detect text lines in images with a PP-OCR detection model on onnxruntime."""
    _show_package_warnings()


@cli.command(DETECT_COMMAND, cls=DetectCommand, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="detect", message="%(prog)s %(version)s")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    required=True,
    metavar="PATH|URL|GLOB",
    help="Image, PDF or TIFF (every page), folder, glob pattern or http(s) URL; repeat for several.",
)
@recursive_option
@model_option
@model_dir_option
@device_option
@click.option(
    "--save-path",
    "--save_path",
    "save_path",
    default=None,
    metavar="DIR|FILE",
    help="Folder for <stem>_res.json and the <stem>_res.<input's suffix, else png> visualization; a name "
    "ending in .json (or .png, .jpg, …) is that one file, for a single input.",
)
@click.option("--batch-size", "--batch_size", "batch_size", default=1, type=click.IntRange(min=1))
@detection_setting_options
@max_pixels_option
@click.option(
    "--pdf-dpi",
    "--pdf_dpi",
    "pdf_dpi",
    default=None,
    type=click.FloatRange(0, min_open=True),
    help=f"Resolution PDF pages are rendered at [default: {DEFAULT_LOAD_OPTIONS.pdf_dpi:g}].",
)
@cpu_threads_option
@input_shape_option
@shape_bucket_option
@click.option(
    "--engine",
    default=None,
    type=click.Choice(PADDLEOCR_ENGINES),
    help="PaddleOCR's engine choice; accepted, always onnxruntime here.",
)
@click.option(
    "--enable-hpi",
    "--enable_hpi",
    "enable_hpi",
    default=None,
    type=click.BOOL,
    help="Accepted for PaddleOCR; ignored (with a warning).",
)
@click.option(
    "--use-tensorrt",
    "--use_tensorrt",
    "use_tensorrt",
    default=None,
    type=click.BOOL,
    help="Accepted for PaddleOCR; ignored (with a warning).",
)
@precision_option
@click.option(
    "--enable-mkldnn",
    "--enable_mkldnn",
    "enable_mkldnn",
    default=None,
    type=click.BOOL,
    help="Accepted for PaddleOCR; ignored (with a warning).",
)
@click.option(
    "--mkldnn-cache-capacity",
    "--mkldnn_cache_capacity",
    "mkldnn_cache_capacity",
    default=None,
    type=int,
    help="Accepted for PaddleOCR; ignored (with a warning).",
)
@click.option(
    "--enable-cinn",
    "--enable_cinn",
    "enable_cinn",
    default=None,
    type=click.BOOL,
    help="Accepted for PaddleOCR; ignored (with a warning).",
)
@click.option(
    "--list-models",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_models,
    help="List the known model names and which are exported here, then exit.",
)
@click.option("--json", "json_format", is_flag=True, help="Print results as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def detect(
    inputs: tuple[str, ...],
    recursive: bool,
    model: tuple[str, ...],
    model_dir: Optional[str],
    device: Optional[str],
    save_path: Optional[str],
    batch_size: int,
    limit_side_len: Optional[int],
    limit_type: Optional[str],
    max_side_limit: Optional[int],
    thresh: Optional[float],
    box_thresh: Optional[float],
    unclip_ratio: Optional[float],
    max_pixels: Optional[int],
    pdf_dpi: Optional[float],
    cpu_threads: Optional[int],
    input_shape: Optional[tuple[int, int, int]],
    shape_bucket: Optional[int],
    json_format: bool,
    debug: bool,
    **paddle_engine_options: Any,
) -> None:
    """Detect text lines in images with a PP-OCR detection model on onnxruntime."""
    model_name, model_dir = _model_arguments(model, model_dir)
    save_path, save_to_file = _save_target(save_path)
    if save_to_file and len(inputs) > 1:
        raise click.BadParameter(
            f"{save_path!r} names one file, but {len(inputs)} inputs were given; give a folder",
            param_hint="'--save_path'",
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            detector = TextDetection(
                model_name=model_name,
                model_dir=model_dir,
                device=device,
                limit_side_len=limit_side_len,
                limit_type=limit_type,
                max_side_limit=max_side_limit,
                thresh=thresh,
                box_thresh=box_thresh,
                unclip_ratio=unclip_ratio,
                max_pixels=max_pixels,
                pdf_dpi=pdf_dpi,
                cpu_threads=cpu_threads,
                input_shape=input_shape or None,
                shape_bucket=shape_bucket,
                **paddle_engine_options,
            )
    except DetectorError as exc:
        _fail_usage(exc, debug)
    for warning in caught:
        click.echo(f"detect: warning: {warning.message}", err=True)
    options = dataclasses.replace(detector.load_options, recursive=recursive)

    tally = {"done": 0, "failed": 0, "results": 0}
    # A file save_path takes exactly one result: held back until the input is done, so that a
    # multi-page input is refused without writing anything.
    held: list[DetectionResult] = []
    sources: list[Source] = []
    earlier = 0  # an earlier run's results found by a folder walk or a glob in --save_path: no inputs
    for raw in inputs:
        try:
            expanded = expand_inputs(raw, options)
        except DetectorError as exc:
            tally["failed"] += 1
            _report(raw, exc, debug)
            continue
        if save_path and not save_to_file:
            expanded, left_out = _without_earlier_results(expanded, save_path)
            earlier += left_out
        sources.extend(expanded)

    if earlier:
        click.echo(
            f"detect: note: {_count(earlier, 'file')} in --save_path {save_path} left out: results of an earlier "
            f"run (a drawing beside its <name>_res.json), not inputs",
            err=True,
        )

    if save_to_file and len(sources) > 1:
        _fail_usage(
            DetectorError(
                f"--save_path {save_path} names one file, but the input holds {len(sources)} files; give a folder"
            ),
            debug,
        )

    # the inputs' own files, never written over by a result (--save_path in.png, or a folder's p_res.png
    # beside p.png: an input replaced by a drawing, exit 0)
    input_files = {os.path.realpath(source.value) for source in sources if source.kind == "file"}
    if save_to_file and save_path and os.path.realpath(save_path) in input_files:
        _fail_usage(DetectorError(f"--save_path {save_path} is the input itself: give another file or a folder"), debug)
    # each file written in this run -> the input (its real path and page) it was written for, and its name
    saved_from: dict[Path, tuple[tuple[Optional[str], Optional[int]], str]] = {}

    def describe(result: DetectionResult) -> str:
        page = result.get("page_index")
        return f"{result['input_path'] or '<array>'}" + ("" if page is None else f" page {page}")

    # --json to a stdout that is not UTF-8 (Windows' cp1252 when redirected): every non-ASCII character as a JSON
    # \u escape; the stream's own backslash escapes (\U0001f600, \xe9) are no JSON, and jq refused the output
    ascii_stdout = sys.stdout is not None and not _writes_utf8(sys.stdout)

    def show(result: DetectionResult) -> None:
        if sys.stdout is None:  # started with stdout closed (`>&-`): click.echo would drop it without a word
            raise _StdoutClosed()
        try:
            click.echo(result.to_str(json_format=json_format, ensure_ascii=json_format and ascii_stdout))
        except OSError as exc:
            # the reader closed stdout (`| head`): nothing more to print to (Windows may say EINVAL)
            if isinstance(exc, BrokenPipeError) or (os.name == "nt" and exc.errno == errno.EINVAL):
                raise _StdoutClosed() from None
            raise
        tally["results"] += 1

    def save(result: DetectionResult) -> None:
        try:
            if save_path:
                targets = result.save_all_targets(save_path)
                inputs_hit = [p for p in targets if os.path.realpath(p) in input_files]
                if inputs_hit:
                    raise DetectorError(
                        f"its result would be written over the input {inputs_hit[0]}: not saved "
                        f"(give a --save_path outside the input folders)"
                    )
                # inputs in different folders sharing a name (a/x.png, b/x.png) or a stem (x.jpg, x.png) get
                # the same result names, as in PaddleOCR, which replaces the first: a batch job lost it, exit 0.
                # The same file given twice (in/a.png, ./in/a.png) only writes its own result again.
                origin = (_real_input(result["input_path"]), result.get("page_index"))
                taken = [p for p in targets if saved_from.get(p, (origin, ""))[0] != origin]
                if taken:
                    raise DetectorError(
                        f"its result would replace {taken[0]}, saved for {saved_from[taken[0]][1]} (the same "
                        f"name): not saved (give inputs of the same name --save_path folders of their own)"
                    )
                saved_from.update(dict.fromkeys(result.save_all(save_path), (origin, describe(result))))
            tally["done"] += 1
        except (DetectorError, OSError) as exc:
            tally["failed"] += 1
            _report(describe(result), exc, debug)

    def report(batch: list[LoadedImage], outcome: Union[list[DetectionResult], DetectorError]) -> None:
        if isinstance(outcome, DetectorError):
            tally["failed"] += 1  # one error line, whatever the batch held
            _report(", ".join(str(item.input_path or "<array>") for item in batch), outcome, debug)
            return
        for result in outcome:
            if save_to_file:
                show(result)
                if not held:
                    held.append(result)
                continue
            # saved, then printed: a run stopped in between leaves a printed result saved (a script reading
            # stdout as the list of what was saved got one too many)
            save(result)
            show(result)

    many = may_give_several_images(sources)
    workers = detector.folder_workers if many else 1

    def detect_batch(event: _Event) -> _Outcome:
        kind, payload = event
        if kind != "batch":
            return event, None
        try:
            return event, detector.detect_loaded(payload, in_worker=workers > 1)
        except DetectorError as exc:
            return event, exc

    # Several workers: each reads and runs its own files, batch_size at a time (a PDF or TIFF is read here
    # and its pages handed out batch by batch); one worker: the next files are read while the network
    # runs on these. Output keeps input order either way (detector/prefetch.py).
    def work() -> Iterator[_Event]:
        for paged, group in group_sources(sources, batch_size):
            if paged:
                yield from _batch_events(group, options, batch_size)
            else:
                yield "sources", group

    def run_work(item: _Event) -> list[_Outcome]:
        kind, payload = item
        events = _batch_events(payload, options, batch_size) if kind == "sources" else [item]
        return [detect_batch(event) for event in events]

    if workers > 1:
        outcomes: Iterable[_Outcome] = (
            outcome
            for item_outcomes in ordered_map(
                run_work,
                work(),
                workers,
                cost=lambda item: stored_bytes(item[1]) if item[0] == "sources" else None,
                holds_images=lambda item: item[0] == "batch",  # a PDF's or TIFF's pages, read as they are drawn
            )
            for outcome in item_outcomes
        )
    else:
        outcomes = map(detect_batch, prefetch(_batch_events(sources, options, batch_size)))
    # Results printed on a terminal show the progress themselves: a bar on the same screen would be cut into
    on_terminal = sys.stdout is not None and sys.stdout.isatty()
    # a bar over the files, naming the page a PDF or TIFF has reached (one book of a few hundred pages is minutes)
    with progress_bar(len(sources), "detecting", may_give_several_images(sources) and not on_terminal) as progress:
        for (kind, payload), outcome in outcomes:
            if kind == "batch":
                assert outcome is not None  # every batch event gets its results or its error
                report(payload, outcome)
                last = payload[-1]
                if last.page_index is not None:
                    progress.show(f"{_short_name(last.input_path)} page {last.page_index}")
                continue
            source, error = payload
            if error is not None:
                tally["failed"] += 1
                _report(source.describe(), error, debug)
            progress.update(1)
    if held:
        if tally["results"] > 1:
            _fail_usage(
                DetectorError(
                    f"--save_path {save_path} names one file, but the input gave {tally['results']} "
                    f"results (pages); nothing was saved: give a folder"
                ),
                debug,
            )
        assert save_path is not None  # results are held only when --save_path names a file
        try:
            held[0].save_all(save_path)
            tally["done"] += 1
        except (DetectorError, OSError) as exc:
            tally["failed"] += 1
            _report(str(held[0]["input_path"]), exc, debug)
    if len(sources) > 1 or tally["failed"] or tally["done"] > 1:  # one PDF or TIFF of many pages: its count too
        # results (one per image or page) and errors (one line each above): a file that fails before its
        # pages are known is one error
        click.echo(f"detect: {_count(tally['done'], 'result')}, {_count(tally['failed'], 'error')}", err=True)
    sys.exit(EXIT_SOME_FAILED if tally["failed"] else EXIT_OK)


def _real_input(input_path: Optional[str]) -> Optional[str]:
    """An input file's real path (in/a.png and ./in/a.png are one file); anything else as it is named."""
    return os.path.realpath(input_path) if input_path and os.path.isfile(input_path) else input_path


def _without_earlier_results(sources: list[Source], save_path: str) -> tuple[list[Source], int]:
    """The sources without the drawings an earlier run saved into save_path (a folder inside an input folder,
    or the input folder itself) that a folder walk or a glob found (one named as an input is kept):
    `<name>_res.<image suffix>` with its `<name>_res.json` beside it. Read as
    inputs, a second run of the same command wrote `a_res_res.png` and refused the real inputs ("its result
    would be written over the input a_res.png"), and each rerun added another level."""
    folder = os.path.realpath(save_path)
    kept = []
    for source in sources:
        if source.kind == "file" and source.found_by_walk:
            path = Path(source.value)
            parent = os.path.realpath(path.parent)
            inside = parent == folder or parent.startswith(folder.rstrip(os.sep) + os.sep)
            if inside and path.stem.endswith("_res") and path.with_suffix(".json").is_file():
                continue
        kept.append(source)
    return kept, len(sources) - len(kept)


def _short_name(path: Optional[str], most: int = 32) -> str:
    """The file name of a path or URL (shown_path: no secrets), cut to its last ``most`` characters: a progress
    bar's line must not wrap."""
    name = _one_line((shown_path(path) or "<bytes>").rstrip("/").replace("\\", "/").rsplit("/", 1)[-1])
    return name if len(name) <= most else "..." + name[-(most - 3) :]


def _load_each(
    sources: list[Source], options: LoadOptions
) -> Iterator[tuple[Source, Optional[LoadedImage], Optional[DetectorError]]]:
    """(source, image, None) per image, then (source, None, error or None) when the source is done."""
    for source in sources:
        try:
            for image in load_source(source, options):
                yield source, image, None
        except DetectorError as exc:
            yield source, None, exc
            continue
        yield source, None, None


# ("batch", images) once batch_size images are loaded (and for the last few); ("source", (source, its
# load error or None)) once a source is read; ("sources", files) for a folder worker to read. In input order.
_Event = tuple[str, Any]
# an event and, for a batch, its results or its error
_Outcome = tuple[_Event, Union[list[DetectionResult], DetectorError, None]]


def _batch_events(sources: list[Source], options: LoadOptions, batch_size: int) -> Iterator[_Event]:
    pending: list[LoadedImage] = []
    for source, image, error in _load_each(sources, options):
        if image is None:
            yield "source", (source, error)
            continue
        pending.append(image)
        if len(pending) == batch_size:
            yield "batch", pending
            pending = []
    if pending:
        yield "batch", pending


def _line_start() -> str:
    """What a message line on stderr starts with: on a terminal, clearing the line, where a progress bar may
    stand (the bar is drawn again after it)."""
    return "\r\x1b[K" if sys.stderr.isatty() else ""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


class _StdoutClosed(Exception):
    """The reader of stdout went away (a pipe into `head`): the run ends as SIGPIPE would end it."""


def _one_line(text: str) -> str:
    """text with its control characters escaped (a file name holding a newline, or a terminal escape
    sequence, stays on one line of stderr and moves no cursor)."""
    return "".join(repr(char)[1:-1] if unicodedata.category(char) == "Cc" else char for char in text)


def _report(what: str, exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = str(exc)
    # a message that starts with the input's name already ("x.png is 13500x13500 = … pixels") is not prefixed
    # with it again ("x.png: x.png is …")
    named = message.startswith(f"{what} ") or message.startswith(f"{what}:")
    click.echo(f"{_line_start()}detect: error: {'' if named else _one_line(what) + ': '}{_one_line(message)}", err=True)


def _exit_for_missing_extra(command: str, extra: str, exc: ImportError) -> NoReturn:
    """`detect <command>` cannot run without the [extra] install extra: say which and how, exit EXIT_USAGE."""
    click.echo(
        f"detect: error: `detect {command}` needs the [{extra}] extra ({exc.name} is missing): {pip_install(extra)}",
        err=True,
    )
    sys.exit(EXIT_USAGE)


def _fail_usage(exc: BaseException, debug: bool, command: str = "detect") -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"{command}: error: {exc}", err=True)
    sys.exit(EXIT_USAGE)


SIGPIPE = 13  # signal.SIGPIPE, which Windows' signal module lacks


class _DiagnosticsStream:
    """stderr, whose failed writes are dropped: messages, warnings and the progress bar are no output of the
    run. With stderr on a full disk (2>/dev/full) the first progress label raised OSError, and a folder run
    ended having saved nothing, exit 1 (helper's audit)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: Any) -> int:  # str, or bytes on the buffer below
        with contextlib.suppress(OSError):
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.flush()

    @property
    def buffer(self) -> _DiagnosticsStream:  # click writes bytes there where the text stream's encoding is ASCII
        return _DiagnosticsStream(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, reconfigure: the stream's own
        return getattr(self._stream, name)


def _writes_utf8(stream: Any) -> bool:
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name == "utf-8"
    except LookupError:
        return False


def _unencodable_characters_escaped() -> None:
    """stdout and stderr write what their encoding cannot hold as backslash escapes: a file name in Chinese
    printed to a redirected Windows stdout (cp1252) raised UnicodeEncodeError and stopped the run. (--json is
    written with JSON's own escapes there: _writes_utf8.)"""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", "strict") == "strict":
            stream.reconfigure(errors="backslashreplace")


# What a signal leaves behind, said with it: a batch output folder holding some of the rows
_PARTIAL_OUTPUT_NOTE = {
    "detect batch": "; the output folder holds a partial run (no _SUCCESS.json): choose a new one to run again"
}


def _signal_note(command: str, stopped: BaseException) -> str:
    """What a signal's line adds: the command's note on what it leaves behind, or the one the command gave
    the exception on its way out (``signal_note``: detect batch stopped before writing anything; click turns
    a KeyboardInterrupt into Abort, the interrupt its context)."""
    for exception in (stopped, stopped.__context__):
        note = getattr(exception, "signal_note", None)
        if note:
            return note
    return _PARTIAL_OUTPUT_NOTE.get(command, "")


def main(argv: Optional[list[str]] = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    # the name a signal's one line starts with: "detect eval: interrupted", as the command's errors start
    command = f"detect {args[0]}" if args and args[0] in SUBCOMMANDS else "detect"
    _unencodable_characters_escaped()
    stderr = sys.stderr
    if stderr is not None and not isinstance(stderr, _DiagnosticsStream):
        sys.stderr = _DiagnosticsStream(stderr)
    signal.signal(signal.SIGTERM, raise_terminated)  # `detect serve` sets its own
    try:
        _run(argv, args, debug, command)
    finally:  # main() called in a process of the caller's (a test, a script): its stderr given back
        sys.stderr = stderr


def _run(argv: Optional[list[str]], args: list[str], debug: bool, command: str) -> None:
    """main's run of the command line, each ending as its exit code (SystemExit)."""
    try:
        # not standalone: click would turn Ctrl-C into "Aborted!" and exit 1, the code for failed inputs
        code = cli.main(args=argv, prog_name="detect", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort) as stopped:
        click.echo(f"{command}: interrupted{_signal_note(command, stopped)}", err=True)
        sys.exit(130)
    except Terminated as stopped:
        click.echo(f"{command}: terminated{_signal_note(command, stopped)}", err=True)
        sys.exit(128 + signal.SIGTERM)
    except _StdoutClosed:
        # as a command killed by SIGPIPE: no message (the reader chose to stop), exit 128 + 13; stdout goes
        # to /dev/null so that Python's flush at exit does not fail on the closed pipe again
        if sys.stdout is not None:  # None: started with stdout closed, nothing to flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + SIGPIPE)
    except click.ClickException as exc:  # a usage error: click's message and its exit code (2)
        if isinstance(exc, click.UsageError) and exc.message.startswith("Got unexpected extra argument"):
            # `-i *.png` expanded by the shell
            hint = "; give each input its own -i, or quote a glob pattern ('*.png') so detect expands it"
            exc = click.UsageError(exc.message + hint, exc.ctx)
        elif isinstance(exc, click.MissingParameter) and exc.param is not None and exc.param.name == "inputs":
            # `detect image.png`: inputs are options, as in PaddleOCR's CLI
            hint = f" Give each input with -i: {command} -i image.png -i scans/"
            exc = click.UsageError(exc.format_message() + hint, exc.ctx)
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:  # writing the results failed (a full disk, stdout closed): not a bug
        if debug:
            raise
        click.echo(f"detect: error: {exc}", err=True)
        sys.exit(EXIT_SOME_FAILED)
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if debug:
            raise
        click.echo(f"detect: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
        sys.exit(EXIT_SOME_FAILED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)  # --help and the like return their code here


if __name__ == "__main__":
    main()
