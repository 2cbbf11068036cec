"""Distributed batch detection on Ray Data (extra [ray]); imported only by `detect batch`.

files (local folders, globs, or any filesystem pyarrow supports), listed here → a dataset of their
names → ``map_batches`` with :class:`DetectFiles`, a callable class that loads the model once per actor
and reads each file itself → one row per image (per page for PDFs and TIFFs): ``path``,
``page_index``, ``dt_polys``, ``dt_scores``, ``error``, ``warnings`` → Parquet or JSON Lines. A file that cannot be
read (gone since it was listed, unreadable, broken) becomes a row with ``error`` set; it never stops the
job (read by Ray's own reader, one vanished file ended the whole job). Each row holds what
``TextDetection.predict`` returns for that file, because the actor reads, decodes and detects with the
library itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute
import pyarrow.fs
import pyarrow.parquet as pq
import ray
from ray.data.datasource import BlockBasedFileDatasink

from .api import TextDetection
from .batch_command import DEFAULT_FILES_PER_BATCH, folder_holds_nothing
from .errors import (
    DetectorError,
    InputNotFoundError,
    InvalidParameterError,
    callers_sigterm_handler_kept,
    os_reason,
)
from .folder_walk import IMAGE_EXTENSIONS
from .inputs import Source, expand_inputs, load_source
from .load_options import DEFAULT_LOAD_OPTIONS, LoadOptions
from .prefetch import usable_cores
from .result import json_text, to_jsonable
from .session import parse_device

FORMATS = ("parquet", "jsonl")
SOURCE_COLUMN = "source"  # the dataset the actors read: each file's path or URI, as bytes
# How long a cluster address given as host:port may take to accept a TCP connection. ray.init itself retries
# an address nobody answers at for ~7 minutes (Ray 2.60: 'Failed to connect to GCS … within 5 seconds' lines,
# then a timeout), so a mistyped address is tried here first.
CLUSTER_CONNECT_TIMEOUT_S = 10.0
# How often the main thread looks whether ray.init, on a thread of its own, finished: a signal another thread
# received is handled then
RAY_STARTER_POLL_S = 0.2
# Failed rows `detect batch` names on stderr after its summary (path, page, error); all of them are in the rows.
ERRORS_NAMED = 10
# A local Ray instance started by `detect batch`: a small object store, since rows are small.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
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
    """Ray Data callable class: the model is loaded once when the actor starts, then used for every batch."""

    def __init__(self, spec: ModelSpec):
        self.detector = spec.load()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: dict[str, list[Any]] = {name: [] for name in ROW_SCHEMA.names}
        for name in batch.column(SOURCE_COLUMN).to_pylist():
            for row in detect_file(self.detector, os.fsdecode(name)):
                for column in ROW_SCHEMA.names:
                    rows[column].append(row[column])
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


class JsonLinesDatasink(BlockBasedFileDatasink):
    """One JSON object per row, floats written exactly (pandas' to_json, behind write_json, keeps 10 digits)."""

    def __init__(self, path: str, **kwargs: Any):
        super().__init__(path, file_format="jsonl", **kwargs)

    def write_block_to_file(self, block: Any, file: Any) -> None:
        for row in block.to_arrow().to_pylist():
            file.write((json_text(row, None, ensure_ascii=False) + "\n").encode("utf-8"))


# ----------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class BatchSummary:
    files: int
    rows: int
    errors: int
    seconds: float
    output: str
    # (path, page_index, error) of the first ERRORS_NAMED failed rows by path and page: `detect batch` names them
    first_errors: tuple[tuple[str, Optional[int], str], ...] = ()

    @property
    def images_per_second(self) -> float:
        return (self.rows - self.errors) / self.seconds if self.seconds > 0 else 0.0


def is_uri(text: str) -> bool:
    return "://" in text


def resolve_inputs(inputs: Sequence[str], recursive: bool = DEFAULT_LOAD_OPTIONS.recursive) -> list[str]:
    """Local folders and globs -> absolute file paths (every node must see them: a shared filesystem; links
    kept as named, as `detect -i` reports them); URIs (s3://, gs://, hdfs://, file://…) listed through pyarrow's
    filesystem for their scheme, a folder's image files with its subfolders unless not recursive."""
    paths: list[str] = []
    for raw in inputs:
        if is_uri(raw):
            paths.extend(list_uri(raw, recursive))
        else:
            sources = expand_inputs(raw, LoadOptions(recursive=recursive))
            for source in sources:
                if source.kind == "unreadable":  # a folder of the walk that cannot be listed: refused before Ray
                    raise source.value
                paths.append(os.path.abspath(source.value))
    if not paths:
        raise InputNotFoundError("no input files given")
    return paths


def list_uri(uri: str, recursive: bool) -> list[str]:
    """A URI naming a file -> [it]; naming a folder -> its image files' URIs, sorted (subfolders if recursive)."""
    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
        found = filesystem.get_file_info(root)
        if found.type == pyarrow.fs.FileType.NotFound:
            raise InputNotFoundError(f"the input {uri} does not exist")
        if found.type == pyarrow.fs.FileType.File:
            return [uri]
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=recursive))
    except DetectorError:
        raise
    except Exception as exc:  # a scheme pyarrow does not know, a store it cannot reach
        raise DetectorError(f"cannot list the input {uri}: {exc}") from None
    # the scheme and authority the filesystem's own paths leave out ("s3://", "hdfs://host:9000")
    prefix = uri.rstrip("/")[: len(uri.rstrip("/")) - len(root.rstrip("/"))]
    files = []
    for info in infos:
        try:
            path = info.path
        except UnicodeDecodeError:  # pyarrow holds names as UTF-8 only
            raise DetectorError(
                f"a file name under {uri} is not UTF-8, which pyarrow cannot list: pass a local folder as a path"
            ) from None
        if info.type == pyarrow.fs.FileType.File and os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            # percent-encoded, as FileSystem.from_uri decodes it again when the file is read: taken as it is,
            # 'c%20d.jpg' read the file 'c d.jpg', and a space, '#', '?' or 'ü' in a name failed or cut it short
            files.append(prefix + urllib.parse.quote(path, safe="/"))
    return sorted(files)


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


