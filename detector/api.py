"""TextDetection: PaddleOCR's text-detection module API, composed from the pipeline stages.

load (inputs) -> resize + normalize (preprocess) -> onnxruntime (session) -> DB decode (postprocess)
-> DetectionResult (result), one chunk of images at a time (image_batch), on the model file model_opening
opens. A TextDetection holds settings fixed at construction and onnxruntime sessions (the main one; for
folders, a worker session opened once under a lock), whose run() is thread-safe, so one instance may serve
many threads at once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .cpu_features import cpu_flags, int8_without_vnni, made_for_another_cpu, this_cpu_block
from .errors import DetectorError, InvalidModelError, InvalidParameterError
from .image_batch import PreparedImages, detection_results, prepare_images, probability_maps
from .inputs import (
    LoadedImage,
    PredictInput,
    Source,
    expand_inputs,
    fetched_now,
    group_sources,
    load_source,
    may_give_several_images,
    stored_bytes,
)
from .load_options import DEFAULT_LOAD_OPTIONS, LoadOptions
from .model_opening import DEFAULT_MODEL_NAME, check_model_name, open_model
from .onnxruntime_import import require_onnxruntime
from .paddleocr_compat import check_ignored_keywords
from .postprocess import opencv_boxes_note
from .precision import DEFAULT_PRECISION, precision_of, variant_made_from_another_file
from .prefetch import folder_workers, ordered_map, prefetch, read_ahead_depth, threads_within_cores
from .preprocess import check_input_shape, check_shape_bucket
from .process_lock import ProcessLock
from .result import DetectionResult
from .session import check_detector_signature, fixed_input_size, load_session, model_metadata, parse_device
from .session_run import uses_io_binding
from .settings import DetectionSettings, SettingOverrides, settings_for_model_file, true_or_false

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

logger = logging.getLogger(__name__)


@functools.cache
def _warn_of_another_opencv_once() -> None:
    """postprocess.opencv_boxes_note as a warning, once per process."""
    note = opencv_boxes_note()
    if note:
        logger.warning("%s", note)


def whole_number_at_least_one(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidParameterError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def validate_batch_size(batch_size: Any) -> int:
    if batch_size is None:  # PaddleOCR's predict default: one image per batch
        return 1
    return whole_number_at_least_one("batch_size", batch_size)


def _file_identity(path: Path) -> Optional[tuple[int, int, int, int]]:
    """(device, inode, size, modification time) of a file, None where it cannot be read: a file replaced (a new
    inode: os.replace) or rewritten in place (size or time) is another."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


