"""Preprocess stage: resize to network-friendly sizes and normalize, as PaddleOCR's DetResizeForTest does."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from .errors import InvalidParameterError

logger = logging.getLogger(__name__)

# The network downsamples by 32: both sides must be multiples of it.
SIZE_MULTIPLE = 32
# No network input side is longer (a 32,768-pixel side is already a 12 GB float map when square): settings that
# would resize beyond it are refused, not left to OpenCV (which fails with its own error, or asks for 240 GB)
MAX_NETWORK_SIDE = 1 << 15
# Images whose sides add up to less than this are zero-padded to at least 32x32 first.
MIN_SIDE_SUM = 64


@dataclass(frozen=True)
class ResizeInfo:
    """How an original image maps onto the network input: what postprocess needs to rescale boxes."""

    src_height: int
    src_width: int
    ratio_height: float
    ratio_width: float


def pad_small_image(image: np.ndarray) -> np.ndarray:
    """Zero-pad an image with h + w < 64 to at least 32x32 (top-left aligned), as PaddleOCR does."""
    height, width = image.shape[:2]
    if height + width >= MIN_SIDE_SUM:
        return image
    padded = np.zeros((max(SIZE_MULTIPLE, height), max(SIZE_MULTIPLE, width), image.shape[2]), np.uint8)
    padded[:height, :width] = image
    return padded


def target_size(
    height: int, width: int, limit_side_len: int, limit_type: str, max_side_limit: int, source: Optional[str] = None
) -> tuple[int, int]:
    """The (height, width) PaddleOCR resizes an image of this size to: both multiples of 32, >= 32.

    ``source`` names the image in the warning a shrink past max_side_limit logs (a folder's file, a PDF's page).
    """
    if limit_type == "max":
        ratio = float(limit_side_len) / max(height, width) if max(height, width) > limit_side_len else 1.0
    elif limit_type == "min":
        ratio = float(limit_side_len) / min(height, width) if min(height, width) < limit_side_len else 1.0
    elif limit_type == "resize_long":  # PaddleX's third type: the long side to limit_side_len, up or down
        ratio = float(limit_side_len) / max(height, width)
    else:
        raise InvalidParameterError(f"limit_type must be 'max', 'min' or 'resize_long', got {limit_type!r}")
    resize_h, resize_w = int(height * ratio), int(width * ratio)
    if max(resize_h, resize_w) > max_side_limit:
        logger.warning(
            "%sresized image %dx%d exceeds max_side_limit %d; shrinking to fit",
            f"{source}: " if source else "",
            resize_w,
            resize_h,
            max_side_limit,
        )
        shrink = float(max_side_limit) / max(resize_h, resize_w)
        resize_h, resize_w = int(resize_h * shrink), int(resize_w * shrink)
    resize_h = max(int(round(resize_h / SIZE_MULTIPLE) * SIZE_MULTIPLE), SIZE_MULTIPLE)
    resize_w = max(int(round(resize_w / SIZE_MULTIPLE) * SIZE_MULTIPLE), SIZE_MULTIPLE)
    return resize_h, resize_w


def resize_for_detection(
    image: np.ndarray, limit_side_len: int, limit_type: str, max_side_limit: int, source: Optional[str] = None
) -> tuple[np.ndarray, ResizeInfo]:
    """Resize a BGR uint8 HxWx3 image for the network; returns it with the mapping back to the original
    (``source``: the image's name for target_size's warning)."""
    src_h, src_w = image.shape[:2]
    padded = pad_small_image(image)
    height, width = padded.shape[:2]
    resize_h, resize_w = target_size(height, width, limit_side_len, limit_type, max_side_limit, source)
    if (resize_h, resize_w) == (height, width):
        return padded, ResizeInfo(src_h, src_w, 1.0, 1.0)
    resized = _resized(padded, resize_h, resize_w)
    return resized, ResizeInfo(src_h, src_w, resize_h / float(height), resize_w / float(width))


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize to height x width; a size no image can have (settings that allow one: a huge limit_side_len with
    max_side_limit raised as far) is an InvalidParameterError, not OpenCV's raw error."""
    if max(height, width) > MAX_NETWORK_SIDE:
        raise InvalidParameterError(
            f"the settings resize this image to {width}x{height}, beyond {MAX_NETWORK_SIDE:,} pixels a side: "
            f"lower limit_side_len or max_side_limit"
        )
    try:
        return cv2.resize(image, (width, height))
    except cv2.error as exc:  # no memory for it
        raise InvalidParameterError(f"cannot resize the image to {width}x{height}: {exc.err}") from None


