"""Render text images with known line boxes: the demo's sample and the tests' fixtures.

Run as ``python -m tools.dev.sample_image OUT.png`` to write the demo image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
)
SAMPLE_LINES = (
    "PaddleOCR text detection on onnxruntime",
    "Invoice No. 2026-1124    Total: 1,234.56 EUR",
    "The quick brown fox jumps over the lazy dog",
    "portable, fast, and without Paddle",
)


def load_font(size: int) -> ImageFont.ImageFont:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).is_file():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font


def render_text_image(
    lines: Sequence[str],
    width: int = 1000,
    height: Optional[int] = None,
    font_size: int = 36,
    line_gap: int = 40,
    margin: int = 40,
    background: int = 255,
    foreground: int = 0,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A BGR uint8 image with one text line per entry, and each line's ink box (x0, y0, x1, y1)."""
    font = load_font(font_size)
    line_height = font_size + line_gap
    height = height or margin * 2 + line_height * len(lines)
    canvas = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    boxes = []
    for index, text in enumerate(lines):
        origin = (margin, margin + index * line_height)
        draw.text(origin, text, font=font, fill=(foreground,) * 3)
        boxes.append(tuple(int(v) for v in draw.textbbox(origin, text, font=font)))
    return np.ascontiguousarray(np.asarray(canvas)[:, :, ::-1]), boxes


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


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dev.sample_image", description="Write the demo image.")
    parser.add_argument("out", type=Path, metavar="OUT.png", help="image file to write (its suffix picks the format)")
    out = parser.parse_args(argv).out
    image, _ = render_text_image(SAMPLE_LINES)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[:, :, ::-1]).save(out)
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}, {len(SAMPLE_LINES)} text lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
