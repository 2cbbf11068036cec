"""One exception family for everything the detector refuses; each message says what to do."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

# The distribution's name, what `pip install` takes (the package it installs is `detector`; "detector" on
# PyPI is an unrelated project): the install hints in every message below name it.
DISTRIBUTION = "ppocr-det-onnx"


# The exit statuses of every `detect` command: done; some inputs (or the run) failed, the rest done;
# a usage error (a bad option, an unknown model, a device that cannot be used).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def pip_install(extras: str) -> str:
    """The pip command that adds an install extra of this package (e.g. "cpu", "optimize")."""
    return f"pip install '{DISTRIBUTION}[{extras}]'"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by raise_terminated, so that a command (detect, the export tool)
    stops as for Ctrl-C: finally blocks run, children are killed, no partial file is left. A BaseException,
    as KeyboardInterrupt is, so that no ``except Exception`` on the way swallows it."""


def raise_terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler: ``signal.signal(signal.SIGTERM, raise_terminated)``."""
    raise Terminated


@contextlib.contextmanager
def callers_sigterm_handler_kept(hold: bool = False) -> Iterator[None]:
    """The caller's SIGTERM handler put back after a library that installs its own (Paddle at its import: a
    C++ traceback, then death; ray.init: a stack dump, exit 15), so that a command still stops in one line.
    hold: SIGTERM is also held back meanwhile (where pthread_sigmask exists), so that one arriving then reaches
    the caller's handler; not for code that starts processes, which would inherit the held-back mask."""
    handler = signal.getsignal(signal.SIGTERM)
    if not callable(handler) or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        if hold and hasattr(signal, "pthread_sigmask")
        else None
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler)
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


class DetectorError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidParameterError(DetectorError, ValueError):
    """A setting or argument is out of range or of the wrong kind."""


class InputNotFoundError(DetectorError, FileNotFoundError):
    """A path given as input does not exist (or a folder holds no images)."""


class SourceUnavailableError(InputNotFoundError):
    """A URL's server did not give it: an answer of 5xx, a connection refused or dropped midway, a name that does
    not resolve, or no answer within the URL timeout (``timed_out``); unlike a 4xx, worth trying again later."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.timed_out)  # timed_out kept through pickle (process pools)


class UnreadableImageError(DetectorError):
    """A file or buffer exists but cannot be decoded as an image."""


class UnsupportedInputError(DetectorError, TypeError):
    """The input is of a type the detector does not accept."""


class ModelNotFoundError(DetectorError, FileNotFoundError):
    """No exported ONNX model where one was looked for."""


class InvalidModelError(DetectorError):
    """The ONNX file is not a DB text detector (wrong input rank, output shape, unreadable).

    ``file_damaged``: onnxruntime found the file's bytes to be no model at all (truncated, overwritten,
    empty), as opposed to failing for a reason of its own (out of memory, no thread, a device).
    """

    def __init__(self, message: str, file_damaged: bool = False):
        super().__init__(message)
        self.file_damaged = file_damaged

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.file_damaged)  # file_damaged kept through pickle (process pools)


class InferenceError(DetectorError, RuntimeError):
    """onnxruntime failed to run the model on an input (its message says why: memory, a shape it refuses)."""


class DeviceUnavailableError(DetectorError, RuntimeError):
    """The requested device (a GPU) cannot be used by onnxruntime here."""


class ExportError(DetectorError):
    """Export of a Paddle model to ONNX failed or did not verify."""


class OutputNotWritableError(ExportError):
    """An export could not write its output (a full disk, a read-only folder): nothing is wrong with the model."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"cannot write {path} ({reason}): choose another --output")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its two arguments (pickle passes self.args, the one message, to __init__): raised in a
        # process pool's worker, it broke the pool (BrokenProcessPool, or a Pool whose get() never returned)
        return type(self), (self.path, self.reason)


class ImageTooLargeError(UnreadableImageError):
    """The image (or PDF page, or download) is above the configured size limit: refused before decoding."""


def os_reason(exc: OSError) -> str:
    """An OSError's reason in words ('No space left on device'), without the path and wording its raiser added
    (pyarrow's, write_atomically's), for a message that names the file itself."""
    return os.strerror(exc.errno) if exc.errno else str(exc)
