"""Progress bars on stderr for long work (several inputs, model downloads), one shape for all callers."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, Optional, Union

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
def progress_bar(length: int, label: str, show: bool = True, show_pos: bool = False) -> Iterator[Any]:
    """click's progress bar on stderr (``update(steps)``, ``show(item)``), or a silent stand-in: click < 8.2
    (Python 3.9) has no progressbar(hidden=), so hiding is done here. ``show_pos``: the steps done and in all too."""
    if not show:
        yield _NoProgress()
        return
    with click.progressbar(
        length=length, label=label, file=sys.stderr, item_show_func=lambda item: item, show_pos=show_pos
    ) as bar:
        yield _Progress(bar)


class _NoCounts:
    def report(self, done: int, total: int) -> None:
        pass

    def end_line(self) -> None:
        pass


class _CountsShown:
    """A bar for counts reported from elsewhere: drawn at the first step done (the lines printed before, Ray's,
    stay above it), finished at the total (lines printed after it start on a line of their own), and where another
    prints a line meanwhile (end_line)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bars = contextlib.ExitStack()
        self._bar: Optional[Any] = None
        self._done = 0
        self._drawn = 0  # the steps the bar now drawn has shown (one drawn again after end_line starts at none)
        self._finished = False
        # reports come from a thread of the caller's, the last (and the close) from the main one
        self._lock = threading.RLock()

    def report(self, done: int, total: int) -> None:
        with self._lock:
            if self._finished or done <= self._done:
                return
            if self._bar is None:
                self._bar = self._bars.enter_context(progress_bar(total, self._label, show_pos=True))
                self._drawn = 0
            self._bar.update(done - self._drawn)
            self._done = self._drawn = done
            if done >= total:
                self.close()

    def end_line(self) -> None:
        """The bar finished where it stands, its line ended, for a line another prints (Ray's 'Dataset …
        execution failed' was printed on the bar's line); the next step done draws it again below."""
        with self._lock:
            self._bars.close()
            self._bar = None

    def close(self) -> None:
        with self._lock:
            self._finished = True
            self._bars.close()


@contextlib.contextmanager
def progress_of_counts(label: str, show: bool = True) -> Iterator[Union[_NoCounts, _CountsShown]]:
    """``report(done, total)`` for work counted elsewhere (`detect batch`'s actors): click's bar on stderr, with
    the steps done and in all, from the first step done to the total; silent where not ``show``. ``end_line()``
    before another's line on stderr: it starts on a line of its own."""
    if not show:
        yield _NoCounts()
        return
    shown = _CountsShown(label)
    try:
        yield shown
    finally:
        shown.close()
