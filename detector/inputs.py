"""Load stage: turn whatever the caller passes into BGR uint8 HxWx3 images, lazily, one at a time.

Accepted: file paths, folders (sorted; optionally recursive), glob patterns, http(s) URLs, raw bytes,
numpy arrays, PIL images, PDF files and TIFF files (one image per page), and lists of those. Files
are decoded to OpenCV's IMREAD_COLOR pixels like PaddleOCR (EXIF orientation applied, alpha dropped,
16-bit scaled to 8-bit, CMYK converted; plain JPEG and PNG files by faster decoders that give the
same pixels, detector.decode), after a header-only size check that refuses decompression bombs;
TIFF pages are read with Pillow, as PaddleX's TIFF reader does.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import itertools
import logging
import math
import os
import socket
import stat
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import cv2
import numpy as np

from .decode import PNG_SIGNATURE, choose_fast_decoder, decode_bgr, decode_damaged_jpeg
from .errors import (
    ImageTooLargeError,
    InputNotFoundError,
    InvalidParameterError,
    SourceUnavailableError,
    UnreadableImageError,
    UnsupportedInputError,
)
from .http_body import body_chunks, web_opener

if TYPE_CHECKING:
    import PIL.Image

# What predict takes: one source of images (a path, folder, glob pattern or URL as str or a path object;
# encoded bytes; an array; a PIL image), or a list or tuple of them (expand_inputs).
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, "PIL.Image.Image"]
PredictInput = Union[ImageSource, Sequence[ImageSource]]

# Bytes searched for the size in the text header of a format only OpenCV reads (Radiance HDR, PAM).
HEADER_SCAN_BYTES = 65536
# A folder's files read: PaddleX's image and PDF suffixes, and JPEG 2000.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm"}
    | {".sr", ".ras", ".pdf"}
)
PDF_MAGIC = b"%PDF"
PDF_CONTENT_TYPES = frozenset({"application/pdf", "application/x-pdf"})
# Content types a URL input is refused by before its body is read: pages (an error or login page served with 200).
# Any other is read and goes by its bytes, as PaddleX reads it: S3 serves an object uploaded without a type as
# binary/octet-stream, and servers send application/force-download, application/x-pdf, even text/plain.
URL_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/json"})
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")  # little- and big-endian
GLOB_CHARACTERS = frozenset("*?[")
POINTS_PER_INCH = 72.0
# A PDF page too large for max_pixels at pdf_dpi is rendered smaller, down to this scale (7.2 dpi), as PaddleX
# does (its PDF_MIN_RENDER_SCALE); only a page too large even then is refused.
PDF_MIN_RENDER_SCALE = 0.1
URL_CHUNK_BYTES = 1 << 16
logger = logging.getLogger(__name__)
# pdfium is not thread-safe: every call into it goes through this lock.
# Re-entrant: a page generator dropped in a reference cycle is closed by the garbage collector, in whatever
# thread allocates, and its close takes this lock, maybe in the thread that holds it (a plain Lock: that thread
# and every later PDF in the process hung).
_PDFIUM_LOCK = threading.RLock()
# Pillow's pixel limit is process-wide too: one raise of it at a time (pillow_pixel_limit).
_PILLOW_LIMIT_LOCK = threading.Lock()


def _locks_anew() -> None:
    """In a forked child: new locks (one another thread held at the fork would stay held in the child)."""
    global _PDFIUM_LOCK, _PILLOW_LIMIT_LOCK
    _PDFIUM_LOCK, _PILLOW_LIMIT_LOCK = threading.RLock(), threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_locks_anew)


@dataclass(frozen=True)
class LoadOptions:
    """How inputs are read. The defaults are PaddleOCR's where it has one."""

    # Pillow's decompression-bomb limit, which PaddleX also applies to PDF pages (rendering a larger page
    # smaller: pdf_render_scale) and its service to images.
    max_pixels: int = 178_956_970
    # PaddleX renders PDF pages at zoom 2.0, i.e. 144 dpi.
    pdf_dpi: float = 144.0
    # Folders are walked with their subfolders, as PaddleX's batch sampler does (os.walk).
    recursive: bool = True
    # seconds for a whole URL input (connecting, headers and body; checked between reads, so it may run over
    # by up to one more wait for data of this length)
    url_timeout: float = 30.0
    url_max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_pixels", "url_max_bytes"):  # whole numbers: nan would switch the limit off
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InvalidParameterError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("pdf_dpi", "url_timeout"):  # finite: an infinite dpi has no page size
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise InvalidParameterError(f"{name} must be a number greater than 0 (and finite), got {value!r}")


