"""`detect -i …`, the default action of the `detect` command: inputs read, detected in batches and each result
printed and saved, one error line per failed input."""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional, Union

import click

from . import __version__
from .api import TextDetection
from .catalog import KNOWN_MODELS, exported_models
from .command_messages import EXIT_SOME_FAILED, StdoutClosed, fail_usage, report_error, writes_utf8
from .command_options import (
    CONTEXT_SETTINGS,
    cpu_threads_option,
    detection_setting_options,
    device_option,
    input_shape_option,
    max_pixels_option,
    model_arguments,
    model_dir_option,
    model_option,
    paddleocr_engine_options,
    recursive_option,
    shape_bucket_option,
)
from .detect_io import (
    BatchEvent,
    BatchOutcome,
    batch_events,
    real_input,
    save_target,
    short_name,
    without_earlier_results,
)
from .errors import EXIT_OK, DetectorError
from .inputs import LoadedImage, Source, expand_inputs, group_sources, may_give_several_images, stored_bytes
from .load_options import DEFAULT_LOAD_OPTIONS
from .prefetch import ordered_map, prefetch
from .progress import progress_bar
from .result import DetectionResult

DETECT_COMMAND = "predict"  # the default action: `detect -i x.png` is `detect predict -i x.png`


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
        from .cli import PADDLEOCR_DETECT_COMMAND, SUBCOMMANDS  # the group's table (cli.py imports this module)

        if SUBCOMMANDS:
            formatter.write_paragraph()
            formatter.write_text(
                "Subcommands: "
                + ", ".join(f"{ctx.command_path} {name}" for name in sorted(SUBCOMMANDS))
                + f" (each with --help). `{ctx.command_path} {DETECT_COMMAND}` and PaddleOCR's"
                + f" `{ctx.command_path} {PADDLEOCR_DETECT_COMMAND}` are this command."
            )


@click.command(DETECT_COMMAND, cls=DetectCommand, context_settings=CONTEXT_SETTINGS)  # cli.py adds it to the group
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
@paddleocr_engine_options
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
    model_name, model_dir = model_arguments(model, model_dir)
    save_path, save_to_file = save_target(save_path)
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
        fail_usage(exc, debug)
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
            report_error(raw, exc, debug)
            continue
        if save_path and not save_to_file:
            expanded, left_out = without_earlier_results(expanded, save_path)
            earlier += left_out
        sources.extend(expanded)

    if earlier:
        click.echo(
            f"detect: note: {_count(earlier, 'file')} in --save_path {save_path} left out: results of an earlier "
            f"run (a drawing beside its <name>_res.json), not inputs",
            err=True,
        )

    if save_to_file and len(sources) > 1:
        fail_usage(
            DetectorError(
                f"--save_path {save_path} names one file, but the input holds {len(sources)} files; give a folder"
            ),
            debug,
        )

    # the inputs' own files, never written over by a result (--save_path in.png, or a folder's p_res.png
    # beside p.png: an input replaced by a drawing, exit 0)
    input_files = {os.path.realpath(source.value) for source in sources if source.kind == "file"}
    if save_to_file and save_path and os.path.realpath(save_path) in input_files:
        fail_usage(DetectorError(f"--save_path {save_path} is the input itself: give another file or a folder"), debug)
    # each file written in this run -> the input (its real path and page) it was written for, and its name
    saved_from: dict[Path, tuple[tuple[Optional[str], Optional[int]], str]] = {}

    def describe(result: DetectionResult) -> str:
        page = result.get("page_index")
        return f"{result['input_path'] or '<array>'}" + ("" if page is None else f" page {page}")

    # --json to a stdout that is not UTF-8 (Windows' cp1252 when redirected): every non-ASCII character as a JSON
    # \u escape; the stream's own backslash escapes (\U0001f600, \xe9) are no JSON, and jq refused the output
    ascii_stdout = sys.stdout is not None and not writes_utf8(sys.stdout)

    def show(result: DetectionResult) -> None:
        if sys.stdout is None:  # started with stdout closed (`>&-`): click.echo would drop it without a word
            raise StdoutClosed()
        try:
            click.echo(result.to_str(json_format=json_format, ensure_ascii=json_format and ascii_stdout))
        except OSError as exc:
            # the reader closed stdout (`| head`): nothing more to print to (Windows may say EINVAL)
            if isinstance(exc, BrokenPipeError) or (os.name == "nt" and exc.errno == errno.EINVAL):
                raise StdoutClosed() from None
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
                origin = (real_input(result["input_path"]), result.get("page_index"))
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
            report_error(describe(result), exc, debug)

    def report(batch: list[LoadedImage], outcome: Union[list[DetectionResult], DetectorError]) -> None:
        if isinstance(outcome, DetectorError):
            tally["failed"] += 1  # one error line, whatever the batch held
            report_error(", ".join(str(item.input_path or "<array>") for item in batch), outcome, debug)
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

    def detect_batch(event: BatchEvent) -> BatchOutcome:
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
    def work() -> Iterator[BatchEvent]:
        for paged, group in group_sources(sources, batch_size):
            if paged:
                yield from batch_events(group, options, batch_size)
            else:
                yield "sources", group

    def run_work(item: BatchEvent) -> list[BatchOutcome]:
        kind, payload = item
        events = batch_events(payload, options, batch_size) if kind == "sources" else [item]
        return [detect_batch(event) for event in events]

    if workers > 1:
        outcomes: Iterable[BatchOutcome] = (
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
        outcomes = map(detect_batch, prefetch(batch_events(sources, options, batch_size)))
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
                    progress.show(f"{short_name(last.input_path)} page {last.page_index}")
                continue
            source, error = payload
            if error is not None:
                tally["failed"] += 1
                report_error(source.describe(), error, debug)
            progress.update(1)
    if held:
        if tally["results"] > 1:
            fail_usage(
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
            report_error(str(held[0]["input_path"]), exc, debug)
    if len(sources) > 1 or tally["failed"] or tally["done"] > 1:  # one PDF or TIFF of many pages: its count too
        # results (one per image or page) and errors (one line each above): a file that fails before its
        # pages are known is one error
        click.echo(f"detect: {_count(tally['done'], 'result')}, {_count(tally['failed'], 'error')}", err=True)
    sys.exit(EXIT_SOME_FAILED if tally["failed"] else EXIT_OK)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
