"""Which model file a TextDetection opens, and its onnxruntime session: the file model_name / model_dir
name (model_lookup.py), the precision's variant beside it (precision.py), and a download damaged since it was
fetched removed and fetched again, once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from .errors import InvalidModelError, InvalidParameterError, ModelNotFoundError
from .model_cache import damaged_cached_release, discard_damaged_download
from .model_lookup import resolve_model_path
from .precision import select_precision, validate_precision
from .session import load_session, parse_device

DEFAULT_MODEL_NAME = "PP-OCRv4_mobile_det"


# What the error names when the default is nowhere (a pip install: it has no ONNX release to download):
# a model whose official ONNX release downloads by name.
DOWNLOADABLE_SUGGESTION = "PP-OCRv6_small_det"


def check_model_name(model_name: str) -> str:
    """A model name is looked up by name, never opened as a path: files and folders go in model_dir."""
    name = str(model_name)
    if name.strip() and name != name.strip():  # 'PP-OCRv6_small_det ' from a config file: no such folder
        raise InvalidParameterError(f"model_name {name!r} has spaces around it: did you mean {name.strip()!r}?")
    looks_like_path = (
        not name.strip()
        or name in (".", "..")  # <models folder>/../inference.onnx
        or name.lower().endswith(".onnx")
        or name.startswith("~")
        # './x' and 'x/' too, which pathlib reads as 'x' (a model found by that name); '\\' on Windows
        or any(separator in name for separator in {"/", os.sep, os.altsep or "/"})
    )
    if looks_like_path:
        raise InvalidParameterError(
            f"model_name {name!r} is not a model name (like {DEFAULT_MODEL_NAME}); "
            f"to load a file or folder, pass it as model_dir={name!r} (detect: --model_dir)"
        )
    return name


def open_model(
    model_name: Optional[str],
    model_dir: Optional[Union[str, os.PathLike[str]]],
    requested_name: Optional[str],
    precision: Optional[str],
    device: Optional[str],
    cpu_threads: Optional[int],
    spinning: bool,
) -> tuple[Path, Any, str]:
    """The model file TextDetection's arguments name (``requested_name``: the name looked up, None where
    model_dir alone names the file), opened: (its path, its onnxruntime session, the device it runs on)."""
    for attempt in ("first", "again"):
        try:
            resolved = resolve_model_path(requested_name, model_dir, validate_precision(precision))
        except ModelNotFoundError as exc:
            if model_name or model_dir is not None:
                raise
            # the user named no model: say that this one is the default, and how to name another
            raise ModelNotFoundError(
                f"no model was named, so the default {DEFAULT_MODEL_NAME} was looked up: {exc} "
                f"(or name one that downloads: model_name='{DOWNLOADABLE_SUGGESTION}', "
                f"detect --model {DOWNLOADABLE_SUGGESTION})"
            ) from None
        model_path = select_precision(resolved, precision, requested_name)
        damaged = damaged_cached_release(model_path)
        if damaged is not None:  # the release and its yml removed, then looked up (downloaded) again, once
            if attempt == "again" or not discard_damaged_download(model_path, damaged):
                raise InvalidModelError(f"{model_path}: {damaged}")
            continue
        try:
            session, used_device = load_session(model_path, parse_device(device), cpu_threads, spinning=spinning)
            break
        except InvalidModelError as exc:
            # a downloaded file damaged since (its bytes are no model) is fetched again, once; any other
            # file's error stands, and so does a failure of onnxruntime's own (memory): the file is fine
            if (
                attempt == "again"
                or not exc.file_damaged
                or not discard_damaged_download(model_path, str(exc).splitlines()[0])
            ):
                raise
    return model_path, session, used_device