DEFAULT_LOAD_OPTIONS = LoadOptions()


@dataclass
class LoadedImage:
    image: np.ndarray  # BGR uint8, HxWx3
    input_path: Optional[str]
    page_index: Optional[int] = None


@dataclass(frozen=True)
class Source:
    """One thing that yields images: a file, a URL, a buffer or an in-memory image."""

    # "file" | "url" | "bytes" | "array" | "pil" | "fetched" (a URL's (body, content type); name: the URL) |
    # "unreadable" (a folder of a walk that could not be listed; value: the InputNotFoundError its loading raises)
    kind: str
    value: Any
    name: Optional[str] = None  # what input_path reports
    # found by a folder walk or a glob pattern, not named by the caller one by one
    found_by_walk: bool = False

    def describe(self) -> str:
        """The source as a message names it (a URL without its secrets: shown_path)."""
        return shown_path(self.name) or f"<{self.kind}>"


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


def _is_pil_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "convert")


# ----------------------------------------------------------------------------- bytes and files


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


def read_file_bytes(path: Path, stream_max_bytes: int = DEFAULT_LOAD_OPTIONS.url_max_bytes) -> bytes:
    """The file's bytes; from a path that is no regular file (a pipe, /dev/stdin, a device such as /dev/zero,
    which never ends) at most stream_max_bytes, as for URLs: read whole, /dev/zero took all memory."""
    with _input_file_errors(path):
        if stat.S_ISREG(path.stat().st_mode):
            return path.read_bytes()
        with path.open("rb") as stream:
            data = stream.read(stream_max_bytes + 1)
    if len(data) > stream_max_bytes:
        raise ImageTooLargeError(
            f"{path} is no regular file (a pipe or a device) and sent more than the {stream_max_bytes:,}-byte "
            f"limit for stream and URL inputs"
        )
    return data


@contextlib.contextmanager
def _input_file_errors(path: Path) -> Iterator[None]:
    """An input file's OSError as the package's errors: a missing file InputNotFoundError, the rest
    UnreadableImageError (a folder, no permission, a disk error)."""
    try:
        yield
    except FileNotFoundError:
        raise InputNotFoundError(f"input {str(path)!r} does not exist") from None
    except OSError as exc:
        raise UnreadableImageError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_image_file(path: Path, options: LoadOptions = DEFAULT_LOAD_OPTIONS) -> np.ndarray:
    return decode_image_bytes(read_file_bytes(path, options.url_max_bytes), str(path), options)


def pdf_render_pixels(width_pt: float, height_pt: float, scale: float) -> int:
    """The pixels of a page rendered at scale, its sides rounded up (as PaddleX estimates them)."""
    return math.ceil(width_pt * scale) * math.ceil(height_pt * scale)


def pdf_render_scale(width_pt: float, height_pt: float, scale: float, max_pixels: int) -> Optional[float]:
    """The scale a PDF page is rendered at: the one asked for, or for a page that would exceed max_pixels
    there, the largest scale within it (found by bisection, as PaddleX finds it, so that both render the
    page at the same size), down to PDF_MIN_RENDER_SCALE; None for a page too large even at that."""
    if pdf_render_pixels(width_pt, height_pt, scale) <= max_pixels:
        return scale
    if pdf_render_pixels(width_pt, height_pt, PDF_MIN_RENDER_SCALE) > max_pixels:
        return None
    fits, too_large = PDF_MIN_RENDER_SCALE, min(scale, math.sqrt(max_pixels / (width_pt * height_pt)))
    for _ in range(32):
        middle = (fits + too_large) / 2
        if pdf_render_pixels(width_pt, height_pt, middle) <= max_pixels:
            fits = middle
        else:
            too_large = middle
    return fits


