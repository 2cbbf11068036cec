"""The service's limits: a bounded queue of inferences on a fixed thread pool, a request-body cap and body
read timeouts.

Both are plain asyncio / ASGI, so they hold whatever web framework sits on top. Inference is
CPU-bound and one TextDetection is thread-safe, so requests share one model and run on
``max_concurrency`` threads; at most ``max_queue`` more wait, and the rest are refused at once
(503) instead of piling up in memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

# A refused body is still read (and thrown away) up to this many bytes, so that clients which send
# the whole body before reading the answer get the 413 instead of a broken pipe (nginx's lingering close).
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
# Weight of the newest inference in the running mean that Retry-After is estimated from.
RETRY_ESTIMATE_WEIGHT = 0.2


class Busy(Exception):
    """A request refused for want of room now (503); ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(f"the server is busy: {message}; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Overloaded(Busy):
    """Every inference slot and queue place is taken."""

    def __init__(self, capacity: int, retry_after_s: int):
        super().__init__(
            f"{capacity} inferences are running or queued (server options --max-concurrency, --max-queue)",
            retry_after_s,
        )


class FetchesFull(Busy):
    """Every URL-fetching thread is busy."""

    def __init__(self, most: int, retry_after_s: int):
        super().__init__(f"{most} image URLs are being fetched, the most it fetches at once", retry_after_s)


class InferenceTimeout(Exception):
    """An inference (waiting included) took longer than the request timeout."""


class BodyTooLarge(Exception):
    """The request body is above the configured limit."""

    def __init__(self, limit_bytes: int, declared: int = 0):
        size = f"{declared:,} bytes, " if declared else ""
        super().__init__(
            f"the request body is {size}above the limit of {limit_bytes:,} bytes (server option --max-body-mb)"
        )


class InferenceGate:
    """Run callables on ``max_concurrency`` threads with at most ``max_queue`` waiting; refuse the rest.

    A timed-out call stops waiting for its result at once; the callable gets a ``threading.Event``
    that is set then, so long work (many PDF pages) can stop early. Its thread stays counted until
    it really ends, so the number of running inferences never exceeds ``max_concurrency``.
    """

    def __init__(self, max_concurrency: int, max_queue: int):
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="detect")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._mean_s = 0.0
        self._started: dict[int, float] = {}  # the running ones: thread ident -> perf_counter at its start

    @property
    def capacity(self) -> int:
        return self.max_concurrency + self.max_queue

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "running": len(self._started),
                "waiting": self._admitted - len(self._started),
                "max_concurrency": self.max_concurrency,
                "max_queue": self.max_queue,
            }

    def retry_after_s(self) -> int:
        """Seconds until a place is likely free: the queue ahead, at the recent mean inference time, or at
        the time the longest inference still running has taken so far where that is longer."""
        now = time.perf_counter()
        with self._lock:
            per_inference = max([self._mean_s, *(now - start for start in self._started.values())])
        return max(1, math.ceil(per_inference * self.capacity / self.max_concurrency))

    def refuse_if_full(self) -> None:
        """Overloaded where every place is taken now: a request can be refused before its body is read (run still
        decides; a place free now may be taken by then)."""
        with self._lock:
            full = self._admitted >= self.capacity
        if full:
            raise Overloaded(self.capacity, self.retry_after_s())

    async def run(self, work: Callable[[threading.Event], Any], timeout_s: float) -> Any:
        with self._lock:
            full = self._admitted >= self.capacity
            if not full:
                self._admitted += 1
        if full:
            raise Overloaded(self.capacity, self.retry_after_s())
        cancelled = threading.Event()

        def tracked() -> Any:
            if cancelled.is_set():  # timed out while waiting: never start
                return None
            start = time.perf_counter()
            with self._lock:
                self._started[threading.get_ident()] = start
            try:
                return work(cancelled)
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    del self._started[threading.get_ident()]
                    self._mean_s += RETRY_ESTIMATE_WEIGHT * (elapsed - self._mean_s)

        try:
            future = self._pool.submit(tracked)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._release()
            raise Overloaded(self.capacity, self.retry_after_s()) from None
        future.add_done_callback(lambda _: self._release())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except asyncio.TimeoutError:
            cancelled.set()
            raise InferenceTimeout(
                f"the inference did not finish within {timeout_s:g} s (server option --timeout)"
            ) from None
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class BodySizeLimit:
    """ASGI middleware: refuse bodies above ``max_bytes`` with 413, by Content-Length or while reading.

    ``refusal(scope, status, message)`` logs a refusal made from the headers alone and makes its JSON body.
    """

    def __init__(self, app: Any, max_bytes: int, refusal: Callable[[dict[str, Any], int, str], dict[str, Any]]):
        self.app = app
        self.max_bytes = max_bytes
        self.refusal = refusal

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await self._refuse(scope, send, 400, f"invalid Content-Length header {declared.decode('latin-1')!r}")
                return
            if int(declared) > self.max_bytes:
                # a client that asked first (Expect: 100-continue, curl's way above 1 MiB) has sent nothing yet:
                # the 413 now, without the "100 Continue" uvicorn sends on the first receive (25 MB were
                # uploaded, then refused); one sending already is drained, so that it reads the 413
                if headers.get(b"expect", b"").strip().lower() != b"100-continue":
                    await drain(receive, 0)
                await self._refuse(scope, send, 413, str(BodyTooLarge(self.max_bytes, int(declared))))
                return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body"):
                        await drain(receive, received)
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: dict[str, Any], send: Callable, status: int, message: str) -> None:
        await send_closing_refusal(send, status, self.refusal(scope, status, message))


