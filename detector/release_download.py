"""Downloading one release file over HTTP: a progress bar, a deadline and a stall check, its length checked
against Content-Length and its bytes against the sha256 the hub names for it."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from .errors import ModelNotFoundError
from .hub import manual_download_hint

DOWNLOAD_TIMEOUT_S = 30.0
# The Hugging Face hub's header, on the redirect of a large (LFS) file, naming its sha256 (as huggingface_hub reads it)
LINKED_ETAG_HEADER = "X-Linked-Etag"
# A download bringing less than this in any DOWNLOAD_TIMEOUT_S (~2 KiB/s) has stalled, though data trickles in
DOWNLOAD_MIN_BYTES_PER_WINDOW = 1 << 16
_CHUNK = 1 << 16


def fetch(url: str, label: str, model_name: str) -> bytes:
    """The whole body of url, with a progress bar on stderr; its length checked against Content-Length."""
    import http.client  # here, not at the top: `import detector` stays light
    import socket  # socket.timeout: a TimeoutError from Python 3.10 on, not on 3.9
    import urllib.error
    import urllib.request

    from .http_body import WebOnlyRedirects, body_chunks, web_opener
    from .progress import progress_bar

    class LinkedEtagRedirects(WebOnlyRedirects):
        """Follows redirects as urllib does, keeping the X-Linked-Etag each one carries."""

        def __init__(self) -> None:
            super().__init__()
            self.etags: list[str] = []

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            self.etags.append(headers.get(LINKED_ETAG_HEADER, ""))
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    redirects = LinkedEtagRedirects()
    request = urllib.request.Request(url, headers={"User-Agent": "detector"})
    body = bytearray()
    expected: Optional[int] = None
    hub_sha256: Optional[str] = None
    try:
        with web_opener(redirects).open(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            hub_sha256 = _sha256_in_etags([*redirects.etags, response.headers.get(LINKED_ETAG_HEADER, "")])
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with progress_bar(expected or 0, f"downloading {label}", show=expected is not None) as bar:
                chunks = body_chunks(
                    response, _CHUNK, window_s=DOWNLOAD_TIMEOUT_S, window_min_bytes=DOWNLOAD_MIN_BYTES_PER_WINDOW
                )
                for chunk in chunks:
                    body += chunk
                    bar.update(len(chunk))
    except http.client.IncompleteRead as exc:  # the server closed the connection midway through a chunked body
        of = f" of {expected}" if expected is not None else ""  # chunked: no Content-Length, no total to name
        raise ModelNotFoundError(
            f"download of {url} stopped at {len(body) + len(exc.partial)}{of} bytes; "
            f"nothing kept. Try again, or: " + manual_download_hint(model_name)
        ) from None
    except urllib.error.HTTPError as exc:
        exc.close()  # its response's socket (a ResourceWarning when left to the garbage collector)
        http_reason = " ".join(str(exc.reason).split())  # a redirect loop's reason spans three lines
        later = " (the server is busy or down: try again later)" if exc.code in (429, 502, 503, 504) else ""
        raise ModelNotFoundError(
            f"cannot download {url}: HTTP {exc.code} {http_reason}{later}. " + manual_download_hint(model_name)
        ) from None
    except (urllib.error.URLError, OSError) as exc:  # offline, refused, DNS, timeout, connection reset
        reason = getattr(exc, "reason", None) or exc
        if body:  # the server answered, then stopped sending (or reset the connection) midway
            of = f" of {expected:,}" if expected is not None else ""
            raise ModelNotFoundError(
                f"download of {url} stopped after {len(body):,}{of} bytes ({reason}); nothing kept. "
                f"Try again, or: " + manual_download_hint(model_name)
            ) from None
        if isinstance(reason, (TimeoutError, socket.timeout)):  # connected, then no answer: not offline
            raise ModelNotFoundError(
                f"cannot download {url}: no answer in {DOWNLOAD_TIMEOUT_S:.0f} s ({reason}). Try again, or: "
                + manual_download_hint(model_name)
            ) from None
        raise ModelNotFoundError(
            f"cannot download {url} ({reason}): offline? " + manual_download_hint(model_name)
        ) from None
    if expected is not None and len(body) != expected:
        raise ModelNotFoundError(
            f"download of {url} stopped at {len(body)} of {expected} bytes; nothing kept. "
            f"Try again, or: " + manual_download_hint(model_name)
        )
    got_sha256 = hashlib.sha256(body).hexdigest() if hub_sha256 is not None else None
    if got_sha256 != hub_sha256:
        # bytes changed on the way or on a mirror's disk, still parsing as a model: other boxes, silently
        raise ModelNotFoundError(
            f"{url} gave bytes that are not the file the hub names (sha256 {got_sha256}, "
            f"the hub's {LINKED_ETAG_HEADER} {hub_sha256}); nothing kept. Try again, or: "
            + manual_download_hint(model_name)
        )
    return bytes(body)


def _sha256_in_etags(etags: list[str]) -> Optional[str]:
    """The sha256 the hub gives for a large (LFS) file: an X-Linked-Etag of 64 hex digits; None where none
    came (a small file's etag is its git blob sha1; a mirror may send none)."""
    for etag in etags:
        value = etag.strip().removeprefix("W/").strip('"').lower()
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return value
    return None