def render_pdf_pages(data: Union[bytes, Path], what: str, options: LoadOptions) -> Iterator[np.ndarray]:
    """Each page of a PDF (its bytes, or a file read as its pages need) rendered at options.pdf_dpi as BGR uint8;
    a page above max_pixels there is rendered at the largest scale within it (pdf_render_scale), with a warning,
    as PaddleX renders it."""
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise UnsupportedInputError(f"{what} is a PDF: install pypdfium2 to read PDFs") from None
    scale = options.pdf_dpi / POINTS_PER_INCH
    # a file as a stream (read as its pages need): pypdfium2 4.x encodes a path as UTF-8, which a name of other
    # bytes cannot be ('surrogates not allowed'); the stream is closed with the document
    try:
        stream = data.open("rb") if isinstance(data, Path) else None
    except OSError as exc:
        raise UnreadableImageError(f"cannot read {what}: {exc.strerror or exc}") from None
    with _PDFIUM_LOCK:
        document = None
        try:
            document = pdfium.PdfDocument(data if stream is None else stream, autoclose=True)
            # form fields drawn with the page (a filled invoice's values), as PaddleX's PDF reader draws them
            document.init_forms()
        except Exception as exc:  # pdfium raises PdfiumError for damaged files
            if document is not None:
                document.close()  # and its stream
            elif stream is not None:
                stream.close()  # a damaged file's stream was left to the garbage collector (a ResourceWarning)
            if _pdf_without_pages(data):  # before the password test: pdfium's error code may be an earlier PDF's
                raise UnreadableImageError(_no_pages_message(what)) from None
            if "password" in str(exc).lower():  # PDFium: Incorrect password error (an empty one was tried)
                raise UnreadableImageError(
                    f"{what} is a password-protected PDF: render its pages to images first (no password can be given)"
                ) from None
            raise UnreadableImageError(f"{what} is not a readable PDF: {exc}") from None
        page_count = len(document)
    try:
        if page_count == 0:  # pypdfium2 refuses such a document itself (_pdf_without_pages); in case one does not
            raise UnreadableImageError(_no_pages_message(what))
        for index in range(page_count):
            with _PDFIUM_LOCK:
                try:
                    page = document[index]
                except Exception as exc:  # PdfiumError: a page the file counts and does not hold (a damaged /Count)
                    raise UnreadableImageError(f"{what} page {index} cannot be loaded: {exc}") from None
                width_pt, height_pt = page.get_size()
                page_scale = pdf_render_scale(width_pt, height_pt, scale, options.max_pixels)
                if page_scale is None:
                    page.close()
                    smallest = pdf_render_pixels(width_pt, height_pt, PDF_MIN_RENDER_SCALE)
                    raise ImageTooLargeError(
                        f"{what} page {index} is {width_pt:g}x{height_pt:g} pt: {smallest:,} pixels even at "
                        f"{PDF_MIN_RENDER_SCALE * POINTS_PER_INCH:g} dpi, above the limit of {options.max_pixels:,}; "
                        + RAISE_LIMIT_HINT
                    )
                if page_scale != scale:
                    logger.warning(
                        "%s page %d is rendered at %.1f dpi, not %g: at that it would be above max_pixels (%s)",
                        what,
                        index,
                        page_scale * POINTS_PER_INCH,
                        options.pdf_dpi,
                        f"{options.max_pixels:,}",
                    )
                try:
                    bitmap = page.render(scale=page_scale)
                except Exception as exc:  # PdfiumError: pdfium could not draw it (no memory for the bitmap, …)
                    page.close()
                    raise UnreadableImageError(f"{what} page {index} cannot be rendered: {exc}") from None
                image = _pdfium_pixels_to_bgr(bitmap.to_numpy(), bitmap.mode)
                bitmap.close()
                page.close()
            yield image
    finally:
        with _PDFIUM_LOCK:
            document.close()


def _no_pages_message(what: str) -> str:
    return f"{what} is a PDF of no pages (its page tree is empty): there is nothing to detect text in"


