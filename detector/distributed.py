"""Distributed batch detection on Ray Data (extra [ray]); imported only by `detect batch`.

files (local folders, globs, or any filesystem pyarrow supports) → ``ray.data.read_binary_files``
→ ``map_batches`` with :class:`DetectFiles`, a callable class that loads the model once per actor
→ one row per image (per page for PDFs and TIFFs): ``path``, ``page_index``, ``dt_polys``,
``dt_scores``, ``error`` → Parquet or JSON Lines. A file that cannot be read becomes a row with
``error`` set; it never stops the job. Each row holds what ``TextDetection.predict`` returns for
that file, because the actor decodes and detects with the library itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import ray
from ray.data.datasource import BlockBasedFileDatasink

from .api import TextDetection
from .batch_command import DEFAULT_FILES_PER_BATCH
from .errors import DetectorError, InputNotFoundError, InvalidParameterError
from .inputs import DEFAULT_LOAD_OPTIONS, IMAGE_EXTENSIONS, LoadOptions, Source, expand_inputs, load_source
from .result import json_text, to_jsonable

FORMATS = ("parquet", "jsonl")
# A local Ray instance started by `detect batch`: a small object store, since rows are small.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
ROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("page_index", pa.int32()),
        ("dt_polys", pa.list_(pa.list_(pa.list_(pa.int32())))),  # int32: images past 32767 px
        ("dt_scores", pa.list_(pa.float64())),
        ("error", pa.string()),
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
        for path, data in zip(batch.column("path").to_pylist(), batch.column("bytes").to_pylist()):
            for row in detect_file(self.detector, path, data):
                for name in ROW_SCHEMA.names:
                    rows[name].append(row[name])
        return pa.Table.from_pydict(rows, schema=ROW_SCHEMA)


def detect_file(detector: TextDetection, path: str, data: bytes) -> list[dict[str, Any]]:
    """Rows for one file: one per image or page, or a final row with ``error`` where reading stopped."""
    rows: list[dict[str, Any]] = []
    detecting = None  # the image or page being detected, if the error comes from its detection
    try:
        for loaded in load_source(Source("bytes", data, path), detector.load_options):
            detecting = loaded
            (result,) = detector.detect_loaded([loaded])
            detecting = None
            rows.append(
                {
                    "path": path,
                    "page_index": loaded.page_index,
                    "dt_polys": to_jsonable(result["dt_polys"]),
                    "dt_scores": to_jsonable(result["dt_scores"]),
                    "error": None,
                }
            )
    except Exception as exc:  # a job over millions of files must outlive any one of them
        message = str(exc) if isinstance(exc, DetectorError) else f"{type(exc).__name__}: {exc}"
        if detecting is not None:
            page = detecting.page_index
        else:  # reading stopped: the next page of a paged file, none where the file itself could not be read
            page = len(rows) if rows and rows[-1]["page_index"] is not None else None
        rows.append({"path": path, "page_index": page, "dt_polys": [], "dt_scores": [], "error": message})
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

    @property
    def images_per_second(self) -> float:
        return (self.rows - self.errors) / self.seconds if self.seconds > 0 else 0.0


def is_uri(text: str) -> bool:
    return "://" in text


def resolve_inputs(inputs: Sequence[str], recursive: bool = DEFAULT_LOAD_OPTIONS.recursive) -> list[str]:
    """Local folders and globs -> sorted absolute file paths (every node must see them: a shared
    filesystem); URIs (s3://, gs://, hdfs://, file://…) are passed to Ray as they are."""
    paths: list[str] = []
    for raw in inputs:
        if is_uri(raw):
            paths.append(raw)
        else:
            sources = expand_inputs(raw, LoadOptions(recursive=recursive))
            paths.extend(str(Path(source.value).resolve()) for source in sources)
    if not paths:
        raise InputNotFoundError("no input files given")
    return paths


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
        occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if occupied:
        raise InvalidParameterError(
            f"output {output!r} exists and is not an empty folder: choose a new one, "
            f"so the rows written are only this run's"
        )


def connect(address: Optional[str]) -> None:
    """Join the Ray cluster at ``address`` ("auto" or host:port / ray://…), or start a small local one."""
    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as exc:  # no cluster there: the user's address, not our bug
            raise DetectorError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
    else:
        ray.init(
            num_cpus=os.cpu_count(),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )


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
    paths = resolve_inputs(inputs, recursive)
    check_output(output)
    if num_gpus_per_actor > 0 and spec.device is None:
        spec = ModelSpec(**{**spec.__dict__, "device": "gpu"})
    if spec.cpu_threads is None and num_gpus_per_actor == 0:
        # onnxruntime would take every core in each actor; give each the cores Ray reserved for it
        spec = ModelSpec(**{**spec.__dict__, "cpu_threads": max(1, round(cpus_per_actor))})
    if ray_address is None:
        local_cpus = os.cpu_count() or 1
        if not ray.is_initialized() and cpus_per_actor > local_cpus:  # connect() starts the local instance:
            # with no more CPUs than this machine's, Ray would wait for an actor slot that never comes
            raise InvalidParameterError(
                f"cpus_per_actor {cpus_per_actor:g} is more than this machine's {local_cpus} CPUs "
                f"(the local Ray instance has no more); lower it, or join a cluster with ray_address"
            )
        spec.load()  # a bad model or device fails here, once, with the library's message
    connect(ray_address)
    start = time.perf_counter()
    extensions = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
    try:
        dataset = ray.data.read_binary_files(
            paths,
            include_paths=True,
            file_extensions=extensions if any(is_uri(p) for p in paths) else None,
            # reading is I/O: it must not wait for the cores the actors hold
            num_cpus=0,
        )
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"the input {exc} does not exist") from None
    except (OSError, ValueError) as exc:  # a URI pyarrow cannot reach, an unknown scheme (Ray: "No files found")
        uris = ", ".join(path for path in paths if is_uri(path))
        raise DetectorError(f"cannot list the input {uris}: {exc}") from None
    rows = dataset.map_batches(
        DetectFiles,
        fn_constructor_args=(spec,),
        batch_size=files_per_batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )
    if fmt == "parquet":
        rows.write_parquet(output, ray_remote_args={"num_cpus": 0})
    else:
        rows.write_datasink(JsonLinesDatasink(output), ray_remote_args={"num_cpus": 0})
    seconds = time.perf_counter() - start
    table = read_rows(output, fmt)
    return BatchSummary(
        files=len(set(table.column("path").to_pylist())),
        rows=table.num_rows,
        errors=table.num_rows - table.column("error").null_count,
        seconds=seconds,
        output=output,
    )


def read_rows(output: str, fmt: str) -> pa.Table:
    """Every row a run wrote (also for tests and for users checking a run)."""
    filesystem, root = pyarrow.fs.FileSystem.from_uri(output if is_uri(output) else str(Path(output).resolve()))
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    files = sorted(info.path for info in infos if info.type == pyarrow.fs.FileType.File)
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
