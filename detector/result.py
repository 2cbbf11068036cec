"""Result stage: one image's detections, printable and savable the way PaddleOCR saves them."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Union

import cv2
import numpy as np

from .draw import draw_polygons
from .errors import DetectorError

RESULT_KEY = "res"  # PaddleOCR names saved files <stem>_res.json / <stem>_res.png
UNNAMED_STEM = "image"  # for results of numpy inputs, which have no file name


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


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # os.open with 0o666 lets the umask decide permissions, as for any new file (mkstemp forces 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class DetectionResult(dict):
    """``{"input_path", "page_index", "dt_polys", "dt_scores"}`` for one image (or PDF page)."""

    def __init__(self, data: Dict[str, Any], input_img: Optional[np.ndarray] = None):
        super().__init__(data)
        # Kept out of the dict so printing and JSON stay small; used by save_to_img.
        self.input_img = input_img

    @property
    def json(self) -> Dict[str, Any]:
        return {RESULT_KEY: to_jsonable(dict(self))}

    def _stem(self) -> str:
        path = self.get("input_path")
        stem = Path(path).stem if path else UNNAMED_STEM
        page = self.get("page_index")
        return stem if page is None else f"{stem}_{page}"

    def _target(self, save_path: Union[str, os.PathLike], suffixes: tuple, default_suffix: str) -> Path:
        path = Path(save_path)
        if path.suffix.lower() in suffixes:
            return path
        return path / f"{self._stem()}_{RESULT_KEY}{default_suffix}"

    def to_str(self, json_format: bool = False, indent: int = 4) -> str:
        if json_format:
            return json.dumps(self.json, indent=indent, ensure_ascii=False)
        with np.printoptions(threshold=20, edgeitems=2):
            return repr({RESULT_KEY: dict(self)})

    def print(self, json_format: bool = False, indent: int = 4) -> None:
        print(self.to_str(json_format=json_format, indent=indent))

    def save_to_json(self, save_path: Union[str, os.PathLike], indent: int = 4) -> Path:
        """Write ``<save_path>/<stem>_res.json`` (or ``save_path`` itself if it ends in .json)."""
        target = self._target(save_path, (".json",), ".json")
        text = json.dumps(self.json[RESULT_KEY], indent=indent, ensure_ascii=False)
        write_atomically(target, text.encode("utf-8"))
        return target

    def save_to_img(self, save_path: Union[str, os.PathLike]) -> Path:
        """Write the boxes drawn on the input as ``<save_path>/<stem>_res.png`` (or to an image path)."""
        if self.input_img is None:
            raise DetectorError("this result holds no input image to draw on")
        target = self._target(save_path, (".png", ".jpg", ".jpeg", ".bmp"), ".png")
        ok, encoded = cv2.imencode(target.suffix, draw_polygons(self.input_img, self["dt_polys"]))
        if not ok:
            raise DetectorError(f"OpenCV could not encode {target.name}")
        write_atomically(target, encoded.tobytes())
        return target