def _pdf_without_pages(data: Union[bytes, Path]) -> bool:
    """Whether pdfium opens this PDF and finds no pages in it. pypdfium2 refuses such a document as it refuses a
    damaged one, 'Failed to load document', with pdfium's last error code, which no successful load resets: it
    read 'PDFium: Success' in a fresh process, 'Data format error' after a damaged PDF, and an earlier
    password refusal would make it 'Incorrect password error'. Asked only after a refusal (a second parse)."""
    import pypdfium2.raw as pdfium_raw

    if isinstance(data, Path):
        # the name's own bytes (os.fsencode): pdfium opens the file by them, whatever their encoding
        document = pdfium_raw.FPDF_LoadDocument(os.fsencode(data), None)
    else:
        document = pdfium_raw.FPDF_LoadMemDocument64(data, len(data), None)
    if not document:
        return False
    try:
        return bool(pdfium_raw.FPDF_GetPageCount(document) == 0)
    finally:
        pdfium_raw.FPDF_CloseDocument(document)


TIFF_TILE_WIDTH, TIFF_TILE_LENGTH = 322, 323  # TIFF tags


def decode_tiff_pages(data: Union[bytes, Path], what: str, options: LoadOptions) -> Iterator[np.ndarray]:
    """Each page of a TIFF (its bytes, or a file read as its pages need) as BGR uint8 (PaddleX reads every page
    of a .tif, with Pillow)."""
    from PIL import Image

    try:
        with pillow_pixel_limit(options.max_pixels):
            document = Image.open(data if isinstance(data, Path) else io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{what} declares a decompression bomb: {exc} (a larger max_pixels, --max-pixels, reads it)"
        ) from None
    except Image.UnidentifiedImageError:
        raise UnreadableImageError(f"{what} is not a readable TIFF: Pillow cannot identify it") from None
    except Exception as exc:
        raise UnreadableImageError(f"{what} is not a readable TIFF: {exc}") from None
    with document:
        # page by page, not by n_frames first: Pillow's walk of every page's header costs time in proportion to
        # the square of their number (80,000 pages: 26 s) before the first page, where nothing can stop it
        for index in itertools.count():
            try:
                with pillow_pixel_limit(options.max_pixels):
                    document.seek(index)
            except EOFError:  # no page after the last
                return
            except Exception as exc:
                raise UnreadableImageError(f"{what} is not a readable TIFF: {exc} (page {index})") from None
            try:
                check_pixel_budget(document.size[0], document.size[1], options.max_pixels, f"{what} page {index}")
                # libtiff allocates a whole tile, which may be far larger than its page (a 1.5 MB file: a
                # 100x100 page in one 40000x40000 tile took 1.6 GB): its area counts against the budget too
                tags = getattr(document, "tag_v2", {})  # a TiffImageFile's (Pillow opens only TIFFs here)
                tile = (tags.get(TIFF_TILE_WIDTH), tags.get(TIFF_TILE_LENGTH))
                if isinstance(tile[0], int) and isinstance(tile[1], int):
                    check_pixel_budget(tile[0], tile[1], options.max_pixels, f"{what} page {index}'s tile")
                with pillow_pixel_limit(options.max_pixels):  # Pillow checks its limit again as it loads
                    page = pil_to_bgr(document)
            except ImageTooLargeError:
                raise
            except Exception as exc:  # a truncated or damaged page
                raise UnreadableImageError(f"{what} page {index} cannot be decoded: {exc}") from None
            yield page


def _pdfium_pixels_to_bgr(pixels: np.ndarray, mode: str) -> np.ndarray:
    """pdfium bitmap pixels ("BGR", "BGRA", "BGRX", "RGB…" or "L") -> a BGR uint8 copy."""
    if pixels.ndim == 2 or mode == "L":
        return cv2.cvtColor(pixels.reshape(pixels.shape[0], pixels.shape[1]), cv2.COLOR_GRAY2BGR)
    color = pixels[:, :, :3]
    if mode.upper().startswith("RGB"):
        color = color[:, :, ::-1]
    return np.ascontiguousarray(color)


# ----------------------------------------------------------------------------- URLs


