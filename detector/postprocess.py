"""Postprocess stage: the DB (differentiable binarization) decoding of a probability map into boxes.

Reproduces PaddleOCR 3.x's DBPostProcess: binarize at ``thresh`` (optionally dilate), find
contours, fit a minimum-area box (or simplify to a polygon), score it on the probability map, drop
it below ``box_thresh``, expand it with pyclipper by ``area * unclip_ratio / perimeter``, drop small
ones, and rescale to the original image.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import cv2
import numpy as np
import pyclipper

from .preprocess import ResizeInfo

# Boxes whose short side is below this (in map pixels) are noise; after unclip the bar is MIN_SIZE + 2.
MIN_SIZE = 3
# Box coordinates are int16 as in PaddleX up to this side length; larger images get int32 (PaddleX wraps them).
INT16_MAX = int(np.iinfo(np.int16).max)
# PaddleOCR's use_dilation kernel.
DILATION_KERNEL = np.ones((2, 2), dtype=np.uint8)
# approxPolyDP tolerance for box_type "poly", as a fraction of the contour's perimeter.
POLY_EPSILON_FRACTION = 0.002
# OpenCV 4.14 (and 5.x) changed minAreaRect's angle convention (boxPoints then differs in the last bits: a
# 45-degree box's corners come back in another order), fillPoly's rasterization of convex quads and, rarely,
# approxPolyDP: against PaddleX's DBPostProcess on OpenCV 4.10 (PaddleOCR 3.7 pins 4.10.0.84), a fuzz of
# 16,000 maps differed in 1,724 (box count, corners, scores); with OpenCV 4.10 to 4.13, in none. pyproject
# keeps opencv-python-headless below it; another cv2 in the environment gets a warning (opencv_boxes_note).
OPENCV_BOXES_CHANGED = (4, 14)


def opencv_boxes_note(version: str = cv2.__version__) -> Optional[str]:
    """A warning where the cv2 in use computes boxes otherwise than PaddleOCR's OpenCV; None where it matches."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None
    if major_minor < OPENCV_BOXES_CHANGED:
        return None
    return (
        f"OpenCV {version} is in use: from 4.14 on its minAreaRect and fillPoly give some boxes other corners, "
        f"scores or counts than PaddleOCR's OpenCV 4.10 (about 1 map in 10 of a fuzz); "
        f"pip install 'opencv-python-headless<4.14' for PaddleOCR's boxes"
    )


def binarize(prob_map: np.ndarray, thresh: float, use_dilation: bool) -> np.ndarray:
    """uint8 mask (0/255) of pixels above thresh, dilated by a 2x2 kernel if asked."""
    mask: np.ndarray = (prob_map > thresh).astype(np.uint8)
    if use_dilation:
        mask = cv2.dilate(mask, DILATION_KERNEL)
    return mask * 255


