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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, Optional

WEB_SCHEMES = ("http", "https")


class WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handling, to http(s) only: its own also follows a redirect to ftp://, which made a
    URL input (a batch list, `detect serve --allow-urls`) speak FTP to any host and port."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in WEB_SCHEMES:
            raise urllib.error.HTTPError(
                req.full_url, code, f"a redirect to {scheme}:// is not followed (http and https only)", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def web_opener(*handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    """An opener for http and https alone (proxies honoured), its redirects too, with ``handlers`` added
    (a WebOnlyRedirects subclass replaces the plain one): urllib's default opener speaks FTP, file and data."""
    opener = urllib.request.OpenerDirector()
    redirects = next((h for h in handlers if isinstance(h, WebOnlyRedirects)), WebOnlyRedirects())
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),  # any other scheme: URLError("unknown url type")
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        redirects,
        urllib.request.HTTPErrorProcessor(),
        *(h for h in handlers if h is not redirects),
    ):
        opener.add_handler(handler)
    return opener


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
