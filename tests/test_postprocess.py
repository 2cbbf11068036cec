"""DB postprocess on synthetic probability maps whose text regions are known exactly."""

import math

import cv2
import numpy as np
import pytest

from detector.postprocess import (
    box_score_fast,
    boxes_from_probability_map,
    min_area_quad,
    unclip_polygon,
)
from detector.preprocess import ResizeInfo

pytestmark = pytest.mark.runtime  # no Paddle needed: make test-pythons runs these on every Python

SAME_SIZE = ResizeInfo(320, 480, 1.0, 1.0)


def decode(prob_map, info=SAME_SIZE, **kwargs):
    params = dict(thresh=0.3, box_thresh=0.6, unclip_ratio=1.5)
    params.update(kwargs)
    return boxes_from_probability_map(prob_map, info, **params)


def blank():
    return np.zeros((320, 480), np.float32)


@pytest.mark.parametrize("box_type", ["quad", "poly"])
def test_coordinates_past_int16_do_not_wrap(box_type):
    # a 40000-pixel-wide image mapped from a 480-wide map: PaddleX's int16 would wrap x to negatives
    prob = blank()
    prob[100:130, 400:470] = 0.9
    wide = ResizeInfo(320, 40_000, 1.0, 480 / 40_000)
    boxes, _ = decode(prob, info=wide, box_type=box_type)
    points = np.concatenate([np.asarray(b).reshape(-1, 2) for b in boxes])
    assert all(np.asarray(b).dtype == np.int32 for b in boxes)
    assert points[:, 0].min() > 30_000 and points[:, 0].max() <= 40_000  # map x 400-470, unclipped, x 83.3
    narrow, _ = decode(prob, info=ResizeInfo(320, 32_767, 1.0, 480 / 32_767), box_type=box_type)
    assert all(np.asarray(b).dtype == np.int16 for b in narrow) and len(narrow) == len(boxes)


def test_axis_aligned_rectangle_becomes_one_unclipped_box():
    prob = blank()
    prob[100:130, 50:250] = 0.9
    boxes, scores = decode(prob)
    assert boxes.shape == (1, 4, 2) and boxes.dtype == np.int16
    assert scores == [pytest.approx(0.9, abs=1e-6)]
    # unclip grows by area * ratio / perimeter of the min-area rect (199 x 29 between pixel centres)
    grow = 199 * 29 * 1.5 / (2 * (199 + 29))
    (x0, y0), (x1, y1) = boxes[0].min(axis=0), boxes[0].max(axis=0)
    assert x0 == pytest.approx(50 - grow, abs=1.5) and x1 == pytest.approx(249 + grow, abs=1.5)
    assert y0 == pytest.approx(100 - grow, abs=1.5) and y1 == pytest.approx(129 + grow, abs=1.5)


def test_corners_run_clockwise_from_top_left():
    prob = blank()
    prob[100:130, 50:250] = 0.9
    ((tl, tr, br, bl),) = decode(prob)[0]
    assert tl[0] < tr[0] and tl[1] == tr[1]
    assert br[1] > tr[1] and br[0] == tr[0]
    assert bl[0] == tl[0] and bl[1] == br[1]


def test_rotated_rectangle_keeps_its_angle():
    prob = blank()
    rect = ((240.0, 160.0), (220.0, 30.0), 30.0)
    cv2.fillPoly(prob, [cv2.boxPoints(rect).astype(np.int32)], 0.95)
    boxes, _ = decode(prob)
    assert len(boxes) == 1
    (cx, cy), (w, h), _ = cv2.minAreaRect(boxes[0].astype(np.float32))
    tl, tr = boxes[0][0].astype(float), boxes[0][1].astype(float)
    angle = math.degrees(math.atan2(tr[1] - tl[1], tr[0] - tl[0]))
    assert abs(abs(angle) - 30) < 2
    assert (cx, cy) == pytest.approx((240, 160), abs=2)
    assert max(w, h) > 220 and min(w, h) > 30  # grown by unclip


def test_several_regions_give_several_boxes():
    prob = blank()
    for top in (20, 80, 140, 200):
        prob[top : top + 20, 40:400] = 0.8
    boxes, scores = decode(prob)
    assert len(boxes) == 4 and len(scores) == 4
    assert sorted(int(b[:, 1].mean()) for b in boxes) == pytest.approx([30, 90, 150, 210], abs=2)


def test_low_scores_and_tiny_regions_are_dropped():
    prob = blank()
    prob[100:130, 50:250] = 0.5  # above thresh, below box_thresh
    prob[200:202, 200:202] = 0.99  # 2x2 speck: shorter than the minimum size
    boxes, scores = decode(prob)
    assert boxes.shape == (0, 4, 2) and scores == []
    assert len(decode(prob, box_thresh=0.4)[0]) == 1


