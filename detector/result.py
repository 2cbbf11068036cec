"""Result stage: one image's detections, printable and savable the way PaddleOCR saves them."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import mimetypes
import os
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional, Union

import cv2
import numpy as np

from .draw import draw_polygons
from .errors import DetectorError
from .urls import is_url

RESULT_KEY = "res"  # PaddleOCR names saved files <stem>_res.json / <stem>_res.png
INPUT_IMAGE_KEY = "input_img"  # PaddleX's key for the image a result was found on
JSON_SUFFIXES = (".json",)
# Visualizations in these formats are encoded by OpenCV (every release we support writes them; JPEG at
# Pillow's default quality, which PaddleX saves with); any other image format by Pillow, as PaddleX does.
# Sun raster too: an input format (IMAGE_EXTENSIONS) Pillow reads but cannot write, so its drawing failed
OPENCV_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ras", ".sr")
# PaddleX writes result images with Pillow at its defaults; OpenCV given these writes the same bytes
# (WebP: OpenCV's own default is lossless, 10x the file of a photo).
JPEG_QUALITY = 75
WEBP_QUALITY = 80


def is_json_name(name: str) -> bool:
    return Path(name).suffix.lower() in JSON_SUFFIXES


def is_image_name(name: str) -> bool:
    """A name PaddleX takes for an image file (its MIME type, from the suffix, is image/*): a save_path
    so named is that file, and an input so named gives its suffix to its visualization."""
    mime, _ = mimetypes.guess_type(name)
    return bool(mime and mime.startswith("image/"))


def names_file(save_path: Union[str, os.PathLike[str]], is_named: Callable[[str], bool]) -> bool:
    """Whether a save path names one file: ``is_named`` says so of it (is_json_name, is_image_name, as
    PaddleOCR's save methods read it), and it is neither a folder already nor written with a trailing
    separator (``out.json/``)."""
    text = os.fspath(save_path)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return False
    return is_named(text)


def can_write_image(suffix: str) -> bool:
    """Whether encode_image writes ``suffix`` here: OpenCV's formats, else a Pillow format with a writer."""
    if suffix.lower() in OPENCV_IMAGE_SUFFIXES:
        return True
    from PIL import Image

    image_format = Image.registered_extensions().get(suffix.lower())
    return image_format is not None and image_format in Image.SAVE


def encode_image(bgr: np.ndarray, suffix: str) -> bytes:
    """The image file bytes for ``suffix``: OpenCV for its formats, Pillow (PaddleX's writer) for the rest."""
    if suffix.lower() in OPENCV_IMAGE_SUFFIXES:
        quality = {
            ".jpg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
            ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
            ".webp": [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY],
        }.get(suffix.lower(), [])
        ok, encoded = cv2.imencode(suffix, bgr, quality)  # OpenCV 5 warns of a key its format does not read
        if not ok:
            raise DetectorError(f"OpenCV could not encode a {suffix} image")
        return encoded.tobytes()
    from PIL import Image

    image_format = Image.registered_extensions().get(suffix.lower())
    if image_format is None:
        raise DetectorError(f"no writer for {suffix} images here (Pillow knows none)")
    buffer = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).save(buffer, format=image_format)
    except (OSError, ValueError, KeyError) as exc:
        raise DetectorError(f"Pillow could not write a {suffix} image: {exc}") from None
    return buffer.getvalue()


DEFAULT_IMAGE_SUFFIX = ".png"

# Inputs without a file name (arrays, bytes, PIL images) are saved as <unix time>_<number>, the
# shape of PaddleX's <unix time>_<4 random digits>; the number counts up from a random start, so no
# two results of one process share a name (PaddleX's random draw can repeat). The start is drawn from
# a billion, not PaddleX's 9,000: worker processes saving into one folder drew starts close enough to
# give the same names (an audit: 8 workers of 100 results each, duplicates in 3 of 10 trials).
UNNAMED_NUMBERS_FROM, UNNAMED_NUMBERS_TO = 1000, 10**9
_unnamed_numbers = itertools.count(random.randrange(UNNAMED_NUMBERS_FROM, UNNAMED_NUMBERS_TO))
_unnamed_lock = threading.Lock()
# numpy before 2.3 keeps its print options for the whole process: two reprs in threads, each setting and
# restoring them, could interleave and leave the abbreviated ones in place for good
_print_options_lock = threading.RLock()  # re-entrant: a result's repr may show another result


def _locks_and_numbers_anew() -> None:
    """In a forked child: a start of its own (an inherited counter gave every worker the same names), and
    new locks (a copy held by another thread at the fork would never be released)."""
    global _unnamed_numbers, _unnamed_lock, _print_options_lock
    _unnamed_numbers = itertools.count(random.randrange(UNNAMED_NUMBERS_FROM, UNNAMED_NUMBERS_TO))
    _unnamed_lock, _print_options_lock = threading.Lock(), threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_locks_and_numbers_anew)


@contextlib.contextmanager
def numpy_printed(**options: Any) -> Iterator[None]:
    """np.printoptions(**options) with no other use of it here in between (see _print_options_lock)."""
    with _print_options_lock, np.printoptions(**options):
        yield


def _url_file_name(input_path: str) -> str:
    """A URL's file name without its query and fragment ("https://h/scan.png?id=3" -> "scan.png": a "?" is no
    file name on Windows), its host where its path names none; any other input path as it is."""
    if not is_url(input_path):
        return input_path
    parts = urllib.parse.urlsplit(input_path)
    return parts.path.rstrip("/").rsplit("/", 1)[-1] or parts.hostname or "url"


def unnamed_stem() -> str:
    with _unnamed_lock:
        return _next_unnamed_stem()


def _next_unnamed_stem() -> str:
    """The next ``<time>_<number>`` (the caller holds _unnamed_lock)."""
    return f"{int(time.time())}_{next(_unnamed_numbers)}"


def to_jsonable(value: Any) -> Any:
    """numpy arrays and scalars -> plain lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, Path):
        return value.as_posix()
    return value


def json_text(value: Any, indent: Optional[int], ensure_ascii: bool) -> str:
    """json.dumps, where a character UTF-8 cannot hold (a lone surrogate: a file name's undecodable bytes, as
    Python reads them) is written as its \\u escape, so the text is valid UTF-8 and JSON and reads back
    to the same name."""
    text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# write_atomically's temp files: a process killed between writing and renaming leaves one (hub removes
# such leftovers from its cache folders)
TEMP_FILE_PATTERN = ".detect-*.tmp"


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename: readers never see a half-written file.

    The temp name is short (a long but legal target name leaves it room); an error names the target."""
    tmp = path.with_name(TEMP_FILE_PATTERN.replace("*", uuid.uuid4().hex))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # os.open with 0o666 lets the umask decide permissions, as for any new file (mkstemp forces 0600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None


class _StrView:
    # In a class of its own: an attribute named `str` in DetectionResult's body would shadow the
    # builtin for that body's annotations.
    @property
    def str(self) -> dict[str, Any]:
        """``{"res": {...}}`` with the arrays themselves, the input image left out, as PaddleOCR's ``res.str``."""
        return {RESULT_KEY: self.shown()}  # type: ignore[attr-defined]


class DetectionResult(dict[str, Any], _StrView):
    """``{"input_path", "page_index", "input_img", "dt_polys", "dt_scores"}`` for one image (or PDF page), the
    keys of PaddleX's result in its order; printing and JSON leave ``input_img`` (the BGR input) out, as
    PaddleX's do."""

    def __init__(self, data: dict[str, Any]):
        super().__init__(data)
        self._unnamed_stem: Optional[str] = None

    def __repr__(self) -> str:
        # print(res) shows the whole dict, input_img too, as PaddleX's does; PaddleX abbreviates every array
        # there (it sets numpy's print options to threshold=1, edgeitems=1 for the whole process when it makes
        # a result): the same here, for this repr only, so the image takes a few lines, not sixty
        with numpy_printed(threshold=1, edgeitems=1):
            return dict.__repr__(self)

    @property
    def input_img(self) -> Optional[np.ndarray]:
        """The BGR image the boxes were found on (``res["input_img"]``)."""
        return self.get(INPUT_IMAGE_KEY)

    def shown(self) -> dict[str, Any]:
        """The result as printed and written to JSON: every key but the input image."""
        return {key: value for key, value in self.items() if key != INPUT_IMAGE_KEY}

    @property
    def json(self) -> dict[str, Any]:
        """``{"res": {...}}`` with plain lists and numbers, as PaddleOCR's ``res.json``."""
        return {RESULT_KEY: to_jsonable(self.shown())}

    @property
    def img(self) -> dict[str, np.ndarray]:
        """``{"res": RGB image with the boxes drawn}``, as PaddleOCR's ``res.img``."""
        if self.input_img is None:
            raise DetectorError("this result holds no input image to draw on")
        return {RESULT_KEY: np.ascontiguousarray(draw_polygons(self.input_img, self["dt_polys"])[:, :, ::-1])}

    def _file_name(self) -> tuple[str, str]:
        """(stem, suffix) that saved files are named after: the input's, with the page index PaddleX adds."""
        path = self.get("input_path")
        if path:
            name = Path(_url_file_name(str(path)))
            stem, suffix = name.stem, name.suffix
        else:
            with _unnamed_lock:  # one stem however many threads save this result at once
                if self._unnamed_stem is None:
                    self._unnamed_stem = _next_unnamed_stem()
            stem, suffix = self._unnamed_stem, ""
        page = self.get("page_index")
        return (stem if page is None else f"{stem}_{page}"), suffix

    def _json_target(self, save_path: Union[str, os.PathLike[str]]) -> Path:
        path = Path(save_path)
        if names_file(save_path, is_json_name):
            return path
        return path / f"{self._file_name()[0]}_{RESULT_KEY}.json"

    def _img_target(self, save_path: Union[str, os.PathLike[str]]) -> Path:
        path = Path(save_path)
        if names_file(save_path, is_image_name):
            return path
        stem, suffix = self._file_name()
        suffix = suffix if is_image_name(f"x{suffix}") else DEFAULT_IMAGE_SUFFIX
        return path / f"{stem}_{RESULT_KEY}{suffix}"

    def to_str(self, json_format: bool = False, indent: int = 4, ensure_ascii: bool = False) -> str:
        if json_format:
            return json_text(self.json, indent, ensure_ascii)
        shown = self.shown()
        polys = shown.get("dt_polys")
        if isinstance(polys, np.ndarray) and polys.size == 0:
            shown["dt_polys"] = polys.reshape(0)  # PaddleOCR prints no boxes as array([], dtype=int16)
        with numpy_printed(threshold=20, edgeitems=2):
            return repr({RESULT_KEY: shown})

    def print(self, json_format: bool = False, indent: int = 4, ensure_ascii: bool = False) -> None:
        print(self.to_str(json_format=json_format, indent=indent, ensure_ascii=ensure_ascii))

    def save_to_json(
        self,
        save_path: Union[str, os.PathLike[str]],
        indent: int = 4,
        ensure_ascii: bool = False,
        *args: Any,
        **kwargs: Any,
    ) -> Path:
        """Write ``<save_path>/<stem>_res.json``, or ``save_path`` itself if it names a .json file."""
        target = self._json_target(save_path)
        write_atomically(target, json_text(self.json[RESULT_KEY], indent, ensure_ascii).encode("utf-8"))
        return target

    def save_to_img(self, save_path: Union[str, os.PathLike[str]], *args: Any, **kwargs: Any) -> Path:
        """Write the boxes drawn on the input as ``<save_path>/<stem>_res<input suffix or .png>``, or to
        ``save_path`` itself if it names an image file."""
        if self.input_img is None:
            raise DetectorError("this result holds no input image to draw on")
        target = self._img_target(save_path)
        write_atomically(target, encode_image(draw_polygons(self.input_img, self["dt_polys"]), target.suffix))
        return target

    def save_all_targets(self, save_path: Union[str, os.PathLike[str]]) -> list[Path]:
        """The files :meth:`save_all` would write for ``save_path``, written or not."""
        if names_file(save_path, is_json_name):
            return [self._json_target(save_path)]
        if names_file(save_path, is_image_name):
            return [self._img_target(save_path)]
        return [self._img_target(save_path), self._json_target(save_path)]

    def save_all(self, save_path: Union[str, os.PathLike[str]]) -> list[Path]:
        """save_to_json and save_to_img into the folder ``save_path``, as PaddleOCR's ``save_all``.

        A ``save_path`` naming a file writes that one file, as PaddleOCR's save methods do for a
        file path: ``out.json`` the JSON, ``out.png`` (or another image suffix) the visualization.
        (PaddleOCR's save_all would then make a folder of the file's name and fail half-way.)
        """
        if names_file(save_path, is_json_name):
            return [self.save_to_json(save_path)]
        if names_file(save_path, is_image_name):
            return [self.save_to_img(save_path)]
        folder = Path(save_path)
        if folder.exists() and not folder.is_dir():
            raise DetectorError(f"save_path {str(folder)!r} is a file; give a folder, or a .json or image file name")
        if self.input_img is None:
            raise DetectorError("this result holds no input image to draw on")
        folder.mkdir(parents=True, exist_ok=True)  # a folder now, whatever its name's suffix
        # the image first: a run stopped between the two leaves no JSON whose image is missing, so a JSON
        # that exists says the pair was saved (what a script resuming a stopped run checks)
        drawn = self.save_to_img(folder)
        return [self.save_to_json(folder), drawn]
