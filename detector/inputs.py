"""Load stage: turn whatever the caller passes into BGR uint8 HxWx3 images, lazily, one at a time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import cv2
import numpy as np

from .errors import InputNotFoundError, UnreadableImageError, UnsupportedInputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm"})

InputLike = Union[str, os.PathLike, np.ndarray, Sequence[Union[str, os.PathLike, np.ndarray]]]


@dataclass
class LoadedImage:
    image: np.ndarray  # BGR uint8, HxWx3
    input_path: Optional[str]
    page_index: Optional[int] = None


def to_bgr_uint8(array: np.ndarray) -> np.ndarray:
    """Gray, BGR or BGRA arrays of uint8/uint16/float in [0, 1] -> BGR uint8 HxWx3."""
    if not isinstance(array, np.ndarray) or array.size == 0:
        raise UnsupportedInputError("an image array must be a non-empty numpy array")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UnsupportedInputError(
            f"an image array must be HxW (gray), HxWx3 (BGR) or HxWx4 (BGRA), got shape {array.shape}"
        )
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype.kind == "f":
        array = np.clip(np.nan_to_num(array) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise UnsupportedInputError(f"image arrays must be uint8, uint16 or float, got {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(array)


def read_image_file(path: Path) -> np.ndarray:
    """Decode an image file as BGR uint8, the way PaddleOCR reads it (cv2 IMREAD_COLOR)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise UnreadableImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UnreadableImageError(f"{path} is not an image OpenCV can decode (corrupt, empty or unsupported format)")
    return image


def list_folder_images(folder: Path) -> List[Path]:
    """Image files directly in a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def expand_inputs(inputs: InputLike) -> List[Union[Path, np.ndarray]]:
    """Flatten the caller's input into a list of image file paths and arrays, checking paths exist."""
    if isinstance(inputs, np.ndarray):
        return [inputs]
    if isinstance(inputs, (str, os.PathLike)):
        path = Path(inputs).expanduser()
        if path.is_dir():
            files = list_folder_images(path)
            if not files:
                raise InputNotFoundError(
                    f"folder {path} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            return list(files)
        if not path.exists():
            raise InputNotFoundError(f"input {str(path)!r} does not exist")
        return [path]
    if isinstance(inputs, (list, tuple)):
        expanded: List[Union[Path, np.ndarray]] = []
        for item in inputs:
            if isinstance(item, (list, tuple)):
                raise UnsupportedInputError("nested lists are not accepted as input")
            expanded.extend(expand_inputs(item))
        return expanded
    raise UnsupportedInputError(
        f"unsupported input type {type(inputs).__name__}: pass a path, a folder, a numpy image, or a list of those"
    )


def load_image(item: Union[Path, np.ndarray]) -> LoadedImage:
    if isinstance(item, np.ndarray):
        return LoadedImage(to_bgr_uint8(item), None)
    return LoadedImage(read_image_file(item), str(item))


def iter_images(inputs: InputLike) -> Iterator[LoadedImage]:
    """Yield images one by one, so folders of thousands stream instead of loading at once."""
    for item in expand_inputs(inputs):
        yield load_image(item)
