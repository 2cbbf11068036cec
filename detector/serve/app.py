"""The HTTP service: one TextDetection per worker process behind FastAPI.

Routes: ``POST /detect`` (multipart ``file``, a raw image/PDF body, or JSON ``{"image": base64}`` /
``{"url": …}``), ``GET /health``, ``GET /models``, ``GET /`` (the page) and ``/openapi.json``.
Every answer is an envelope modelled on PaddleX serving's: ``logId``, ``errorCode`` (0, or the HTTP
status), ``errorMsg`` and, on success, ``result``. Images are loaded and detected by the library
itself (``detector.inputs.load_source`` + ``TextDetection.detect_loaded``), so the service returns
exactly what ``TextDetection.predict`` returns for the same bytes and settings.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..api import TextDetection
from ..catalog import KNOWN_MODELS, exported_models
from ..errors import (
    DetectorError,
    ImageTooLargeError,
    InputNotFoundError,
    InvalidParameterError,
    SourceUnavailableError,
    UnreadableImageError,
    UnsupportedInputError,
)
from ..inputs import LoadedImage, Source, fetched_now, load_source
from ..result import to_jsonable
from ..session import ARENA_SHRINK_ABOVE_PIXELS
from ..urls import is_url
from .config import CONFIG_ENV_VAR, URL_FETCH_RETRY_AFTER_S, ServeConfig
from .limits import (
    BodyReadTimeout,
    BodySizeLimit,
    BodyTooLarge,
    Busy,
    InferenceGate,
    InferenceTimeout,
    UrlFetches,
)

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
PAGE_FILE = Path(__file__).resolve().parent / "static" / "index.html"
logger = logging.getLogger("detector.serve")


T = TypeVar("T")


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


# How often a request waiting for its inference, or in it, checks that its client is still connected.
DISCONNECT_POLL_S = 0.25


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; if the client disconnects first, ``work`` is cancelled (InferenceGate.run then drops
    a queued inference before it starts and stops a running PDF or TIFF at its next page) and ClientGone
    is raised. uvicorn does not cancel a handler whose client left."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise ClientGone
    finally:
        task.cancel()  # a no-op once it is done; stops it where this handler itself is cancelled (shutdown)


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


def load_detector(config: ServeConfig) -> TextDetection:
    detector = TextDetection(
        model_name=config.model_name,
        model_dir=config.model_dir,
        device=config.device,
        cpu_threads=config.cpu_threads,
        cpu_spinning=config.cpu_spinning,
        precision=config.precision,
        max_pixels=config.max_pixels,
        shape_bucket=config.shape_bucket,
    )
    # a request's large limit_side_len must not leave the worker that much larger for good
    detector.shrink_arena_above = ARENA_SHRINK_ABOVE_PIXELS
    return detector


def detect_pages(
    detector: TextDetection,
    images: Iterable[LoadedImage],
    overrides: dict[str, Any],
    cancelled: threading.Event,
) -> list[dict[str, Any]]:
    """One entry per image (one per PDF/TIFF page), detected exactly as TextDetection.predict does."""
    pages = []
    for loaded in images:
        if cancelled.is_set():
            break
        start = time.perf_counter()
        (result,) = detector.detect_loaded([loaded], **overrides)
        height, width = loaded.image.shape[:2]
        pages.append(
            {
                "page_index": loaded.page_index,
                "width": width,
                "height": height,
                "dt_polys": to_jsonable(result["dt_polys"]),
                "dt_scores": to_jsonable(result["dt_scores"]),
                "time_ms": round((time.perf_counter() - start) * 1000, 2),
            }
        )
    return pages


# ----------------------------------------------------------------------------- reading requests


async def read_detect_request(request: Request, config: ServeConfig) -> tuple:
    """(Source, settings from the body, logId or None) from one of the three input forms."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request), {}, None
    if content_type == "application/json":
        return _read_json(await request.body(), config)
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