class TextDetection:
    """Detect text lines with an exported PP-OCR DB model on onnxruntime.

    Settings come from the model's ONNX metadata (written by ``make export`` from its inference.yml),
    else from the inference.yml beside the file (PaddlePaddle's ONNX releases), else from the catalog's
    record for a known ``model_name``; the keyword arguments here override them for every call, and
    ``predict`` keywords per call.
    """

    # PaddleOCR's TextDetection.default_model_name: the model used without model_name or model_dir
    default_model_name: str = DEFAULT_MODEL_NAME

    def __init__(
        self,
        model_name: Optional[str] = None,
        model_dir: Optional[Union[str, os.PathLike[str]]] = None,
        device: Optional[str] = None,
        limit_side_len: Optional[int] = None,
        limit_type: Optional[str] = None,
        max_side_limit: Optional[int] = None,
        thresh: Optional[float] = None,
        box_thresh: Optional[float] = None,
        unclip_ratio: Optional[float] = None,
        *,
        max_candidates: Optional[int] = None,
        use_dilation: Optional[bool] = None,
        score_mode: Optional[str] = None,
        box_type: Optional[str] = None,
        cpu_threads: Optional[int] = None,
        # False where several busy processes share the cores (session.SLEEP_BETWEEN_SECTIONS); True:
        # onnxruntime's threads spin while a run lasts and stop after it (session.SPIN_WITHIN_RUN)
        cpu_spinning: bool = True,
        max_pixels: Optional[int] = None,
        pdf_dpi: Optional[float] = None,
        url_timeout: Optional[float] = None,
        input_shape: Optional[Sequence[int]] = None,
        # pad each resized image (bottom/right) up to multiples of this many pixels; None: off
        shape_bucket: Optional[int] = None,
        # PaddleOCR's Paddle-engine keywords: accepted, ignored with one warning each (paddleocr_compat.py)
        engine: Optional[str] = None,
        engine_config: Optional[dict[str, Any]] = None,
        enable_hpi: Optional[bool] = None,
        use_tensorrt: Optional[bool] = None,
        enable_mkldnn: Optional[bool] = None,
        mkldnn_cache_capacity: Optional[int] = None,
        enable_cinn: Optional[bool] = None,
        # "fp32" | "fp16" | "int8": the exported variant beside the fp32 file (precision.py); PaddleOCR's
        # own values fp32 / fp16 keep their meaning
        precision: Optional[str] = None,
    ):
        """Open the model and its onnxruntime session.

        ``model_name``: a known name (``detect --list-models``), looked up in the checkout's models/,
        ``$DETECTOR_MODELS`` and the download cache (downloaded where PaddlePaddle publishes it);
        ``model_dir``: a folder holding inference.onnx (and inference.yml) or an .onnx file. ``device``:
        None (the GPU where onnxruntime's CUDA provider loads, else the CPU), "cpu", "gpu", "gpu:N".
        ``precision``: "fp32", "int8" or "fp16", the variant written beside the fp32 file. The detection
        settings (limit_side_len … box_type) default to the model's own (its metadata or inference.yml);
        ``input_shape`` (3, H, W) resizes every image to one size; ``shape_bucket`` pads resized images up to
        multiples of N. Loading: ``max_pixels``, ``pdf_dpi``, ``url_timeout``. PaddleOCR's Paddle-engine
        keywords are accepted and ignored, one warning each.

        Raises ModelNotFoundError, InvalidModelError, InvalidParameterError or DeviceUnavailableError,
        each saying what to do instead.
        """
        check_ignored_keywords(
            {
                "engine": engine,
                "engine_config": engine_config,
                "enable_hpi": enable_hpi,
                "use_tensorrt": use_tensorrt,
                "enable_mkldnn": enable_mkldnn,
                "mkldnn_cache_capacity": mkldnn_cache_capacity,
                "enable_cinn": enable_cinn,
            }
        )
        # (C, H, W): every image resized to exactly H x W, as PaddleX's DetResizeForTest(input_shape=...) does
        self.input_shape: Optional[tuple[int, int, int]] = check_input_shape(input_shape)
        # The default resize, then zero padding (the mean colour once normalized) on the bottom and
        # right up to multiples of shape_bucket; the map is cropped back before the DB postprocess.
        # Fewer distinct network shapes: fewer cuDNN plans on a GPU, fuller batches anywhere.
        self.shape_bucket: Optional[int] = check_shape_bucket(shape_bucket)
        if self.shape_bucket is not None and self.input_shape is not None:
            raise InvalidParameterError(
                "give input_shape or shape_bucket, not both: input_shape already makes every image one size"
            )
        if cpu_threads is not None:  # None: onnxruntime's choice
            cpu_threads = threads_within_cores(whole_number_at_least_one("cpu_threads", cpu_threads))
        loading: dict[str, Any] = {"max_pixels": max_pixels, "pdf_dpi": pdf_dpi, "url_timeout": url_timeout}
        self.load_options: LoadOptions = dataclasses.replace(
            DEFAULT_LOAD_OPTIONS, **{k: v for k, v in loading.items() if v is not None}
        )
        # With model_dir alone the file (its metadata or yml) names the model; the default name is for lookups.
        requested_name = (
            check_model_name(model_name) if model_name else (None if model_dir is not None else DEFAULT_MODEL_NAME)
        )
        require_onnxruntime()
        self.cpu_spinning: bool = true_or_false("cpu_spinning", cpu_spinning)
        self.model_path: Path
        self.model_path, self._session, self.device = open_model(
            model_name, model_dir, requested_name, precision, device, cpu_threads, self.cpu_spinning
        )
        self.precision: str = precision_of(self.model_path)
        # Many images on the CPU run folder_workers at a time, each on its share of the intra-op threads,
        # through a second session opened on first use (prefetch.folder_workers); 1 runs them one by one.
        self.folder_workers: int
        self.folder_workers, self._worker_threads = (
            folder_workers(cpu_threads, model_bytes=self.model_path.stat().st_size) if self.device == "cpu" else (1, 0)
        )
        self._worker_session: Any = None
        self._worker_session_lock = ProcessLock()  # new in a forked child (one held at the fork stayed held)
        # the file as it was opened: the worker session, opened later from the path, must be the same model
        self._model_file = _file_identity(self.model_path)
        self._made_in_process = os.getpid()  # a process forked after this one inherits it: _warn_if_forked
        self._input_name, self._output_name = check_detector_signature(self._session, self.model_path)
        fixed_size = fixed_input_size(self._session)
        if fixed_size is not None:  # a file exported for one size takes no other: every image is resized to it
            if self.shape_bucket is not None or (self.input_shape is not None and self.input_shape[1:] != fixed_size):
                raise InvalidParameterError(
                    f"{self.model_path} takes {fixed_size[0]}x{fixed_size[1]} images only; "
                    f"leave out input_shape and shape_bucket (it is resized to that size)"
                )
            self.input_shape = (3, *fixed_size)
        self._io_binding: bool = uses_io_binding(self._session.get_providers())
        # Network inputs above this many pixels hand their arena memory back after the run (None: never):
        # detect serve sets it, where one large request would otherwise keep its memory for good
        # (session_run.arena_shrinking_run says what it costs).
        self.shrink_arena_above: Optional[int] = None
        metadata = model_metadata(self._session)
        name, settings, self.settings_source = settings_for_model_file(metadata, self.model_path, requested_name)
        if self.precision != DEFAULT_PRECISION:
            stale = variant_made_from_another_file(self.model_path, metadata, requested_name)
            if stale:
                raise InvalidModelError(stale)
        other_cpu = made_for_another_cpu(metadata, this_cpu_block()) if self.device == "cpu" else None
        if other_cpu:
            logger.warning("%s: %s", self.model_path, other_cpu)
        slow_int8 = int8_without_vnni(cpu_flags()) if self.device == "cpu" and self.precision == "int8" else None
        if slow_int8:
            logger.warning("%s: %s", self.model_path, slow_int8)
        _warn_of_another_opencv_once()
        self.model_name: str = name
        self.settings: DetectionSettings = settings.with_overrides(
            limit_side_len=limit_side_len,
            limit_type=limit_type,
            max_side_limit=max_side_limit,
            thresh=thresh,
            box_thresh=box_thresh,
            unclip_ratio=unclip_ratio,
            max_candidates=max_candidates,
            use_dilation=use_dilation,
            score_mode=score_mode,
            box_type=box_type,
        )

    def __repr__(self) -> str:
        return (
            f"TextDetection(model_name={self.model_name!r}, model_path='{self.model_path}', "
            f"precision={self.precision!r}, device={self.device!r})"
        )

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers of the session, the one in use first."""
        return list(self._open_session().get_providers())

    def close(self) -> None:
        """Release the onnxruntime sessions (PaddleOCR's close()); predicting afterwards raises DetectorError."""
        with self._worker_session_lock:  # a folder predict opening the worker session now does not bring it back
            self._session = None
            self._worker_session = None

    def __reduce__(self) -> Any:
        raise TypeError(
            "a TextDetection cannot be pickled: it holds onnxruntime sessions. Create one in each process "
            "instead (in a multiprocessing Pool's initializer, a Ray actor's __init__), once per process"
        )

    def __enter__(self) -> TextDetection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def predict_iter(
        self,
        input: PredictInput,
        batch_size: Optional[int] = 1,
        recursive: Optional[bool] = None,
        **overrides: Unpack[SettingOverrides],
    ) -> Iterator[DetectionResult]:
        """Yield one DetectionResult per image (or PDF page), in input order, as each batch finishes.

        ``input``: a path, folder (with its subfolders, as PaddleOCR reads one; ``recursive=False``: only
        its own files), glob pattern, http(s) URL, bytes, numpy array (BGR, gray, BGRA; uint8, uint16 or
        float), PIL image, PDF or TIFF (a result per page), or a list or tuple of those.

        ``overrides``: any of limit_side_len, limit_type, max_side_limit, thresh, box_thresh,
        unclip_ratio, max_candidates, use_dilation, score_mode, box_type (None keeps the default).

        Errors are DetectorError subclasses, raised as iteration reaches them (a bad setting or a missing
        path at the first ``next``); results before a failing input have been yielded.
        """
        settings = self.settings.with_overrides(**overrides)
        batch_size = validate_batch_size(batch_size)
        options = (
            self.load_options
            if recursive is None
            else dataclasses.replace(self.load_options, recursive=true_or_false("recursive", recursive))
        )
        sources = expand_inputs(input, options)
        if len(sources) == 1 and sources[0].kind == "url":  # one image or a PDF's pages: its bytes say which
            sources = [fetched_now(sources[0], options)]
        # one image has nothing to overlap with: it runs on the session with every intra-op thread
        many = may_give_several_images(sources)
        if many and self.folder_workers > 1:
            yield from self._predict_in_workers(sources, options, settings, batch_size)
        else:
            yield from self._predict_serially(sources, options, settings, batch_size, read_ahead=many)

    def _predict_in_workers(
        self, sources: list[Source], options: LoadOptions, settings: DetectionSettings, batch_size: int
    ) -> Iterator[DetectionResult]:
        """folder_workers threads, each reading and running its own files (batch_size at a time) on the
        worker session; a PDF or TIFF is read here, page by page, its pages run batch_size at a time."""
        self._open_worker_session()  # opened here, before the workers start; closed: the error now

        def work() -> Iterator[_Work]:
            for paged, group in group_sources(sources, batch_size):
                if not paged:
                    yield _Work(sources=group)
                    continue
                pages = load_source(group[0], options)
                while chunk := list(islice(pages, batch_size)):
                    yield _Work(images=chunk)

        def detect(item: _Work) -> list[DetectionResult]:
            loaded = item.images or [image for source in item.sources for image in load_source(source, options)]
            session = self._open_worker_session()  # close() stops the work still to come
            return [
                result
                for start in range(0, len(loaded), batch_size)
                for result in self._detect(loaded[start : start + batch_size], settings, session)
            ]

        def cost(item: _Work) -> Optional[int]:
            return stored_bytes(item.sources) if item.sources else None

        def holds_images(item: _Work) -> bool:  # a PDF's or TIFF's pages, read as they are drawn
            return bool(item.images)

        for results in ordered_map(detect, work(), self.folder_workers, cost=cost, holds_images=holds_images):
            self._open_session()  # closed while the caller iterated: the same error as the serial loop's
            yield from results

    def _predict_serially(
        self,
        sources: list[Source],
        options: LoadOptions,
        settings: DetectionSettings,
        batch_size: int,
        read_ahead: bool,
    ) -> Iterator[DetectionResult]:
        """One chunk at a time on the full session; with ``read_ahead``, decoding and resizing the next
        chunk overlaps session.run and postprocess of this one where the machine has a core to spare."""
        images = (image for source in sources for image in load_source(source, options))

        def prepared_chunks() -> Iterator[tuple[list[LoadedImage], PreparedImages]]:
            while chunk := list(islice(images, batch_size)):
                yield chunk, prepare_images(chunk, settings, self.input_shape, self.shape_bucket)

        for chunk, prepared in prefetch(prepared_chunks(), read_ahead_depth() if read_ahead else 0):
            yield from self._finish(chunk, prepared, settings, self._open_session())

    def predict(
        self,
        input: PredictInput,
        batch_size: Optional[int] = 1,
        recursive: Optional[bool] = None,
        **overrides: Unpack[SettingOverrides],
    ) -> list[DetectionResult]:
        """All results as a list (the arguments and errors of :meth:`predict_iter`, which streams large
        folders instead)."""
        return list(self.predict_iter(input, batch_size=batch_size, recursive=recursive, **overrides))

    def detect_loaded(
        self, loaded: list[LoadedImage], *, in_worker: bool = False, **overrides: Unpack[SettingOverrides]
    ) -> list[DetectionResult]:
        """Detect on images already loaded (one batch); used by the CLI to report bad files one by one.

        ``in_worker``: the caller is one of :attr:`folder_workers` threads running batches at once; the
        batch runs on the session sized for them (its share of the intra-op threads).
        """
        session = self._open_worker_session() if in_worker and self.folder_workers > 1 else self._open_session()
        return self._detect(loaded, self.settings.with_overrides(**overrides), session)

    def _open_session(self) -> Any:
        """The onnxruntime session, or a DetectorError once close() has released it."""
        if self._session is None:
            raise DetectorError("this TextDetection was closed; create a new one to predict again")
        return self._session

    def _open_worker_session(self) -> Any:
        """The CPU session the folder workers share, each run on _worker_threads intra-op threads
        (opened on first use: a single-image caller never pays for it)."""
        with self._worker_session_lock:
            session = self._open_session()  # closed (before, or while another thread opened it): the same error
            if self._worker_session is None:
                if _file_identity(self.model_path) != self._model_file:
                    # replaced or removed since (a deploy, a cache clean-up): the workers share the session opened
                    # then, never another model's (a new file ran the folders while single images ran the old)
                    logger.warning(
                        "%s changed on disk since this TextDetection opened it: it keeps running the model it "
                        "opened then (create a new TextDetection for the new file)",
                        self.model_path,
                    )
                    self._worker_session = session
                else:
                    self._worker_session, _ = load_session(
                        self.model_path, parse_device("cpu"), self._worker_threads, spinning=self.cpu_spinning
                    )
            return self._worker_session

    def _detect(self, loaded: list[LoadedImage], settings: DetectionSettings, session: Any) -> list[DetectionResult]:
        return self._finish(
            loaded, prepare_images(loaded, settings, self.input_shape, self.shape_bucket), settings, session
        )

    def _warn_if_forked(self) -> None:
        """One warning in a forked process that uses a detector made before the fork (then not again)."""
        made_in = self._made_in_process
        if made_in == os.getpid():
            return
        self._made_in_process = os.getpid()
        logger.warning(
            "this TextDetection was made in process %d, before a fork: in this process (%d) onnxruntime runs it "
            "on one thread, and a process forked after onnxruntime was imported hangs in onnxruntime's clean-up "
            "when it leaves through Python's own shutdown (a gunicorn --preload worker; multiprocessing's workers "
            "leave by os._exit and do not). Make the detector in each worker process instead (README: Processes)",
            made_in,
            os.getpid(),
        )

    def _finish(
        self, loaded: list[LoadedImage], prepared: PreparedImages, settings: DetectionSettings, session: Any
    ) -> list[DetectionResult]:
        """session.run on each batch, then the DB postprocess of every map, in input order."""
        self._warn_if_forked()
        maps = probability_maps(
            session, self._input_name, self._output_name, prepared, self._io_binding, self.shrink_arena_above
        )
        return detection_results(loaded, prepared, maps, settings)


@dataclasses.dataclass
class _Work:
    """What one folder worker reads and runs: files (``sources``) or pages already read (``images``)."""

    sources: list[Source] = dataclasses.field(default_factory=list)
    images: list[LoadedImage] = dataclasses.field(default_factory=list)
