"""One image as BGR uint8 HxWx3: numpy arrays and PIL images converted, encoded bytes decoded.

Encoded images are decoded to OpenCV's IMREAD_COLOR pixels like PaddleOCR (plain JPEG and PNG files by faster
decoders that give the same pixels, detector.decode), after a header-only size check against the pixel budget
(max_pixels) that refuses decompression bombs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
from collections.abc import Iterator
from typing import Any, Optional

import cv2
import numpy as np

from .decode import PNG_SIGNATURE, choose_fast_decoder, decode_bgr, decode_damaged_jpeg
from .errors import ImageTooLargeError, UnreadableImageError, UnsupportedInputError
from .load_options import DEFAULT_LOAD_OPTIONS, LoadOptions
from .process_lock import ProcessLock

# Bytes searched for the size in the text header of a format only OpenCV reads (Radiance HDR, PAM).
HEADER_SCAN_BYTES = 65536
# the load stage's logger, under the name its warnings had before inputs.py was split (a filter set on it holds)
logger = logging.getLogger("detector.inputs")
# Pillow's pixel limit is process-wide: one raise of it at a time (pillow_pixel_limit); new in a forked child (one
# another thread held at the fork would stay held there).
_PILLOW_LIMIT_LOCK = ProcessLock()


# ----------------------------------------------------------------------------- arrays and PIL


def to_bgr_uint8(array: np.ndarray) -> np.ndarray:
    """Gray, BGR or BGRA arrays of uint8, other integers (0-255 as it is, else scaled from 0-65535),
    float (in [0, 1], or 0-255 if above 1) or bool -> BGR uint8 HxWx3, in memory of its own."""
    if not isinstance(array, np.ndarray) or array.size == 0:
        raise UnsupportedInputError("an image array must be a non-empty numpy array")
    original = array
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UnsupportedInputError(
            f"an image array must be HxW (gray), HxWx3 (BGR) or HxWx4 (BGRA), got shape {array.shape}"
        )
    if array.dtype.kind in "ui" and array.dtype != np.uint8:  # uint16 (either byte order), other integers
        # values within 0-255 as they are (PaddleOCR normalizes x / 255 whatever the type), else 16-bit
        # values scaled to 8 bits as OpenCV reads 16-bit files; signed ones are what arithmetic on an image leaves
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise UnsupportedInputError(
                f"an integer image array must hold values within 0-255 (or 0-65535), got {low} to {high}"
            )
        array = array.astype(np.uint8) if high <= 255 else (array >> 8).astype(np.uint8)
    elif array.dtype.kind == "f":
        # NaN as 0, and every value within 0-255 before scaling (the same uint8 values: they are clipped to that
        # after it), so that -inf or a float16 maximum times 255 overflows nothing ("overflow encountered")
        values = np.clip(np.nan_to_num(array), 0, 255)
        # [0, 1]; a float image with values above 1 is on PaddleOCR's scale, 0-255 (it normalizes x / 255)
        scale = 1.0 if values.max() > 1.0 else 255.0
        array = np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise UnsupportedInputError(f"image arrays must be of integers, floats or booleans, got {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    # never the caller's memory: a result's input_img (what save_to_img draws on) outlives the call, and a caller
    # that reuses its buffer (video frames, a decode buffer) would change it (1.4 ms for 2500x1800, 0.5% of a predict)
    return array.copy() if np.may_share_memory(array, original) else np.ascontiguousarray(array)


def pil_to_bgr(image: Any) -> np.ndarray:
    """A PIL image (any mode) -> BGR uint8."""
    if image.width == 0 or image.height == 0:  # as an empty array is: nothing to detect in, nor to save
        raise UnsupportedInputError(f"a PIL image must have pixels, got one of {image.width}x{image.height}")
    from PIL import Image

    try:
        image.load()  # a lazily opened image whose file was closed or cut short fails here, in Pillow's words
    except MemoryError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the PIL image is a decompression bomb to Pillow: {exc}") from None
    except Exception as exc:  # AssertionError, ValueError, OSError, … as Pillow's plugins raise them
        raise UnreadableImageError(f"the PIL image cannot be read: {str(exc) or type(exc).__name__}") from None
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        # by the uint16 arrays' rule: values within 0-255 as they are (as PaddleX's convert("RGB") keeps
        # them), else scaled as OpenCV scales 16-bit files (where PaddleX clips every value above 255)
        return to_bgr_uint8(np.asarray(image))
    if mode == "I":  # 32-bit integers: 8-bit values as they are (as Pillow's convert keeps them), else 16-bit
        array = np.asarray(image)
        if array.size and array.min() >= 0 and array.max() <= 255:
            return to_bgr_uint8(array.astype(np.uint8))
        return to_bgr_uint8((np.clip(array, 0, 65535) >> 8).astype(np.uint8))
    if mode in ("L", "F"):  # F: 32-bit floats, read by the float arrays' rule ([0, 1], or 0-255 above 1)
        return to_bgr_uint8(np.asarray(image))
    if mode != "RGB":
        try:
            image = image.convert("RGB")  # RGBA drops alpha, as OpenCV's IMREAD_COLOR does for files
        except ValueError as exc:  # a mode Pillow cannot convert ("La", "I;16N" on some builds)
            raise UnsupportedInputError(f"a PIL image of mode {mode!r} cannot be read: {exc}") from None
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


# ----------------------------------------------------------------------------- encoded bytes


# What a refusal for size says to do (images, TIFF and PDF pages alike)
RAISE_LIMIT_HINT = "raise max_pixels (CLI: --max-pixels) if you trust this input"


def check_pixel_budget(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}; "
            + RAISE_LIMIT_HINT
        )


@contextlib.contextmanager
def pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit no lower than max_pixels while it reads.

    Pillow refuses an image above twice its MAX_IMAGE_PIXELS (178,956,970 pixels by default) whatever the pixel
    budget here allows: a 13500x13500 scan with max_pixels=300_000_000 was refused; above MAX_IMAGE_PIXELS
    itself it warns. Where the budget is larger, Pillow's limit is raised to it for the read (the budget itself
    is checked here first) and put back after, so that no image within the budget gets Pillow's warning;
    the limit is process-wide, so one such read runs at a time. Pillow's other warnings (a damaged EXIF block)
    reach the caller's filters as they are: silencing them took warnings.catch_warnings, whose every use
    resets the whole process's once-only warning registries.
    """
    from PIL import Image

    if max_pixels <= DEFAULT_LOAD_OPTIONS.max_pixels:  # within Pillow's own limit, unless one lowered it
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or max_pixels <= limit:
            yield
            return
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def image_header_size(data: bytes, max_pixels: int = 0) -> Optional[tuple[int, int]]:
    """(width, height) read from the image header without decoding pixels; None if it cannot be told.
    ``max_pixels``: the pixel budget, which Pillow's own bomb limit is raised to where it is larger."""
    from PIL import Image

    try:
        with pillow_pixel_limit(max_pixels), Image.open(io.BytesIO(data)) as header:
            return header.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"image header declares a decompression bomb: {exc} (a larger max_pixels, --max-pixels, reads it)"
        ) from None
    except Exception:
        return opencv_only_header_size(data)  # not a format Pillow knows: one only OpenCV reads, or none