def connect(address: Optional[str]) -> None:
    """Join the Ray cluster at ``address`` ("auto" or host:port / ray://…), or start a small local one."""
    if ray.is_initialized():
        return
    # Python's handler put back: the core worker ray.init starts sets one of its own (a stack dump, then Python's)
    with callers_sigterm_handler_kept():
        started_off_the_main_thread(lambda: _init(address))


class _RaysThreadWarningDropped(logging.Filter):
    """ray.init's warning that, off the main thread, it sets no SIGTERM handler: what it is called there for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def started_off_the_main_thread(start: Callable[[], None]) -> None:
    """Run ``start`` (ray.init) on a thread of its own, and wait for it.

    On the main thread ray.init puts its own SIGTERM handler in place while it starts Ray's processes
    (sys.exit(15)): a SIGTERM then ended `detect batch` with exit 15 and no line, left the output folder it had
    made, and two Ray agents running a minute or more (Ray 2.60); a Ctrl-C left the agents too. Off it, Ray sets
    no handler, so a signal reaches the command's own, in the main thread: the start is let finish, what it
    started stopped (ray.shutdown), and the signal goes on its way. A second signal does not wait."""
    failed: list[BaseException] = []
    finished = threading.Event()  # not Thread.join: a join a signal interrupted returns at once after (3.11)

    def run() -> None:
        try:
            start()
        except BaseException as exc:  # given to the main thread, which raises it
            failed.append(exc)
            finished.set()
            return
        finished.set()
        # parked for good: Linux kills the processes ray.init started (PR_SET_PDEATHSIG) when the *thread* that
        # started them ends, as the process does; ended sooner, it cut ray.shutdown's stop of Ray's agents short
        threading.Event().wait()

    worker_log = logging.getLogger("ray._private.worker")
    dropped = _RaysThreadWarningDropped()
    worker_log.addFilter(dropped)
    try:
        threading.Thread(target=run, name="ray.init", daemon=True).start()
        while not finished.wait(RAY_STARTER_POLL_S):  # wakes for a signal another thread received
            pass
    except BaseException:  # Ctrl-C, SIGTERM (Terminated) while Ray starts
        finished.wait()
        ray.shutdown()
        raise
    finally:
        worker_log.removeFilter(dropped)
    if failed:  # ray.init's own failure, as it raised it
        raise failed[0]


def disconnect() -> None:
    """Leave Ray (stop the local instance, or leave the cluster) with SIGINT and SIGTERM ignored meanwhile, a
    second or two: the run is over. Left to Ray's exit hook, a signal then ('why does it not return?') printed
    'Exception ignored in atexit callback' and a traceback, and left Ray's agents and actors running."""
    if not ray.is_initialized():
        return
    if threading.current_thread() is not threading.main_thread():  # where signal handlers cannot be set
        ray.shutdown()
        return
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.shutdown()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def unreachable_cluster(address: str, timeout_s: float = CLUSTER_CONNECT_TIMEOUT_S) -> Optional[str]:
    """Why nothing accepts a TCP connection at a host:port (or ray://host:port) cluster address; None when
    something does, or when the address is not of that form ("auto", "local": Ray finds those itself)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:  # refused, timed out, unknown host
        return str(exc) or type(exc).__name__
    return None


def _init(address: Optional[str]) -> None:
    if address:
        reason = unreachable_cluster(address)
        if reason is not None:
            raise DetectorError(
                f"cannot join the Ray cluster at {address!r}: nothing answers there ({reason}); "
                f"check the address (the head node's GCS port, 6379 by default; ray:// addresses use 10001)"
            )
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as exc:  # no cluster there: the user's address, not our bug
            raise DetectorError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
    else:
        ray.init(
            address="local",  # a local instance as documented, also where RAY_ADDRESS names a cluster (ray job submit)
            num_cpus=usable_cores(),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )


def actor_device(device: Optional[str], num_gpus_per_actor: float) -> str:
    """The device each actor opens the model on: the one asked for, else its GPU where Ray reserves one for it
    (num_gpus_per_actor > 0), else the CPU.

    Not device=None on the CPU: Ray (2.60) leaves CUDA_VISIBLE_DEVICES alone in an actor that asks for no GPU, so
    it sees every GPU of its node, and each actor would open the model on GPU 0, reserved by no one. An actor that
    asks for GPUs sees only those Ray assigned it, numbered from 0: gpu:N past them fails in every actor."""
    if device is None:
        return "gpu" if num_gpus_per_actor > 0 else "cpu"
    parsed = parse_device(device)
    visible = math.ceil(num_gpus_per_actor)  # a fraction of a GPU is one GPU shared
    if parsed is not None and parsed.kind == "gpu" and visible and parsed.index >= visible:
        seen = "gpu:0" if visible == 1 else f"gpu:0 to gpu:{visible - 1}"
        raise InvalidParameterError(
            f"device {device!r} names a GPU no actor sees: with num_gpus_per_actor {num_gpus_per_actor:g} each actor "
            f"sees only the GPUs Ray assigns it, as {seen}; use --device gpu (device='gpu'), and Ray picks the GPU"
        )
    return device


def run_batch(
    inputs: Sequence[str],
    output: str,
    *,
    fmt: str = "parquet",
    spec: ModelSpec = ModelSpec(),
    concurrency: int = 1,
    cpus_per_actor: float = 1.0,
    num_gpus_per_actor: float = 0.0,
    files_per_batch: int = DEFAULT_FILES_PER_BATCH,
    recursive: bool = DEFAULT_LOAD_OPTIONS.recursive,
    ray_address: Optional[str] = None,
) -> BatchSummary:
    """Detect text in every input file on Ray and write the rows to ``output``; a summary of the run."""
    if fmt not in FORMATS:
        raise InvalidParameterError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if concurrency < 1 or files_per_batch < 1 or cpus_per_actor <= 0 or num_gpus_per_actor < 0:
        raise InvalidParameterError(
            "concurrency and files_per_batch must be >= 1, cpus_per_actor > 0, num_gpus_per_actor >= 0"
        )
    spec = ModelSpec(**{**spec.__dict__, "device": actor_device(spec.device, num_gpus_per_actor)})
    paths = resolve_inputs(inputs, recursive)
    check_output(output)
    resolved: dict[str, Any] = {}  # the model each actor loads, where this process can load it too
    if not is_uri(output):
        # absolute: on a cluster the writers run elsewhere (a relative folder failed there, after all the
        # detection); made now, so a folder that cannot be made is said before Ray starts
        output = os.path.abspath(output)
        try:
            os.makedirs(output, exist_ok=True)
        except OSError as exc:
            raise InvalidParameterError(f"cannot make the output folder {output}: {exc.strerror or exc}") from None
    if spec.cpu_threads is None and num_gpus_per_actor == 0:
        # onnxruntime would take every core in each actor; give each the cores Ray reserved for it
        spec = ModelSpec(**{**spec.__dict__, "cpu_threads": max(1, round(cpus_per_actor))})
    if ray_address is None:
        local_cpus = usable_cores()
        if not ray.is_initialized() and cpus_per_actor > local_cpus:  # connect() starts the local instance:
            # with no more CPUs than this machine's, Ray would wait for an actor slot that never comes
            raise InvalidParameterError(
                f"cpus_per_actor {cpus_per_actor:g} is more than this machine's {local_cpus} CPUs "
                f"(the local Ray instance has no more); lower it, or join a cluster with ray_address"
            )
        # a bad model or device fails here, once, with the library's message; what it resolved goes in the record
        loaded = spec.load()
        resolved = {
            "model_name": loaded.model_name,
            "model_path": str(loaded.model_path),
            "precision": loaded.precision,
        }
        loaded.close()
    connect(ray_address)
    local_gpus = ray.cluster_resources().get("GPU", 0) if ray_address is None else None
    if local_gpus is not None and num_gpus_per_actor > local_gpus:
        # as with CPUs: Ray would wait for an actor slot that never comes
        raise InvalidParameterError(
            f"num_gpus_per_actor {num_gpus_per_actor:g} is more than this machine's "
            f"{local_gpus:g} GPUs (the local Ray instance has no more)"
        )
    start = time.perf_counter()
    # names as bytes: a file name that is not UTF-8 has no Arrow string; each actor reads its files itself
    dataset = ray.data.from_items([{SOURCE_COLUMN: os.fsencode(path)} for path in paths])
    rows = dataset.map_batches(
        DetectFiles,
        fn_constructor_args=(spec,),
        batch_size=files_per_batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )
    try:
        if fmt == "parquet":
            rows.write_parquet(output, ray_remote_args={"num_cpus": 0})
        else:
            rows.write_datasink(JsonLinesDatasink(output), ray_remote_args={"num_cpus": 0})
    except ray.exceptions.RayActorError as exc:
        # on a cluster the model is first loaded by the actors: the library's refusal, not Ray's traceback
        refusal = library_refusal(str(exc))
        if refusal is None:
            raise
        raise DetectorError(f"the actors could not load the model: {refusal}") from None
    except ray.exceptions.RayTaskError as exc:
        # a writer's: the actors' calls raise nothing (detect_file keeps each file's failure in its row)
        if not isinstance(exc.cause, OSError):
            raise
        raise RowsNotWrittenError(f"cannot write the rows into {output}: {os_reason(exc.cause)}") from None
    seconds = time.perf_counter() - start
    table = read_rows(output, fmt, allow_partial=True)
    summary = BatchSummary(
        files=len(set(table.column("path").to_pylist())),
        rows=table.num_rows,
        errors=table.num_rows - table.column("error").null_count,
        seconds=seconds,
        output=output,
        first_errors=first_errors(table),
    )
    try:
        _write_completion_record(output, fmt, summary, {**spec.__dict__, **resolved})
    except OSError as exc:
        raise RowsNotWrittenError(f"cannot write {COMPLETION_RECORD} into {output}: {os_reason(exc)}") from None
    return summary


def first_errors(table: pa.Table, count: int = ERRORS_NAMED) -> tuple[tuple[str, Optional[int], str], ...]:
    """(path, page_index, error) of the first ``count`` rows with an error, by path and page."""
    failed = table.filter(pyarrow.compute.is_valid(table.column("error"))).select(["path", "page_index", "error"])
    rows = sorted(failed.to_pylist(), key=lambda row: (row["path"], row["page_index"] is not None, row["page_index"]))
    return tuple((row["path"], row["page_index"], row["error"]) for row in rows[:count])


class RowsNotWrittenError(DetectorError):
    """The output could not be written midway (a full disk, a folder removed or made read-only): the rows written
    before stand, without COMPLETION_RECORD."""


def _output_filesystem(output: str) -> tuple[Any, str]:
    return pyarrow.fs.FileSystem.from_uri(output if is_uri(output) else str(Path(output).resolve()))


def _write_completion_record(output: str, fmt: str, summary: BatchSummary, model: dict[str, Any]) -> None:
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


class _RayDataFailuresLeftOut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def ray_data_failures_kept_off_the_terminal() -> Iterator[None]:
    """Ray Data's error records kept from its terminal handlers (not from its log file, in Ray's session folder):
    they are the job's failure with Ray's tracebacks, ~100 lines for a model the actors cannot load, ~260 for a
    full disk, where run_batch raises that failure as one error."""
    handlers = [
        handler
        for handler in logging.getLogger("ray.data").handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]
    left_out = _RayDataFailuresLeftOut()
    for handler in handlers:
        handler.addFilter(left_out)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(left_out)


def library_refusal(text: str) -> Optional[str]:
    """The message of the last DetectorError a Ray error's text (a remote traceback) ends with, if any."""
    found = re.findall(r"^detector\.errors\.\w+: (.+)$", text, flags=re.MULTILINE)
    return found[-1] if found else None


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
