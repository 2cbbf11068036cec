"""Load stage: turn whatever the caller passes into BGR uint8 HxWx3 images, lazily, one at a time.

Accepted: file paths, folders (sorted; optionally recursive), glob patterns, http(s) URLs, raw bytes,
numpy arrays, PIL images, PDF files and TIFF files (one image per page), and lists of those. Files
are decoded to OpenCV's IMREAD_COLOR pixels like PaddleOCR (EXIF orientation applied, alpha dropped,
16-bit scaled to 8-bit, CMYK converted; plain JPEG and PNG files by faster decoders that give the
same pixels, detector.decode), after a header-only size check that refuses decompression bombs;
TIFF pages are read with Pillow, as PaddleX's TIFF reader does.

The readers beside it: image_pixels (arrays, PIL images, encoded bytes), pages (PDF and TIFF pages), urls
(fetching), folder_walk (folders and glob patterns); load_options holds LoadOptions.
"""

from __future__ import annotations

import contextlib
import os
import stat
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .errors import ImageTooLargeError, InputNotFoundError, UnreadableImageError, UnsupportedInputError
from .folder_walk import GLOB_CHARACTERS, IMAGE_EXTENSIONS, glob_matches, has_image_suffix, list_folder_images
from .image_pixels import decode_image_bytes, pil_to_bgr, to_bgr_uint8
from .load_options import DEFAULT_LOAD_OPTIONS, LoadOptions
from .pages import decode_tiff_pages, render_pdf_pages
from .urls import fetch_url, is_url, shown_path

if TYPE_CHECKING:
    import PIL.Image

# What predict takes: one source of images (a path, folder, glob pattern or URL as str or a path object;
# encoded bytes; an array; a PIL image), or a list or tuple of them (expand_inputs).
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, "PIL.Image.Image"]
PredictInput = Union[ImageSource, Sequence[ImageSource]]

PDF_MAGIC = b"%PDF"
PDF_CONTENT_TYPES = frozenset({"application/pdf", "application/x-pdf"})
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")  # little- and big-endian


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


def _is_pil_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "convert")


# ----------------------------------------------------------------------------- files


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


# ----------------------------------------------------------------------------- expansion and loading


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
                if match.is_dir() and not any_depth:  # a folder the pattern matches is read as the walk reads one
                    in_folder, cannot = list_folder_images(match, options.recursive, given=False)
                    files.extend(in_folder)
                    unreadable.extend(cannot)
                elif match.is_file() and has_image_suffix(match.name):
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


def _fetched_pdf(url: Optional[str], content_type: str) -> bool:
    """Whether a fetched body is to be read as a PDF whatever its first bytes (pdfium finds a header anywhere in
    the first 1024): by its content type, or by the URL's .pdf, as a local file goes by its name and as PaddleX
    picks its reader for a URL."""
    suffix = os.path.splitext(urllib.parse.urlsplit(url).path)[1].lower() if url else ""
    return content_type in PDF_CONTENT_TYPES or suffix == ".pdf"


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
