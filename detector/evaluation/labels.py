"""Read labelled sets: PaddleOCR's det label file and ICDAR 2015 gt_<image>.txt folders.

PaddleOCR (one image a line):  ``image_path<TAB>[{"transcription": "...", "points": [[x, y], ...]}, ...]``
with image paths relative to ``image_dir``; without one, to the label file's folder, or else its parent
(PPOCRLabel writes ``myset/Label.txt`` with paths ``myset/x.jpg``). The path may be a JSON list of paths
that share the labels (PaddleOCR's training form), each scored.
ICDAR 2015 (``--labels`` a folder): ``gt_<image stem>.txt``, one region a line,
``x1,y1,x2,y2,x3,y3,x4,y4,transcription``; the image ``<stem>.<suffix>``, suffix in any case.
Both UTF-8 with or without a byte-order mark; lines end at a line feed only, as PaddleOCR reads them
(a transcription may hold U+2028 or U+0085, which ``json.dumps(ensure_ascii=False)`` writes raw).
A transcription of ``###`` (or ``*``, as PaddleOCR's DetLabelEncode reads it) marks a don't-care region.
A region of 1 or 2 points is read, and dropped by the metric as an invalid polygon (PaddleOCR pads it
and drops it the same way). Points are kept as float32, as PaddleOCR's DetLabelEncode keeps them.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import DetectorError
from .metric import LabelledPolygon

DONT_CARE_TRANSCRIPTIONS = ("###", "*")
# Label coordinates past this many pixels are a broken label, not an image.
MAX_LABEL_COORDINATE = 1e9
LABEL_POINT_DTYPE = np.float32  # as PaddleOCR's DetLabelEncode stores label points
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class LabelFileError(DetectorError, ValueError):
    """A label file (or folder) cannot be read: the message names the file and the line."""


@dataclass(frozen=True)
class LabelledImage:
    image_path: Path
    labels: tuple[LabelledPolygon, ...]
    source: str = ""  # where the labels were read: "<label file>, line N" or the gt_<image>.txt file


def read_labels(
    labels: Union[str, os.PathLike], image_dir: Optional[Union[str, os.PathLike]] = None
) -> list[LabelledImage]:
    """A PaddleOCR label file, or an ICDAR 2015 folder of gt_*.txt, as a list of labelled images."""
    path = Path(labels).expanduser()
    if path.is_dir():
        return read_icdar2015_folder(path, image_dir)
    if path.is_file():
        return read_paddleocr_label_file(path, image_dir)
    raise LabelFileError(f"--labels {str(path)!r} does not exist: give a PaddleOCR label file or an ICDAR 2015 folder")


def _read_lines(path: Path) -> list[str]:
    """The file's lines, split at line feeds only (a carriage return before one dropped), as PaddleOCR's
    readers split them: str.splitlines() would also split at U+2028, U+0085, form feeds, ..."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LabelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LabelFileError(f"{path}, line {line}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _polygon(raw: object, where: str) -> np.ndarray:
    try:
        points = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise LabelFileError(f'{where}: "points" must be a list of [x, y] pairs, got {raw!r}') from None
    # 1 or 2 points are read: the metric drops them as invalid polygons, as PaddleOCR does after padding them
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise LabelFileError(f'{where}: "points" must be a non-empty list of [x, y] pairs of numbers, got {raw!r}')
    if not np.isfinite(points).all():  # JSON's NaN and Infinity: PaddleOCR drops the first, stops at the second
        raise LabelFileError(f'{where}: "points" must be finite numbers (no NaN or Infinity), got {raw!r}')
    farthest = float(np.abs(points).max())
    if farthest > MAX_LABEL_COORDINATE:
        raise LabelFileError(f'{where}: "points" reach {farthest:g}, beyond ±{MAX_LABEL_COORDINATE:g} pixels')
    # PaddleOCR's DetLabelEncode keeps the points as float32, and its metric scores those: 10.0000001 is 10 there
    return points.astype(LABEL_POINT_DTYPE)


def _paddleocr_image_path(label_folder: Path, name: str, image_dir: Optional[Union[str, os.PathLike]]) -> Path:
    """``name`` under --image-dir; without one under the label file's folder, or else under its parent
    (PPOCRLabel's layout). Neither there: the first place looked, which the missing-image error names."""
    if image_dir is not None:
        return Path(image_dir).expanduser() / name
    beside = label_folder / name
    if not beside.is_file() and (label_folder.parent / name).is_file():
        return label_folder.parent / name
    return beside


def _paddleocr_image_names(name: str, where: str) -> list[str]:
    """A label line's image field as its names. PaddleOCR's training form lets it be a JSON list of names that
    share the line's labels; PaddleOCR picks one at random at each read, here every one is scored (the same
    score each run). A field starting with '[' that is no JSON list, or an empty list, is one file's name, as
    PaddleOCR then reads it ('[1].png')."""
    if not name.startswith("["):
        return [name]
    try:
        names = json.loads(name)
    except (ValueError, RecursionError):
        return [name]
    if not names:
        return [name]
    if not all(isinstance(each, str) and each for each in names):
        raise LabelFileError(f"{where}: the image list {name!r} must hold file names, as JSON strings")
    return names


