"""Progress bars on stderr for long work (several inputs, model downloads), one shape for all callers."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Optional

import click


class _NoProgress:
    def update(self, steps: int) -> None:
        pass

    def show(self, item: Optional[str]) -> None:
        pass


class _Progress:
    """click's bar, with what the current step has reached (a page of a PDF, say) shown after it."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, steps: int) -> None:
        self._bar.current_item = None  # a step done: what it had reached is no longer news
        self._bar.update(steps)

    def show(self, item: Optional[str]) -> None:
        self._bar.current_item = item
        self._bar.render_progress()


@contextlib.contextmanager
def progress_bar(length: int, label: str, show: bool = True) -> Iterator[Any]:
    """click's progress bar on stderr (``update(steps)``, ``show(item)``), or a silent stand-in: click < 8.2
    (Python 3.9) has no progressbar(hidden=), so hiding is done here."""
    if not show:
        yield _NoProgress()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, item_show_func=lambda item: item) as bar:
        yield _Progress(bar)
