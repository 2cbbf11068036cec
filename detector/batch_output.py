"""A `detect batch` run's output: refused unless new or empty, rows written as JSON Lines (Parquet by Ray's own
writer), COMPLETION_RECORD written last, and the rows read back."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
from ray.data.datasource import BlockBasedFileDatasink

from .batch_command import folder_holds_nothing
from .batch_inputs import is_uri
from .batch_rows import ROW_SCHEMA
from .errors import DetectorError, InvalidParameterError
from .result import json_text

if TYPE_CHECKING:
    from .distributed import BatchSummary

# Written into the output last, by a run that finished: its counts, format and model (read_rows wants it)
COMPLETION_RECORD = "_SUCCESS.json"


def check_output(output: str) -> None:
    """An output that holds files already is refused: Ray would add this run's files beside them."""
    if is_uri(output):
        try:
            filesystem, root = pyarrow.fs.FileSystem.from_uri(output)
            found = filesystem.get_file_info(root)
            occupied = found.type == pyarrow.fs.FileType.File or (
                found.type == pyarrow.fs.FileType.Directory
                and bool(filesystem.get_file_info(pyarrow.fs.FileSelector(root)))
            )
        except Exception:  # a scheme or store pyarrow cannot reach from here: Ray says so when it writes
            return
    else:
        folder = Path(output)
        occupied = folder.exists() and (not folder.is_dir() or not folder_holds_nothing(output))
    if occupied:
        raise InvalidParameterError(
            f"output {output!r} exists and is not an empty folder: choose a new one, "
            f"so the rows written are only this run's"
        )
    if not is_uri(output) and Path(output).is_dir():  # an empty folder there already: can this process write it?
        try:
            with tempfile.TemporaryFile(dir=output):
                pass
        except OSError as exc:  # found by Ray's first write, after the whole run, in 300 lines of tracebacks
            raise InvalidParameterError(f"output {output!r} cannot be written: {exc.strerror or exc}") from None


class JsonLinesDatasink(BlockBasedFileDatasink):
    """One JSON object per row, floats written exactly (pandas' to_json, behind write_json, keeps 10 digits)."""

    def __init__(self, path: str, **kwargs: Any):
        super().__init__(path, file_format="jsonl", **kwargs)

    def write_block_to_file(self, block: Any, file: Any) -> None:
        for row in block.to_arrow().to_pylist():
            file.write((json_text(row, None, ensure_ascii=False) + "\n").encode("utf-8"))


class RowsNotWrittenError(DetectorError):
    """The output could not be written midway (a full disk, a folder removed or made read-only): the rows written
    before stand, without COMPLETION_RECORD."""


def _output_filesystem(output: str) -> tuple[Any, str]:
    return pyarrow.fs.FileSystem.from_uri(output if is_uri(output) else str(Path(output).resolve()))


def write_completion_record(output: str, fmt: str, summary: BatchSummary, model: dict[str, Any]) -> None:
    """COMPLETION_RECORD, written last: a run interrupted or failed leaves rows that read as a whole run
    otherwise (read_rows refuses an output without it). ``model``: the run's ModelSpec fields, and the model
    name, file and precision it resolved to where this process loaded it (a local run)."""
    record = {
        "files": summary.files,
        "rows": summary.rows,
        "errors": summary.errors,
        "seconds": round(summary.seconds, 3),
        "format": fmt,
        "model": {key: value for key, value in model.items() if value is not None},
    }
    filesystem, root = _output_filesystem(output)
    with filesystem.open_output_stream(f"{root.rstrip('/')}/{COMPLETION_RECORD}") as stream:
        stream.write((json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_rows(output: str, fmt: str, allow_partial: bool = False) -> pa.Table:
    """Every row a run wrote (also for tests and for users checking a run). An output without the run's
    COMPLETION_RECORD (interrupted, failed, still running) is refused unless ``allow_partial``: its rows
    are some of the inputs' only."""
    filesystem, root = _output_filesystem(output)
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    files = sorted(info.path for info in infos if info.type == pyarrow.fs.FileType.File)
    other = {"parquet": ".jsonl", "jsonl": ".parquet"}.get(fmt, "")
    if other and any(path.endswith(other) for path in files) and not any(path.endswith(f".{fmt}") for path in files):
        raise InvalidParameterError(f"{output} holds {other[1:]} files, not {fmt}: read it with fmt={other[1:]!r}")
    if not allow_partial and not any(path.rsplit("/", 1)[-1] == COMPLETION_RECORD for path in files):
        raise InvalidParameterError(
            f"{output} holds no {COMPLETION_RECORD}: the run that wrote it did not finish (interrupted or failed), "
            f"so its rows are some of the inputs' only; read them with allow_partial=True, or run it again"
        )
    if fmt == "parquet":
        tables = [
            pq.read_table(path, filesystem=filesystem, schema=ROW_SCHEMA) for path in files if path.endswith(".parquet")
        ]
    else:
        tables = []
        for path in files:
            if not path.endswith(".jsonl"):
                continue
            with filesystem.open_input_stream(path) as stream:
                records = [json.loads(line) for line in stream.read().decode("utf-8").splitlines() if line.strip()]
            tables.append(pa.Table.from_pylist(records, schema=ROW_SCHEMA))
    return pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()