def min_area_quad(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-area rectangle around points as 4 corners clockwise from top-left, and its short side."""
    rect = cv2.minAreaRect(points)
    corners = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = corners[:2] if corners[1][1] > corners[0][1] else corners[1::-1]
    right = corners[2:] if corners[3][1] > corners[2][1] else corners[:1:-1]
    # left = [top-left, bottom-left], right = [top-right, bottom-right]
    quad = np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
    return quad, min(rect[1])


def box_score_fast(prob_map: np.ndarray, polygon: np.ndarray) -> float:
    """Mean probability inside the polygon (float corners truncated to the pixel grid)."""
    height, width = prob_map.shape
    xmin = max(0, min(math.floor(polygon[:, 0].min()), width - 1))
    xmax = max(0, min(math.ceil(polygon[:, 0].max()), width - 1))
    ymin = max(0, min(math.floor(polygon[:, 1].min()), height - 1))
    ymax = max(0, min(math.ceil(polygon[:, 1].max()), height - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = (polygon - np.array([xmin, ymin], dtype=polygon.dtype)).astype(np.int32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2), 1)
    return cv2.mean(prob_map[ymin : ymax + 1, xmin : xmax + 1], mask)[0]


def box_score_slow(prob_map: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the contour itself (slower, tighter for curved text)."""
    return box_score_fast(prob_map, contour.reshape(-1, 2).astype(np.int64))


def unclip_polygon(polygon: np.ndarray, unclip_ratio: float) -> list[np.ndarray]:
    """Grow a polygon by area * unclip_ratio / perimeter with rounded joins; may return several pieces."""
    area = cv2.contourArea(polygon)
    perimeter = cv2.arcLength(polygon, True)
    if perimeter == 0:
        return []
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(polygon, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.array(path) for path in offset.Execute(area * unclip_ratio / perimeter)]


def rescale_to_original(points: np.ndarray, map_height: int, map_width: int, info: ResizeInfo) -> np.ndarray:
    """Map coordinates on the probability map back to original-image pixels, rounded and clipped:
    int16 as PaddleX gives them, int32 for an image wider or taller than int16 holds (PaddleX's wrap)."""
    # in float64, as PaddleX multiplies each float32 corner by its float64 scale: in float32, 31.400002 * 2.5
    # is 78.5 and rounds to 78, where PaddleX's 78.500004 rounds to 79 (a fuzz: 1 box in ~3,000 moved 1 px)
    points = np.asarray(points, dtype=np.float64)
    scaled = np.empty_like(points)
    scaled[:, 0] = np.clip(np.round(points[:, 0] * (info.src_width / map_width)), 0, info.src_width)
    scaled[:, 1] = np.clip(np.round(points[:, 1] * (info.src_height / map_height)), 0, info.src_height)
    return scaled.astype(np.int16 if max(info.src_width, info.src_height) <= INT16_MAX else np.int32)


def quads_from_mask(
    prob_map: np.ndarray,
    mask: np.ndarray,
    info: ResizeInfo,
    box_thresh: float,
    unclip_ratio: float,
    max_candidates: int,
    score_mode: str,
) -> tuple[np.ndarray, list[float]]:
    """Quadrilateral boxes (N,4,2) in original-image pixels (rescale_to_original's type), and their scores."""
    map_height, map_width = mask.shape
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes, scores = [], []
    for contour in contours[:max_candidates]:
        quad, short_side = min_area_quad(contour)
        if short_side < MIN_SIZE:
            continue
        score = box_score_fast(prob_map, quad) if score_mode == "fast" else box_score_slow(prob_map, contour)
        if score < box_thresh:
            continue
        pieces = unclip_polygon(quad, unclip_ratio)
        if not pieces:
            continue
        # A convex quad grows into exactly one polygon.
        grown = pieces[0].reshape(-1, 1, 2).astype(np.float32)
        quad, short_side = min_area_quad(grown)
        if short_side < MIN_SIZE + 2:
            continue
        boxes.append(rescale_to_original(quad, map_height, map_width, info))
        scores.append(float(score))
    if not boxes:
        return np.zeros((0, 4, 2), dtype=np.int16), []
    return np.stack(boxes), scores


def polygons_from_mask(
    prob_map: np.ndarray,
    mask: np.ndarray,
    info: ResizeInfo,
    box_thresh: float,
    unclip_ratio: float,
    max_candidates: int,
) -> tuple[list[np.ndarray], list[float]]:
    """Polygon boxes (each (K,2), rescale_to_original's type) in original-image pixels, and their scores."""
    map_height, map_width = mask.shape
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    polygons, scores = [], []
    for contour in contours[:max_candidates]:
        epsilon = POLY_EPSILON_FRACTION * cv2.arcLength(contour, True)
        points = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2)
        if points.shape[0] < 4:
            continue
        score = box_score_fast(prob_map, points)
        if score < box_thresh:
            continue
        pieces = unclip_polygon(points, unclip_ratio)
        if len(pieces) != 1:
            continue
        polygon = pieces[0].reshape(-1, 2)
        _, short_side = min_area_quad(polygon.reshape(-1, 1, 2).astype(np.float32))
        if short_side < MIN_SIZE + 2:
            continue
        polygons.append(rescale_to_original(polygon, map_height, map_width, info))
        scores.append(float(score))
    return polygons, scores


def boxes_from_probability_map(
    prob_map: np.ndarray,
    info: ResizeInfo,
    thresh: float,
    box_thresh: float,
    unclip_ratio: float,
    max_candidates: int = 1000,
    use_dilation: bool = False,
    score_mode: str = "fast",
    box_type: str = "quad",
) -> tuple[Union[np.ndarray, list[np.ndarray]], list[float]]:
    """Decode one (H,W) probability map into (boxes, scores) in original-image pixels.

    ``box_type="quad"`` gives an int16 array (N,4,2); ``"poly"`` a list of int16 (K,2) arrays.
    """
    mask = binarize(prob_map, thresh, use_dilation)
    if box_type == "poly":
        return polygons_from_mask(prob_map, mask, info, box_thresh, unclip_ratio, max_candidates)
    return quads_from_mask(prob_map, mask, info, box_thresh, unclip_ratio, max_candidates, score_mode)
