"""The HTTP connection `detect serve` runs: uvicorn's h11 protocol with a deadline for each request's head, a limit
on how long a client may leave its answer untaken, and an answer for a client that half-closes after a request that
said it sends no more.

uvicorn starts no timer on a connection until its first answer, and stops its keep-alive timer at a request's
first byte: a connection that sent nothing, or the start of a request head and no more (slowloris, a client's
bug), was held for good, one file descriptor and its buffer each. Here a connection that has sent nothing is
closed after the keep-alive timeout, as one idle after an answer is, and a request head must arrive whole within
the stall timeout of its first byte (a deadline, as nginx's client_header_timeout: a byte now and then does not
extend it). Request bodies have their own timeout, in the application (limits.BodyReadTimeout), which can
answer 408 with a logId.

Nor has uvicorn a send timeout: a client that stopped reading (hung, or never meaning to) held its connection and
the part of its answer the kernel would not take (3.8 MB of a 5-MB answer sat in the socket's send queue) for good,
past keep-alive, and a graceful stop for all of --timeout. Here, once the transport holds more than its high-water
mark, the client must take some of it every stall timeout (as nginx's send_timeout), or the connection is reset.

uvicorn also closed a connection at the client's end of input, whatever came before it. A client whose request
says it sends no more (Connection: close, or HTTP/1.0) may shut its write side then and read the answer: Jetty's
HttpClient does, and a half-close does not "imply that the client is no longer interested in a response" (RFC
9112, 9.6). Such a connection stays open for its answer; any other end of input is a client that left, as uvicorn
reads it, so that its queued inference is dropped (the end of input of a client that closed its socket and of one
that only shut its write side are the same bytes).

A request h11 cannot parse (a malformed request line or header, a head past h11's 16 KiB) is answered in the
service's JSON envelope, with a logId and a log line, as every other refusal is; uvicorn answered it in plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import json
import logging
import socket
import struct
import sys
from typing import Any, Callable, Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .envelope import cut_short, envelope, log_safe, new_log_id

logger = logging.getLogger("detector.serve")


class ServeH11Protocol(H11Protocol):
    """uvicorn's H11Protocol, with idle new connections, unfinished request heads and untaken answers closed,
    half-closes after a last request answered, and malformed requests answered in the envelope (see the module)."""

    def __init__(self, *args: Any, stall_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stall_timeout_s = stall_timeout_s
        self.head_deadline: Optional[asyncio.TimerHandle] = None
        self.answer_watch: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        # idle from its start, as after an answer (uvicorn's own keep-alive timer, stopped by the first byte)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # bytes of a request head, not all of it yet
            if self.head_deadline is None and not self.transport.is_closing():
                self.head_deadline = self.loop.call_later(self.stall_timeout_s, self.close_unfinished_head)
        else:
            self.cancel_head_deadline()

    def eof_received(self) -> Optional[bool]:  # type: ignore[override]  # asyncio.Protocol's; uvicorn says None
        # True keeps the transport open for writing; None closes it (uvicorn's answer to every end of input)
        return True if self.conn.their_state is h11.MUST_CLOSE else None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.answer_watch is None:
            self.watch_answer(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        super().resume_writing()
        self.cancel_answer_watch()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.cancel_head_deadline()
        self.cancel_answer_watch()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls it in its `except h11.RemoteProtocolError` (0.29 to 0.55), so that error says what was
        # wrong, and its status hint tells a head too long (431) from a malformed one (400)
        error = sys.exc_info()[1]
        status, why = 400, msg
        if isinstance(error, h11.RemoteProtocolError):
            status, why = error.error_status_hint, str(error) or msg
        log_id = new_log_id()
        message = cut_short(f"malformed HTTP request: {why}")
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.info("%s -> %d (%s): %s", client, status, log_id, log_safe(message))
        body = json.dumps(envelope(log_id, status, message)).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reason = http.HTTPStatus(status).phrase.encode()
        self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason)))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    def watch_answer(self, unsent: int) -> None:
        self.answer_watch = self.loop.call_later(self.stall_timeout_s, self.abort_unless_answer_taken, unsent)

    def abort_unless_answer_taken(self, unsent_before: int) -> None:
        unsent = self.transport.get_write_buffer_size()
        if unsent < unsent_before:  # the client took some: a slow reader, not a stalled one
            self.watch_answer(unsent)
            return
        self.answer_watch = None
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.info("%s took none of its answer for %g s: connection reset", client, self.stall_timeout_s)
        sock = self.transport.get_extra_info("socket")
        # a reset: closed, the kernel kept what it queued (3.8 MB) for a FIN the client never took
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def cancel_answer_watch(self) -> None:
        if self.answer_watch is not None:
            self.answer_watch.cancel()
            self.answer_watch = None

    def close_unfinished_head(self) -> None:
        self.head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def cancel_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None


def serve_protocol(stall_timeout_s: float) -> Callable[..., ServeH11Protocol]:
    """uvicorn's ``http`` setting for ServeH11Protocol: it passes the rest (config, server state) itself. A
    partial of a module-level class, so that uvicorn can hand it to --workers processes."""
    return functools.partial(ServeH11Protocol, stall_timeout_s=stall_timeout_s)
