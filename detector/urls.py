"""URL inputs: a body fetched within the load options' time and size limits, and URLs as messages show them
(without their secrets)."""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from .errors import ImageTooLargeError, InputNotFoundError, SourceUnavailableError, UnsupportedInputError
from .http_body import body_chunks, web_opener
from .load_options import LoadOptions

# Content types a URL input is refused by before its body is read: pages (an error or login page served with 200).
# Any other is read and goes by its bytes, as PaddleX reads it: S3 serves an object uploaded without a type as
# binary/octet-stream, and servers send application/force-download, application/x-pdf, even text/plain.
URL_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/json"})
URL_CHUNK_BYTES = 1 << 16


def is_url(value: Any) -> bool:
    """An http(s) URL, its scheme in any case (HTTPS://, as RFC 3986 allows)."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def url_shown(url: str) -> str:
    """A URL as error messages show it: the values of its query and any user:password@ left out (a presigned
    S3 or GCS URL carries its credential and signature in the query; a service logs every refusal)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # a malformed host ("http://[::1"): nothing after the path is shown
        return url.split("?", 1)[0].split("#", 1)[0]
    query = "&".join(field.split("=", 1)[0] + ("=..." if "=" in field else "") for field in parts.query.split("&"))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))


def shown_path(path: Optional[str]) -> Optional[str]:
    """An input's path as messages, warnings and progress show it: a URL without its secrets (url_shown)."""
    return url_shown(path) if path is not None and is_url(path) else path


def _web_request(url: str) -> urllib.request.Request:
    """The request for a URL; its user:password@ (urllib took "user:password@host" for a host name) sent as
    basic authentication, as requests and curl send it, and to this host only: not on redirects."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(
        urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)) if at else url,
        headers={"User-Agent": "detector (PaddleOCR text detection)"},
    )
    if at:
        user, _, password = userinfo.partition(":")
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    return request


def fetch_url(url: str, options: LoadOptions) -> tuple:
    """(bytes, content type) of a URL, refusing non-images, oversize bodies and slow servers; its messages
    show the URL without secrets (url_shown)."""
    shown = url_shown(url)
    try:
        request = _web_request(url)
    except ValueError as exc:  # a malformed host or port
        raise InputNotFoundError(f"cannot fetch {shown}: {exc}") from None
    declared = None
    deadline = time.monotonic() + options.url_timeout  # for the whole fetch: a trickling server must not hold us
    try:
        with web_opener().open(request, timeout=options.url_timeout) as response:
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type in URL_PAGE_TYPES:  # an error or login page served with 200: said before reading it
                raise UnsupportedInputError(f"{shown} serves {content_type!r}, not an image or PDF")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > options.url_max_bytes:
                raise ImageTooLargeError(
                    f"{shown} is {int(declared):,} bytes, above the {options.url_max_bytes:,}-byte limit for URL inputs"
                )
            body = bytearray()
            for chunk in body_chunks(response, URL_CHUNK_BYTES, deadline=deadline):
                body += chunk
                if len(body) > options.url_max_bytes:
                    break
    except urllib.error.HTTPError as exc:
        exc.close()  # its response's socket (a ResourceWarning when left to the garbage collector)
        said = f"{shown} answered HTTP {exc.code} {exc.reason}"
        raise (SourceUnavailableError(said) if exc.code >= 500 else InputNotFoundError(said)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceUnavailableError(
            f"cannot fetch {shown}: {reason} (timeout {options.url_timeout:g} s)",
            timed_out=isinstance(reason, (TimeoutError, socket.timeout)),  # one class since Python 3.10
        ) from None
    if len(body) > options.url_max_bytes:
        raise ImageTooLargeError(f"{shown} sent more than the {options.url_max_bytes:,}-byte limit for URL inputs")
    if declared and declared.isdigit() and len(body) < int(declared):  # the connection closed midway
        raise SourceUnavailableError(
            f"{shown} sent {len(body):,} of its {int(declared):,} bytes, then closed the connection"
        )
    return bytes(body), content_type
