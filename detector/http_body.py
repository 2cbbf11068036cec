"""Reading an HTTP response body so that a server sending a byte now and then cannot hold the caller forever.

A socket timeout bounds each wait for data, not the body: a server that sends one byte every few seconds
never trips it, and ``response.read(n)`` keeps waiting until all n bytes are there. ``body_chunks`` reads
what each wait brings (``read1``) and checks the clock between reads: against a deadline for the whole
body (URL inputs: a service thread must come back) and against a least amount of data per window of time
(model downloads: a large file on a slow link may take minutes, a stalled one must not take hours). Each
wait is still bounded by the socket's own timeout, so a check can come that much after its limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Optional


def body_chunks(
    response: Any,
    chunk_size: int,
    deadline: Optional[float] = None,
    window_s: Optional[float] = None,
    window_min_bytes: int = 0,
    clock: Any = time.monotonic,
) -> Iterator[bytes]:
    """The body of response in chunks of at most chunk_size bytes, as they arrive.

    Raises TimeoutError (an OSError, as a socket timeout is) once ``clock()`` passes deadline before the
    body ends, or once window_s seconds pass in which fewer than window_min_bytes arrived."""
    read = getattr(response, "read1", None) or response.read
    window_start = clock()
    window_bytes = 0
    while True:
        chunk = read(chunk_size)
        if not chunk:
            return
        yield chunk
        now = clock()
        if deadline is not None and now > deadline:
            raise TimeoutError("the body did not arrive in time")
        window_bytes += len(chunk)
        if window_s is not None and now - window_start >= window_s:
            if window_bytes < window_min_bytes:
                raise TimeoutError(f"{window_bytes:,} bytes came in {now - window_start:.0f} s: stalled")
            window_start, window_bytes = now, 0
