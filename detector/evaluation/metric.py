"""Detection scoring by PaddleOCR's DetMetric rules (its DetectionIoUEvaluator, from the DB / ICDAR 2015 code).

Per image: polygons that are not simple (fewer than 3 points, no area, self-intersecting) are
dropped, from labels and detections alike. A detection whose area lies more than half inside a
don't-care label ("###") is set aside. Then labels and detections are matched one-to-one, in order
(labels outer, detections inner, first pair with IoU > 0.5 wins; don't-care on either side never
matches). Precision, recall and Hmean are computed over the sums for the whole set, not averaged
per image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyclipper

IOU_THRESHOLD = 0.5  # a match needs IoU strictly above this
DONT_CARE_AREA_PRECISION = 0.5  # a detection more than this fraction inside a don't-care label is set aside
# pyclipper works on integers: coordinates are scaled by this before clipping. Clipper rounds the points where
# edges cross to this grid too: at 1024 an IoU of integer boxes moved by up to 1.6e-4 (a pair at 0.49999 against
# shapely's IoU was matched); at 2^20 by 1.4e-7, with coordinates up to 1e9 still in Clipper's range. An IoU of
# exactly 0.5 (slanted edges crossing at non-grid points) can still fall either way, as it can in shapely's floats:
# 2 images in 15,000 random ones of 1-60 px boxes did, the rest scored as PaddleOCR's DetectionIoUEvaluator.
_CLIPPER_SCALE = float(2**20)


@dataclass(frozen=True)
class LabelledPolygon:
    """One ground-truth region: its polygon (K, 2) and whether it is a don't-care region."""

    points: np.ndarray
    dont_care: bool = False


@dataclass(frozen=True)
class ImageScore:
    """Counts for one image, as DetectionIoUEvaluator.evaluate_image returns them."""

    labels: int  # labels that count (valid, not don't-care)
    detections: int  # detections that count (valid, not set aside by a don't-care label)
    matched: int


@dataclass(frozen=True)
class SetScore:
    precision: float
    recall: float
    hmean: float
    labels: int
    detections: int
    matched: int


