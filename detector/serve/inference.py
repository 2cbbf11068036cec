"""A request's inference: the model a worker loads once, a request's pages detected exactly as
TextDetection.predict detects them, and the work dropped when its client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from fastapi import Request

from ..api import TextDetection
from ..inputs import LoadedImage
from ..result import to_jsonable
from ..session_run import ARENA_SHRINK_ABOVE_PIXELS
from .config import ServeConfig

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
