"""A typed service's use of the public API, which `mypy --strict` must accept as written, and, below
MISTAKES, the calls it must flag (tests/test_typing.py checks both; this file is not run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from detector import DetectionResult, DetectorError, InferenceError, TextDetection


def boxes_of_upload(detector: TextDetection, body: bytes) -> list[dict[str, object]]:
    """An HTTP handler's core: encoded bytes in, boxes and scores out."""
    try:
        results = detector.predict(body, box_thresh=0.5, unclip_ratio=1.8, limit_type="max")
    except InferenceError:
        raise
    except DetectorError as exc:
        return [{"error": str(exc)}]
    return [{"boxes": np.asarray(r["dt_polys"]).tolist(), "scores": list(r["dt_scores"])} for r in results]


def folder_to_json(detector: TextDetection, folder: Path, out: Path) -> int:
    """A batch job: every image of a folder, its JSON beside the others."""
    written = 0
    for result in detector.predict_iter(folder, batch_size=4, recursive=False, thresh=0.3):
        written += len(result.save_all(out))
        json.dumps(result.json)
    return written


def inputs_of_every_kind(detector: TextDetection, image: np.ndarray, page: Image.Image) -> list[DetectionResult]:
    names: list[str] = ["a.png", "b.jpg"]
    paths: list[Path] = [Path("a.png")]
    mixed: tuple[str | Path | np.ndarray, ...] = ("a.png", Path("b.png"), image)
    found = detector.predict(image) + detector.predict(page) + detector.predict(names) + detector.predict(paths)
    return found + detector.predict(mixed) + detector.predict(bytearray(b"..."), max_candidates=100)


def made(model_folder: Path) -> TextDetection:
    return TextDetection(model_dir=model_folder, device="cpu", box_thresh=0.6, precision="int8")


# MISTAKES: each line below must be an error under mypy (the test reads the line numbers from the marks)
def mistakes(detector: TextDetection) -> None:
    detector.predict(12)  # mistake: not an input
    detector.predict("a.png", box_threshold=0.5)  # mistake: misspelt setting
    detector.predict("a.png", box_thresh="0.5")  # mistake: a string for a number