def polygon_area(points: np.ndarray) -> float:
    """Absolute shoelace area."""
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def _as_integers(points: np.ndarray) -> list[tuple[int, int]]:
    """Finite float corners as exact integers, all scaled by one power of two: the simplicity tests below
    decide on signs of products, which float arithmetic gets wrong for nearly collinear corners (shapely's
    predicates are exact); Python's integers make them exact, and fast."""
    ratios = [value.as_integer_ratio() for value in points.ravel().tolist()]
    scale = max((denominator for _, denominator in ratios), default=1)  # every one a power of two: the largest
    values = [numerator * (scale // denominator) for numerator, denominator in ratios]
    return list(zip(values[0::2], values[1::2]))


def _orient(a: Sequence[int], b: Sequence[int], c: Sequence[int]) -> int:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _segments_intersect(p1: Sequence[int], p2: Sequence[int], q1: Sequence[int], q2: Sequence[int]) -> bool:
    """Closed segments p1p2 and q1q2 share at least one point."""

    def on_segment(a: Sequence[int], b: Sequence[int], c: Sequence[int]) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    d1, d2, d3, d4 = _orient(q1, q2, p1), _orient(q1, q2, p2), _orient(p1, p2, q1), _orient(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and on_segment(q1, q2, p1))
        or (d2 == 0 and on_segment(q1, q2, p2))
        or (d3 == 0 and on_segment(p1, p2, q1))
        or (d4 == 0 and on_segment(p1, p2, q2))
    )


def is_simple_polygon(points: np.ndarray) -> bool:
    """What shapely's ``is_valid and is_simple`` decides for a ring: >= 3 corners, some area, no edge
    touching another except its two neighbours at the shared corner. Decided in exact arithmetic."""
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(array).all():
        return False
    pts = _as_integers(array)
    if pts and pts[0] == pts[-1]:
        pts = pts[:-1]
    pts = [pts[i] for i in range(len(pts)) if pts[i] != pts[i - 1]] if len(pts) > 1 else []
    n = len(pts)
    if n < 3 or sum(_orient((0, 0), pts[i], pts[(i + 1) % n]) for i in range(n)) == 0:  # no area
        return False
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                # neighbours share one corner; they must not fold back over each other
                a, b = edges[i], edges[j]
                shared = a[1] if j == i + 1 else a[0]
                other_a = a[0] if j == i + 1 else a[1]
                other_b = b[1] if j == i + 1 else b[0]
                cross = _orient(shared, other_a, other_b)
                dot = (other_a[0] - shared[0]) * (other_b[0] - shared[0]) + (other_a[1] - shared[1]) * (
                    other_b[1] - shared[1]
                )
                if cross == 0 and dot > 0:
                    return False
                continue
            if _segments_intersect(edges[i][0], edges[i][1], edges[j][0], edges[j][1]):
                return False
    return True


def _to_clipper(points: np.ndarray) -> list[list[int]]:
    return [[int(round(x * _CLIPPER_SCALE)), int(round(y * _CLIPPER_SCALE))] for x, y in np.asarray(points, np.float64)]  # noqa: RUF046 (numpy 1.x: round() of a float64 is a float64)


def intersection_area(a: np.ndarray, b: np.ndarray) -> float:
    """Area shared by two simple polygons (convex or not), through pyclipper."""
    clipper = pyclipper.Pyclipper()
    clipper.AddPath(_to_clipper(a), pyclipper.PT_SUBJECT, True)
    clipper.AddPath(_to_clipper(b), pyclipper.PT_CLIP, True)
    paths = clipper.Execute(pyclipper.CT_INTERSECTION, pyclipper.PFT_NONZERO, pyclipper.PFT_NONZERO)
    # outer rings have positive area, holes negative: the sum is the area with holes removed
    return abs(sum(pyclipper.Area(path) for path in paths)) / (_CLIPPER_SCALE * _CLIPPER_SCALE)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = intersection_area(a, b)
    union = polygon_area(a) + polygon_area(b) - inter
    return inter / union if union > 0 else 0.0


def _bounds(points: np.ndarray) -> tuple:
    return (*points.min(axis=0), *points.max(axis=0))


def _bounds_overlap(a: tuple, b: tuple) -> bool:
    # pairs whose bounding boxes do not overlap have IoU 0: skip the clipping
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def score_image(labels: Sequence[LabelledPolygon], detections: Iterable[np.ndarray]) -> ImageScore:
    """Count labels, detections and one-to-one matches in one image by DetMetric's rules."""
    gts = [(np.asarray(label.points, np.float64).reshape(-1, 2), label.dont_care) for label in labels]
    gts = [(points, dont_care) for points, dont_care in gts if is_simple_polygon(points)]
    dets = [np.asarray(det, np.float64).reshape(-1, 2) for det in detections]
    dets = [det for det in dets if is_simple_polygon(det)]
    dont_care_gts = [points for points, dont_care in gts if dont_care]

    def inside_dont_care(det: np.ndarray) -> bool:
        area = polygon_area(det)
        return area > 0 and any(intersection_area(gt, det) / area > DONT_CARE_AREA_PRECISION for gt in dont_care_gts)

    det_dont_care = [inside_dont_care(det) for det in dets]
    gt_bounds = [_bounds(gt) for gt, _ in gts]
    det_bounds = [_bounds(det) for det in dets]
    gt_taken = [False] * len(gts)
    det_taken = [False] * len(dets)
    matched = 0
    for g, (gt, gt_dont_care) in enumerate(gts):
        if gt_dont_care:
            continue
        for d, det in enumerate(dets):
            if gt_taken[g] or det_taken[d] or det_dont_care[d]:
                continue
            if _bounds_overlap(gt_bounds[g], det_bounds[d]) and polygon_iou(det, gt) > IOU_THRESHOLD:
                gt_taken[g] = det_taken[d] = True
                matched += 1
    return ImageScore(labels=len(gts) - len(dont_care_gts), detections=len(dets) - sum(det_dont_care), matched=matched)


def combine_scores(scores: Iterable[ImageScore]) -> SetScore:
    """Precision, recall and Hmean over the sums of all images (DetectionIoUEvaluator.combine_results)."""
    scores = list(scores)
    labels = sum(s.labels for s in scores)
    detections = sum(s.detections for s in scores)
    matched = sum(s.matched for s in scores)
    recall = matched / labels if labels else 0.0
    precision = matched / detections if detections else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return SetScore(
        precision=precision, recall=recall, hmean=hmean, labels=labels, detections=detections, matched=matched
    )