def is_url(value: Any) -> bool:
    """An http(s) URL, its scheme in any case (HTTPS://, as RFC 3986 allows)."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def url_shown(url: str) -> str:
    """A URL as error messages show it: the values of its query and any user:password@ left out (a presigned
    S3 or GCS URL carries its credential and signature in the query; a service logs every refusal)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # a malformed host ("http://[::1"): nothing after the path is shown
        return url.split("?", 1)[0].split("#", 1)[0]
    query = "&".join(field.split("=", 1)[0] + ("=..." if "=" in field else "") for field in parts.query.split("&"))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))


def shown_path(path: Optional[str]) -> Optional[str]:
    """An input's path as messages, warnings and progress show it: a URL without its secrets (url_shown)."""
    return url_shown(path) if path is not None and is_url(path) else path


def _web_request(url: str) -> urllib.request.Request:
    """The request for a URL; its user:password@ (urllib took "user:password@host" for a host name) sent as
    basic authentication, as requests and curl send it, and to this host only: not on redirects."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(
        urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)) if at else url,
        headers={"User-Agent": "detector (PaddleOCR text detection)"},
    )
    if at:
        user, _, password = userinfo.partition(":")
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    return request


def _fetched_pdf(url: Optional[str], content_type: str) -> bool:
    """Whether a fetched body is to be read as a PDF whatever its first bytes (pdfium finds a header anywhere in
    the first 1024): by its content type, or by the URL's .pdf, as a local file goes by its name and as PaddleX
    picks its reader for a URL."""
    suffix = os.path.splitext(urllib.parse.urlsplit(url).path)[1].lower() if url else ""
    return content_type in PDF_CONTENT_TYPES or suffix == ".pdf"


def fetch_url(url: str, options: LoadOptions) -> tuple:
    """(bytes, content type) of a URL, refusing non-images, oversize bodies and slow servers; its messages
    show the URL without secrets (url_shown)."""
    shown = url_shown(url)
    try:
        request = _web_request(url)
    except ValueError as exc:  # a malformed host or port
        raise InputNotFoundError(f"cannot fetch {shown}: {exc}") from None
    declared = None
    deadline = time.monotonic() + options.url_timeout  # for the whole fetch: a trickling server must not hold us
    try:
        with web_opener().open(request, timeout=options.url_timeout) as response:
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type in URL_PAGE_TYPES:  # an error or login page served with 200: said before reading it
                raise UnsupportedInputError(f"{shown} serves {content_type!r}, not an image or PDF")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > options.url_max_bytes:
                raise ImageTooLargeError(
                    f"{shown} is {int(declared):,} bytes, above the {options.url_max_bytes:,}-byte limit for URL inputs"
                )
            body = bytearray()
            for chunk in body_chunks(response, URL_CHUNK_BYTES, deadline=deadline):
                body += chunk
                if len(body) > options.url_max_bytes:
                    break
    except urllib.error.HTTPError as exc:
        exc.close()  # its response's socket (a ResourceWarning when left to the garbage collector)
        said = f"{shown} answered HTTP {exc.code} {exc.reason}"
        raise (SourceUnavailableError(said) if exc.code >= 500 else InputNotFoundError(said)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceUnavailableError(
            f"cannot fetch {shown}: {reason} (timeout {options.url_timeout:g} s)",
            timed_out=isinstance(reason, (TimeoutError, socket.timeout)),  # one class since Python 3.10
        ) from None
    if len(body) > options.url_max_bytes:
        raise ImageTooLargeError(f"{shown} sent more than the {options.url_max_bytes:,}-byte limit for URL inputs")
    if declared and declared.isdigit() and len(body) < int(declared):  # the connection closed midway
        raise SourceUnavailableError(
            f"{shown} sent {len(body):,} of its {int(declared):,} bytes, then closed the connection"
        )
    return bytes(body), content_type


# ----------------------------------------------------------------------------- expansion and loading


def list_folder_images(folder: Path, recursive: bool = True) -> tuple[list[Path], list[tuple[Path, OSError]]]:
    """Image and PDF files in a folder and, if recursive (PaddleX's way), its subfolders (links to folders not
    followed), in the walk's order (_walk_sources sorts them); and each folder (or
    entry of unknown kind) that could not be read, with why. pathlib's rglob skipped an unreadable subfolder
    without a word (its images missing, exit 0), and a subfolder removed while it was walked (a spool folder)
    ended the whole walk."""
    files: list[Path] = []
    unreadable: list[tuple[Path, OSError]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    path = current / entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                pending.append(path)
                            continue
                    except FileNotFoundError:  # gone since it was listed
                        continue
                    except OSError as exc:  # its kind not to be looked up (a folder listable, not searchable)
                        unreadable.append((path, exc))
                        continue
                    if path.suffix.lower() in IMAGE_EXTENSIONS and _is_file(entry, path, unreadable):
                        files.append(path)
        except FileNotFoundError as exc:
            if current == folder:  # the folder given is gone: said; a subfolder gone meanwhile held nothing
                unreadable.append((current, exc))
        except OSError as exc:  # no permission to list it, an I/O error
            unreadable.append((current, exc))
    return files, unreadable


# What pathlib's is_file takes as "not a file": gone, a path through a file, a link loop, a bad descriptor
_NOT_A_FILE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF})


def _is_file(entry: os.DirEntry, path: Path, unreadable: list[tuple[Path, OSError]]) -> bool:
    """Whether a walked entry with an image's name is a file (a link to one too), as pathlib's is_file says;
    an error it would raise is added to unreadable."""
    try:
        return entry.is_file()
    except OSError as exc:
        if exc.errno not in _NOT_A_FILE_ERRNOS:
            unreadable.append((path, exc))
        return False


def glob_matches(pattern: str) -> list[Path]:
    """What a glob pattern matches, in no set order (_walk_sources sorts them); ``**`` is any depth of folders,
    walked without following symlinked folders (glob.glob follows them: a link back up the tree was walked round
    and round, each file found tens of times, and two such links never ended). ``*`` matches hidden names too, as
    folder walks read them; a pattern ending in ``**`` matches the files below."""
    parts = Path(pattern).parts
    literal = next((index for index, part in enumerate(parts) if GLOB_CHARACTERS & set(part)), len(parts))
    root, rest = Path(*parts[:literal]) if literal else Path("."), parts[literal:]
    if rest[-1:] == ("**",):
        rest = (*rest, "*")
    return list(root.glob(str(Path(*rest)))) if rest else [root]


def _shown(text: str) -> str:
    """A path for a message: quoted, and cut short past 200 characters (a 5,000-character name, say)."""
    return repr(text) if len(text) <= 200 else repr(text[:100]) + f" … ({len(text):,} characters)"


def _expand_path(text: str, options: LoadOptions) -> list[Source]:
    if is_url(text):
        return [Source("url", text, text)]
    if not text.strip():  # Path("") is the working directory: never read it by accident
        raise InputNotFoundError("an empty path names no input")
    path = Path(text).expanduser()
    try:
        is_folder = path.is_dir()
        exists = is_folder or path.exists()
    except OSError as exc:  # a name too long for the file system, say: no such input (the others still run)
        raise InputNotFoundError(f"input {_shown(text)} cannot be looked up: {exc.strerror or exc}") from None
    if is_folder:
        files, unreadable = list_folder_images(path, options.recursive)
        if unreadable and unreadable[0][0] == path:
            raise InputNotFoundError(f"{text}: the folder cannot be read ({_reason(unreadable[0][1])})")
        if not files and not unreadable:
            raise InputNotFoundError(
                f"folder {path} holds no images{' (subfolders included)' if options.recursive else ''}; "
                f"looked for {', '.join(sorted(IMAGE_EXTENSIONS))}"
            )
        # reported as PaddleX's folder walk names them: the folder as given, joined with each file's own path
        return _walk_sources(files, unreadable, lambda f: os.path.join(text, os.fspath(f.relative_to(path))))
    if exists:
        return [Source("file", path, text)]  # input_path is the string given, as PaddleOCR reports it
    if GLOB_CHARACTERS & set(text):
        files = []
        unreadable = []
        pattern = os.path.expanduser(text)
        any_depth = "**" in Path(pattern).parts  # the files below are matched already
        try:
            for match in glob_matches(pattern):
                if match.is_dir() and not any_depth:  # a folder the pattern names is read as a folder given by name
                    in_folder, cannot = list_folder_images(match, options.recursive)
                    files.extend(in_folder)
                    unreadable.extend(cannot)
                elif match.is_file() and match.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(match)
        except OSError as exc:  # a folder of the pattern's fixed part that cannot be read
            raise InputNotFoundError(f"pattern {text!r} cannot be matched: {_reason(exc)}") from None
        files = list(dict.fromkeys(files))
        if not files and not unreadable:
            raise InputNotFoundError(f"pattern {text!r} matches no image files")
        return _walk_sources(files, unreadable, str)
    raise InputNotFoundError(f"input {text!r} does not exist")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _walk_sources(
    found: list[Path], unreadable: list[tuple[Path, OSError]], name_of: Callable[[Path], str]
) -> list[Source]:
    """The sources of a folder walk or a glob (each named by name_of), sorted as path strings, as PaddleX sorts
    them ("a-b/x.png" before "a/x.png"), with a source in its place for each folder or entry that could not be
    read: loading it raises why (an error line of its own in `detect`, exit 1), while the readable files still
    run."""
    sources = [(path, Source("file", path, name_of(path), found_by_walk=True)) for path in found]
    for path, exc in unreadable:
        name = name_of(path)
        refusal = InputNotFoundError(f"{name}: cannot be read ({_reason(exc)})")
        sources.append((path, Source("unreadable", refusal, name, found_by_walk=True)))
    return [source for _, source in sorted(sources, key=lambda pair: str(pair[0]))]


def expand_inputs(inputs: PredictInput, options: LoadOptions = DEFAULT_LOAD_OPTIONS) -> list[Source]:
    """Flatten the caller's input into sources, checking that paths exist (images are not read yet)."""
    if isinstance(inputs, np.ndarray):
        return [Source("array", inputs)]
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        return [Source("bytes", bytes(inputs))]
    if _is_pil_image(inputs):
        return [Source("pil", inputs, getattr(inputs, "filename", None) or None)]
    if isinstance(inputs, os.PathLike):
        return _expand_path(os.fspath(inputs), options)
    if isinstance(inputs, str):
        return _expand_path(inputs, options)
    if isinstance(inputs, (list, tuple)):
        sources: list[Source] = []
        for item in inputs:
            if isinstance(item, (list, tuple)):
                raise UnsupportedInputError("nested lists are not accepted as input")
            sources.extend(expand_inputs(item, options))
        return sources
    raise UnsupportedInputError(
        f"unsupported input type {type(inputs).__name__}: pass a path, folder, glob pattern, URL, bytes, "
        f"numpy array, PIL image, or a list of those"
    )


