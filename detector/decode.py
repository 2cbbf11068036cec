"""Decode stage: encoded JPEG/PNG bytes -> the exact BGR uint8 pixels cv2.imdecode(IMREAD_COLOR) gives.

PaddleOCR reads files with OpenCV, so OpenCV's pixels are the reference. Two faster decoders give the
same pixels where the file is plain enough, and are used only there:

- JPEG: simplejpeg (libjpeg-turbo through TurboJPEG) with the accurate integer DCT and fancy
  upsampling, which are libjpeg's defaults and what OpenCV decodes with. Only 8-bit Huffman
  baseline/extended/progressive files, gray or YCbCr with 4:4:4, 4:2:2 or 4:2:0 sampling, with their
  own Huffman tables, and no EXIF orientation other than 1 (OpenCV rotates; we let it).
- PNG: pyspng (libspng), lossless, so any correct decoder agrees: only 8-bit gray, RGB and RGBA
  (OpenCV drops alpha without compositing), no tRNS, no EXIF (eXIf chunk or an ImageMagick
  "Raw profile type" text chunk), no animation, every chunk CRC valid (libspng is told to skip CRCs).
  Among those, a file that is not interlaced and whose rows are all filtered None, Sub or Up (what
  cv2.imwrite writes: Sub) is inflated by zlib-ng and its rows rebuilt by numpy (decode_png_numpy):
  libspng's time is almost all zlib's inflate, which zlib-ng does several times faster.

Everything else, anything either library refuses (it raises: truncated or corrupt data, warnings
included), and every file when a library is not installed, goes to OpenCV. The choice reads the
headers only (JPEG markers up to the first scan, PNG chunk headers), never the pixels.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
import struct
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import NamedTuple, Optional

import cv2
import numpy as np

JPEG_DECODER = "simplejpeg"
PNG_DECODER = "pyspng"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_END_MARKER = b"\xff\xd9"  # EOI
# OpenCV refuses images above these (CV_IO_MAX_IMAGE_WIDTH/HEIGHT/PIXELS defaults): let it say so.
OPENCV_MAX_SIDE = 1 << 20
OPENCV_MAX_PIXELS = 1 << 30
# ...unless these variables change the limits: then OpenCV decodes everything, as it alone knows them.
OPENCV_LIMIT_VARIABLES = ("OPENCV_IO_MAX_IMAGE_WIDTH", "OPENCV_IO_MAX_IMAGE_HEIGHT", "OPENCV_IO_MAX_IMAGE_PIXELS")
# libpng refuses wider or taller PNGs unless told otherwise (PNG_USER_WIDTH_MAX / PNG_USER_HEIGHT_MAX).
LIBPNG_MAX_SIDE = 1_000_000
# (horizontal, vertical) luma sampling with 1x1 chroma: 4:4:4, 4:2:2, 4:2:0.
JPEG_LUMA_SAMPLING = frozenset({(1, 1), (2, 1), (2, 2)})
JPEG_FAST_SOF = frozenset({0xC0, 0xC1, 0xC2})  # Huffman baseline, extended sequential, progressive
JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xDA)})
EXIF_ORIENTATION_TAG = 0x0112
# Chunks that change what OpenCV returns (tRNS, EXIF, animation) or that it rejects (CgBI).
PNG_FALLBACK_CHUNKS = frozenset({b"tRNS", b"eXIf", b"acTL", b"fcTL", b"fdAT", b"CgBI"})
PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
PNG_CRITICAL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
# OpenCV gives up on an ancillary chunk above libpng's user-chunk limit (8 MB); stay far below it.
PNG_MAX_ANCILLARY_CHUNK = 1 << 20
PNG_FAST_COLOR_TYPES = frozenset({0, 2, 6})  # 8-bit gray, RGB, RGBA
PNG_CHANNELS = {0: 1, 2: 3, 6: 4}  # channels by color type
# Row filters whose rebuilding is a running sum mod 256 (along the row: Sub; down a run of rows: Up),
# so numpy does whole runs of rows at once; Average and Paeth are left to libspng.
PNG_NONE, PNG_SUB, PNG_UP = 0, 1, 2
# decode_png_numpy inflates this many rows first: a file with other filters goes to libspng having cost little.
PNG_PROBE_ROWS = 64
# libspng's output by channel count -> BGR (alpha dropped, not composited, as OpenCV does)
PNG_CHANNELS_TO_BGR = {1: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}


class FastDecode(NamedTuple):
    """Which fast decoder can give OpenCV's exact pixels for a file, and the size its header declares."""

    decoder: str  # JPEG_DECODER | PNG_DECODER
    width: int
    height: int


