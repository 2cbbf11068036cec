"""Run detectors over a labelled set and score them: the library behind `detect eval`.

Images are decoded once, before timing, so `seconds` is the detection itself (resize + normalize,
session.run, DB postprocess). With several detectors (``--compare``), each image goes through all
of them in turn, alternating who goes first, so a slow spell on a shared machine hits both alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..api import TextDetection
from ..errors import DetectorError, UnreadableImageError
from ..inputs import DEFAULT_LOAD_OPTIONS, iter_images
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

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images if self.images else 0.0

    @property
    def boxes_per_image(self) -> float:
        return self.score.detections / self.images if self.images else 0.0

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
            "boxes_per_image": self.boxes_per_image,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds_per_image,
        }


def load_labelled_images(images: Sequence[LabelledImage]) -> list[np.ndarray]:
    """Decode every labelled image (BGR), as the detector would; a missing one names its path."""
    decoded = []
    for item in images:
        labelled_at = f" (labelled in {item.source})" if item.source else ""
        if not item.image_path.is_file():
            raise UnreadableImageError(
                f"labelled image {item.image_path}{labelled_at} does not exist (check --image-dir)"
            )
        try:
            pages = list(iter_images(str(item.image_path), DEFAULT_LOAD_OPTIONS))
        except DetectorError as exc:
            raise type(exc)(f"{exc}{labelled_at}") from None
        decoded.append(pages[0].image)
    return decoded


def evaluate(
    detectors: dict[str, TextDetection],
    images: Sequence[LabelledImage],
    decoded: Optional[Sequence[np.ndarray]] = None,
    **overrides: Any,
) -> list[EvaluationRow]:
    """Score each detector on the labelled images; ``overrides`` are detection settings for every call."""
    decoded = list(decoded) if decoded is not None else load_labelled_images(images)
    names = list(detectors)
    scores: dict[str, list[ImageScore]] = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    if decoded:  # one untimed run each: the first session.run allocates and is not representative
        for name in names:
            detectors[name].predict(decoded[0], **overrides)
    for index, (item, image) in enumerate(zip(images, decoded)):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            started = time.perf_counter()
            (result,) = detectors[name].predict(image, **overrides)
            seconds[name] += time.perf_counter() - started
            scores[name].append(score_image(item.labels, result["dt_polys"]))
    return [
        EvaluationRow(
            name=name,
            model_name=detectors[name].model_name,
            model_path=str(detectors[name].model_path),
            model_precision=detectors[name].precision,
            device=detectors[name].device,
            score=combine_scores(scores[name]),
            images=len(decoded),
            seconds=seconds[name],
        )
        for name in names
    ]