PagesReader = Callable[[Union[bytes, Path], str, LoadOptions], Iterator[np.ndarray]]


def _pages_reader(head: bytes, is_pdf: bool) -> Optional[PagesReader]:
    """What reads a source of several pages, by its first bytes (or a .pdf name): render_pdf_pages or
    decode_tiff_pages; None for an image of one page."""
    if is_pdf or head[:4] == PDF_MAGIC:
        return render_pdf_pages
    if head[:4] in TIFF_MAGICS:
        return decode_tiff_pages
    return None


def _load_encoded(
    data: bytes, name: Optional[str], what: str, options: LoadOptions, is_pdf: bool
) -> Iterator[LoadedImage]:
    pages = _pages_reader(data, is_pdf)
    if pages is None:
        yield LoadedImage(decode_image_bytes(data, what, options), name)
        return
    for index, page in enumerate(pages(data, what, options)):
        yield LoadedImage(page, name, index)


def fetched_now(source: Source, options: LoadOptions) -> Source:
    """A URL source fetched: whether it holds one image or pages is known from its bytes (may_hold_pages)."""
    return Source("fetched", fetch_url(source.value, options), source.name)


def is_page_file(source: Source) -> bool:
    """Whether a source is a file named as a PDF or TIFF: several pages, worth loading one by one."""
    return source.kind == "file" and Path(source.value).suffix.lower() in (".pdf", ".tif", ".tiff")