def decode_bgr(data: bytes, choice: Optional[FastDecode]) -> Optional[np.ndarray]:
    """BGR uint8 HxWx3 pixels identical to cv2.imdecode(data, IMREAD_COLOR); None where OpenCV cannot decode.

    choice: choose_fast_decoder(data), or None to decode with OpenCV.
    """
    if choice is not None:
        image = decode_fast(data, choice.decoder)
        if image is not None and image.shape == (choice.height, choice.width, 3):
            return image
        if choice.decoder == JPEG_DECODER and not data[-4096:].rstrip(b"\x00").endswith(JPEG_END_MARKER):
            return None  # cut short, or its end marker lost: decode_damaged_jpeg, the same on every OpenCV
    flags = cv2.IMREAD_COLOR
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        # OpenCV 5 turns a WebP by its EXIF orientation; OpenCV 4, PaddleOCR's, does not (it does for JPEG and PNG)
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    elif data[:3] == b"\xff\xd8\xff" and not _jpeg_first_app1_orients(data):
        # OpenCV 4.10 (PaddleOCR's) reads the orientation from a JPEG's first APP1 segment only; later ones
        # look for an EXIF APP1 (with an orientation) past an XMP one, or past an EXIF one without any, and
        # would turn the image where PaddleOCR's does not
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)


def decode_damaged_jpeg(data: bytes, choice: Optional[FastDecode]) -> Optional[np.ndarray]:
    """A plain JPEG (choice: its headers passed the JPEG fast decoder's test) that decode_bgr left undecoded,
    decoded by libjpeg-turbo's tolerant mode: a file cut short, or missing its end marker only.

    OpenCV gives no pixels to match for the rows such a file does not reach: OpenCV 5 refuses the file,
    OpenCV 4.8 leaves those rows black, OpenCV 4.10 leaves them as the memory it allocated held (other
    pixels on every call, measured: a text detector could find boxes in them). Here every row the data
    holds is kept and what is missing is filled grey by libjpeg-turbo, on every OpenCV; the caller says so.
    """
    if choice is None or choice.decoder != JPEG_DECODER:
        return None
    image = _decode_with_simplejpeg(data, strict=False)
    return image if image is not None and image.shape == (choice.height, choice.width, 3) else None


def _decode_with_simplejpeg(data: bytes, strict: bool) -> Optional[np.ndarray]:
    """libjpeg-turbo through simplejpeg, with OpenCV's accurate DCT and fancy upsampling; None if simplejpeg
    is not installed or refuses the data (strict: also on libjpeg's warnings, a file cut short among them)."""
    simplejpeg = _import_optional("simplejpeg")
    if simplejpeg is None:
        return None
    try:
        image = simplejpeg.decode_jpeg(bytes(data), colorspace="BGR", fastdct=False, fastupsample=False, strict=strict)
    except Exception:  # ValueError for corrupt, truncated or unsupported data
        return None
    return np.ascontiguousarray(image)


