"""Every answer's envelope, modelled on PaddleX serving's (logId, errorCode, errorMsg, result), and what goes in
it: the refusal a request gets (RequestError; the HTTP status of a library error), the logId, a message cut short
and made safe for a log line, and a detection answer's JSON, made a page at a time."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Optional

from ..errors import (
    DetectorError,
    ImageTooLargeError,
    InputNotFoundError,
    InvalidParameterError,
    SourceUnavailableError,
    UnreadableImageError,
    UnsupportedInputError,
)


class RequestError(Exception):
    """A request the service refuses: its HTTP status and a message that says what to send instead."""

    def __init__(
        self, status: int, message: str, headers: Optional[dict[str, str]] = None, log_id: Optional[str] = None
    ):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.log_id = log_id  # the client's, where its body named one before the refusal


# A client's logId: echoed in the answer and written to the log, so printable and of a bounded length
LOG_ID_PATTERN = re.compile(r"[\x20-\x7e]{1,128}")


def log_safe(text: str) -> str:
    """text for one log line: control characters (a newline that would forge a line) and lone surrogates escaped."""
    return "".join(
        char if char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF else repr(char)[1:-1] for char in text
    )


# A refusal's message at most this long, in the answer and in the log: messages quote what the client sent
# (unknown keys, a file name, a URL), and a client's 4-MB list of keys must not become a 4-MB log line.
MAX_MESSAGE_CHARS = 1000


def cut_short(message: str, most: int = MAX_MESSAGE_CHARS) -> str:
    """``message``, or its start and end around a note of how much was left out where it is longer than
    ``most`` (the end often says what to send instead)."""
    if len(message) <= most:
        return message
    tail = most // 4
    head = most - tail
    return f"{message[:head]} [... {len(message) - head - tail:,} characters left out ...] {message[-tail:]}"


def new_log_id() -> str:
    return str(uuid.uuid4())


def envelope(log_id: str, status: int, message: str, result: Any = None) -> dict[str, Any]:
    """PaddleX serving's response shape: errorCode 0 and errorMsg "Success" with a result, else the status."""
    body: dict[str, Any] = {"logId": log_id, "errorCode": 0 if status < 400 else status, "errorMsg": message}
    if result is not None:
        body["result"] = result
    return body


def json_text(value: Any) -> str:
    """``value`` as JSON, written as Starlette's JSONResponse writes it (compact, non-ASCII as is, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def detect_answer(log_id: str, result: dict[str, Any], pages: list[dict[str, Any]]) -> bytes:
    """The success envelope of ``result`` with ``pages`` as its last key, as JSON, each page encoded by a call of
    its own: json.dumps holds the GIL from its start to its end, whichever thread calls it (one call for 80 pages
    of 1,000 boxes, 5 MB, stood the event loop still for a third of a second); between two calls the loop runs."""
    opened = json_text(envelope(log_id, 200, "Success", {**result, "pages": []}))
    closing = "]}}"  # the pages' list ends result, and result ends the envelope
    return (opened[: -len(closing)] + ",".join(map(json_text, pages)) + closing).encode("utf-8")


def status_of(exc: DetectorError) -> int:
    """The HTTP status for a library error about the request's input or settings."""
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, SourceUnavailableError):  # the image's server failed, not the client: worth a retry
        return 504 if exc.timed_out else 502
    if isinstance(exc, (InvalidParameterError, UnreadableImageError, UnsupportedInputError, InputNotFoundError)):
        return 422
    return 500