def may_hold_pages(source: Source) -> bool:
    """Whether a source can yield several images: a PDF or TIFF file by its name, bytes by their first bytes
    (one image of bytes, a service's upload, ran on a second session with half the threads: 1.7x the time),
    a fetched URL by its first bytes or content type, one not fetched yet always."""
    if source.kind == "bytes":
        return _pages_reader(bytes(source.value[:4]), False) is not None
    if source.kind == "fetched":
        body, content_type = source.value
        return _pages_reader(body[:4], _fetched_pdf(source.name, content_type)) is not None
    return source.kind == "url" or is_page_file(source)


def may_give_several_images(sources: list[Source]) -> bool:
    """Whether these sources can yield more than one image: several of them, or one with pages."""
    return len(sources) > 1 or bool(sources and may_hold_pages(sources[0]))


def stored_bytes(sources: Sequence[Source]) -> Optional[int]:
    """How many bytes the sources hold (a file's size, a buffer's length); None where one is of another kind
    or cannot be read. Folder workers start the largest first (prefetch.ordered_map's cost): a stand-in for
    decoding and network time known before reading anything."""
    total = 0
    for source in sources:
        if source.kind in ("bytes", "fetched"):
            total += len(source.value if source.kind == "bytes" else source.value[0])
            continue
        if source.kind != "file":
            return None
        try:
            total += os.stat(source.value).st_size
        except (OSError, TypeError, ValueError):
            return None
    return total