class BodyTimedOut(Exception):
    """The request body did not arrive in time (408)."""


class BodyStalled(BodyTimedOut):
    """No byte of the request body arrived within the read timeout."""

    def __init__(self, timeout_s: float):
        super().__init__(
            f"the request body stopped arriving: no byte for {timeout_s:g} s (server option --timeout-stall); "
            "send the whole body, as long as its Content-Length says"
        )


class BodyTooSlow(BodyTimedOut):
    """The request body was not whole within the body deadline."""

    def __init__(self, deadline_s: float):
        super().__init__(
            f"the request body did not arrive whole within {deadline_s:g} s (server option --timeout-body); "
            "send it faster, or a smaller file"
        )


class BodyReadTimeout:
    """ASGI middleware: a request whose body sends no byte for ``timeout_s``, or is not whole ``deadline_s`` after
    its head, gets 408, and its connection is closed.

    uvicorn has no read timeout: a client that stalled mid-upload, or declared a Content-Length longer than the
    body it sent, held its connection and what it had sent for good (the handler waited on the rest forever),
    and held a graceful shutdown for all of --timeout. Seconds between bytes, as nginx's client_body_timeout:
    a slow link's upload goes on, within the deadline, which a client sending a byte now and then reaches.
    ``refusal(scope, status, message)`` logs the refusal and makes its JSON body.
    """

    def __init__(
        self,
        app: Any,
        timeout_s: float,
        deadline_s: float,
        refusal: Callable[[dict[str, Any], int, str], dict[str, Any]],
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.refusal = refusal

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False
        answering = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s

        async def timed_receive() -> dict[str, Any]:
            nonlocal body_complete
            if body_complete:  # what is left is a wait for the client to leave: no deadline
                return await receive()
            left = deadline - loop.time()
            if left <= 0:
                raise BodyTooSlow(self.deadline_s)
            try:
                message = await asyncio.wait_for(receive(), min(self.timeout_s, left))
            except asyncio.TimeoutError:
                if left < self.timeout_s:  # the deadline came first
                    raise BodyTooSlow(self.deadline_s) from None
                raise BodyStalled(self.timeout_s) from None
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except BodyTimedOut as late:
            if answering:  # an answer already under way cannot become a 408
                raise
            await send_closing_refusal(send, 408, self.refusal(scope, 408, str(late)))


async def send_closing_refusal(send: Callable, status: int, body: dict[str, Any]) -> None:
    """``body`` as a JSON answer that closes the connection (the request's body may be partly unread)."""
    data = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def drain(receive: Callable, received: int) -> None:
    """Read and discard the rest of a request body, up to DRAIN_LIMIT_BYTES in all."""
    while received <= DRAIN_LIMIT_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            return


class UrlFetches:
    """Fetch image URLs on ``most`` threads of their own; a fetch starts at once or is refused (FetchesFull).

    On the event loop's shared pool (asyncio.to_thread: min(32, cores + 4) threads) a few slow origins made
    every other URL request wait for a thread, then fetch for its whole timeout on top: a 10-s --timeout
    answered in 20 s, a fast URL in 8.6 s. Here a fetch's time is all fetching. A fetch whose client left
    keeps its thread until it ends (its own deadline), and is counted until then.
    """

    def __init__(self, most: int, retry_after_s: int):
        self.most = most
        self.retry_after_s = retry_after_s
        self._pool = ThreadPoolExecutor(most, thread_name_prefix="detect-url")
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def start(self, fetch: Callable[..., Any], *args: Any) -> asyncio.Future:
        """``fetch(*args)`` on a thread of its own, as an awaitable."""
        with self._lock:
            full = self._running >= self.most
            if not full:
                self._running += 1
        if full:
            raise FetchesFull(self.most, self.retry_after_s)
        try:
            future = self._pool.submit(fetch, *args)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._done(None)
            raise FetchesFull(self.most, self.retry_after_s) from None
        future.add_done_callback(self._done)
        return asyncio.wrap_future(future)

    def _done(self, _: Any) -> None:
        with self._lock:
            self._running -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
