"""Rendered text images shared by the end-to-end, CLI and parity tests (the pages live in
tools/dev/sample_image.py, which the parity label set writes too), and the box comparisons on them."""

from __future__ import annotations

import numpy as np

from tools.dev.sample_image import RENDERED_PAGES, write_rendered_pages

__all__ = ["RENDERED_PAGES", "box_iou", "polygon_bounds", "write_rendered_pages"]


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def polygon_bounds(polygon: np.ndarray) -> tuple[int, int, int, int]:
    xs, ys = polygon[:, 0], polygon[:, 1]
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
