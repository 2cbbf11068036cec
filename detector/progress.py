"""Progress bars on stderr for long work (several inputs, model downloads), one shape for all callers."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click


class _NoProgress:
    def update(self, steps: int) -> None:
        pass


@contextlib.contextmanager
def progress_bar(length: int, label: str, show: bool = True) -> Iterator[Any]:
    """click's progress bar on stderr, or a silent stand-in: click < 8.2 (Python 3.9) has no
    progressbar(hidden=), so hiding is done here."""
    if not show:
        yield _NoProgress()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar
