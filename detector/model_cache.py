"""The per-user download cache: what a model's folder there gives now, the lock under which one process
downloads or imports it while the others wait, the download into it, and the removal of a damaged file."""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from .errors import InvalidModelError, ModelNotFoundError, os_reason
from .hub import (
    CACHE_ENV_VAR,
    MODEL_FILENAME,
    OFFICIAL_FOLDER,
    check_endpoint,
    optimizing_enabled,
    release_url,
    tell,
    user_cache_dir,
)
from .release_check import check_release_file, check_release_yml, first_line
from .release_download import fetch
from .release_import import IMPORT_FAILED_MARKER, import_failed_before, import_release, releases_imported_here
from .result import TEMP_FILE_PATTERN, write_atomically
from .settings import INFERENCE_YML

# <cache>/.<model_name><this>: the error of the last failed download, for processes that waited on it
DOWNLOAD_FAILED_SUFFIX = ".download-failed"


# The work a cache folder may need before it gives a model file (cache_state)
UPGRADE = "upgrade"  # an earlier version's plain release (inference.yml beside it) to move into official/ and import
IMPORT = "import"  # a release in official/ not imported yet (the import failed, was interrupted, or was off)
DOWNLOAD = "download"  # nothing there


def cache_state(folder: Path) -> tuple[Optional[Path], Optional[str]]:
    """What the model's cache folder gives now: (the file to load, None), or (None, the work due first:
    UPGRADE, IMPORT or DOWNLOAD, done under fetch_lock, one process at a time)."""
    model = folder / MODEL_FILENAME
    official = folder / OFFICIAL_FOLDER / MODEL_FILENAME
    if model.is_file():
        if (folder / INFERENCE_YML).is_file() and releases_imported_here():
            return None, UPGRADE
        if not optimizing_enabled() and official.is_file():
            return official, None  # DETECTOR_NO_OPTIMIZE=1: the release as published, also once it was imported
        return model, None
    if official.is_file():
        if releases_imported_here() and not import_failed_before(official.parent):
            return None, IMPORT
        return official, None
    return None, DOWNLOAD


def download_once_for_all_waiting(model_name: str, folder: Path, waited_since: Optional[float]) -> Path:
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
def fetch_lock(cache: Path, model_name: str) -> Iterator[Optional[float]]:
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
                tell(f"waiting for another process fetching {model_name} into {cache}")
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


def remove_stale_temp_files(folder: Path) -> None:
    """Temp files a killed process left in the model's cache folder (write_atomically's names); only
    called under fetch_lock, when no process of this package is writing there."""
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


def discard_damaged_download(model_path: Path, reason: str) -> bool:
    """A file in the download cache that onnxruntime cannot load (a disk error, a power loss after the
    rename, a hand edit) is removed, so that the next lookup imports the release again or downloads it
    again; True if it was such a file. Files anywhere else are the user's: never touched (False)."""
    path = Path(model_path)
    folder = _download_cache_folder(path)
    if folder is None:
        return False
    with fetch_lock(folder.parent, folder.name):
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
    tell(f"{path} cannot be loaded ({reason}); removed to fetch it again", logging.WARNING)
    return True


def download_release(model_name: str, folder: Path) -> Path:
    """Fetch inference.yml, then inference.onnx, into folder (each atomically); returns the .onnx to load:
    the import of the release (import_release) where it can run, else the release itself.

    The .onnx is written last, so a folder holding it is complete; an interrupted download leaves no
    file a later lookup would take.
    """
    check_endpoint()
    importing = releases_imported_here()
    # official/ also where nothing imports it here: a process that does import it later (another venv, a
    # worker without DETECTOR_NO_OPTIMIZE) then writes ../inference.onnx beside it, never moving the files a
    # process running the release holds (moving a plain layout's files made that one's load fail)
    target = folder / OFFICIAL_FOLDER
    for filename in (INFERENCE_YML, MODEL_FILENAME):
        url = release_url(model_name, filename)
        data = fetch(url, f"{model_name} {filename}", model_name)
        check_release_file(filename, data, url, model_name)  # a body cut short or an error page: not cached
        try:
            write_atomically(target / filename, data)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot write {target / filename}: {_write_failure_advice(exc)}") from None
    tell(f"{model_name} saved in {target}")
    if importing:
        return import_release(model_name, target)
    if optimizing_enabled():
        from .optimize import INSTALL_HINT

        tell(
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
        check_release_yml(yml.read_bytes(), folder.name)
    except Exception as exc:  # yaml and the settings reader raise their own kinds
        return f"its {INFERENCE_YML}: {first_line(exc)}"
    return None
