"""The folder a variant is made and scored in, beside its output, and the ones killed exports left there.

export_variant works in a temp folder beside the output, so that only a scored file is ever renamed over the
variant, and the steps inside it (quantize_int8, quantize_int8_auto's candidates, convert_fp16) keep their own
work beside their outputs, within it, not in $TMPDIR; a SIGKILL (the OOM killer, `kill -9`, a CI timeout) skips
their removal. The folder's name says which process on which machine owns it,
`.<output name>.partial-<host>-<pid>.<random>`, so a later export there removes the ones whose process is gone,
and never one an export running now (here, or on another machine sharing the folder) is using.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

# a name partial_prefix made, with tempfile's random part
_PARTIAL_NAME = re.compile(r"\..+\.partial-(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[a-z0-9_]+")


def _this_host() -> str:
    """This machine's name as it may sit in a file name (the characters _PARTIAL_NAME takes)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def partial_prefix(output: Path) -> str:
    """The prefix of this process's work folder for ``output`` (tempfile.mkdtemp's ``prefix``)."""
    return f".{output.name}.partial-{_this_host()}-{os.getpid()}."


def work_folder(output: Path) -> tempfile.TemporaryDirectory[str]:
    """A temp folder for this process's work on ``output``, beside it under partial_prefix's name: removed on
    leaving it, and after a SIGKILL by the next export's remove_abandoned there."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=partial_prefix(output), dir=output.parent)


def _process_alive(pid: int) -> bool:
    """Whether a process of this machine has that pid (one of another user's too). Outside POSIX there is no
    such look-up (os.kill would signal it), so every owner counts as alive there."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):  # no pid this machine gives: not a name we made, left alone
        return True
    return True


def remove_abandoned(folder: Path) -> list[Path]:
    """Remove the work folders in ``folder`` whose process, on this machine, is gone; return them. A folder of
    another machine, or of a live process (its pid reused by another counts as live: the folder waits), stays."""
    removed: list[Path] = []
    host = _this_host()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = _PARTIAL_NAME.fullmatch(entry.name)
        if found is None or found.group("host") != host:
            continue
        if not entry.is_dir() or entry.is_symlink() or _process_alive(int(found.group("pid"))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed
