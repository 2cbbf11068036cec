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

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute
import ray

from .batch_command import DEFAULT_FILES_PER_BATCH
from .batch_inputs import is_uri, resolve_inputs
from .batch_output import (
    COMPLETION_RECORD,
    JsonLinesDatasink,
    RowsNotWrittenError,
    check_output,
    read_rows,
    write_completion_record,
)
from .batch_progress import files_done_reported
from .batch_rows import SOURCE_COLUMN, UNREADABLE_COLUMN, DetectFiles, ModelSpec
from .errors import DetectorError, InvalidParameterError, os_reason
from .load_options import DEFAULT_LOAD_OPTIONS
from .prefetch import usable_cores
from .ray_session import connect
from .session import parse_device

FORMATS = ("parquet", "jsonl")
# Failed rows `detect batch` names on stderr after its summary (path, page, error); all of them are in the rows.
ERRORS_NAMED = 10


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
    spec: ModelSpec = ModelSpec(),  # noqa: B008 (frozen: the default is never changed, as in its own module)
    concurrency: int = 1,
    cpus_per_actor: float = 1.0,
    num_gpus_per_actor: float = 0.0,
    files_per_batch: int = DEFAULT_FILES_PER_BATCH,
    recursive: bool = DEFAULT_LOAD_OPTIONS.recursive,
    ray_address: Optional[str] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> BatchSummary:
    """Detect text in every input file on Ray and write the rows to ``output``; a summary of the run.
    ``on_progress(files done, files in all)`` is called as the actors finish files (files_done_reported)."""
    if fmt not in FORMATS:
        raise InvalidParameterError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if concurrency < 1 or files_per_batch < 1 or cpus_per_actor <= 0 or num_gpus_per_actor < 0:
        raise InvalidParameterError(
            "concurrency and files_per_batch must be >= 1, cpus_per_actor > 0, num_gpus_per_actor >= 0"
        )
    spec = ModelSpec(**{**spec.__dict__, "device": actor_device(spec.device, num_gpus_per_actor)})
    listed = resolve_inputs(inputs, recursive)
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
    with files_done_reported(len(listed), on_progress) as files_done:
        # names as bytes: a file name that is not UTF-8 has no Arrow string; each actor reads its files itself
        dataset = ray.data.from_items(
            [{SOURCE_COLUMN: os.fsencode(path), UNREADABLE_COLUMN: why} for path, why in listed]
        )
        rows = dataset.map_batches(
            DetectFiles,
            fn_constructor_args=(spec, files_done),
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
        write_completion_record(output, fmt, summary, {**spec.__dict__, **resolved})
    except OSError as exc:
        raise RowsNotWrittenError(f"cannot write {COMPLETION_RECORD} into {output}: {os_reason(exc)}") from None
    return summary


def first_errors(table: pa.Table, count: int = ERRORS_NAMED) -> tuple[tuple[str, Optional[int], str], ...]:
    """(path, page_index, error) of the first ``count`` rows with an error, by path and page."""
    failed = table.filter(pyarrow.compute.is_valid(table.column("error"))).select(["path", "page_index", "error"])
    rows = sorted(failed.to_pylist(), key=lambda row: (row["path"], row["page_index"] is not None, row["page_index"]))
    return tuple((row["path"], row["page_index"], row["error"]) for row in rows[:count])


def library_refusal(text: str) -> Optional[str]:
    """The message of the last DetectorError a Ray error's text (a remote traceback) ends with, if any."""
    found = re.findall(r"^detector\.errors\.\w+: (.+)$", text, flags=re.MULTILINE)
    return found[-1] if found else None