def _refuse_repeated(keys: Iterable[str], where: str) -> None:
    """A 400 where a setting is given twice (in the JSON body, or the query string): the last was taken, silently."""
    repeated = sorted(key for key, count in collections.Counter(keys).items() if count > 1)
    if repeated:
        raise RequestError(400, f"{where} gives {', '.join(repeated)} more than once: give each once")


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, where a key given twice is refused: json.loads kept the last, silently."""
    _refuse_repeated((key for key, _ in pairs), "the JSON body")
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
    # line breaks as MIME encoders write them (GNU base64 without -w0, Python's encodebytes: 76 columns)
    value = "".join(value.split())
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f'"image" is not valid base64: {exc}') from None
    if not data:
        raise RequestError(400, '"image" is empty')
    return data


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


# ----------------------------------------------------------------------------- the application

DETECT_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in RAW_BODY_TYPES},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "byte", "description": "the image or PDF, base64"},
                        "url": {"type": "string", "description": "only on servers started with --allow-urls"},
                        "logId": {"type": "string"},
                        **{
                            key: {
                                "type": {float: "number", int: "integer", str: "string"}[kind],
                                **(
                                    {"maximum": REQUEST_SETTING_MAXIMUMS[key]}
                                    if key in REQUEST_SETTING_MAXIMUMS
                                    else {}
                                ),
                            }
                            for key, kind in REQUEST_SETTINGS.items()
                        },
                    },
                }
            },
        },
    }
}


def _envelope_schema(result: Optional[dict[str, Any]]) -> dict[str, Any]:
    """OpenAPI schema of envelope(): with its result on success, without one on a refusal."""
    properties: dict[str, Any] = {
        "logId": {"type": "string"},
        "errorCode": {"type": "integer", "description": "0 on success, else the HTTP status"},
        "errorMsg": {"type": "string"},
    }
    if result is not None:
        properties["result"] = result
    return {"type": "object", "required": list(properties), "properties": properties}


_POLYGONS = {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}
_DETECT_RESULT = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "settings": {"type": "object", "description": "the settings the request ran with"},
        "time_ms": {"type": "number"},
        "pages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "page_index": {
                        "anyOf": [{"type": "integer"}, {"type": "null"}],
                        "description": "null for a single image",
                    },
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "dt_polys": {**_POLYGONS, "description": "boxes as [x, y] points, original-image pixels"},
                    "dt_scores": {"type": "array", "items": {"type": "number"}},
                    "time_ms": {"type": "number"},
                },
            },
        },
    },
}
_REFUSAL = {"content": {"application/json": {"schema": _envelope_schema(None)}}}
DETECT_RESPONSES: dict[Union[int, str], dict[str, Any]] = {
    200: {
        "description": "the boxes of every page",
        "content": {"application/json": {"schema": _envelope_schema(_DETECT_RESULT)}},
    },
    **{
        status: {"description": meaning, **_REFUSAL}
        for status, meaning in (
            (400, "malformed request, unknown key or query parameter"),
            (403, "a URL on a server without --allow-urls"),
            (408, "the request body stopped arriving for --timeout-stall seconds"),
            (413, "body above --max-body-mb, or image above --max-pixels"),
            (415, "unsupported content type"),
            (422, "not an image, or a setting out of range"),
            (502, "the image URL's server answered 5xx, could not be reached, or dropped the connection"),
            (
                503,
                "queue full, as many URLs being fetched as the server fetches at once, or --timeout passed "
                "(Retry-After says when to retry)",
            ),
            (504, "the image URL's server did not answer within the URL timeout"),
        )
    },
}


def create_app(config: ServeConfig, detector: Optional[TextDetection] = None) -> FastAPI:
    """The FastAPI application; loads the model unless one is given (one per worker process)."""
    detector = detector or load_detector(config)
    gate = InferenceGate(config.max_concurrency, config.max_queue)
    fetches = UrlFetches(config.max_url_fetches, URL_FETCH_RETRY_AFTER_S)
    load_options = dataclasses.replace(
        detector.load_options,
        url_max_bytes=config.max_body_bytes,
        url_timeout=min(detector.load_options.url_timeout, config.timeout_s),  # a URL within the request's time
    )
    page_html = PAGE_FILE.read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gate.shutdown()  # requests still queued at shutdown are dropped; running ones finish
        fetches.shutdown()  # a fetch still running ends by its own deadline
        abandoned = gate.snapshot()["running"]
        if abandoned and config.exit_past_timeout:  # past the graceful --timeout: nobody waits for them
            logger.warning("exiting with %d inference(s) still running past --timeout", abandoned)
            exit_now()

    app = FastAPI(
        title="detector",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        description="PP-OCR text detection on onnxruntime. Every answer is an envelope: "
        "logId, errorCode (0 or the HTTP status), errorMsg, result.",
    )

    def log_refusal(method: Any, path: str, status: int, log_id: str, message: str) -> None:
        logger.info("%s %s -> %d (%s): %s", method, log_safe(path), status, log_id, log_safe(message))

    def refused_before_reading(scope: dict[str, Any], status: int, message: str) -> dict[str, Any]:
        # a body refused by its Content-Length header (never read: no logId of the client's to echo) is logged
        # as every other refusal is, so that the logId the client gets can be found in the log
        log_id = new_log_id()
        message = cut_short(message)
        log_refusal(scope.get("method"), str(scope.get("path", "")), status, log_id, message)
        return envelope(log_id, status, message)

    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes, refusal=refused_before_reading)
    # outside the size limit, so that draining a refused body keeps to the read timeout too
    app.add_middleware(BodyReadTimeout, timeout_s=config.stall_timeout_s, refusal=refused_before_reading)

    def log_id_of(request: Request) -> str:
        return getattr(request.state, "log_id", None) or new_log_id()

    def refuse(request: Request, status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
        log_id = log_id_of(request)
        message = cut_short(message)
        log_refusal(request.method, request.url.path, status, log_id, message)
        return JSONResponse(envelope(log_id, status, message), status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        if exc.log_id:
            request.state.log_id = exc.log_id
        return refuse(request, exc.status, str(exc), exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _left_during_upload(request: Request, exc: ClientDisconnect) -> Response:
        # a client that hangs up while sending its body: nothing ran, no one reads an answer (not an error)
        logger.info(
            "%s %s (%s): the client left during its upload -> 499",
            request.method,
            log_safe(request.url.path),
            log_id_of(request),
        )
        return Response(status_code=499)

    @app.exception_handler(DetectorError)
    async def _detector_error(request: Request, exc: DetectorError) -> JSONResponse:
        return refuse(request, status_of(exc), str(exc))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return refuse(request, 413, str(exc))

    @app.exception_handler(Busy)  # Overloaded, FetchesFull
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return refuse(request, 503, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(InferenceTimeout)
    async def _timeout(request: Request, exc: InferenceTimeout) -> JSONResponse:
        return refuse(request, 503, str(exc), {"Retry-After": str(gate.retry_after_s())})

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone) -> Response:
        # no one reads this answer; 499 is the status proxies log for it
        logger.info(
            "%s %s (%s): the client left before its answer; its inference was dropped",
            request.method,
            log_safe(request.url.path),
            log_id_of(request),
        )
        return Response(status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return refuse(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return refuse(request, 422, f"invalid request: {problems}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_id = log_id_of(request)
        logger.exception("unexpected error (logId %s)", log_id)
        return JSONResponse(
            envelope(log_id, 500, f"internal error: {type(exc).__name__} (logId {log_id} in the server log)"),
            status_code=500,
        )

    # HEAD beside each GET: uptime monitors and `curl -I` probe with it (FastAPI answers 405 to a HEAD on
    # a GET route); uvicorn sends the GET's status and headers without the body.
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    @app.head("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    @app.get("/health", summary="Model loaded, device and provider in use, inference queue")
    @app.head("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        result = {
            "status": "ok",
            "model_name": detector.model_name,
            "precision": detector.precision,  # an int8 server told apart from an fp32 one
            "device": detector.device,
            "provider": detector.providers[0],
            "settings": {key: getattr(detector.settings, key) for key in REQUEST_SETTINGS},
            "inference": gate.snapshot(),
            "url_fetches": {"running": fetches.running, "max_url_fetches": fetches.most},
            "limits": {
                "max_body_bytes": config.max_body_bytes,
                "max_pixels": load_options.max_pixels,
                "timeout_s": config.timeout_s,
                "stall_timeout_s": config.stall_timeout_s,
                "allow_urls": config.allow_urls,
            },
        }
        return JSONResponse(envelope(new_log_id(), 200, "Healthy", result))

    @app.get("/models", summary="Known and exported models; which one this server runs")
    @app.head("/models", include_in_schema=False)
    async def models() -> JSONResponse:
        exported = exported_models()
        names = list(KNOWN_MODELS) + sorted(set(exported) - set(KNOWN_MODELS))
        listed = [
            {
                "name": name,
                "exported": name in exported,
                "loaded": name == detector.model_name,
                "summary": KNOWN_MODELS[name].summary if name in KNOWN_MODELS else "exported locally",
            }
            for name in names
        ]
        if detector.model_name not in names:
            listed.insert(
                0,
                {
                    "name": detector.model_name,
                    "exported": True,
                    "loaded": True,
                    "summary": f"loaded from {detector.model_path.name}",
                },
            )
        return JSONResponse(envelope(new_log_id(), 200, "Success", {"loaded": detector.model_name, "models": listed}))

    @app.post(
        "/detect",
        openapi_extra=DETECT_REQUEST_BODY,
        responses=DETECT_RESPONSES,
        summary="Detect text lines in an image, or in every page of a PDF or TIFF",
    )
    async def detect(
        request: Request,
        thresh: Optional[float] = Query(None, description="binarization threshold of the probability map"),
        box_thresh: Optional[float] = Query(None, description="minimum mean score of a box"),
        unclip_ratio: Optional[float] = Query(
            None, description=f"how far boxes are expanded (at most {REQUEST_SETTING_MAXIMUMS['unclip_ratio']:g})"
        ),
        limit_side_len: Optional[int] = Query(None, description="resize limit of the side chosen by limit_type"),
        limit_type: Optional[str] = Query(None, description="max, min or resize_long"),
    ) -> Response:
        start = time.perf_counter()
        request.state.log_id = new_log_id()
        unknown = sorted(set(request.query_params) - set(REQUEST_SETTINGS))
        if unknown:  # a misspelt setting would otherwise be dropped silently
            raise RequestError(
                400, f"unknown query parameter(s) {', '.join(unknown)}; accepted: {', '.join(REQUEST_SETTINGS)}"
            )
        _refuse_repeated((key for key, _ in request.query_params.multi_items()), "the query string")
        query = {
            key: value
            for key, value in (
                ("thresh", thresh),
                ("box_thresh", box_thresh),
                ("unclip_ratio", unclip_ratio),
                ("limit_side_len", limit_side_len),
                ("limit_type", limit_type),
            )
            if value is not None
        }
        # before the body is read: with every place taken, twenty 15-MB uploads read only to be refused took the
        # worker from 355 to 793 MB; a client that asked first (Expect: 100-continue) now sends nothing
        gate.refuse_if_full()
        source, body_settings, log_id = await read_detect_request(request, config)
        if log_id:
            request.state.log_id = log_id
        overrides = merge_settings(query, body_settings)
        settings = detector.settings.with_overrides(**overrides)  # refuse bad values before queueing
        if source.kind == "url":  # fetched before the queue: a slow origin held an inference slot for 30 s
            source = await unless_client_leaves(request, fetches.start(fetched_now, source, load_options))
        images = load_source(source, load_options)
        log_id = request.state.log_id

        def detect_and_answer(cancelled: threading.Event) -> Optional[Response]:
            pages = detect_pages(detector, images, overrides, cancelled)
            if cancelled.is_set():  # timed out, or the client left: no one reads this answer
                return None
            result = {
                "model_name": detector.model_name,
                "settings": {key: getattr(settings, key) for key in REQUEST_SETTINGS},
                "time_ms": round((time.perf_counter() - start) * 1000, 2),
            }
            # the JSON made here, on the inference thread, a page at a time: made on the event loop in one go,
            # an answer of 80 pages of 1,000 boxes (5 MB) held every other request, /health included, 0.25 s
            return Response(detect_answer(log_id, result, pages), media_type="application/json")

        return await unless_client_leaves(request, gate.run(detect_and_answer, config.timeout_s))

    return app


def exit_now() -> None:
    """End the process with 0 (a requested stop) without joining the inference threads, as
    interpreter exit would: their results have no one left to go to."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def log_beside_uvicorn(level: int = logging.INFO) -> None:
    """The package's log lines (each refusal with its logId, dropped requests, errors) on stderr in uvicorn's
    format, for `detect serve`: without a handler, Python shows only warnings and errors, unformatted."""
    from uvicorn.logging import DefaultFormatter

    package = logging.getLogger("detector")
    for handler in list(package.handlers):  # the command line's own echo of warnings: one line each, not two
        if getattr(handler, "echoes_for_the_command_line", False):
            package.removeHandler(handler)
    # python-multipart's own warnings (a malformed upload, answered 400 here) in the same format, not Python's
    # bare last-resort lines
    for logger in (package, logging.getLogger("python_multipart"), logging.getLogger("multipart")):
        if not any(getattr(handler, "detect_serve", False) for handler in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
            handler.detect_serve = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False
    package.setLevel(level)


def app_from_environment() -> FastAPI:
    """uvicorn's factory for worker processes (--workers N): the config comes in CONFIG_ENV_VAR.

    A worker that cannot load the model (a file replaced or removed since the command loaded it, say) says why in
    one line, writes it to the config's startup_failure_file for the command, and exits with uvicorn's
    startup-failure status, on which uvicorn's supervisor stops the server. It ended in a traceback, and the
    supervisor started another worker, and another, for good: the port open, nothing answering.
    """
    import uvicorn.config

    # uvicorn's startup-failure status: its supervisor stops the server on it from uvicorn 0.50 (Python 3.10 and
    # later); the older uvicorns Python 3.9 gets (up to 0.39) have no such constant and start another worker, as
    # they did before this rule (importing the name failed every worker there)
    startup_failure = getattr(uvicorn.config, "STARTUP_FAILURE", 3)
    log_beside_uvicorn()
    config = ServeConfig.from_json(os.environ.get(CONFIG_ENV_VAR) or "{}")
    try:
        return create_app(config)
    except Exception as exc:  # any error here fails every worker started after this one the same way
        message = f"a worker could not load the model: {exc}"
        logger.error(message, exc_info=not isinstance(exc, DetectorError))  # a library error says all in its message
        if config.startup_failure_file:
            Path(config.startup_failure_file).write_text(message, encoding="utf-8")
        sys.exit(startup_failure)