def check_input_shape(input_shape: Any) -> Optional[tuple[int, int, int]]:
    """PaddleOCR's ``input_shape`` (C, H, W) as ints, or None; C must be 3 and H, W multiples of 32."""
    if input_shape is None:
        return None
    try:
        values = tuple(input_shape)
    except TypeError:
        values = ()
    whole = all(
        (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
        for v in values
    )
    if len(values) != 3 or not whole:  # 640.9 is no side, nor "640" (as limit_side_len: 640.0 is)
        raise InvalidParameterError(f"input_shape must be three whole numbers (C, H, W), got {input_shape!r}")
    channels, height, width = (int(v) for v in values)
    if max(height, width) > MAX_NETWORK_SIDE:
        raise InvalidParameterError(f"input_shape's sides must be at most {MAX_NETWORK_SIDE:,}, got {values!r}")
    if channels != 3 or min(height, width) < SIZE_MULTIPLE or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise InvalidParameterError(
            f"input_shape must be (3, H, W) with H and W multiples of {SIZE_MULTIPLE}, got {tuple(input_shape)!r}"
        )
    return channels, height, width


def check_shape_bucket(shape_bucket: Any) -> Optional[int]:
    """``shape_bucket`` as an int, or None (off: every image runs at its own resized size).

    It must be a positive multiple of 32, so that padding keeps every side a multiple of the
    network's stride and the map's grid stays aligned with the unpadded one.
    """
    if shape_bucket is None:
        return None
    if isinstance(shape_bucket, bool) or not isinstance(shape_bucket, (int, np.integer)):
        raise InvalidParameterError(
            f"shape_bucket must be a whole number, a multiple of {SIZE_MULTIPLE} (e.g. 320), got {shape_bucket!r}"
        )
    if shape_bucket < SIZE_MULTIPLE or shape_bucket % SIZE_MULTIPLE:
        raise InvalidParameterError(
            f"shape_bucket must be a positive multiple of {SIZE_MULTIPLE} (e.g. 320), got {shape_bucket}"
        )
    return int(shape_bucket)


def bucketed_size(height: int, width: int, shape_bucket: Optional[int]) -> tuple[int, int]:
    """The network input size for a resized image: each side rounded up to a multiple of shape_bucket.

    It depends on the image alone (never on the others in its batch), so results do not depend on
    batch_size; None keeps the size as it is.
    """
    if shape_bucket is None:
        return height, width
    return -(-height // shape_bucket) * shape_bucket, -(-width // shape_bucket) * shape_bucket


def resize_to_shape(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, ResizeInfo]:
    """Resize to exactly height x width, aspect ratio not kept: PaddleX's DetResizeForTest with input_shape."""
    src_h, src_w = image.shape[:2]
    padded = pad_small_image(image)
    pad_h, pad_w = padded.shape[:2]
    if (pad_h, pad_w) == (height, width):
        return padded, ResizeInfo(src_h, src_w, 1.0, 1.0)
    resized = _resized(padded, height, width)
    return resized, ResizeInfo(src_h, src_w, height / float(pad_h), width / float(pad_w))


def normalize_image(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float], scale: float, out: Optional[np.ndarray] = None
) -> np.ndarray:
    """(pixel * scale - mean) / std per channel, in the image's own channel order (BGR); returns CHW float32.

    The same float32 arithmetic as PaddleOCR's NormalizeImage (pixel * (scale / std) + (-mean / std),
    rounded after each step), so the tensor is bit-identical to its; but one pass per channel plane
    written straight into the CHW result (``out``, e.g. a slot of a batch), instead of an HWC float
    copy, a transpose and a contiguous copy (10-20x faster). A uint8 image takes each value from a
    256-entry table made by that same arithmetic (cv2.LUT: 672x960, 1.5 -> 1.0 ms).
    """
    channels = image.shape[2]
    if out is None:
        out = np.empty((channels, *image.shape[:2]), dtype=np.float32)
    # cv2.split gives contiguous planes: the multiply reads them at full speed
    planes = cv2.split(np.ascontiguousarray(image))
    if image.dtype == np.uint8:
        tables = normalization_tables(tuple(mean), tuple(std), scale)
        for channel, plane in enumerate(planes):
            target = out[channel]
            written = cv2.LUT(plane, tables[channel], dst=target)
            if written is not target:  # OpenCV could not write into the view: copy what it made
                target[...] = written
        return out
    alpha, beta = normalization_factors(mean, std, scale)
    for channel, plane in enumerate(planes):
        np.multiply(plane, alpha[channel], out=out[channel])
        out[channel] += beta[channel]
    return out


def normalization_factors(mean: Sequence[float], std: Sequence[float], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(scale / std, -mean / std) per channel, float32: PaddleX's NormalizeImage alpha and beta."""
    alpha = np.asarray([scale / s for s in std], dtype=np.float32)
    beta = np.asarray([-m / s for m, s in zip(mean, std)], dtype=np.float32)
    return alpha, beta


@functools.lru_cache(maxsize=16)
def normalization_tables(mean: tuple[float, ...], std: tuple[float, ...], scale: float) -> np.ndarray:
    """(channels, 256) float32: the normalized value of every uint8 pixel value, per channel, computed
    with the very operations normalize_image applies to other dtypes (read-only: it is shared)."""
    alpha, beta = normalization_factors(mean, std, scale)
    values = np.arange(256, dtype=np.uint8)
    tables = np.empty((len(alpha), 256), dtype=np.float32)
    for channel in range(len(alpha)):
        np.multiply(values, alpha[channel], out=tables[channel])
        tables[channel] += beta[channel]
    tables.flags.writeable = False
    return tables


def group_by_shape(images: Sequence[np.ndarray], shape_bucket: Optional[int] = None) -> list[list[int]]:
    """Indices of images grouped by identical network input shape, in first-seen order.

    Only images with the same network input share a session.run: padding them to a common size
    would change the probability map near the padding, and results must not depend on batch_size.
    With ``shape_bucket`` the network input is each image's own :func:`bucketed_size`.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        key = (*bucketed_size(image.shape[0], image.shape[1], shape_bucket), *image.shape[2:])
        groups.setdefault(key, []).append(index)
    return list(groups.values())
