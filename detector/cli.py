"""The `detect` command: PaddleOCR-style text detection from the shell.

`detect -i …` detects (the default action); subcommands (`detect eval`, `detect serve`,
`detect batch`) are thin wrappers over library functions, each imported only when invoked so that
optional extras stay optional. Exit codes: 0 every input succeeded, 1 some input failed (each failure one line on stderr, the rest
still processed and saved), 2 usage error (bad option value, model or device unusable).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import traceback
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import click

from .api import DEFAULT_MODEL_NAME, TextDetection
from .catalog import KNOWN_MODELS, exported_models
from .errors import DetectorError, InvalidParameterError
from .inputs import DEFAULT_LOAD_OPTIONS, LoadedImage, Source, expand_inputs, load_source
from .prefetch import prefetch
from .session import parse_device

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
DETECT_COMMAND = "predict"  # the default action: `detect -i x.png` is `detect predict -i x.png`
# Subcommands: name -> "module:attribute" of a click command, imported only when that name is invoked.
SUBCOMMANDS: Dict[str, str] = {}


class DetectGroup(click.Group):
    """A click group whose default action is detection: arguments that do not start with a
    subcommand name go to the `predict` command, so `detect -i …` keeps working unchanged."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return [DETECT_COMMAND, *sorted(SUBCOMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name == DETECT_COMMAND:
            return detect
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if not args or args[0] not in self.list_commands(ctx):
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
    exported = exported_models()
    names = list(KNOWN_MODELS) + sorted(set(exported) - set(KNOWN_MODELS))
    width = max(len(name) for name in names)
    for name in names:
        where = str(exported[name]) if name in exported else "not exported (make export MODEL=%s)" % name
        summary = KNOWN_MODELS[name].summary if name in KNOWN_MODELS else "exported locally"
        click.echo(f"{name:<{width}}  {where}\n{'':<{width}}  {summary}")
    ctx.exit(EXIT_OK)


def _model_arguments(model: Optional[str], model_dir: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """--model accepts a model name or a path to an .onnx file / model folder."""
    if model and (model.endswith(".onnx") or Path(model).exists()):
        return None, model
    return model, model_dir


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}


@click.group(cls=DetectGroup, context_settings=CONTEXT_SETTINGS)
def cli() -> None:
    """Detect text lines in images with a PP-OCR detection model on onnxruntime."""


@cli.command(DETECT_COMMAND, context_settings=CONTEXT_SETTINGS,
             epilog="Subcommands: " + ", ".join(f"detect {name} --help" for name in sorted(SUBCOMMANDS))
             if SUBCOMMANDS else None)
@click.option("-i", "--input", "inputs", multiple=True, required=True, metavar="PATH|URL|GLOB",
              help="Image, PDF or TIFF (every page), folder, glob pattern or http(s) URL; repeat for several.")
@click.option("--recursive", "-r", is_flag=True, help="Descend into subfolders of folder inputs.")
@click.option("--model", "--model_name", "--model-name", "model", default=None, metavar="NAME|PATH.onnx",
              help=f"Exported model name (default {DEFAULT_MODEL_NAME}) or path to an .onnx file.")
@click.option("--model-dir", "--model_dir", "model_dir", default=None, metavar="DIR",
              help="Folder holding inference.onnx (or the .onnx file itself).")
@click.option("--device", default=None, callback=_check_device, metavar="cpu|gpu|gpu:N",
              help="Where to run; default: GPU if onnxruntime can use one, else CPU.")
@click.option("--save-path", "--save_path", "save_path", default=None, type=click.Path(file_okay=False),
              help="Folder for <stem>_res.json and the <stem>_res.png visualization.")
@click.option("--batch-size", "--batch_size", "batch_size", default=1, type=click.IntRange(min=1))
@click.option("--limit-side-len", "--limit_side_len", "limit_side_len", default=None, type=click.IntRange(min=1))
@click.option("--limit-type", "--limit_type", "limit_type", default=None, type=click.Choice(["max", "min"]))
@click.option("--max-side-limit", "--max_side_limit", "max_side_limit", default=None, type=click.IntRange(min=1))
@click.option("--thresh", default=None, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--box-thresh", "--box_thresh", "box_thresh", default=None,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--unclip-ratio", "--unclip_ratio", "unclip_ratio", default=None,
              type=click.FloatRange(0, min_open=True))