def choose_fast_decoder(data: bytes) -> Optional[FastDecode]:
    """The fast decoder proven to match OpenCV on this file, from its headers alone; None: use OpenCV."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg_choice(data)
        if data[:8] == PNG_SIGNATURE:
            return _png_choice(data)
    except (IndexError, struct.error):  # a header cut short: OpenCV reports it
        return None
    return None


def decode_fast(data: bytes, decoder: str) -> Optional[np.ndarray]:
    """Decode with a fast decoder; None if it is not installed or refuses the file (OpenCV then decides)."""
    if decoder == JPEG_DECODER:
        return _decode_with_simplejpeg(data, strict=True)
    if decoder == PNG_DECODER:
        try:
            rebuilt = decode_png_numpy(data)
        except ValueError:
            return None
        if rebuilt is not None:
            return rebuilt
        pyspng = _import_optional("pyspng")
        if pyspng is None:
            return None
        try:
            pixels = pyspng.load(bytes(data))
        except Exception:  # RuntimeError for corrupt or truncated data
            return None
        if pixels.dtype != np.uint8:
            return None
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        conversion = PNG_CHANNELS_TO_BGR.get(channels)
        return None if conversion is None else cv2.cvtColor(pixels, conversion)
    raise ValueError(f"unknown decoder {decoder!r}")


@functools.cache
def _import_optional(name: str) -> Optional[ModuleType]:
    """The module, imported on first use (import detector stays light), or None if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _within_opencv_limits(width: int, height: int) -> bool:
    if any(name in os.environ for name in OPENCV_LIMIT_VARIABLES):
        return False
    return 0 < width <= OPENCV_MAX_SIDE and 0 < height <= OPENCV_MAX_SIDE and width * height <= OPENCV_MAX_PIXELS


# ----------------------------------------------------------------------------- JPEG


class _JpegHeaderUnreadable(Exception):
    """Junk between markers, a marker where a segment belongs, or a header cut short before its first scan."""


