"""Reading a POST /detect request: its image from a multipart upload, a raw body or a JSON body (base64 or a
URL), and the settings it may override, from the JSON body and the query string, checked before any inference."""

from __future__ import annotations

import base64
import binascii
import collections
import json
import math
from collections.abc import Iterable
from typing import Any, Optional

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..inputs import Source
from ..urls import is_url
from .config import ServeConfig
from .envelope import LOG_ID_PATTERN, RequestError

# Settings a request may override, and their types (the library validates the values).
REQUEST_SETTINGS = {
    "thresh": float,
    "box_thresh": float,
    "unclip_ratio": float,
    "limit_side_len": int,
    "limit_type": str,
}
# Upper bounds a request's settings must keep to, beyond the library's own checks: the unclip offset's
# rounded joins take vertices in proportion to the square root of its distance, so unclip_ratio=1e9 held
# the CPU ~5 s per page of 29 boxes (the web page's slider ends at 4; PaddleOCR's models use 1.5 to 2).
REQUEST_SETTING_MAXIMUMS = {"unclip_ratio": 10.0}
RAW_BODY_TYPES = ("application/octet-stream", "application/pdf")
# JSON base64 is decoded this many characters at a time (a multiple of 4): binascii holds the GIL for a whole call,
# so one call for a 19.6-MB body stood the event loop still 0.09 s, from whichever thread; between two, it runs
BASE64_PIECE_CHARS = 1 << 20


async def read_detect_request(request: Request, config: ServeConfig) -> tuple:
    """(Source, settings from the body, logId or None) from one of the three input forms."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request), {}, None
    if content_type == "application/json":
        # parsed and decoded on a worker thread: on the event loop, a 19.6-MB body of base64 held every other
        # request, /health included, 0.16 s; json.loads, one call that holds the GIL, still holds it 0.04 s
        return await run_in_threadpool(_read_json, await request.body(), config)
    if content_type.startswith("image/") or content_type in RAW_BODY_TYPES:
        data = await request.body()
        if not data:
            raise RequestError(400, "the request body is empty: send the image's bytes")
        return Source("bytes", data, "<request body>"), {}, None
    raise RequestError(
        415,
        f"unsupported Content-Type {content_type or '(none)'!r}: send multipart/form-data with a 'file' field, "
        f'a raw body as image/* or application/octet-stream, or application/json with {{"image": <base64>}}',
    )


async def _read_multipart(request: Request) -> Source:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except StarletteHTTPException as exc:  # malformed multipart, too many parts
        raise RequestError(400, f"cannot read the multipart body: {exc.detail}") from None
    try:
        extra = sorted(set(form.keys()) - {"file"})
        if extra:
            raise RequestError(
                400,
                f"multipart field(s) {', '.join(extra)} not accepted: send the image as 'file' "
                f"and settings in the query string",
            )
        upload = form.get("file")
        if isinstance(upload, str):  # a part without filename="…" (RFC 7578 has no filename*=) is a text field
            raise RequestError(
                400, "the multipart field 'file' is not a file upload: its Content-Disposition needs filename=\"…\""
            )
        if not isinstance(upload, UploadFile):
            raise RequestError(400, "the multipart body has no file field named 'file'")
        data = await upload.read()
        name = upload.filename or "<uploaded file>"
    finally:
        await form.close()
    if not data:
        raise RequestError(400, f"the uploaded file {name!r} is empty")
    return Source("bytes", data, name)


def refuse_repeated(keys: Iterable[str], where: str) -> None:
    """A 400 where a setting is given twice (in the JSON body, or the query string): the last was taken, silently."""
    repeated = sorted(key for key, count in collections.Counter(keys).items() if count > 1)
    if repeated:
        raise RequestError(400, f"{where} gives {', '.join(repeated)} more than once: give each once")


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, where a key given twice is refused: json.loads kept the last, silently."""
    refuse_repeated((key for key, _ in pairs), "the JSON body")
    return dict(pairs)


