"""Render a seeded labelled text-detection set in PaddleOCR's det label format.

    python -m tools.dev.labelled_set OUT_DIR [--count N] [--seed S] [--kinds document,scene]

writes OUT_DIR/images/<name>.jpg and OUT_DIR/labels.txt (``images/<name>.jpg<TAB>[{"transcription",
"points"}, ...]``). Two kinds of image, alternating:

- document: pages of several sizes in one or two columns of text lines, rotated slightly (±3°),
  with sensor noise and JPEG artefacts;
- scene: text lines of several sizes and colours on textured backgrounds, each rotated up to ±30°.

Each label is the exact quadrilateral of a line's ink box under the same affine transform that
moved the pixels. Lines drawn too small to read (below MIN_READABLE_PX) are labelled "###", the
don't-care mark. The same seed gives the same files, byte for byte, on the same fonts.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tools.dev.sample_image import FONT_CANDIDATES

# DejaVu faces used, by file name: a fixed list, so extra fonts on a machine do not change the set.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansCondensed.ttf",
)
KINDS = ("document", "scene")
MIN_READABLE_PX = 10  # lines with a smaller font size are labelled don't care ("###")
LABEL_FILE = "labels.txt"
WORDS = [
    "invoice",
    "total",
    "amount",
    "date",
    "order",
    "customer",
    "address",
    "shipping",
    "payment",
    "account",
    "balance",
    "number",
    "street",
    "harbour",
    "road",
    "city",
    "station",
    "market",
    "coffee",
    "bakery",
    "museum",
    "garden",
    "river",
    "bridge",
    "north",
    "south",
    "detection",
    "portable",
    "model",
    "engine",
    "window",
    "paper",
    "report",
    "summary",
    "figure",
    "table",
    "section",
    "chapter",
    "page",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "open",
    "close",
    "monday",
    "friday",
    "january",
    "october",
    "price",
    "discount",
    "receipt",
    "change",
    "cash",
    "card",
    "tax",
    "net",
    "gross",
    "weight",
    "length",
    "width",
    "height",
    "signal",
    "traffic",
    "parking",
    "exit",
]


@dataclass(frozen=True)
class TextRegion:
    transcription: str
    points: np.ndarray  # (4, 2) float, clockwise from the top-left of the upright text


def find_fonts() -> list[str]:
    """Paths of the DejaVu faces in FONT_FILES that fc-list knows (else sample_image's candidates)."""
    found = {}
    if shutil.which("fc-list"):
        listing = subprocess.run(["fc-list", ":", "file"], capture_output=True, text=True, check=False).stdout
        for line in listing.splitlines():
            path = line.split(":")[0].strip()
            if Path(path).name in FONT_FILES:
                found.setdefault(Path(path).name, path)
    if not found:
        found = {Path(path).name: path for path in FONT_CANDIDATES if Path(path).is_file()}
    if not found:
        raise SystemExit("labelled_set: no DejaVu fonts found (install fonts-dejavu-core)")
    return [found[name] for name in FONT_FILES if name in found]


def _line_text(rng: random.Random, words: tuple[int, int]) -> str:
    parts = []
    for _ in range(rng.randint(*words)):
        roll = rng.random()
        if roll < 0.15:
            parts.append(f"{rng.randint(1, 9999)}")
        elif roll < 0.22:
            parts.append(f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}")
        else:
            word = rng.choice(WORDS)
            parts.append(word.capitalize() if rng.random() < 0.2 else word)
    return " ".join(parts)


def _rotation(angle_deg: float, center: tuple[float, float], shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(center, angle_deg, 1.0)
    matrix[:, 2] += shift
    return matrix


def _transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _box_corners(box: Sequence[float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _finish(
    image: np.ndarray, rng: random.Random, nprng: np.random.Generator, noise: tuple[float, float]
) -> np.ndarray:
    """Sensor noise, then JPEG artefacts (the image is saved as JPEG later at this quality)."""
    sigma = rng.uniform(*noise)
    if rng.random() < 0.3:  # out of focus
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.6, 1.2))
    noisy = image.astype(np.float32) + nprng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def render_document(
    rng: random.Random, nprng: np.random.Generator, fonts: Sequence[str]
) -> tuple[np.ndarray, list[TextRegion]]:
    """A page of one or two columns of lines, rotated by at most ±3° about its centre."""
    width = rng.choice((640, 800, 1000, 1240, 1600))
    height = int(width * rng.choice((0.75, 1.0, 1.41)))
    columns = 1 if width < 800 or rng.random() < 0.5 else 2
    font_size = rng.randint(11, 34) if width >= 800 else rng.randint(10, 22)
    font = ImageFont.truetype(rng.choice(fonts), font_size)
    margin = rng.randint(30, 70)
    gutter = max(60, width // 12)
    column_width = (width - 2 * margin - (columns - 1) * gutter) // columns
    page = Image.new("L", (width, height), rng.randint(225, 255))
    draw = ImageDraw.Draw(page)
    ink = rng.randint(0, 60)
    regions = []
    line_step = int(font_size * rng.uniform(1.35, 2.1))
    for column in range(columns):
        x = margin + column * (column_width + gutter)
        y = margin
        while y + line_step < height - margin:
            if rng.random() < 0.12:  # paragraph break
                y += line_step
                continue
            text = _line_text(rng, (2, 9))
            while text and draw.textlength(text, font=font) > column_width:
                text = text.rsplit(" ", 1)[0] if " " in text else ""
            if text:
                draw.text((x, y), text, font=font, fill=ink)
                box = draw.textbbox((x, y), text, font=font)
                regions.append((text, _box_corners(box)))
            y += line_step
    image = cv2.cvtColor(np.asarray(page), cv2.COLOR_GRAY2BGR)
    angle = rng.uniform(-3.0, 3.0)
    matrix, size = _expanding_rotation(angle, width, height)
    image = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
    labels = [
        TextRegion(text if font_size >= MIN_READABLE_PX else "###", _transform(corners, matrix))
        for text, corners in regions
    ]
    return _finish(image, rng, nprng, (2.0, 10.0)), labels


def _expanding_rotation(angle: float, width: int, height: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Rotation about the centre onto a canvas large enough to hold every corner."""
    radians = np.deg2rad(abs(angle))
    new_w = int(np.ceil(width * np.cos(radians) + height * np.sin(radians)))
    new_h = int(np.ceil(width * np.sin(radians) + height * np.cos(radians)))
    matrix = _rotation(angle, (width / 2.0, height / 2.0), ((new_w - width) / 2.0, (new_h - height) / 2.0))
    return matrix, (new_w, new_h)


def _texture(nprng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured background: a colour gradient, blurred blobs at two scales and fine grain."""
    base = nprng.uniform(40, 215, 3)
    ramp = nprng.uniform(-60, 60, 3)
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[np.newaxis, :, np.newaxis]
    image = np.broadcast_to(base + ramp * xs, (height, width, 3)).astype(np.float32).copy()
    for scale, amplitude in ((48, 35.0), (8, 12.0)):
        small = nprng.normal(0.0, 1.0, (height // scale + 2, width // scale + 2, 3)).astype(np.float32)
        image += amplitude * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    image += nprng.normal(0.0, 6.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255)


def render_scene(
    rng: random.Random, nprng: np.random.Generator, fonts: Sequence[str]
) -> tuple[np.ndarray, list[TextRegion]]:
    """Text lines on a textured background, each rotated by up to ±30° and kept apart from the others."""
    width, height = rng.choice(((640, 480), (960, 720), (1280, 720), (800, 800)))
    image = _texture(nprng, width, height)
    occupied = np.zeros((height, width), np.uint8)
    regions = []
    for _ in range(rng.randint(3, 9)):
        size = rng.choice((8, 18, 24, 32, 44, 60)) if rng.random() < 0.9 else rng.randint(8, 9)
        font = ImageFont.truetype(rng.choice(fonts), size)
        text = _line_text(rng, (1, 4))
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
        pad = size // 2 + 4
        patch = Image.new("L", (x1 + 2 * pad, y1 + 2 * pad), 0)
        ImageDraw.Draw(patch).text((pad, pad), text, font=font, fill=255)
        ink_box = (x0 + pad, y0 + pad, x1 + pad, y1 + pad)
        angle = rng.uniform(-30.0, 30.0)
        for _attempt in range(20):  # place it where it overlaps nothing drawn so far, fully inside
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            matrix = _rotation(
                angle, (patch.width / 2.0, patch.height / 2.0), (cx - patch.width / 2.0, cy - patch.height / 2.0)
            )
            corners = _transform(_box_corners(ink_box), matrix)
            outline = _transform(_box_corners((0, 0, patch.width, patch.height)), matrix)
            if outline.min() < 0 or outline[:, 0].max() >= width or outline[:, 1].max() >= height:
                continue
            footprint = np.zeros_like(occupied)
            cv2.fillPoly(footprint, [np.round(outline).astype(np.int32)], 1)
            if (footprint & occupied).any():
                continue
            occupied |= footprint
            alpha = cv2.warpAffine(
                np.asarray(patch, np.float32) / 255.0, matrix, (width, height), flags=cv2.INTER_LINEAR
            )[..., np.newaxis]
            background = image[footprint.astype(bool)].mean(axis=0)
            contrast = rng.uniform(70.0, 200.0)  # some lines faint against their background
            colour = np.clip(np.where(background > 128, background - contrast, background + contrast), 0, 255)
            image = image * (1.0 - alpha) + colour * alpha
            regions.append(TextRegion(text if size >= MIN_READABLE_PX else "###", corners))
            break
    return _finish(np.clip(image, 0, 255).astype(np.uint8), rng, nprng, (1.0, 5.0)), regions


def render_labelled_set(folder: Path, count: int, seed: int, kinds: Sequence[str] = KINDS) -> Path:
    """Write ``count`` images and their label file into ``folder``; returns the label file's path."""
    fonts = find_fonts()
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        image, regions = (render_document if kind == "document" else render_scene)(rng, nprng, fonts)
        name = f"images/{kind}_{seed}_{index:03d}.jpg"
        quality = rng.randint(35, 90)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise SystemExit(f"labelled_set: cannot encode {name}")
        (folder / name).write_bytes(encoded.tobytes())
        labels = [
            {
                "transcription": region.transcription,
                "points": [[round(float(x), 2), round(float(y), 2)] for x, y in region.points],
            }
            for region in regions
        ]
        lines.append(f"{name}\t{json.dumps(labels, ensure_ascii=False)}")
    label_file = folder / LABEL_FILE
    label_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return label_file


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.dev.labelled_set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", type=Path, help="folder to write images/ and labels.txt into")
    parser.add_argument("--count", type=int, default=80)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    args = parser.parse_args(argv)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds or args.count < 1:
        parser.error(f"--kinds must name some of {', '.join(KINDS)} and --count be >= 1")
    label_file = render_labelled_set(args.output, args.count, args.seed, kinds)
    print(f"labelled_set: {args.count} image(s), seed {args.seed} -> {label_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