def _jpeg_header_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, segment payload) of each marker segment from SOI up to the first SOS (not included);
    raises _JpegHeaderUnreadable on anything libjpeg would warn about or stop at before that."""
    size = len(data)
    pos = 2
    while True:
        if pos + 4 > size or data[pos] != 0xFF:
            raise _JpegHeaderUnreadable
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_STANDALONE_MARKERS or marker == 0xD8:
            raise _JpegHeaderUnreadable
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > size:
            raise _JpegHeaderUnreadable
        if marker == 0xDA:  # start of scan: the header is complete
            return
        yield marker, data[pos + 4 : pos + 2 + length]
        pos += 2 + length


def _jpeg_first_app1_orients(data: bytes) -> bool:
    """Whether a JPEG's first APP1 segment is an EXIF one holding an Orientation tag (whatever its value: OpenCV
    reads it); True where the header is unreadable (OpenCV decides), False where there is no APP1."""
    try:
        for marker, segment in _jpeg_header_segments(data):
            if marker == 0xE1:
                return segment.startswith(b"Exif\x00\x00") and _exif_orientation(segment[6:]) is not None
    except _JpegHeaderUnreadable:
        return True
    return False


def _jpeg_choice(data: bytes) -> Optional[FastDecode]:
    """Walk the markers from SOI to the first SOS; fast only for the plain cases listed in the module doc."""
    frame: Optional[tuple] = None
    saw_huffman_table = saw_jfif = False
    adobe_transform: Optional[int] = None
    try:
        segments = list(_jpeg_header_segments(data))
    except _JpegHeaderUnreadable:
        return None  # junk between markers or cut short: libjpeg warns, OpenCV decides
    for marker, segment in segments:
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in JPEG_FAST_SOF or frame is not None:
                return None  # lossless, arithmetic, hierarchical or a second frame
            frame = _jpeg_frame(segment)
            if frame is None:
                return None
        elif marker == 0xC4:
            saw_huffman_table = True
        elif marker == 0xE0 and segment.startswith(b"JFIF\x00"):
            saw_jfif = True
        elif marker == 0xE1:
            if segment.startswith(b"Exif\x00\x00"):
                if _exif_orientation(segment[6:]) not in (None, 1):
                    return None  # OpenCV rotates (or the EXIF is unreadable): let it
            elif not segment.startswith(b"http://ns.adobe.com/"):  # XMP is harmless; anything else: OpenCV
                return None
        elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
            adobe_transform = segment[11]
    if frame is None or not saw_huffman_table:  # no DHT: an MJPEG frame, OpenCV supplies default tables
        return None
    width, height, components = frame
    if len(components) == 3:
        identifiers = tuple(c[0] for c in components)
        if adobe_transform not in (None, 1) or (
            not saw_jfif and adobe_transform is None and identifiers == (82, 71, 66)
        ):
            return None  # stored as RGB, not YCbCr
    if not _within_opencv_limits(width, height):
        return None
    return FastDecode(JPEG_DECODER, width, height)


def _jpeg_frame(segment: bytes) -> Optional[tuple]:
    """(width, height, components) of an SOF segment we can fast-decode; None otherwise."""
    precision, height, width, count = struct.unpack_from(">BHHB", segment, 0)
    if precision != 8 or height == 0 or width == 0 or count not in (1, 3) or len(segment) < 6 + 3 * count:
        return None
    components = [(segment[6 + 3 * i], segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15) for i in range(count)]
    sampling = [(h, v) for _, h, v in components]
    if count == 1:
        if sampling[0] != (1, 1):
            return None
    elif sampling[0] not in JPEG_LUMA_SAMPLING or sampling[1] != (1, 1) or sampling[2] != (1, 1):
        return None  # 4:4:0, 4:1:1 and other layouts: upsampling code paths we have not proven
    return width, height, components


def _exif_orientation(tiff: bytes) -> Optional[int]:
    """The Orientation tag of IFD0 (None if absent); -1 where the EXIF block cannot be read."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        magic, ifd_offset = struct.unpack_from(order + "HI", tiff, 2)
        if magic != 42:
            return -1
        (count,) = struct.unpack_from(order + "H", tiff, ifd_offset)
        for index in range(count):
            tag, kind, _, value = struct.unpack_from(order + "HHI2s", tiff, ifd_offset + 2 + 12 * index)
            if tag == EXIF_ORIENTATION_TAG:
                return struct.unpack(order + "H", value)[0] if kind == 3 else -1
        return None
    except (KeyError, struct.error):
        return -1


# ----------------------------------------------------------------------------- PNG


