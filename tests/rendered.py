"""Rendered text images shared by the end-to-end, CLI and parity tests (the pages live in
tools/dev/sample_image.py, which the parity label set writes too), and the box comparisons on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tools.dev.sample_image import RENDERED_PAGES, write_rendered_pages

__all__ = [
    "RENDERED_PAGES",
    "assert_same_boxes",
    "box_iou",
    "boxes_on_pages",
    "polygon_bounds",
    "write_rendered_pages",
]


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def polygon_bounds(polygon: np.ndarray) -> tuple[int, int, int, int]:
    xs, ys = polygon[:, 0], polygon[:, 1]
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def boxes_on_pages(model: Any, pages: list[Path]) -> list[np.ndarray]:
    """model's dt_polys on each page (a TextDetection)."""
    return [model.predict(str(page))[0]["dt_polys"] for page in pages]


def assert_same_boxes(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    """Same count on every page, every corner within 1 px (the parity tests' rule); no page without boxes."""
    for got, expected in zip(ours, theirs):
        assert len(got) == len(expected) > 0
        assert np.abs(np.asarray(got, np.int32) - np.asarray(expected, np.int32)).max() <= 1
