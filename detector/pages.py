"""Files of several pages, one BGR uint8 image per page: PDF pages rendered with pypdfium2 (imported when a PDF
is read), TIFF pages read with Pillow, as PaddleX reads them."""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from .errors import ImageTooLargeError, UnreadableImageError, UnsupportedInputError
from .image_pixels import RAISE_LIMIT_HINT, check_pixel_budget, pil_to_bgr, pillow_pixel_limit
from .load_options import LoadOptions
from .process_lock import ProcessLock

POINTS_PER_INCH = 72.0
# A PDF page too large for max_pixels at pdf_dpi is rendered smaller, down to this scale (7.2 dpi), as PaddleX
# does (its PDF_MIN_RENDER_SCALE); only a page too large even then is refused.
PDF_MIN_RENDER_SCALE = 0.1
# the load stage's logger, under the name its warnings had before inputs.py was split (a filter set on it holds)
logger = logging.getLogger("detector.inputs")
# pdfium is not thread-safe: every call into it goes through this lock.
# Re-entrant: a page generator dropped in a reference cycle is closed by the garbage collector, in whatever
# thread allocates, and its close takes this lock, maybe in the thread that holds it (a plain Lock: that thread
# and every later PDF in the process hung).
# New in a forked child, as a lock another thread held at the fork would stay held there.
_PDFIUM_LOCK = ProcessLock(threading.RLock)


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
    with _PDFIUM_LOCK:
        # ``data`` (bytes pdfium reads in place) lives as long as this generator, which closes the document
        document = pdfium.PdfDocument(_opened_pdf(data, what))
        try:
            # form fields drawn with the page (a filled invoice's values), as PaddleX's PDF reader draws them
            document.init_forms()
        except Exception as exc:  # PdfiumError: no form environment (no memory)
            document.close()
            raise UnreadableImageError(f"{what} is not a readable PDF: {exc}") from None
        page_count = len(document)
    try:
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


# pdfium's words for its load errors (fpdfview.h's FPDF_ERR_*), by code
_PDFIUM_LOAD_ERRORS = {
    1: "unknown error",
    2: "file not found or could not be opened",
    3: "not in PDF format or corrupted",
    5: "unsupported security scheme",
    6: "page not found or content error",
}


def _opened_pdf(data: Union[bytes, Path], what: str) -> object:
    """pdfium's document for a PDF of at least one page (an FPDF_DOCUMENT, for pypdfium2's PdfDocument), opened
    here by pdfium's own calls: pypdfium2's PdfDocument(source) refuses a PDF of no pages without closing the
    document it opened (4.6 KiB a refusal, held for good: a service fed such files grew without end), and words
    that refusal with pdfium's last error code, which no successful load resets ('Success', or an earlier PDF's
    'Incorrect password error'). A file is read as its pages need, by its name's own bytes (os.fsencode: pypdfium2
    4.x encoded the name as UTF-8, which a name of other bytes cannot be). Called under _PDFIUM_LOCK."""
    import pypdfium2.raw as pdfium_raw

    if isinstance(data, Path):
        document = pdfium_raw.FPDF_LoadDocument(os.fsencode(data), None)
    else:
        document = pdfium_raw.FPDF_LoadMemDocument64(data, len(data), None)
    if not document:
        code = pdfium_raw.FPDF_GetLastError()
        if code == pdfium_raw.FPDF_ERR_PASSWORD:  # pdfium tried the empty password, which opens a file only
            # encrypted against editing
            raise UnreadableImageError(
                f"{what} is a password-protected PDF: render its pages to images first (no password can be given)"
            )
        if code == pdfium_raw.FPDF_ERR_FILE and isinstance(data, Path):
            try:  # the system's reason (gone, or no permission, since the file was first read)
                data.open("rb").close()
            except OSError as exc:
                raise UnreadableImageError(f"cannot read {what}: {exc.strerror or exc}") from None
        reason = _PDFIUM_LOAD_ERRORS.get(code, f"error code {code}")
        raise UnreadableImageError(f"{what} is not a readable PDF: pdfium says {reason}")
    if pdfium_raw.FPDF_GetPageCount(document) < 1:
        pdfium_raw.FPDF_CloseDocument(document)
        raise UnreadableImageError(_no_pages_message(what))
    return document


def _pdfium_pixels_to_bgr(pixels: np.ndarray, mode: str) -> np.ndarray:
    """pdfium bitmap pixels ("BGR", "BGRA", "BGRX", "RGB…" or "L") -> a BGR uint8 copy."""
    if pixels.ndim == 2 or mode == "L":
        return cv2.cvtColor(pixels.reshape(pixels.shape[0], pixels.shape[1]), cv2.COLOR_GRAY2BGR)
    color = pixels[:, :, :3]
    if mode.upper().startswith("RGB"):
        color = color[:, :, ::-1]
    return np.ascontiguousarray(color)


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