def _png_choice(data: bytes) -> Optional[FastDecode]:
    """Walk every chunk (headers and CRCs only); fast only for the plain cases listed in the module doc."""
    view = memoryview(data)
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        return None
    width, height, bit_depth, color_type, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if (
        bit_depth != 8
        or color_type not in PNG_FAST_COLOR_TYPES
        or (compression, filtering) != (0, 0)
        or interlace not in (0, 1)
        or not _within_opencv_limits(width, height)
        or max(width, height) > LIBPNG_MAX_SIDE
    ):
        return None
    seen_idat = idat_ended = False
    for pos, length, kind in _png_chunks(data):
        end = pos + 12 + length
        (stored_crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != stored_crc:
            return None  # libpng rejects (critical) or drops (ancillary) it; libspng would not notice
        if kind == b"IDAT":
            if idat_ended:
                return None
            seen_idat = True
        else:
            idat_ended = seen_idat
            if kind == b"IEND":
                break
            if kind == b"IHDR" and pos != 8:
                return None
            if kind == b"PLTE" or kind in PNG_FALLBACK_CHUNKS:
                return None  # a palette in a non-palette file is an error to libpng, a hint to libspng
            if kind not in PNG_CRITICAL_CHUNKS:
                if not 0x61 <= kind[0] <= 0x7A:
                    return None  # an unknown critical chunk
                if length > PNG_MAX_ANCILLARY_CHUNK:
                    return None
                if kind == b"bKGD" and length not in (1, 2, 6):
                    return None  # OpenCV rejects malformed bKGD
                if kind in PNG_TEXT_CHUNKS and bytes(view[pos + 8 : pos + 8 + 16]) == b"Raw profile type":
                    return None  # OpenCV reads EXIF from ImageMagick's raw-profile text
    else:
        return None  # no IEND: truncated
    if not seen_idat:
        return None
    return FastDecode(PNG_DECODER, width, height)


def decode_png_numpy(data: bytes) -> Optional[np.ndarray]:
    """OpenCV's BGR pixels of a PNG that choose_fast_decoder sent to PNG_DECODER, if it is not interlaced
    and every row is filtered None, Sub or Up: the image data inflated by zlib-ng, each run of rows with
    one filter rebuilt by a numpy running sum in uint8 (wrapping mod 256, as the PNG filters are defined),
    straight into BGR order (alpha dropped). None for any other file (libspng's then) and where zlib-ng is
    not installed; ValueError where the image data is no zlib stream or does not end exactly where the image
    does (libpng fails or warns on these, and libspng may not notice: OpenCV decides)."""
    zlib_ng = _import_optional("zlib_ng.zlib_ng")
    if zlib_ng is None or data[:8] != PNG_SIGNATURE:
        return None
    width, height, _, color_type, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    channels = PNG_CHANNELS.get(color_type)
    if channels is None or interlace:
        return None
    stride = 1 + width * channels
    compressed = _png_image_data(data)
    inflater = zlib_ng.decompressobj()
    try:
        head = zlib_ng.decompressobj().decompress(compressed, min(height, PNG_PROBE_ROWS) * stride)
        if max(head[::stride], default=PNG_NONE) > PNG_UP:
            return None
        inflated = inflater.decompress(compressed, height * stride + 1)
    except zlib_ng.error as error:
        raise ValueError(f"PNG image data is not a zlib stream: {error}") from error
    if len(inflated) != height * stride or not inflater.eof or inflater.unused_data:
        raise ValueError("PNG image data does not end where the image does")  # libpng errs or warns
    rows = np.frombuffer(inflated, np.uint8).reshape(height, stride)
    filters = rows[:, 0]
    if filters.max() > PNG_UP:
        return None
    pixels = rows[:, 1:].reshape(height, width, channels)
    pixels = pixels[:, :, 2::-1] if channels > 1 else pixels  # RGB(A) -> BGR: the filters act per channel
    rebuilt = np.empty(pixels.shape, np.uint8)
    changes = (np.flatnonzero(np.diff(filters)) + 1).tolist()
    for start, end in zip([0, *changes], [*changes, height]):
        kind = filters[start]
        if kind == PNG_SUB:
            np.cumsum(pixels[start:end], axis=1, dtype=np.uint8, out=rebuilt[start:end])
        elif kind == PNG_UP:
            np.cumsum(pixels[start:end], axis=0, dtype=np.uint8, out=rebuilt[start:end])
            if start:
                rebuilt[start:end] += rebuilt[start - 1]
        else:
            rebuilt[start:end] = pixels[start:end]
    return cv2.cvtColor(rebuilt, cv2.COLOR_GRAY2BGR) if channels == 1 else rebuilt


def _png_chunks(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(position, data length, type) of each whole chunk after the signature, up to the end of data or
    the first chunk cut short."""
    pos = 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if pos + 12 + length > len(data):
            return
        yield pos, length, kind
        pos += 12 + length


def _png_image_data(data: bytes) -> bytes:
    """The IDAT chunks' payloads before IEND, joined (the chunk layout already checked by _png_choice)."""
    chunks = itertools.takewhile(lambda chunk: chunk[2] != b"IEND", _png_chunks(data))
    return b"".join(data[pos + 8 : pos + 8 + length] for pos, length, kind in chunks if kind == b"IDAT")
