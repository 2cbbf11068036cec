"""ProcessLock: a threading lock that a forked child gets anew.

A lock another thread held at a fork stays held in the child, where no thread will release it: the child's first
use hung (the worker session's lock of a detector made before a gunicorn --preload fork, say).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable


class ProcessLock:
    """A context-manager lock, new (unheld) in each process that uses it."""

    def __init__(self, factory: Callable[[], Any] = threading.Lock) -> None:
        self._factory = factory
        self._pid = os.getpid()
        self._lock = factory()

    def _current(self) -> Any:
        if self._pid != os.getpid():  # a forked child: whatever the parent's threads held, this one is free
            self._lock, self._pid = self._factory(), os.getpid()
        return self._lock

    def __enter__(self) -> bool:
        return bool(self._current().acquire())

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
