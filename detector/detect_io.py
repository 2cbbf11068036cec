"""The detect command's reading and writing around the network: what --save_path names, the files found as inputs
that an earlier run saved there, the sources read into batch events in input order, and a file's short name for
the progress bar."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

import click

from .command_messages import one_line
from .errors import DetectorError
from .inputs import LoadedImage, Source, load_source
from .load_options import LoadOptions
from .result import DetectionResult, can_write_image, is_image_name, is_json_name, names_file
from .urls import shown_path


def save_target(save_path: Optional[str]) -> tuple[Optional[str], bool]:
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


def real_input(input_path: Optional[str]) -> Optional[str]:
    """An input file's real path (in/a.png and ./in/a.png are one file); anything else as it is named."""
    return os.path.realpath(input_path) if input_path and os.path.isfile(input_path) else input_path


def without_earlier_results(sources: list[Source], save_path: str) -> tuple[list[Source], int]:
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


def short_name(path: Optional[str], most: int = 32) -> str:
    """The file name of a path or URL (shown_path: no secrets), cut to its last ``most`` characters: a progress
    bar's line must not wrap."""
    name = one_line((shown_path(path) or "<bytes>").rstrip("/").replace("\\", "/").rsplit("/", 1)[-1])
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
BatchEvent = tuple[str, Any]
# an event and, for a batch, its results or its error
BatchOutcome = tuple[BatchEvent, Union[list[DetectionResult], DetectorError, None]]


def batch_events(sources: list[Source], options: LoadOptions, batch_size: int) -> Iterator[BatchEvent]:
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
