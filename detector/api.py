"""TextDetection: PaddleOCR's text-detection module API, composed from the pipeline stages.

load (inputs) -> resize + normalize (preprocess) -> onnxruntime (session) -> DB decode (postprocess)
-> DetectionResult (result). A TextDetection holds only immutable state and one onnxruntime session,
whose run() is thread-safe, so one instance may serve many threads at once.
"""

from __future__ import annotations

import dataclasses
import os
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

from .errors import InvalidParameterError
from .inputs import DEFAULT_LOAD_OPTIONS, LoadedImage, LoadOptions, expand_inputs, load_source, may_hold_pages
from .postprocess import boxes_from_probability_map
from .prefetch import PREFETCH_DEPTH, prefetch
from .preprocess import ResizeInfo, group_by_shape, normalize_image, resize_for_detection
from .result import DetectionResult
from .session import (
    check_detector_signature,
    load_session,
    model_metadata,
    parse_device,
    resolve_model_path,
    run_session,
)
from .settings import METADATA_MODEL_NAME_KEY, DetectionSettings, settings_from_metadata

DEFAULT_MODEL_NAME = "PP-OCRv4_mobile_det"


def validate_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return int(batch_size)


class TextDetection:
    """Detect text lines with an exported PP-OCR DB model on onnxruntime.

    Settings come from the model's ONNX metadata (written by ``make export`` from its inference.yml);
    the keyword arguments here override them for every call, and ``predict`` keywords per call.
    """

    def __init__(
        self,
        model_name: Optional[str] = None,
        model_dir: Optional[Union[str, os.PathLike]] = None,
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
        max_pixels: Optional[int] = None,
        pdf_dpi: Optional[float] = None,
        url_timeout: Optional[float] = None,
    ):
        loading = {"max_pixels": max_pixels, "pdf_dpi": pdf_dpi, "url_timeout": url_timeout}
        self.load_options: LoadOptions = dataclasses.replace(
            DEFAULT_LOAD_OPTIONS, **{k: v for k, v in loading.items() if v is not None}
        )
        requested_name = model_name or DEFAULT_MODEL_NAME
        self.model_path: Path = resolve_model_path(requested_name, model_dir)
        self._session, self.device = load_session(self.model_path, parse_device(device), cpu_threads)
        self._input_name, self._output_name = check_detector_signature(self._session, self.model_path)
        metadata = model_metadata(self._session)
        self.model_name: str = metadata.get(METADATA_MODEL_NAME_KEY) or requested_name
        self.settings: DetectionSettings = settings_from_metadata(metadata, self.model_name).with_overrides(
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
        return f"TextDetection(model_name={self.model_name!r}, model_path='{self.model_path}', device={self.device!r})"

    def predict_iter(
        self, input: Any, batch_size: int = 1, recursive: bool = False, **overrides: Any
    ) -> Iterator[DetectionResult]:
        """Yield one DetectionResult per image (or PDF page), in input order, as each batch finishes.

        ``input``: a path, folder (``recursive=True`` to descend), glob pattern, http(s) URL, bytes,
        numpy array (BGR, gray, BGRA; uint8 or uint16), PIL image, PDF, or a list of those.

        ``overrides``: any of limit_side_len, limit_type, max_side_limit, thresh, box_thresh,
        unclip_ratio, max_candidates, use_dilation, score_mode, box_type (None keeps the default).
        """
        settings = self.settings.with_overrides(**overrides)
        batch_size = validate_batch_size(batch_size)
        options = dataclasses.replace(self.load_options, recursive=bool(recursive))
        sources = expand_inputs(input, options)
        images = (image for source in sources for image in load_source(source, options))

        def prepared_chunks() -> Iterator[Tuple[List[LoadedImage], "_Prepared"]]:
            while True:
                chunk = list(islice(images, batch_size))
                if not chunk:
                    return
                yield chunk, self._prepare(chunk, settings)

        # Decoding and resizing the next images overlaps session.run and postprocess of these ones
        # (OpenCV, numpy and onnxruntime release the GIL); results and errors keep input order.
        # one image has nothing to overlap with: a thread would only add its start-up (~0.5 ms)
        depth = PREFETCH_DEPTH if len(sources) > 1 or (sources and may_hold_pages(sources[0])) else 0
        for chunk, prepared in prefetch(prepared_chunks(), depth):
            yield from self._finish(chunk, prepared, settings)

    def predict(self, input: Any, batch_size: int = 1, recursive: bool = False, **overrides: Any) -> List[DetectionResult]:
        """All results as a list; see :meth:`predict_iter` to stream large folders."""
        return list(self.predict_iter(input, batch_size=batch_size, recursive=recursive, **overrides))

    def detect_loaded(self, loaded: List[LoadedImage], **overrides: Any) -> List[DetectionResult]:
        """Detect on images already loaded (one batch); used by the CLI to report bad files one by one."""
        return self._detect(loaded, self.settings.with_overrides(**overrides))

    def _detect(self, loaded: List[LoadedImage], settings: DetectionSettings) -> List[DetectionResult]:
        return self._finish(loaded, self._prepare(loaded, settings), settings)

    def _prepare(self, loaded: List[LoadedImage], settings: DetectionSettings) -> "_Prepared":
        """Resize every image and normalize each same-shaped group straight into its batch tensor."""
        resized = [
            resize_for_detection(item.image, settings.limit_side_len, settings.limit_type, settings.max_side_limit)
            for item in loaded
        ]
        batches = []
        for indices in group_by_shape([image for image, _ in resized]):
            height, width, channels = resized[indices[0]][0].shape
            batch = np.empty((len(indices), channels, height, width), dtype=np.float32)
            for slot, index in enumerate(indices):
                normalize_image(resized[index][0], settings.mean, settings.std, settings.scale, out=batch[slot])
            batches.append((indices, batch))
        return _Prepared([info for _, info in resized], batches)

    def _finish(self, loaded: List[LoadedImage], prepared: "_Prepared", settings: DetectionSettings
                ) -> List[DetectionResult]:
        """session.run on each batch, then the DB postprocess of every map, in input order."""
        maps: List[Optional[np.ndarray]] = [None] * len(loaded)
        for indices, batch in prepared.batches:
            for index, prob_map in zip(indices, run_session(self._session, self._input_name, self._output_name, batch)):
                maps[index] = prob_map
        results = []
        for item, info, prob_map in zip(loaded, prepared.infos, maps):
            polys, scores = boxes_from_probability_map(
                prob_map,
                info,
                thresh=settings.thresh,
                box_thresh=settings.box_thresh,
                unclip_ratio=settings.unclip_ratio,
                max_candidates=settings.max_candidates,
                use_dilation=settings.use_dilation,
                score_mode=settings.score_mode,
                box_type=settings.box_type,
            )
            results.append(
                DetectionResult(
                    {
                        "input_path": item.input_path,
                        "page_index": item.page_index,
                        "dt_polys": polys,
                        "dt_scores": scores,
                    },
                    input_img=item.image,
                )
            )
        return results


@dataclasses.dataclass
class _Prepared:
    """One chunk ready for the network: each image's resize mapping, and (indices, NCHW batch) groups."""

    infos: List[ResizeInfo]
    batches: List[Tuple[List[int], np.ndarray]]
