"""What each `detect batch` actor does: loads the model once (ModelSpec, DetectFiles), then reads and detects
each listed file with the library itself, into rows of ROW_SCHEMA; a file's failure is kept in its row."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.fs

from .api import TextDetection
from .batch_inputs import is_uri
from .errors import DetectorError
from .inputs import Source, load_source
from .result import to_jsonable

SOURCE_COLUMN = "source"  # the dataset the actors read: each file's path or URI, as bytes
# and beside it, for a folder the walk could not read (batch_inputs.resolve_inputs), why: its row's error
UNREADABLE_COLUMN = "unreadable"
ROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("page_index", pa.int32()),
        ("dt_polys", pa.list_(pa.list_(pa.list_(pa.int32())))),  # int32: images past 32767 px
        ("dt_scores", pa.list_(pa.float64())),
        ("error", pa.string()),
        # the library's warnings while the row's image was read and detected (a JPEG cut short, decoded as far
        # as it goes; a PDF page rendered smaller): an actor's log reaches no one
        ("warnings", pa.list_(pa.string())),
    ]
)


@dataclass(frozen=True)
class ModelSpec:
    """What each actor loads: TextDetection's constructor keywords."""

    model_name: Optional[str] = None
    model_dir: Optional[str] = None
    device: Optional[str] = None
    cpu_threads: Optional[int] = None
    max_pixels: Optional[int] = None
    precision: Optional[str] = None  # fp32, int8 or fp16: the variant file beside the fp32 one
    # thresh, box_thresh, … (None keeps the model's), and the other TextDetection keywords (shape_bucket)
    settings: dict[str, Any] = field(default_factory=dict)

    def load(self) -> TextDetection:
        return TextDetection(
            model_name=self.model_name,
            model_dir=self.model_dir,
            device=self.device,
            cpu_threads=self.cpu_threads,
            max_pixels=self.max_pixels,
            precision=self.precision,
            **self.settings,
        )


class DetectFiles:
    """Ray Data callable class: the model is loaded once when the actor starts, then used for every batch; each
    file done is added to ``files_done`` (a batch_progress.FilesDone actor), where the run reports its progress."""

    def __init__(self, spec: ModelSpec, files_done: Optional[Any] = None):
        self.detector = spec.load()
        self.files_done = files_done

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: dict[str, list[Any]] = {name: [] for name in ROW_SCHEMA.names}
        listed = zip(batch.column(SOURCE_COLUMN).to_pylist(), batch.column(UNREADABLE_COLUMN).to_pylist())
        for name, unreadable in listed:
            path = os.fsdecode(name)
            for row in detect_file(self.detector, path) if unreadable is None else [unread_row(path, unreadable)]:
                for column in ROW_SCHEMA.names:
                    rows[column].append(row[column])
            if self.files_done is not None:  # not waited for: a count, not worth a round trip per file
                self.files_done.add.remote(1)
        return pa.Table.from_pydict(rows, schema=ROW_SCHEMA)


def file_source(path: str) -> Source:
    """A listed file as the library reads it: a local file by its path (a PDF also by its suffix), a URI's
    bytes read through pyarrow's filesystem for its scheme."""
    if not is_uri(path):
        return Source("file", Path(path), path)
    filesystem, inner = pyarrow.fs.FileSystem.from_uri(path)
    with filesystem.open_input_stream(inner) as stream:
        return Source("bytes", stream.read(), path)


def row_path(path: str) -> str:
    """The path as a row holds it: Arrow strings are UTF-8, so the bytes of a name that is not (kept by
    Python as lone surrogates) are written as \\udcXX escapes."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


class _WarningsKept(logging.Handler):
    """The package's warnings logged by this thread since the last ``take``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._thread = threading.get_ident()
        self._messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self._messages.append(row_path(record.getMessage()))

    def take(self) -> list[str]:
        taken, self._messages = self._messages, []
        return taken


def unread_row(path: str, why: str) -> dict[str, Any]:
    """The row of a folder the walk could not read: its path, why, no page."""
    return {
        "path": row_path(path),
        "page_index": None,
        "dt_polys": [],
        "dt_scores": [],
        "error": row_path(why),
        "warnings": [],
    }


def detect_file(detector: TextDetection, path: str) -> list[dict[str, Any]]:
    """Rows for one file: one per image or page, or a final row with ``error`` where reading stopped; each with
    the warnings logged while it was read and detected."""
    rows: list[dict[str, Any]] = []
    detecting = None  # the image or page being detected, if the error comes from its detection
    shown = row_path(path)
    kept = _WarningsKept()
    package = logging.getLogger(__package__)
    package.addHandler(kept)
    try:
        for loaded in load_source(file_source(path), detector.load_options):
            detecting = loaded
            (result,) = detector.detect_loaded([loaded])
            detecting = None
            rows.append(
                {
                    "path": shown,
                    "page_index": loaded.page_index,
                    "dt_polys": to_jsonable(result["dt_polys"]),
                    "dt_scores": to_jsonable(result["dt_scores"]),
                    "error": None,
                    "warnings": kept.take(),
                }
            )
    except Exception as exc:  # a job over millions of files must outlive any one of them
        message = str(exc) if isinstance(exc, DetectorError) else f"{type(exc).__name__}: {exc}"
        message = row_path(message)  # it names the file: a name that is not UTF-8 would fail the whole block
        if detecting is not None:
            page = detecting.page_index
        else:  # reading stopped: the next page of a paged file, none where the file itself could not be read
            page = len(rows) if rows and rows[-1]["page_index"] is not None else None
        rows.append(
            {
                "path": shown,
                "page_index": page,
                "dt_polys": [],
                "dt_scores": [],
                "error": message,
                "warnings": kept.take(),
            }
        )
    finally:
        package.removeHandler(kept)
    return rows