def group_sources(sources: list[Source], size: int) -> Iterator[tuple[bool, list[Source]]]:
    """(False, up to ``size`` sources in a row that are not page files), and (True, [page file]) for each
    page file (:func:`is_page_file`), in input order: the units a folder's workers load and run."""
    group: list[Source] = []
    for source in sources:
        if not is_page_file(source):
            group.append(source)
            if len(group) == size:
                yield False, group
                group = []
            continue
        if group:
            yield False, group
            group = []
        yield True, [source]
    if group:
        yield False, group


def load_source(source: Source, options: LoadOptions = DEFAULT_LOAD_OPTIONS) -> Iterator[LoadedImage]:
    """The images of one source: one for an image, one per page for a PDF or TIFF."""
    if source.kind == "unreadable":
        raise source.value
    if source.kind == "array":
        yield LoadedImage(to_bgr_uint8(source.value), None)
    elif source.kind == "pil":
        yield LoadedImage(pil_to_bgr(source.value), source.name)
    elif source.kind == "bytes":
        yield from _load_encoded(source.value, source.name, source.name or "<bytes>", options, False)
    elif source.kind in ("url", "fetched"):  # a PDF also by its content type
        body, content_type = fetch_url(source.value, options) if source.kind == "url" else source.value
        yield from _load_encoded(body, source.name, source.describe(), options, _fetched_pdf(source.name, content_type))
    else:
        path: Path = source.value
        is_pdf = path.suffix.lower() == ".pdf"
        head = _regular_file_head(path)
        pages = _pages_reader(head, is_pdf) if head is not None else None
        if pages is not None:
            # pages read from the file as they are needed, as PaddleX opens them: read whole first, a 1.2 GB TIFF
            # took 1.5 GB before its first page (Pillow by path: 105 MB), a PDF its size
            for index, page in enumerate(pages(path, str(path), options)):
                yield LoadedImage(page, source.name, index)
            return
        data = read_file_bytes(path, options.url_max_bytes)
        yield from _load_encoded(data, source.name, str(path), options, is_pdf)


def _regular_file_head(path: Path) -> Optional[bytes]:
    """A regular file's first 4 bytes (its format's magic); None for anything else (a pipe, a device: read as a
    stream by read_file_bytes). A missing or unreadable file raises as read_file_bytes does."""
    with _input_file_errors(path):
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        with path.open("rb") as file:
            return file.read(4)


def iter_images(inputs: Any, options: LoadOptions = DEFAULT_LOAD_OPTIONS) -> Iterator[LoadedImage]:
    """Yield images one by one, so folders of thousands stream instead of loading at once."""
    for source in expand_inputs(inputs, options):
        yield from load_source(source, options)