def test_thresh_decides_the_binarization():
    prob = blank()
    prob[100:130, 50:250] = 0.9
    prob[100:130, 250:450] = 0.4  # joins the region only when thresh is below 0.4
    wide = decode(prob, thresh=0.3, box_thresh=0.3)[0]
    narrow = decode(prob, thresh=0.5)[0]
    assert wide[0][:, 0].max() > 440 and narrow[0][:, 0].max() < 300


def test_boxes_are_rescaled_and_clipped_to_the_original_image():
    prob = blank()
    prob[100:130, 50:250] = 0.9
    prob[0:40, 400:480] = 0.9  # touches the border: unclip would leave the image
    original = ResizeInfo(640, 960, 0.5, 0.5)
    boxes, _ = decode(prob, info=original)
    small, _ = decode(prob)
    assert len(boxes) == 2
    assert boxes[:, :, 0].max() <= 960 and boxes[:, :, 1].max() <= 640 and boxes.min() >= 0
    inner = next(b for b in boxes if b[:, 0].max() < 900)
    inner_small = next(b for b in small if b[:, 0].max() < 450)
    assert np.abs(inner.astype(int) - 2 * inner_small.astype(int)).max() <= 1


def test_corners_are_rescaled_in_float64_as_paddlex_does():
    # PaddleX multiplies each float32 corner by a float64 scale: 31.400002 * 2.5 = 78.500004 -> 79. In float32
    # the product is 78.5, which rounds to even, 78 (a fuzz against PaddleX's DBPostProcess: ~1 box in 3,000)
    from detector.postprocess import rescale_to_original

    corner = np.array([[31.400001525878906, 10.0]], np.float32)
    scaled = rescale_to_original(corner, 32, 32, ResizeInfo(32, 80, 1.0, 0.4))
    assert scaled.tolist() == [[79, 10]]


def test_max_candidates_limits_the_contours_considered():
    prob = blank()
    for top in (20, 80, 140, 200, 260):
        prob[top : top + 20, 40:400] = 0.8
    assert len(decode(prob, max_candidates=2)[0]) == 2


def test_dilation_bridges_one_pixel_gaps():
    prob = blank()
    prob[100:130, 50:150] = 0.9
    prob[100:130, 151:250] = 0.9  # one-pixel gap at x=150
    assert len(decode(prob)[0]) == 2
    assert len(decode(prob, use_dilation=True)[0]) == 1


def test_slow_score_mode_scores_inside_the_contour():
    prob = blank()
    cv2.fillPoly(prob, [np.array([[100, 100], [300, 100], [100, 220]], np.int32)], 0.9)  # a triangle
    fast_boxes, fast_scores = decode(prob, box_thresh=0.3)
    slow_boxes, slow_scores = decode(prob, box_thresh=0.3, score_mode="slow")
    assert len(fast_boxes) == len(slow_boxes) == 1
    # the quad covers empty pixels too; the contour does not
    assert slow_scores[0] > fast_scores[0] and slow_scores[0] == pytest.approx(0.9, abs=0.02)


def test_poly_box_type_returns_polygons_following_the_shape():
    prob = blank()
    cv2.fillPoly(prob, [np.array([[50, 100], [250, 60], [420, 100], [420, 140], [250, 100], [50, 140]], np.int32)], 0.9)
    polys, scores = decode(prob, box_type="poly")
    assert len(polys) == 1 and len(scores) == 1
    assert polys[0].dtype == np.int16 and polys[0].ndim == 2 and len(polys[0]) > 4


def test_helpers_on_known_geometry():
    square = np.array([[[10, 10]], [[20, 10]], [[20, 30]], [[10, 30]]], np.float32)
    quad, short = min_area_quad(square)
    assert short == pytest.approx(10) and quad.tolist() == [[10, 10], [20, 10], [20, 30], [10, 30]]
    grown = unclip_polygon(quad, 1.5)
    assert len(grown) == 1 and cv2.contourArea(grown[0].astype(np.float32)) > 200
    prob = np.zeros((50, 50), np.float32)
    prob[10:31, 10:21] = 1.0
    assert box_score_fast(prob, quad) == pytest.approx(1.0)


def test_an_opencv_that_computes_boxes_otherwise_is_named():
    # OpenCV 4.14 and 5.x: minAreaRect's angle convention and fillPoly's rasterization changed; against
    # PaddleOCR's OpenCV 4.10 a fuzz of 16,000 maps differed in 1,724; 4.10 to 4.13 in none
    from detector.postprocess import opencv_boxes_note

    for version in ("4.10.0", "4.13.0", "4.13.0-dev"):
        assert opencv_boxes_note(version) is None
    for version in ("4.14.0", "5.1.0"):
        note = opencv_boxes_note(version)
        assert note is not None and f"OpenCV {version} is in use" in note and "<4.14" in note
    assert opencv_boxes_note() is None  # the cv2 pyproject allows (opencv-python-headless < 4.14)