def opencv_only_header_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from the header of a file OpenCV decodes and Pillow does not open (Radiance HDR, PAM,
    a BMP whose info header Pillow does not know, and a PNG with a damaged ancillary chunk, which Pillow
    refuses and OpenCV's libpng only warns about), so
    that the pixel budget holds for them too before decoding; None for anything else."""
    head = data[:HEADER_SCAN_BYTES]
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:  # IHDR is always first
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        # text lines, an empty line, then the resolution: "-Y <height> +X <width>" (the axes may swap)
        _, blank, rest = head.partition(b"\n\n")
        tokens = rest.split(b"\n", 1)[0].split() if blank else []
        if len(tokens) == 4 and tokens[1].isdigit() and tokens[3].isdigit():
            sides = {tokens[0][-1:]: int(tokens[1]), tokens[2][-1:]: int(tokens[3])}
            if set(sides) == {b"X", b"Y"}:
                return sides[b"X"], sides[b"Y"]
        return None
    if head[:2] == b"BM" and len(head) >= 26:
        # BMP with an info header Pillow refuses (OpenCV takes any size from 12 on: a 1 KB RLE8 file declaring
        # 32000x32000 was decoded to 6 GB before its size was checked): OS/2's 12-byte header holds 16-bit
        # sides, every other one signed 32-bit sides (a negative height: rows top-down)
        (header_size,) = struct.unpack("<I", head[14:18])
        if header_size == 12:
            return struct.unpack("<HH", head[18:22])
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if head.startswith(b"P7\n"):  # PAM: "WIDTH <n>" and "HEIGHT <n>" lines before ENDHDR
        fields = dict(line.split(None, 1) for line in head.split(b"ENDHDR", 1)[0].splitlines()[1:] if b" " in line)
        width, height = fields.get(b"WIDTH", b"").strip(), fields.get(b"HEIGHT", b"").strip()
        return (int(width), int(height)) if width.isdigit() and height.isdigit() else None
    return None


def decode_image_bytes(data: bytes, what: str, options: LoadOptions) -> np.ndarray:
    """Decode an encoded image as BGR uint8 with the pixels PaddleOCR gets (cv2 IMREAD_COLOR).

    Plain JPEG and PNG files go through faster decoders proven to give the same pixels (detector.decode).
    """
    if not data:
        raise UnreadableImageError(f"{what} is empty")
    # a fast decoder's header walk gives the size too; Pillow reads it for every other format
    choice = choose_fast_decoder(data)
    size = (choice.width, choice.height) if choice is not None else image_header_size(data, options.max_pixels)
    if size is not None:
        check_pixel_budget(size[0], size[1], options.max_pixels, what)
    image = decode_bgr(data, choice)
    if image is None:
        image = decode_damaged_jpeg(data, choice)
        if image is not None:
            logger.warning("%s is a damaged JPEG (cut short, or without its end marker): decoded what it holds", what)
    if image is None:
        raise UnreadableImageError(
            f"{what} is not an image OpenCV can decode (corrupt, truncated or unsupported format)"
        )
    if size is None:  # a header neither Pillow nor opencv_only_header_size reads (PFM): the budget holds after
        check_pixel_budget(image.shape[1], image.shape[0], options.max_pixels, what)
    return image
