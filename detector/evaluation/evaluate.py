"""Run detectors over a labelled set and score them: the library behind `detect eval`.

Each image is decoded just before its detections and let go after them, so a set of any size holds
one image at a time; decoding is outside the timed region, so `seconds` is the detection itself
(resize + normalize, session.run, DB postprocess). With several detectors (``--compare``), each image
goes through all of them in turn, alternating who goes first, so a slow spell on a shared machine hits
both alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..api import TextDetection
from ..errors import DetectorError, UnreadableImageError
from ..inputs import iter_images
from ..load_options import DEFAULT_LOAD_OPTIONS, LoadOptions
from .labels import LabelledImage
from .metric import ImageScore, SetScore, combine_scores, score_image


@dataclass(frozen=True)
class EvaluationRow:
    """One detector's result on one labelled set."""

    name: str  # what the user asked for: a model name, path or precision
    model_name: str
    model_path: str
    model_precision: str
    device: str
    score: SetScore
    images: int
    seconds: float  # detection time summed over the images
    boxes: int = 0  # boxes the detector returned, before the metric drops invalid and don't-care ones

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images if self.images else 0.0

    @property
    def boxes_per_image(self) -> float:
        """Boxes the detector returned per image (score.detections counts only those the metric kept)."""
        return self.boxes / self.images if self.images else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model_name,
            "model_path": self.model_path,
            "model_precision": self.model_precision,
            "device": self.device,
            "precision": self.score.precision,
            "recall": self.score.recall,
            "hmean": self.score.hmean,
            "images": self.images,
            "labels": self.score.labels,
            "detections": self.score.detections,
            "matched": self.score.matched,
            "boxes": self.boxes,
            "boxes_per_image": self.boxes_per_image,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds_per_image,
        }


def _labelled_at(item: LabelledImage) -> str:
    return f" (labelled in {item.source})" if item.source else ""


def check_labelled_images_exist(images: Sequence[LabelledImage]) -> None:
    """Fail before any detection runs when a labelled image is missing (a stat each; nothing is decoded)."""
    for item in images:
        if not item.image_path.is_file():
            # a label file written on Windows names its images with backslashes, which are no separator here
            windows = "\\" in str(item.image_path) and os.sep != "\\"
            advice = (
                "its path holds backslashes, Windows' separator: write / instead" if windows else "check --image-dir"
            )
            raise UnreadableImageError(
                f"labelled image {item.image_path}{_labelled_at(item)} does not exist ({advice})"
            )


def decode_labelled_image(item: LabelledImage, options: LoadOptions = DEFAULT_LOAD_OPTIONS) -> np.ndarray:
    """One labelled image decoded (BGR) as the detector would (``options``: its load options, max_pixels
    among them); a missing or broken one names its label."""
    check_labelled_images_exist([item])
    try:
        pages = list(iter_images(str(item.image_path), options))
    except DetectorError as exc:
        raise type(exc)(f"{exc}{_labelled_at(item)}") from None
    return pages[0].image


def load_labelled_images(images: Sequence[LabelledImage]) -> list[np.ndarray]:
    """Every labelled image decoded at once: for callers that reuse the pixels (small rendered sets);
    `evaluate` decodes one image at a time instead."""
    return [decode_labelled_image(item) for item in images]


def _one_at_a_time(images: Sequence[LabelledImage], options: LoadOptions) -> Iterator[np.ndarray]:
    check_labelled_images_exist(images)  # a missing file fails now, not after an hour of detection
    for item in images:
        yield decode_labelled_image(item, options)


def _timed_detection(
    detector: TextDetection, image: np.ndarray, item: LabelledImage, overrides: dict[str, Any]
) -> tuple[float, int, ImageScore]:
    """Seconds of one predict, the boxes it returned, and their score; the result (which holds the
    image) is not kept."""
    started = time.perf_counter()
    (result,) = detector.predict(image, **overrides)
    seconds = time.perf_counter() - started
    return seconds, len(result["dt_polys"]), score_image(item.labels, result["dt_polys"])


def evaluate(
    detectors: dict[str, TextDetection],
    images: Sequence[LabelledImage],
    decoded: Optional[Sequence[np.ndarray]] = None,
    on_image: Callable[[], None] = lambda: None,
    **overrides: Any,
) -> list[EvaluationRow]:
    """Score each detector on the labelled images; ``overrides`` are detection settings for every call.
    ``decoded``: the images' pixels, already decoded; without it each is decoded just before its turn.
    ``on_image`` is called after each image is scored by every detector (a progress bar). Images are read
    with the first detector's load options (its max_pixels: `detect eval --max-pixels` gives all the same)."""
    options = next(iter(detectors.values())).load_options if detectors else DEFAULT_LOAD_OPTIONS
    pixels = iter(decoded) if decoded is not None else _one_at_a_time(images, options)
    names = list(detectors)
    scores: dict[str, list[ImageScore]] = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    boxes = {name: 0 for name in names}
    for index, (item, image) in enumerate(zip(images, pixels)):
        if index == 0:  # one untimed run each: the first session.run allocates and is not representative
            for name in names:
                detectors[name].predict(image, **overrides)
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            elapsed, found, score = _timed_detection(detectors[name], image, item, overrides)
            seconds[name] += elapsed
            boxes[name] += found
            scores[name].append(score)
        del image  # let these pixels go before the next image is decoded
        on_image()
    return [
        EvaluationRow(
            name=name,
            model_name=detectors[name].model_name,
            model_path=str(detectors[name].model_path),
            model_precision=detectors[name].precision,
            device=detectors[name].device,
            score=combine_scores(scores[name]),
            images=len(scores[name]),
            seconds=seconds[name],
            boxes=boxes[name],
        )
        for name in names
    ]
