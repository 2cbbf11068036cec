"""Rendered text images shared by the end-to-end, CLI and parity tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tools.dev.sample_image import render_text_image

# Several sizes and aspect ratios, so the resize rules (shrink, keep, round to 32) all take part.
RENDERED_PAGES: dict[str, dict] = {
    "page": dict(
        lines=[
            "Shipping address: 42 Harbour Road",
            "Order 99812-B   qty 3   unit 19.99",
            "Thank you for your purchase!",
        ],
        width=1400,
        font_size=44,
        line_gap=50,
    ),
    "receipt": dict(lines=["TOTAL 12.50", "CASH 20.00", "CHANGE 7.50"], width=420, font_size=30, line_gap=30),
    "banner": dict(lines=["Portable text detection"], width=900, font_size=60, line_gap=20, margin=30),
    "dense": dict(
        lines=[f"line {i}: the five boxing wizards jump quickly" for i in range(8)],
        width=760,
        font_size=22,
        line_gap=16,
    ),
}


def write_rendered_pages(folder: Path) -> dict[str, tuple[Path, list[tuple[int, int, int, int]]]]:
    """Write every rendered page as PNG into folder; returns name -> (path, ground-truth line boxes)."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = {}
    for name, spec in RENDERED_PAGES.items():
        image, boxes = render_text_image(**spec)
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), image)
        pages[name] = (path, boxes)
    return pages


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def polygon_bounds(polygon: np.ndarray) -> tuple[int, int, int, int]:
    xs, ys = polygon[:, 0], polygon[:, 1]
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
