"""`detect batch`: detection over many files on Ray (extra [ray]); Ray is imported inside the command."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

import click

from .command_messages import (
    EXIT_SOME_FAILED,
    PARTIAL_OUTPUT_NOTE,
    exit_for_missing_extra,
    fail_usage,
    names_its_input,
    one_line,
)
from .command_options import (
    CONTEXT_SETTINGS,
    detection_setting_options,
    device_option_saying,
    max_pixels_option,
    model_arguments,
    model_dir_option,
    model_option,
    precision_option,
    recursive_option,
    shape_bucket_option,
)
from .errors import EXIT_OK, DetectorError, Terminated
from .progress import progress_of_counts

if TYPE_CHECKING:  # Ray is imported when a batch runs, not when the command is listed
    from .distributed import BatchSummary

# Files each actor call takes: enough to keep an actor busy, few enough to spread over actors.
DEFAULT_FILES_PER_BATCH = 4

# detect's --device, where the default is the actor's own (distributed.actor_device): an actor that asks Ray for
# no GPU still sees them all, so "GPU if usable" would put every actor on GPU 0
batch_device_option = device_option_saying(
    "Where each actor runs; default: the GPU Ray assigns it with --num-gpus-per-actor > 0, else the CPU."
)


@click.command("batch", context_settings=CONTEXT_SETTINGS)
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    required=True,
    metavar="DIR|GLOB|URI",
    help="Folder, glob pattern, file, or a URI of any filesystem pyarrow supports (s3://…); repeatable.",
)
@click.option("-o", "--output", required=True, metavar="DIR|URI", help="New folder for the result files.")
@click.option("--format", "fmt", default="parquet", type=click.Choice(["parquet", "jsonl"]))
@recursive_option
@click.option(
    "--ray-address",
    default=None,
    metavar="auto|ADDRESS",
    help="Ray cluster to join ('auto': the one this machine belongs to); default: start a local one.",
)
@click.option("--concurrency", default=1, type=click.IntRange(min=1), help="Actors, each loading the model once.")
@click.option(
    "--cpus-per-actor",
    default=1.0,
    type=click.FloatRange(0, min_open=True),
    help="CPUs Ray reserves per actor; also its onnxruntime threads.",
)
@click.option(
    "--num-gpus-per-actor",
    default=0.0,
    type=click.FloatRange(min=0),
    help="GPUs per actor (fractions share one); > 0 runs the model on the GPU, 0 on the CPU (unless --device).",
)
@click.option(
    "--files-per-batch",
    default=DEFAULT_FILES_PER_BATCH,
    show_default=True,
    type=click.IntRange(min=1),
    help="Files per actor call.",
)
@model_option
@model_dir_option
@precision_option
@batch_device_option
@detection_setting_options
@max_pixels_option
@shape_bucket_option
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def batch(
    inputs: tuple[str, ...],
    output: str,
    fmt: str,
    recursive: bool,
    ray_address: Optional[str],
    concurrency: int,
    cpus_per_actor: float,
    num_gpus_per_actor: float,
    files_per_batch: int,
    model: tuple[str, ...],
    model_dir: Optional[str],
    device: Optional[str],
    precision: Optional[str],
    thresh: Optional[float],
    box_thresh: Optional[float],
    unclip_ratio: Optional[float],
    limit_side_len: Optional[int],
    limit_type: Optional[str],
    max_side_limit: Optional[int],
    max_pixels: Optional[int],
    shape_bucket: Optional[int],
    debug: bool,
) -> None:
    """Detect text in many files on Ray; one row per image or page: path, page_index, dt_polys, dt_scores, error,
    warnings
    (needs the [ray] extra)."""
    existed = os.path.exists(output)  # first: whether an empty folder there is this run's to remove
    try:
        from . import batch_inputs, batch_output, batch_rows, distributed, ray_session
    except ImportError as exc:
        exit_for_missing_extra("batch", "ray", exc)
    except (KeyboardInterrupt, Terminated) as stopped:  # importing Ray takes a second or so
        setattr(stopped, "signal_note", "; nothing was written")  # noqa: B010 (an attribute these exceptions lack)
        raise
    model_name, model_dir = model_arguments(model, model_dir)
    settings = dict(
        thresh=thresh,
        box_thresh=box_thresh,
        unclip_ratio=unclip_ratio,
        limit_side_len=limit_side_len,
        limit_type=limit_type,
        max_side_limit=max_side_limit,
        shape_bucket=shape_bucket,
    )
    spec = batch_rows.ModelSpec(
        model_name=model_name,
        model_dir=model_dir,
        device=device,
        precision=precision,
        max_pixels=max_pixels,
        settings={key: value for key, value in settings.items() if value is not None},
    )
    made_here = not batch_inputs.is_uri(output) and not existed
    ray_ours = not ray_session.ray.is_initialized()  # one of the caller's (main() called in its process) is left up
    # a failure is said in one line below; --debug shows Ray's own records of it too
    quiet = contextlib.nullcontext() if debug else ray_session.ray_data_failures_kept_off_the_terminal()
    # a bar over the files on a terminal, Ray Data's own progress off: on a terminal it asked for tqdm
    shown = progress_of_counts("detecting", sys.stderr is not None and sys.stderr.isatty())
    try:
        with (
            quiet,
            ray_session.ray_data_progress_off(),
            shown as bar,
            ray_session.ray_data_terminal_filtered(_LineEndedFirst(bar.end_line)),
        ):
            summary = distributed.run_batch(
                inputs,
                output,
                fmt=fmt,
                spec=spec,
                concurrency=concurrency,
                cpus_per_actor=cpus_per_actor,
                num_gpus_per_actor=num_gpus_per_actor,
                recursive=recursive,
                ray_address=ray_address,
                files_per_batch=files_per_batch,
                on_progress=bar.report,
            )
        click.echo(
            f"detect batch: {summary.files} files, {summary.rows} rows, {summary.errors} with an error, "
            f"{summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s) -> {summary.output}",
            err=True,
        )
        for line in failed_rows_said(summary):  # which files failed, and why (the count alone said neither)
            click.echo(line, err=True)
    except batch_output.RowsNotWrittenError as exc:  # the run failed, not the call: exit 1, as detect's writes
        note = (
            "; nothing was written"
            if _unwritten_output_removed(output, made_here)
            else PARTIAL_OUTPUT_NOTE["detect batch"]
        )
        click.echo(f"detect batch: error: {exc}{note}", err=True)
        sys.exit(EXIT_SOME_FAILED)
    except DetectorError as exc:
        _unwritten_output_removed(output, made_here)
        fail_usage(exc, debug, command="detect batch")
    except (KeyboardInterrupt, Terminated) as stopped:
        if _unwritten_output_removed(output, made_here):  # stopped before its first rows: no partial run to warn of
            setattr(stopped, "signal_note", "; nothing was written")  # noqa: B010 (an attribute these exceptions lack)
        raise
    finally:  # here, not at exit: a signal there cut Ray's shutdown short
        if ray_ours:
            ray_session.disconnect()
    sys.exit(EXIT_SOME_FAILED if summary.errors else EXIT_OK)


class _LineEndedFirst(logging.Filter):
    """Ray Data's lines on the terminal start on a line of their own: the bar's line is ended first (a run failing
    midway printed Ray's 'Dataset … execution failed' on the bar's line, then the command's error under it). Added
    last to Ray Data's terminal handlers: it sees only the records they print (not those kept off without --debug)."""

    def __init__(self, end_line: Callable[[], None]) -> None:
        super().__init__()
        self._end_line = end_line

    def filter(self, record: logging.LogRecord) -> bool:
        self._end_line()
        return True


def failed_rows_said(summary: BatchSummary) -> list[str]:
    """A line for each failed row the summary names (path, page, why), and one saying where the rest are."""
    lines = [  # on one line each, as detect's error lines (one_line: a name's newline or terminal escape shown),
        # the path left out where the error starts with it, as there (a page's error names its page then)
        f"detect batch: error: {_failed_row_named(path, page, error)}{one_line(error)}"
        for path, page, error in summary.first_errors
    ]
    more = summary.errors - len(summary.first_errors)
    if more > 0:
        lines.append(f"detect batch: … and {more} more rows with an error: their `error` column in {summary.output}")
    return lines


def _failed_row_named(path: str, page: Optional[int], error: str) -> str:
    """What a failed row's line says before its error: the path (and page, as `detect` names it: "x.pdf page 3"),
    unless the error names it."""
    if names_its_input(error, path):
        return ""
    return f"{one_line(path)}{'' if page is None else f' page {page}'}: "


def folder_holds_nothing(folder: str) -> bool:
    """Whether a local folder has no entries at all; OSError where it is no folder or cannot be listed."""
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _unwritten_output_removed(output: str, made_here: bool) -> bool:
    """Whether a local output is not there or is a folder holding nothing (a run stopped before writing): an
    empty one removed if this run made it, so that nothing is left behind and the next run can use the name."""
    if made_here and not os.path.lexists(output):  # stopped before it made the folder (listing the inputs)
        return True
    with contextlib.suppress(OSError):
        if not folder_holds_nothing(output):
            return False
        if made_here:
            os.rmdir(output)
        return True
    return False
