"""detect eval's scoring against PaddleOCR's own (DetLabelEncode + DetectionIoUEvaluator, run in the Paddle
environment by tests/detmetric_reference.py) on random labelled images of a fixed seed: per image and for
the set. Skipped without the Paddle environment (DETECTOR_PADDLE_PYTHON)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detector.evaluation.labels import read_labels
from detector.evaluation.metric import combine_scores, score_image
from tests.conftest import _missing, run_in_paddle_env

pytestmark = pytest.mark.reference

IMAGES = 300
SEED = 2026


def rect(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def turned(points: list[list[float]], angle: float) -> list[list[float]]:
    cx, cy = np.mean(points, axis=0)
    c, s = math.cos(angle), math.sin(angle)
    return [[cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy)] for x, y in points]


def random_region(rng: np.random.Generator) -> list[list[float]]:
    """Text lines upright and turned, to the pixel or with many decimals; curved and star polygons; and what
    the metric must drop (no area, bow-ties, folds, one or two points) or keep (slivers)."""
    x, y, w, h = rng.uniform(0, 500), rng.uniform(0, 400), rng.uniform(2, 160), rng.uniform(2, 30)
    kind = rng.integers(0, 10)
    if kind < 3:
        return rect(int(x), int(y), int(w) + 1, int(h) + 1)
    if kind < 5:
        return turned(rect(x, y, w, h), rng.uniform(-1.5, 1.5))
    if kind == 5:
        angles, radii = np.sort(rng.uniform(0, 2 * math.pi, 8)), rng.uniform(0.3 * h, h, 8)
        return [[x + r * math.cos(a), y + r * math.sin(a)] for a, r in zip(angles, radii)]
    if kind == 6:
        top = [[x + w * i / 4, y + 0.4 * h * math.sin(math.pi * i / 4)] for i in range(5)]
        return top + [[px, py + h] for px, py in reversed(top)]
    if kind == 7:  # as thin as float32 keeps, or thinner
        return rect(x, y, w, float(rng.choice([1e-3, 1e-5, 1e-6, 1e-9])))
    return [  # no area, a bow-tie, a fold back, one point, two points
        [[x, y], [x + w, y], [x + 2 * w, y], [x + w / 2, y]],
        [[x, y], [x + w, y + h], [x + w, y], [x, y + h]],
        [[x, y], [x + w, y], [x + w, y + h], [x + w / 2, y + h], [x + w / 2, y + 2 * h], [x + w / 2, y + h]],
        [[x, y]],
        [[x, y], [x + w, y + h]],
    ][int(rng.integers(0, 5))]


def detections_for(rng: np.random.Generator, region: list[list[float]]) -> list[list[list[float]]]:
    """What a detector makes of a line: about it, half of it or twice it (IoU near 0.5), split, shifted."""
    (x0, y0), (x1, y1) = np.min(region, axis=0), np.max(region, axis=0)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    near_half = 1 + float(rng.choice([0.0, 1e-7, -1e-7, 1e-3, -1e-3]))
    kind = rng.integers(0, 5)
    if kind == 0:
        return [[[px + rng.normal(0, 0.1 * h), py + rng.normal(0, 0.1 * h)] for px, py in region]]
    if kind == 1:
        return [rect(x0, y0, w * float(rng.choice([0.5, 2.0])) * near_half, h)]
    if kind == 2:
        cut = rng.uniform(0.2, 0.8)
        return [rect(x0, y0, w * cut, h), rect(x0 + w * cut, y0, w * (1 - cut), h)]
    if kind == 3:
        return [rect(x0 + rng.uniform(-0.6, 0.6) * w, y0 + rng.uniform(-0.4, 0.4) * h, w, h)]
    return [turned(rect(x0, y0, w, h), rng.uniform(-0.3, 0.3))]


def random_cases(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        regions = [random_region(rng) for _ in range(int(rng.integers(0, 7)))]
        texts = [str(rng.choice(["###", "*", "line"], p=[0.2, 0.03, 0.77])) for _ in regions]
        found = [
            d for region in regions if len(region) >= 3 and rng.random() < 0.8 for d in detections_for(rng, region)
        ]
        found += [rect(rng.uniform(0, 600), rng.uniform(0, 400), 40, 12) for _ in range(int(rng.integers(0, 2)))]
        for _ in range(int(rng.integers(0, 3))):  # two lines merged into one box
            a, b = (regions[int(i)] for i in rng.integers(0, len(regions), 2)) if regions else ([[0, 0]], [[9, 9]])
            (x0, y0), (x1, y1) = np.min(a + b, axis=0), np.max(a + b, axis=0)
            found.append(rect(x0, y0, x1 - x0, y1 - y0))
        int16 = bool(rng.random() < 0.6)  # DBPostProcess's boxes are int16 quads
        if int16:
            found = [[[round(px), round(py)] for px, py in d] for d in found]
        cases.append(
            {
                "regions": [
                    {"transcription": t, "points": [[float(v) for v in p] for p in r]} for t, r in zip(texts, regions)
                ],
                "detections": [[[float(v) for v in p] for p in d] for d in found],
                "int16": int16,
            }
        )
    return cases


def test_scores_as_paddleocr_scores(paddle_python, tmp_path):
    cases = random_cases(IMAGES, SEED)
    cases_file, reference_file = tmp_path / "cases.json", tmp_path / "reference.json"
    cases_file.write_text(json.dumps(cases))
    process = run_in_paddle_env(paddle_python, "tests.detmetric_reference", str(cases_file), str(reference_file))
    if process.returncode == 3:
        _missing(process.stderr.strip())
    assert process.returncode == 0, process.stderr[-3000:]
    reference = json.loads(reference_file.read_text())

    # ours reads the regions from a PaddleOCR label file, as detect eval does
    label_file = tmp_path / "labels.txt"
    label_file.write_text("".join(f"{i}.jpg\t{json.dumps(case['regions'])}\n" for i, case in enumerate(cases)))
    ours = []
    for item, case in zip(read_labels(label_file), cases):
        dtype = np.int16 if case["int16"] else np.float64
        ours.append(score_image(item.labels, [np.array(d, dtype) for d in case["detections"]]))

    scored = [(index, mine, theirs) for index, (mine, theirs) in enumerate(zip(ours, reference["images"]))]
    compared = [(index, mine, theirs) for index, mine, theirs in scored if "raised" not in theirs]
    assert len(compared) > 0.9 * IMAGES  # PaddleOCR raises only where an image's regions all have < 3 points
    disagreeing = [
        (index, mine, theirs)
        for index, mine, theirs in compared
        if (mine.labels, mine.detections, mine.matched) != (theirs["gtCare"], theirs["detCare"], theirs["detMatched"])
    ]
    assert disagreeing == []
    mine = combine_scores(mine for _, mine, _ in compared)
    theirs = reference["combined"]
    assert (mine.precision, mine.recall, mine.hmean) == (theirs["precision"], theirs["recall"], theirs["hmean"])
