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
from fractions import Fraction

import numpy as np
import pyclipper

IOU_THRESHOLD = 0.5  # a match needs IoU strictly above this
DONT_CARE_AREA_PRECISION = 0.5  # a detection more than this fraction inside a don't-care label is set aside
# pyclipper works on integers up to 2**62 - 1 (Clipper's hiRange). Each pair of polygons is put on an integer grid of
# its own: every float is an integer times a power of two, so the corners land on it exactly where the pair spans at
# most 2**61 steps of their finest power of two; the areas and the threshold tests are then exact integers. Corners
# coarser than that (integers, float32 labels) get a grid of 2**44 steps across the pair, to which Clipper rounds
# the points where edges cross; not finer, as Clipper computes those points in doubles, a few steps off at 2**61:
# there an integer crossing point missed its grid point, and exact ties (IoU 0.5 of integer quads) tipped either way.
# A tie whose crossing points fall between grid points still tips either way, as it does in shapely's floats (3 images
# in 30,000 built at the thresholds scored apart from PaddleOCR's evaluator, each an exact 1/2 of slanted integer
# quads). (A fixed 2**20 grid moved IoUs by up to 1.6e-7 and raised on a valid sliver thinner than one of its steps.)
_CROSSING_GRID_BITS = 44
_CLIPPER_GRID_BITS = 61


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


def _exact_corners(points: np.ndarray) -> tuple[list[tuple[int, int]], int]:
    """Finite float corners as exact integers on one power-of-two grid: (corners, exponent), each value being
    corner / 2**exponent. The simplicity tests decide on signs of products, which float arithmetic gets wrong
    for nearly collinear corners (shapely's predicates are exact), and the areas are sums of them: Python's
    integers make both exact."""
    ratios = [value.as_integer_ratio() for value in np.asarray(points, np.float64).ravel().tolist()]
    scale = max((denominator for _, denominator in ratios), default=1)  # every one a power of two: the largest
    values = [numerator * (scale // denominator) for numerator, denominator in ratios]
    return list(zip(values[0::2], values[1::2])), scale.bit_length() - 1


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
    pts, _ = _exact_corners(array)
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


def _doubled_area(corners: Sequence[tuple[int, int]]) -> int:
    """Twice the signed shoelace area of integer corners, exact."""
    n = len(corners)
    return sum(corners[i][0] * corners[(i + 1) % n][1] - corners[(i + 1) % n][0] * corners[i][1] for i in range(n))


@dataclass(frozen=True)
class _PairAreas:
    """Twice the areas of two polygons and of their intersection, exact integers on the pair's grid, whose
    cell is 2**-exponent wide."""

    first: int
    second: int
    shared: int
    exponent: int

    def as_float(self, doubled: int) -> float:
        return float(Fraction(doubled, 2) / Fraction(4) ** self.exponent)


def _pair_areas(a: np.ndarray, b: np.ndarray) -> _PairAreas:
    """Both polygons on one integer grid (see _CROSSING_GRID_BITS), then clipped by pyclipper."""
    (corners_a, exponent_a), (corners_b, exponent_b) = _exact_corners(a), _exact_corners(b)
    exponent = max(exponent_a, exponent_b)
    corners_a = [(x << (exponent - exponent_a), y << (exponent - exponent_a)) for x, y in corners_a]
    corners_b = [(x << (exponent - exponent_b), y << (exponent - exponent_b)) for x, y in corners_b]
    both = corners_a + corners_b
    x0, y0 = min(x for x, _ in both), min(y for _, y in both)
    extent = max(max(x - x0, y - y0) for x, y in both)
    # exact corners, or 2**44 steps where the corners are coarser; never past 2**61 (then coarsened, rounding)
    bits = extent.bit_length()
    finer = min(max(bits, _CROSSING_GRID_BITS), _CLIPPER_GRID_BITS) - bits

    def on_grid(corners: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if finer >= 0:
            return [((x - x0) << finer, (y - y0) << finer) for x, y in corners]
        half = 1 << (-finer - 1)  # coarser than the corners (a pair of extreme extent): round to nearest
        return [((x - x0 + half) >> -finer, (y - y0 + half) >> -finer) for x, y in corners]

    corners_a, corners_b = on_grid(corners_a), on_grid(corners_b)
    clipper = pyclipper.Pyclipper()
    try:
        clipper.AddPath(corners_a, pyclipper.PT_SUBJECT, True)
        clipper.AddPath(corners_b, pyclipper.PT_CLIP, True)
    except pyclipper.ClipperException:
        # a polygon 2**61 times smaller than its partner collapsed on the coarsened grid: it shares no area
        paths = []
    else:
        paths = clipper.Execute(pyclipper.CT_INTERSECTION, pyclipper.PFT_NONZERO, pyclipper.PFT_NONZERO)
    # outer rings and holes wind opposite ways: the sum is the area with holes removed
    shared = abs(sum(_doubled_area([(int(x), int(y)) for x, y in path]) for path in paths))
    return _PairAreas(abs(_doubled_area(corners_a)), abs(_doubled_area(corners_b)), shared, exponent + finer)


def intersection_area(a: np.ndarray, b: np.ndarray) -> float:
    """Area shared by two simple polygons (convex or not), through pyclipper."""
    areas = _pair_areas(a, b)
    return areas.as_float(areas.shared)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    areas = _pair_areas(a, b)
    union = areas.first + areas.second - areas.shared
    return areas.shared / union if union > 0 else 0.0


def _iou_above(areas: _PairAreas, threshold: float) -> bool:
    """shared / union > threshold, decided exactly (union = first + second - shared)."""
    return areas.shared * (1 + Fraction(threshold)) > Fraction(threshold) * (areas.first + areas.second)


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
        # the share of the detection's own area (measured on each pair's grid) inside a don't-care label
        return any(
            areas.second > 0 and areas.shared > Fraction(DONT_CARE_AREA_PRECISION) * areas.second
            for areas in (_pair_areas(gt, det) for gt in dont_care_gts)
        )

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
            if _bounds_overlap(gt_bounds[g], det_bounds[d]) and _iou_above(_pair_areas(det, gt), IOU_THRESHOLD):
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