def _read_json(raw: bytes, config: ServeConfig) -> tuple:
    try:
        body = json.loads(raw, object_pairs_hook=_object_without_repeated_keys)
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, an integer of 4,300+ digits
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # arrays or objects nested deeper than the parser's stack
        raise RequestError(400, "the JSON body is nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise RequestError(400, 'the JSON body must be an object such as {"image": "<base64>"}')
    log_id = body.get("logId")
    if log_id is not None and not (isinstance(log_id, str) and LOG_ID_PATTERN.fullmatch(log_id)):
        raise RequestError(400, '"logId" must be a string of 1 to 128 printable ASCII characters (a UUID, say)')
    try:
        return _json_request(body, config, log_id)
    except RequestError as exc:
        exc.log_id = log_id
        raise


def _json_request(body: dict[str, Any], config: ServeConfig, log_id: Optional[str]) -> tuple:
    unknown = sorted(set(body) - {"image", "url", "logId", *REQUEST_SETTINGS})
    if unknown:
        raise RequestError(
            400, f"unknown JSON key(s) {', '.join(unknown)}; accepted: image, url, logId, {', '.join(REQUEST_SETTINGS)}"
        )
    settings = {key: body[key] for key in REQUEST_SETTINGS if body.get(key) is not None}
    if ("image" in body) == ("url" in body):
        raise RequestError(400, 'the JSON body needs exactly one of "image" (base64) or "url"')
    # PaddleX's services take a URL in "image" too: a client written for them sends it there
    key = "url" if "url" in body else "image"
    if key == "url" or is_url(body["image"]):
        url = body[key]
        if not config.allow_urls:
            raise RequestError(
                403,
                f'URL inputs are disabled on this server ("{key}" holds one): send the image itself, or start the '
                "server with --allow-urls (it then fetches whatever URL a client names)",
            )
        if not is_url(url):
            raise RequestError(400, '"url" must be an http(s) URL string')
        return Source("url", url, url), settings, log_id
    return Source("bytes", decode_base64_image(body["image"]), "<base64 image>"), settings, log_id


def decode_base64_image(value: Any) -> bytes:
    """Base64 (standard alphabet, or a data: URL) -> bytes; a 400 that says what is wrong otherwise."""
    if not isinstance(value, str):
        raise RequestError(400, '"image" must be a base64 string')
    value = value.strip()
    if value[:5].lower() == "data:" and "," in value:
        value = value.split(",", 1)[1]  # data:image/png;base64,<payload> (the scheme is case-insensitive)
    try:
        data = decoded_in_pieces(value)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f'"image" is not valid base64: {exc}') from None
    if not data:
        raise RequestError(400, '"image" is empty')
    return data


def decoded_in_pieces(text: str) -> bytes:
    """Base64 ``text`` decoded BASE64_PIECE_CHARS at a time, without line breaks and spaces (as MIME encoders write
    them: GNU base64 without -w0, Python's encodebytes: 76 columns). Text that is not valid base64 is decoded whole
    instead, as it was, for the same error."""
    pieces = []
    carried = ""  # the characters of a piece past its last multiple of 4, put before the next piece
    try:
        for start in range(0, len(text), BASE64_PIECE_CHARS):
            piece = carried + "".join(text[start : start + BASE64_PIECE_CHARS].split())
            if start + BASE64_PIECE_CHARS < len(text):  # not the last: whole groups of 4, the rest carried
                whole = len(piece) - len(piece) % 4
                piece, carried = piece[:whole], piece[whole:]
                if "=" in piece:  # padding before the end, which a piece alone would take
                    raise binascii.Error
            pieces.append(base64.b64decode(piece, validate=True))
    except (binascii.Error, ValueError):
        return base64.b64decode("".join(text.split()), validate=True)
    return b"".join(pieces)


def merge_settings(query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(key for key in set(query) & set(body) if query[key] != body[key])
    if clash:
        raise RequestError(400, f"{', '.join(clash)} given differently in the query and the JSON body")
    merged = {**query, **body}
    for key, maximum in REQUEST_SETTING_MAXIMUMS.items():
        value = merged.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and maximum < value < math.inf:
            shown = f"{value:g}" if value < 1e300 else "more"  # an integer of 400 digits has no float to show
            raise RequestError(422, f"{key} must be at most {maximum:g} on this service, got {shown}")
    return merged
