"""Hmean and speed of several models on four rendered pages (README, "Models").

    .venv/bin/python -m tools.dev.model_table PP-OCRv4_mobile_det PP-OCRv6_tiny_det …

Hmean: one-to-one matches at polygon IoU >= 0.5 against each rendered line's ink box (a line that
runs past the page's right edge is clipped to it). Speed: TextDetection.predict on each page, median
of 7 after 2 warm-ups, summed over the pages, best of 3 rounds; ratios against the first model.
"""

import argparse
import statistics
import time

import cv2
import numpy as np

from detector import TextDetection
from tools.dev.sample_image import render_text_image

# The four pages (name, width, height): a photo-sized page, a scan, an A4 page at 150 dpi, a banner.
PAGE_SIZES = (("640x480", 640, 480), ("1280x960", 1280, 960), ("1240x1754", 1240, 1754), ("2000x400", 2000, 400))


def images():
    """The bench pages and their line boxes as quads."""
    out = []
    for name, width, height in PAGE_SIZES:
        font = max(14, height // 30)
        count = max(1, (height - 80) // (font * 2))
        lines = [f"{name} line {i}: the quick brown fox jumps over the lazy dog 0123456789" for i in range(count)]
        image, boxes = render_text_image(lines, width=width, height=height, font_size=font, line_gap=font)
        gt = [
            np.array(
                [[max(0, x0), y0], [min(width - 1, x1), y0], [min(width - 1, x1), y1], [max(0, x0), y1]], np.float32
            )
            for x0, y0, x1, y1 in boxes
            if y1 < height
        ]
        out.append((name, image, gt))
    return out


def iou(a, b):
    inter, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    ua = cv2.contourArea(a.astype(np.float32)) + cv2.contourArea(b.astype(np.float32)) - inter
    return inter / ua if ua > 0 else 0


def main(names):
    imgs = images()
    results = {}
    for name in names:
        model = TextDetection(model_name=name, device="cpu")
        tp = npred = ngt = 0
        total = 0.0
        for _label, image, gt in imgs:
            polys = model.predict(image)[0]["dt_polys"].astype(np.float32)
            used = set()
            for p in polys:
                best = max(((iou(p, g), j) for j, g in enumerate(gt) if j not in used), default=(0, None))
                if best[0] >= 0.5:
                    used.add(best[1])
                    tp += 1
            npred += len(polys)
            ngt += len(gt)
        for rnd in range(3):
            t = 0.0
            for _label, image, _gt in imgs:
                for _ in range(2):
                    model.predict(image)
                times = []
                for _ in range(7):
                    s = time.perf_counter()
                    model.predict(image)
                    times.append(time.perf_counter() - s)
                t += statistics.median(times) * 1000
            total = t if rnd == 0 else min(total, t)
        p, r = tp / max(npred, 1), tp / max(ngt, 1)
        results[name] = (2 * p * r / max(p + r, 1e-9), total)
        print(
            f"{name}: hmean {results[name][0]:.3f} (P {p:.3f} R {r:.3f}, {tp}/{npred} pred, {ngt} gt),"
            f" predict sum {total:.1f} ms",
            flush=True,
        )
    first = next(iter(results))
    for n, (_h, t) in results.items():
        print(f"{n}: time ratio vs {first} {t / results[first][1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m tools.dev.model_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="+", metavar="MODEL", help="model names; ratios are against the first")
    main(parser.parse_args().names)