def read_paddleocr_label_file(path: Path, image_dir: Optional[Union[str, os.PathLike]] = None) -> list[LabelledImage]:
    images: list[LabelledImage] = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        # the name as written, spaces kept: PaddleOCR strips only the line's newline, so ' a.png' is a file
        name, tab, payload = line.partition("\t")
        # the labels are the field up to the next tab, as PaddleOCR splits the line at every tab and reads the second
        # field: what follows a second tab (an editor's extra column) is not part of them
        payload = payload.split("\t", 1)[0]
        if not tab or not name:
            fields = line.split(",")
            icdar = len(fields) >= 9 and all(_is_number(field) for field in fields[:8])
            raise LabelFileError(
                f'{where}: expected \'image_path<TAB>[{{"transcription": ..., "points": ...}}, ...]\''
                + (
                    f" (this line reads like ICDAR 2015 ground truth: pass the folder of gt_<image>.txt files, "
                    f"{str(path.parent)!r}, as --labels)"
                    if icdar
                    else ""
                )
            )
        try:
            regions = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise LabelFileError(f"{where}: the labels are not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(regions, list):
            raise LabelFileError(f"{where}: the labels must be a JSON list of regions, got {type(regions).__name__}")
        polygons = []
        for index, region in enumerate(regions):
            # both keys, as PaddleOCR's DetLabelEncode reads them (a KeyError there): a region whose text is
            # under another key would otherwise be counted, where its "###" meant don't-care
            if not isinstance(region, dict) or "points" not in region or "transcription" not in region:
                raise LabelFileError(f'{where}: region {index} must be an object with "points" and "transcription"')
            text = region["transcription"]
            polygons.append(
                LabelledPolygon(
                    _polygon(region["points"], f"{where}, region {index}"), dont_care=text in DONT_CARE_TRANSCRIPTIONS
                )
            )
        images.extend(
            LabelledImage(_paddleocr_image_path(path.parent, each, image_dir), tuple(polygons), where)
            for each in _paddleocr_image_names(name, where)
        )
    if not images:
        raise LabelFileError(f"{path}: no labelled images in the file")
    return images


# The script field ICDAR 2017/2019 MLT lines carry between the coordinates and the text, in files named
# gt_<image>.txt as ICDAR 2015's: read as part of the text, 'None,###' was no don't-care region
MLT_SCRIPTS = frozenset(
    {"Arabic", "Latin", "Chinese", "Japanese", "Korean", "Bangla", "Hindi", "Symbols", "Mixed", "None"}
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _icdar_line(line: str, where: str) -> LabelledPolygon:
    fields = line.split(",")
    if len(fields) < 9:
        raise LabelFileError(
            f"{where}: expected 8 coordinates and a transcription, 'x1,y1,...,x4,y4,text'; got {line!r}"
        )
    try:
        coords = [float(value) for value in fields[:8]]
    except ValueError:
        raise LabelFileError(f"{where}: the first 8 fields must be numbers; got {line!r}") from None
    # the text as written, spaces kept: ' ###' is no don't-care region to PaddleOCR's gen_label.py (its 9th field)
    # nor to ICDAR's own script (all after the 8th comma)
    text = ",".join(fields[8:])
    if len(fields) > 9 and fields[8].strip() in MLT_SCRIPTS:  # ICDAR 2017/2019 MLT: x1,…,y4,script,text
        text = ",".join(fields[9:])
    return LabelledPolygon(_polygon(np.reshape(coords, (4, 2)), where), dont_care=text in DONT_CARE_TRANSCRIPTIONS)


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """The folder's images by stem, the suffix matched in any case (img_1.Jpg); listed once for the set.
    A stem with several images: the first suffix of IMAGE_SUFFIXES wins, then the first name."""
    images = sorted(
        (IMAGE_SUFFIXES.index(entry.suffix.lower()), entry.name, entry)
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file()
    )
    by_stem: dict[str, Path] = {}
    for _, _, entry in images:
        by_stem.setdefault(entry.stem, entry)
    return by_stem


def read_icdar2015_folder(folder: Path, image_dir: Optional[Union[str, os.PathLike]] = None) -> list[LabelledImage]:
    base = Path(image_dir).expanduser() if image_dir is not None else folder
    files = sorted(folder.glob("gt_*.txt"))
    if not files:
        listed = sorted(folder.glob("*.txt"))  # PPOCRLabel's folder (Label.txt): the file is what to pass
        raise LabelFileError(
            f"{folder}: no gt_<image>.txt files (ICDAR 2015 layout)"
            + (f"; for a PaddleOCR label file pass the file itself: --labels {listed[0]}" if listed else "")
        )
    if not base.is_dir():
        raise LabelFileError(f"--image-dir {str(base)!r} is not a folder")
    by_stem = _images_by_stem(base)
    looked = f"in --image-dir {base}" if image_dir is not None else f"in {base}; pass --image-dir"
    images = []
    for path in files:
        stem = path.stem[len("gt_") :]
        polygons = tuple(
            _icdar_line(line, f"{path}, line {number}")
            for number, line in enumerate(_read_lines(path), start=1)
            if line.strip()
        )
        image = by_stem.get(stem)
        if image is None:
            suffixes = "/".join(IMAGE_SUFFIXES)
            raise LabelFileError(f"{path}: no image {stem} ({suffixes}, any case) {looked}")
        images.append(LabelledImage(image, polygons, str(path)))
    return images
