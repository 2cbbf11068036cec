"""How far a `detect batch` run is: each actor adds the files it finishes to a small Ray actor, FilesDone, whose
count a thread of the caller's reads every PROGRESS_POLL_S and hands on as (files done, files in all)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Optional

import ray

# How often the caller's thread reads the count: a bar on a terminal moves about as often
PROGRESS_POLL_S = 0.5
# How long one read of the count may wait (for the actor to start, say) before the next try: a run stopped
# waits for that read
PROGRESS_READ_TIMEOUT_S = 1.0


class FilesDone:
    """A Ray actor holding the number of files the run's actors have finished."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, files: int) -> None:
        self.count += files

    def total(self) -> int:
        return self.count


@contextlib.contextmanager
def files_done_reported(total: int, report: Optional[Callable[[int, int], None]]) -> Iterator[Optional[Any]]:
    """A FilesDone actor (its handle, for the actors) while the block runs: ``report(done, total)`` is called with
    (0, total) at once, then from a thread of its own each time the count moves, and with (total, total) when the
    block ends without an error (every file was done). None, and no actor, without ``report``."""
    if report is None:
        yield None
        return
    counter: Any = ray.remote(num_cpus=0)(FilesDone).remote()  # no CPU: it must not take an actor's slot
    stopped = threading.Event()
    report(0, total)

    def read_the_count() -> None:
        reported = 0
        while not stopped.wait(PROGRESS_POLL_S):
            try:
                done = min(ray.get(counter.total.remote(), timeout=PROGRESS_READ_TIMEOUT_S), total)
            except Exception:  # a slow read is tried again; a Ray stopping ends the run anyway
                continue
            if done != reported and not stopped.is_set():
                report(done, total)
                reported = done

    reader = threading.Thread(target=read_the_count, name="batch progress", daemon=True)
    reader.start()
    try:
        yield counter
    finally:
        stopped.set()
        reader.join()
        with contextlib.suppress(Exception):  # Ray already down (a run stopped): the actor went with it
            ray.kill(counter)
    report(total, total)
