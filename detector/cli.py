"""The `detect` command: PaddleOCR-style text detection from the shell.

Exit codes: 0 every input succeeded, 1 some input failed (each failure one line on stderr, the rest
still processed and saved), 2 usage error (bad option value, model or device unusable).
"""

from __future__ import annotations

import sys
import traceback
from itertools import islice
from pathlib import Path
from typing import List, Optional, Tuple

import click

from .api import DEFAULT_MODEL_NAME, TextDetection
from .errors import DetectorError, InvalidParameterError
from .inputs import LoadedImage, expand_inputs, load_image
from .session import parse_device

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _check_device(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    try:
        parse_device(value)
    except InvalidParameterError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _model_arguments(model: Optional[str], model_dir: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """--model accepts a model name or a path to an .onnx file / model folder."""
    if model and (model.endswith(".onnx") or Path(model).exists()):
        return None, model
    return model, model_dir


def _describe(item) -> str:
    return str(item) if isinstance(item, Path) else "<array>"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-i", "--input", "inputs", multiple=True, required=True, metavar="PATH",
              help="Image file or folder of images; repeat for several.")
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
@click.option("--json", "json_format", is_flag=True, help="Print results as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def detect(inputs, model, model_dir, device, save_path, batch_size, limit_side_len, limit_type, max_side_limit,
           thresh, box_thresh, unclip_ratio, json_format, debug) -> None:
    """Detect text lines in images with a PP-OCR detection model on onnxruntime."""
    model_name, model_dir = _model_arguments(model, model_dir)
    try:
        detector = TextDetection(
            model_name=model_name, model_dir=model_dir, device=device, limit_side_len=limit_side_len,
            limit_type=limit_type, max_side_limit=max_side_limit, thresh=thresh, box_thresh=box_thresh,
            unclip_ratio=unclip_ratio,
        )
    except DetectorError as exc:
        _fail_usage(exc, debug)

    failures = 0
    items = []
    for raw in inputs:
        try:
            items.extend(expand_inputs(raw))
        except DetectorError as exc:
            failures += 1
            _report(raw, exc, debug)
    done = 0
    show_progress = len(items) > 1
    with click.progressbar(length=len(items), label="detecting", file=sys.stderr,
                           hidden=not show_progress) as progress:
        iterator = iter(items)
        while True:
            chunk = list(islice(iterator, batch_size))
            if not chunk:
                break
            loaded: List[LoadedImage] = []
            for item in chunk:
                try:
                    loaded.append(load_image(item))
                except DetectorError as exc:
                    failures += 1
                    _report(_describe(item), exc, debug)
            try:
                results = detector.detect_loaded(loaded) if loaded else []
                for result in results:
                    click.echo(result.to_str(json_format=json_format))
                    if save_path:
                        result.save_to_json(save_path)
                        result.save_to_img(save_path)
                    done += 1
            except DetectorError as exc:
                failures += len(loaded)
                _report(", ".join(str(item.input_path) for item in loaded), exc, debug)
            progress.update(len(chunk))
    if show_progress or failures:
        click.echo(f"detect: {done} succeeded, {failures} failed", err=True)
    sys.exit(EXIT_SOME_FAILED if failures else EXIT_OK)


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
    detect.main(args=argv, prog_name="detect")


if __name__ == "__main__":
    main()
