"""The HTTP service: one TextDetection per worker process behind FastAPI.

Routes: ``POST /detect`` (multipart ``file``, a raw image/PDF body, or JSON ``{"image": base64}`` /
``{"url": …}``), ``GET /health``, ``GET /models``, ``GET /`` (the page) and ``/openapi.json``.
Every answer is an envelope modelled on PaddleX serving's: ``logId``, ``errorCode`` (0, or the HTTP
status), ``errorMsg`` and, on success, ``result``. Images are loaded and detected by the library
itself (``detector.inputs.load_source`` + ``TextDetection.detect_loaded``), so the service returns
exactly what ``TextDetection.predict`` returns for the same bytes and settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..api import TextDetection
from ..catalog import KNOWN_MODELS, exported_models
from ..errors import DetectorError
from ..inputs import fetched_now, load_source
from ..load_options import LoadOptions
from .config import URL_FETCH_RETRY_AFTER_S, ServeConfig
from .detect_request import (
    REQUEST_SETTING_MAXIMUMS,
    REQUEST_SETTINGS,
    merge_settings,
    read_detect_request,
    refuse_repeated,
)
from .envelope import RequestError, cut_short, detect_answer, envelope, log_safe, new_log_id, status_of
from .inference import ClientGone, detect_pages, load_detector, unless_client_leaves
from .limits import (
    BodyReadTimeout,
    BodySizeLimit,
    BodyTooLarge,
    Busy,
    InferenceGate,
    InferenceTimeout,
    UrlFetches,
)
from .openapi import DETECT_REQUEST_BODY, DETECT_RESPONSES

PAGE_FILE = Path(__file__).resolve().parent / "static" / "index.html"
logger = logging.getLogger("detector.serve")


@dataclasses.dataclass(frozen=True)
class Service:
    """What the routes and refusals of one application share (``app.state.service``): the model, the inference
    queue, the URL fetches, the settings."""

    config: ServeConfig
    detector: TextDetection
    gate: InferenceGate
    fetches: UrlFetches
    load_options: LoadOptions
    page_html: str


def create_app(config: ServeConfig, detector: Optional[TextDetection] = None) -> FastAPI:
    """The FastAPI application; loads the model unless one is given (one per worker process)."""
    detector = detector or load_detector(config)
    service = Service(
        config=config,
        detector=detector,
        gate=InferenceGate(config.max_concurrency, config.max_queue),
        fetches=UrlFetches(config.max_url_fetches, URL_FETCH_RETRY_AFTER_S),
        load_options=dataclasses.replace(
            detector.load_options,
            url_max_bytes=config.max_body_bytes,
            url_timeout=min(detector.load_options.url_timeout, config.timeout_s),  # a URL within the request's time
        ),
        page_html=PAGE_FILE.read_text(encoding="utf-8"),
    )
    app = FastAPI(
        title="detector",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        description="PP-OCR text detection on onnxruntime. Every answer is an envelope: "
        "logId, errorCode (0 or the HTTP status), errorMsg, result.",
    )
    app.state.service = service
    add_body_limits(app, config)
    add_refusals(app)
    add_routes(app)
    return app


def service_of(request: Request) -> Service:
    return request.app.state.service


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    service: Service = app.state.service
    service.gate.shutdown()  # requests still queued at shutdown are dropped; running ones finish
    service.fetches.shutdown()  # a fetch still running ends by its own deadline
    abandoned = service.gate.snapshot()["running"]
    if abandoned and service.config.exit_past_timeout:  # past the graceful --timeout: nobody waits for them
        logger.warning("exiting with %d inference(s) still running past --timeout", abandoned)
        exit_now()


# ----------------------------------------------------------------------------- refusals


def log_refusal(method: Any, path: str, status: int, log_id: str, message: str) -> None:
    logger.info("%s %s -> %d (%s): %s", method, log_safe(path), status, log_id, log_safe(message))


def refused_before_reading(scope: dict[str, Any], status: int, message: str) -> dict[str, Any]:
    # a body refused by its Content-Length header (never read: no logId of the client's to echo) is logged
    # as every other refusal is, so that the logId the client gets can be found in the log
    log_id = new_log_id()
    message = cut_short(message)
    log_refusal(scope.get("method"), str(scope.get("path", "")), status, log_id, message)
    return envelope(log_id, status, message)


def add_body_limits(app: FastAPI, config: ServeConfig) -> None:
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes, refusal=refused_before_reading)
    # outside the size limit, so that draining a refused body keeps to the read timeout too
    app.add_middleware(
        BodyReadTimeout,
        timeout_s=config.stall_timeout_s,
        deadline_s=config.body_timeout_s,
        refusal=refused_before_reading,
    )


def log_id_of(request: Request) -> str:
    return getattr(request.state, "log_id", None) or new_log_id()


def refuse(request: Request, status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    log_id = log_id_of(request)
    message = cut_short(message)
    log_refusal(request.method, request.url.path, status, log_id, message)
    return JSONResponse(envelope(log_id, status, message), status_code=status, headers=headers)


async def refuse_request_error(request: Request, exc: RequestError) -> JSONResponse:
    if exc.log_id:
        request.state.log_id = exc.log_id
    return refuse(request, exc.status, str(exc), exc.headers)


async def left_during_upload(request: Request, exc: ClientDisconnect) -> Response:
    # a client that hangs up while sending its body: nothing ran, no one reads an answer (not an error)
    logger.info(
        "%s %s (%s): the client left during its upload -> 499",
        request.method,
        log_safe(request.url.path),
        log_id_of(request),
    )
    return Response(status_code=499)


async def refuse_detector_error(request: Request, exc: DetectorError) -> JSONResponse:
    return refuse(request, status_of(exc), str(exc))


async def refuse_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return refuse(request, 413, str(exc))


async def refuse_busy(request: Request, exc: Busy) -> JSONResponse:
    return refuse(request, 503, str(exc), {"Retry-After": str(exc.retry_after_s)})


async def refuse_timed_out(request: Request, exc: InferenceTimeout) -> JSONResponse:
    return refuse(request, 503, str(exc), {"Retry-After": str(service_of(request).gate.retry_after_s())})


async def client_gone(request: Request, exc: ClientGone) -> Response:
    # no one reads this answer; 499 is the status proxies log for it
    logger.info(
        "%s %s (%s): the client left before its answer; its inference was dropped",
        request.method,
        log_safe(request.url.path),
        log_id_of(request),
    )
    return Response(status_code=499)


async def refuse_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return refuse(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def refuse_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())
    return refuse(request, 422, f"invalid request: {problems}")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log_id = log_id_of(request)
    logger.exception("unexpected error (logId %s)", log_id)
    return JSONResponse(
        envelope(log_id, 500, f"internal error: {type(exc).__name__} (logId {log_id} in the server log)"),
        status_code=500,
    )


def add_refusals(app: FastAPI) -> None:
    """Every exception a request can end in, answered as an envelope (or a 499 where no one reads the answer)."""
    app.exception_handler(RequestError)(refuse_request_error)
    app.exception_handler(ClientDisconnect)(left_during_upload)
    app.exception_handler(DetectorError)(refuse_detector_error)
    app.exception_handler(BodyTooLarge)(refuse_too_large)
    app.exception_handler(Busy)(refuse_busy)  # Overloaded, FetchesFull
    app.exception_handler(InferenceTimeout)(refuse_timed_out)
    app.exception_handler(ClientGone)(client_gone)
    app.exception_handler(StarletteHTTPException)(refuse_http_error)
    app.exception_handler(RequestValidationError)(refuse_invalid)
    app.exception_handler(Exception)(unexpected)


# ----------------------------------------------------------------------------- routes


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(service_of(request).page_html)


async def health(request: Request) -> JSONResponse:
    service = service_of(request)
    detector, config = service.detector, service.config
    result = {
        "status": "ok",
        "model_name": detector.model_name,
        "precision": detector.precision,  # an int8 server told apart from an fp32 one
        "device": detector.device,
        "provider": detector.providers[0],
        "settings": {key: getattr(detector.settings, key) for key in REQUEST_SETTINGS},
        "inference": service.gate.snapshot(),
        "url_fetches": {"running": service.fetches.running, "max_url_fetches": service.fetches.most},
        "limits": {
            "max_body_bytes": config.max_body_bytes,
            "max_pixels": service.load_options.max_pixels,
            "timeout_s": config.timeout_s,
            "stall_timeout_s": config.stall_timeout_s,
            "body_timeout_s": config.body_timeout_s,
            "allow_urls": config.allow_urls,
        },
    }
    return JSONResponse(envelope(new_log_id(), 200, "Healthy", result))


async def models(request: Request) -> JSONResponse:
    detector = service_of(request).detector
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
    service = service_of(request)
    detector, gate, config = service.detector, service.gate, service.config
    request.state.log_id = new_log_id()
    unknown = sorted(set(request.query_params) - set(REQUEST_SETTINGS))
    if unknown:  # a misspelt setting would otherwise be dropped silently
        raise RequestError(
            400, f"unknown query parameter(s) {', '.join(unknown)}; accepted: {', '.join(REQUEST_SETTINGS)}"
        )
    refuse_repeated((key for key, _ in request.query_params.multi_items()), "the query string")
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
        source = await unless_client_leaves(request, service.fetches.start(fetched_now, source, service.load_options))
    images = load_source(source, service.load_options)
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


def add_routes(app: FastAPI) -> None:
    # HEAD beside each GET: uptime monitors and `curl -I` probe with it (FastAPI answers 405 to a HEAD on
    # a GET route); uvicorn sends the GET's status and headers without the body.
    app.head("/", include_in_schema=False)(page)
    app.get("/", response_class=HTMLResponse, include_in_schema=False)(page)
    app.head("/health", include_in_schema=False)(health)
    app.get("/health", summary="Model loaded, device and provider in use, inference queue")(health)
    app.head("/models", include_in_schema=False)(models)
    app.get("/models", summary="Known and exported models; which one this server runs")(models)
    app.post(
        "/detect",
        openapi_extra=DETECT_REQUEST_BODY,
        responses=DETECT_RESPONSES,
        summary="Detect text lines in an image, or in every page of a PDF or TIFF",
    )(detect)


def exit_now() -> None:
    """End the process with 0 (a requested stop) without joining the inference threads, as
    interpreter exit would: their results have no one left to go to."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