@click.option("--max-pixels", "--max_pixels", "max_pixels", default=None, type=click.IntRange(min=1),
              help=f"Refuse images larger than this many pixels [default: {DEFAULT_LOAD_OPTIONS.max_pixels}].")
@click.option("--pdf-dpi", "--pdf_dpi", "pdf_dpi", default=None, type=click.FloatRange(0, min_open=True),
              help=f"Resolution PDF pages are rendered at [default: {DEFAULT_LOAD_OPTIONS.pdf_dpi:g}].")
@click.option("--list-models", is_flag=True, expose_value=False, is_eager=True, callback=_list_models,
              help="List the known model names and which are exported here, then exit.")
@click.option("--json", "json_format", is_flag=True, help="Print results as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def detect(inputs, recursive, model, model_dir, device, save_path, batch_size, limit_side_len, limit_type,
           max_side_limit, thresh, box_thresh, unclip_ratio, max_pixels, pdf_dpi, json_format, debug) -> None:
    """Detect text lines in images with a PP-OCR detection model on onnxruntime."""
    model_name, model_dir = _model_arguments(model, model_dir)
    try:
        detector = TextDetection(
            model_name=model_name, model_dir=model_dir, device=device, limit_side_len=limit_side_len,
            limit_type=limit_type, max_side_limit=max_side_limit, thresh=thresh, box_thresh=box_thresh,
            unclip_ratio=unclip_ratio, max_pixels=max_pixels, pdf_dpi=pdf_dpi,
        )
    except DetectorError as exc:
        _fail_usage(exc, debug)
    options = dataclasses.replace(detector.load_options, recursive=recursive)

    tally = {"done": 0, "failed": 0}
    sources: List[Source] = []
    for raw in inputs:
        try:
            sources.extend(expand_inputs(raw, options))
        except DetectorError as exc:
            tally["failed"] += 1
            _report(raw, exc, debug)

    def flush(batch: List[LoadedImage]) -> None:
        try:
            results = detector.detect_loaded(batch)
        except DetectorError as exc:
            tally["failed"] += len(batch)
            _report(", ".join(str(item.input_path or "<array>") for item in batch), exc, debug)
            return
        for result in results:
            click.echo(result.to_str(json_format=json_format))
            try:
                if save_path:
                    result.save_to_json(save_path)
                    result.save_to_img(save_path)
                tally["done"] += 1
            except (DetectorError, OSError) as exc:
                tally["failed"] += 1
                _report(str(result["input_path"]), exc, debug)
        batch.clear()

    show_progress = len(sources) > 1
    pending: List[LoadedImage] = []
    with click.progressbar(length=len(sources), label="detecting", file=sys.stderr,
                           hidden=not show_progress) as progress:
        # the next files are read while the network runs on these (detector/prefetch.py)
        for source, image, error in prefetch(_load_each(sources, options)):
            if image is not None:
                pending.append(image)
                if len(pending) == batch_size:
                    flush(pending)
                continue
            if error is not None:
                tally["failed"] += 1
                _report(source.describe(), error, debug)
            progress.update(1)
        if pending:
            flush(pending)
    if show_progress or tally["failed"]:
        click.echo(f"detect: {tally['done']} succeeded, {tally['failed']} failed", err=True)
    sys.exit(EXIT_SOME_FAILED if tally["failed"] else EXIT_OK)


def _load_each(sources: List[Source], options) -> Iterator[Tuple[Source, Optional[LoadedImage], Optional[DetectorError]]]:
    """(source, image, None) per image, then (source, None, error or None) when the source is done."""
    for source in sources:
        try:
            for image in load_source(source, options):
                yield source, image, None
        except DetectorError as exc:
            yield source, None, exc
            continue
        yield source, None, None


def _report(what: str, exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"detect: error: {what}: {exc}", err=True)


def _fail_usage(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"detect: error: {exc}", err=True)
    sys.exit(EXIT_USAGE)


def main(argv: Optional[List[str]] = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="detect")
    except KeyboardInterrupt:
        click.echo("detect: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if debug:
            raise
        click.echo(f"detect: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
        sys.exit(EXIT_SOME_FAILED)


if __name__ == "__main__":
    main()
