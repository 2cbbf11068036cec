"""What the commands write to stderr and how they end: one-line errors and warnings, the line a signal leaves,
and the streams set up so that writing a message never ends a run."""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import signal
import sys
import traceback
import unicodedata
from typing import Any, NoReturn

import click

from .errors import EXIT_FAILED, EXIT_USAGE, pip_install, raise_terminated

EXIT_SOME_FAILED = EXIT_FAILED  # detect: one line per failed input, the others still done


class _EchoedWarnings(logging.Handler):
    """The package's logged warnings, printed like the command's own (``detect: warning: …``) on the
    stderr of the moment."""

    echoes_for_the_command_line = True  # detect serve puts its own handler in its place (log_beside_uvicorn)

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{_line_start()}detect: {record.levelname.lower()}: {record.getMessage()}", err=True)


def show_package_warnings() -> None:
    """Print the package's logged warnings (a resize past max_side_limit, say) with the command's prefix,
    unless logging was set up already (then it decides)."""
    package = logging.getLogger(__package__)
    if package.handlers or logging.getLogger().handlers:
        return
    package.addHandler(_EchoedWarnings(logging.WARNING))


def _line_start() -> str:
    """What a message line on stderr starts with: on a terminal, clearing the line, where a progress bar may
    stand (the bar is drawn again after it)."""
    return "\r\x1b[K" if sys.stderr.isatty() else ""


class StdoutClosed(Exception):
    """The reader of stdout went away (a pipe into `head`): the run ends as SIGPIPE would end it."""


def one_line(text: str) -> str:
    """text with its control characters escaped (a file name holding a newline, or a terminal escape
    sequence, stays on one line of stderr and moves no cursor)."""
    return "".join(repr(char)[1:-1] if unicodedata.category(char) == "Cc" else char for char in text)


def names_its_input(message: str, what: str) -> bool:
    """Whether an error message starts with the input's name already ("x.png is 13500x13500 = … pixels"): its
    error line then does not name the input again ("x.png: x.png is …"). detect's and detect batch's lines."""
    return message.startswith(f"{what} ") or message.startswith(f"{what}:")


def report_error(what: str, exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = str(exc)
    named = names_its_input(message, what)
    click.echo(f"{_line_start()}detect: error: {'' if named else one_line(what) + ': '}{one_line(message)}", err=True)


def exit_for_missing_extra(command: str, extra: str, exc: ImportError) -> NoReturn:
    """`detect <command>` cannot run without the [extra] install extra: say which and how, exit EXIT_USAGE."""
    click.echo(
        f"detect: error: `detect {command}` needs the [{extra}] extra ({exc.name} is missing): {pip_install(extra)}",
        err=True,
    )
    sys.exit(EXIT_USAGE)


def fail_usage(exc: BaseException, debug: bool, command: str = "detect") -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"{command}: error: {exc}", err=True)
    sys.exit(EXIT_USAGE)


class DiagnosticsStream:
    """stderr, whose failed writes are dropped: messages, warnings and the progress bar are no output of the
    run. With stderr on a full disk (2>/dev/full) the first progress label raised OSError, and a folder run
    ended having saved nothing, exit 1 (helper's audit)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: Any) -> int:  # str, or bytes on the buffer below
        with contextlib.suppress(OSError):
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.flush()

    @property
    def buffer(self) -> DiagnosticsStream:  # click writes bytes there where the text stream's encoding is ASCII
        return DiagnosticsStream(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, reconfigure: the stream's own
        return getattr(self._stream, name)


def writes_utf8(stream: Any) -> bool:
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name == "utf-8"
    except LookupError:
        return False


def unencodable_characters_escaped() -> None:
    """stdout and stderr write what their encoding cannot hold as backslash escapes: a file name in Chinese
    printed to a redirected Windows stdout (cp1252) raised UnicodeEncodeError and stopped the run. (--json is
    written with JSON's own escapes there: writes_utf8.)"""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", "strict") == "strict":
            stream.reconfigure(errors="backslashreplace")


# What a signal leaves behind, said with it: a batch output folder holding some of the rows
PARTIAL_OUTPUT_NOTE = {
    "detect batch": "; the output folder holds a partial run (no _SUCCESS.json): choose a new one to run again"
}


def signal_note(command: str, stopped: BaseException) -> str:
    """What a signal's line adds: the command's note on what it leaves behind, or the one the command gave
    the exception on its way out (``signal_note``: detect batch stopped before writing anything; click turns
    a KeyboardInterrupt into Abort, the interrupt its context)."""
    for exception in (stopped, stopped.__context__):
        note = getattr(exception, "signal_note", None)
        if note:
            return note
    return PARTIAL_OUTPUT_NOTE.get(command, "")


def signals_end_the_exit(command: str) -> None:
    """From here to the process's end, Python's shutdown (its threads joined, the model freed: 1-11 ms measured
    after a detect run), Ctrl-C and SIGTERM end the process as during the run: the signal's line, exit 130 / 143.
    Raised there, the handler's exception was printed as 'Exception ignored in: <module 'threading'>' with its
    traceback, and the process exited 0. For the program's own end only: the handler leaves through os._exit
    (stdout and stderr flushed first), the rest of the shutdown undone as a signal's default would leave it.
    A signal the command does not handle (SIGINT ignored by a shell's background job) is left as it is."""

    def end(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # None, closed, a reader gone: nothing more to give it
                stream.flush()
        with contextlib.suppress(Exception):
            click.echo(f"{command}: {'interrupted' if signum == signal.SIGINT else 'terminated'}", err=True)
        os._exit(128 + signum)

    ours = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: raise_terminated}
    for signum, handler in ours.items():
        if signal.getsignal(signum) is handler:
            signal.signal(signum, end)
