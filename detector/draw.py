"""Visualization: detected boxes drawn on a copy of the input image."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

BOX_COLOR_BGR: tuple[int, int, int] = (0, 0, 255)
BOX_THICKNESS = 2


def draw_polygons(image: np.ndarray, polygons: Iterable[np.ndarray]) -> np.ndarray:
    """A BGR copy of ``image`` with each polygon outlined in red, as PaddleOCR draws them."""
    canvas = image.copy()
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [points], True, BOX_COLOR_BGR, BOX_THICKNESS)
    return canvas
