"""Where models are looked for and downloaded from, and what a lookup tells the user.

The names every part of the model lookup shares: the model file's name, the environment variables, the
folders searched for <MODEL_NAME>/inference.onnx (model_lookup.py gives the order), the per-user download
cache, the hub's address for a release; the notices of a lookup (``tell``), and the advice its errors give.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import urllib.parse
from pathlib import Path
from typing import Optional

from .errors import DetectorError, ModelNotFoundError
from .settings import INFERENCE_YML, declared_model_name, read_inference_yml

logger = logging.getLogger(__name__)


def tell(message: str, level: int = logging.INFO) -> None:
    """A notice of the model lookup (a download saved, a rewrite for this CPU, a release run as published).

    Where the application has set up logging (a handler on the root logger or on this package's, other than
    the detect command's echo of warnings), it goes there at ``level``, for its handlers and format to decide;
    else (a script, the detect command) on stderr as ``detector: …``, as it was always shown.
    """
    package = logging.getLogger(__package__)
    configured = logging.getLogger().handlers + [
        handler for handler in package.handlers if not getattr(handler, "echoes_for_the_command_line", False)
    ]
    if configured:
        logger.log(level, "%s", message)
    else:
        print(f"detector: {message}", file=sys.stderr)


MODEL_FILENAME = "inference.onnx"
PADDLE_PARAMS_FILENAME = "inference.pdiparams"  # a Paddle inference model's weights (with .pdmodel or .json)
MODELS_ENV_VAR = "DETECTOR_MODELS"  # a folder laid out as <folder>/<MODEL_NAME>/inference.onnx
NO_DOWNLOAD_ENV_VAR = "DETECTOR_NO_DOWNLOAD"
NO_OPTIMIZE_ENV_VAR = "DETECTOR_NO_OPTIMIZE"
OFFICIAL_FOLDER = "official"  # <cache>/<model_name>/official/: the release as published, beside our import of it
CACHE_ENV_VAR = "XDG_CACHE_HOME"  # <its value>/detector/models is the download cache
ENDPOINT_ENV_VAR = "HF_ENDPOINT"  # the variable huggingface_hub and PaddleX honour, for mirrors
DEFAULT_ENDPOINT = "https://huggingface.co"
# A source checkout has the package beside tools/export and pyproject.toml; a pip install has neither,
# and its "models/" would be a folder in site-packages that nothing should point a user at.
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent
IN_CHECKOUT = (CHECKOUT_ROOT / "pyproject.toml").is_file() and (CHECKOUT_ROOT / "tools" / "export").is_dir()
CHECKOUT_MODELS_DIR = CHECKOUT_ROOT / "models"


def user_cache_dir() -> Optional[Path]:
    """Where downloaded models live: $XDG_CACHE_HOME/detector/models (default ~/.cache/detector/models).

    None where there is no such place: no home folder (a container user without one) and no absolute
    XDG_CACHE_HOME (a relative one is ignored, as the XDG spec says: it would be a folder named after it
    in whatever the working directory is, e.g. a literal "~")."""
    base = os.environ.get(CACHE_ENV_VAR, "")
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "detector" / "models"


def local_model_folders() -> list[Path]:
    """Folders searched for <MODEL_NAME>/inference.onnx, in lookup order (2–4 of model_lookup's)."""
    env_dir = os.environ.get(MODELS_ENV_VAR)
    folders = [Path(env_dir).expanduser()] if env_dir else []
    if IN_CHECKOUT:
        folders.append(CHECKOUT_MODELS_DIR)
    cache = user_cache_dir()
    return [*folders, cache] if cache is not None else folders


def _flag_set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def downloads_enabled() -> bool:
    return not _flag_set(NO_DOWNLOAD_ENV_VAR)


def optimizing_enabled() -> bool:
    """Whether releases are imported (rewritten for speed) in the cache: on unless DETECTOR_NO_OPTIMIZE=1."""
    return not _flag_set(NO_OPTIMIZE_ENV_VAR)


def release_url(model_name: str, filename: str) -> str:
    endpoint = (os.environ.get(ENDPOINT_ENV_VAR) or DEFAULT_ENDPOINT).rstrip("/")
    return f"{endpoint}/PaddlePaddle/{model_name}_onnx/resolve/main/{filename}"


def check_endpoint() -> None:
    """A ModelNotFoundError naming HF_ENDPOINT where it is no http(s) address (urllib's ValueError said
    'unknown url type' of the whole URL)."""
    endpoint = os.environ.get(ENDPOINT_ENV_VAR)
    if not endpoint:
        return
    try:
        parts = urllib.parse.urlsplit(endpoint)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # 'http://[::1': an unclosed IPv6 bracket
        valid = False
    if not valid:
        raise ModelNotFoundError(
            f"{ENDPOINT_ENV_VAR}={endpoint!r} is not an http(s) address: give the mirror as https://<host> "
            f"(as huggingface_hub reads it), or unset it for {DEFAULT_ENDPOINT}"
        )


def manual_download_hint(model_name: str) -> str:
    cache = user_cache_dir()
    into = f"into {cache / model_name}/ (found there next time), or " if cache is not None else ""
    return (
        f"Download {release_url(model_name, MODEL_FILENAME)} and {release_url(model_name, INFERENCE_YML)} "
        f"{into}into any folder and pass model_dir=<that folder> (detect --model-dir <that folder>)"
    )


def paddle_model_hint(folder: Path) -> str:
    """What to do with a Paddle inference model folder given as model_dir: onnxruntime cannot run it."""
    from .catalog import KNOWN_MODELS

    try:
        config = read_inference_yml(folder / INFERENCE_YML)[0]
    except DetectorError:  # no yml, or one that does not parse: the folder's name is the best guess
        config = None
    name = (declared_model_name(config) if isinstance(config, dict) else None) or folder.name
    release = KNOWN_MODELS.get(name)
    download = (
        f"; PaddlePaddle publishes the official {name} as ONNX too (its weights, not a fine-tune's): "
        f"model_name={name!r} (detect --model {name}) downloads that"
        if release is not None and release.onnx_release
        else ""
    )
    if IN_CHECKOUT:
        # beside its own files, where this model_dir then finds it: make export writes models/<MODEL>/, which
        # for a fine-tune named as its base model would replace the checkout's stock model
        convert = (
            f"convert it to ONNX beside its files with `make paddle-env && .venv-paddle/bin/python -m tools.export "
            f"--model {shlex.quote(name)} --source {shlex.quote(str(folder))} "
            f"--output {shlex.quote(str(folder / MODEL_FILENAME))}` (this model_dir then loads it), or into "
            f"models/{name}/ with `make export {shlex.quote(f'MODEL={name}')} {shlex.quote(f'SOURCE={folder}')}`"
        )
    else:
        convert = (
            "convert it to ONNX with this project's export tool (in a checkout: make export MODEL=<name> "
            "SOURCE=<folder>)"
        )
    return (
        f"model_dir {str(folder)!r} is a Paddle inference model ({PADDLE_PARAMS_FILENAME}), which onnxruntime "
        f"cannot run: {convert}{download}"
    )


def not_downloadable_hint(model_name: str, known: bool) -> str:
    from .catalog import KNOWN_MODELS, known_name_like

    downloadable = ", ".join(name for name, model in KNOWN_MODELS.items() if model.onnx_release)
    meant = None if known else known_name_like(model_name)
    what = (
        f"{model_name} has no official ONNX release to download"
        if known
        else f"{model_name!r} is not a model name this package knows" + (f" (did you mean {meant!r}?)" if meant else "")
    )
    if IN_CHECKOUT:
        how = (
            f"export it with `make export {shlex.quote(f'MODEL={model_name}')}"
            + ("`" if known else " SOURCE=<paddle model dir or .onnx>`")
            + f", set {MODELS_ENV_VAR} to a folder holding <MODEL_NAME>/{MODEL_FILENAME}"
            + ", or pass model_dir=<path to .onnx> (detect --model-dir <path>)"
        )
    else:
        how = (
            f"pass model_dir=<folder with {MODEL_FILENAME} + {INFERENCE_YML}, or an .onnx file> (detect "
            f"--model-dir <folder or file>), or set {MODELS_ENV_VAR} to a folder holding <MODEL_NAME>/{MODEL_FILENAME}"
        )
    return f"{what}: {how}. Models that download by name: {downloadable}"
