"""Run a producer one step ahead in a background thread, so loading overlaps inference.

Decoding (OpenCV), resizing and normalizing (numpy) and session.run (onnxruntime) all release the
GIL, so a folder is processed as a pipeline: while the network runs on one chunk, the next is read.
Items and exceptions come out in the producer's order; closing the consumer stops the producer.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Optional, TypeVar

T = TypeVar("T")

# Chunks read ahead of the one being run: one is enough to hide decoding behind inference, and
# bounds memory to one extra chunk of images.
PREFETCH_DEPTH = 1
# Read ahead only on machines with more cores than this. On 2 cores onnxruntime's two intra-op threads
# already use both, and the reading thread competes with them: measured on the 2-core bench machine,
# the whole bench set took 1.03x (PP-OCRv4_mobile_det) to 1.20x (PP-OCRv6_tiny_det) the serial loop's
# time with read-ahead.
READ_AHEAD_MIN_CORES = 3
_DONE = object()


def read_ahead_depth(cores: Optional[int] = None) -> int:
    """PREFETCH_DEPTH where the machine has a core to spare for reading (``cores``: os.cpu_count()), else 0."""
    cores = os.cpu_count() if cores is None else cores
    return PREFETCH_DEPTH if (cores or 1) >= READ_AHEAD_MIN_CORES else 0


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: Optional[int] = None) -> Iterator[T]:
    """Yield items as ``items`` would, produced up to ``depth`` ahead in a daemon thread (default:
    :func:`read_ahead_depth`; 0 produces them in the caller's thread)."""
    depth = read_ahead_depth() if depth is None else depth
    if depth < 1:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome = _DONE
        except BaseException as exc:  # handed to the consumer, raised there in order
            outcome = _Raised(exc)
        while not stop.is_set():
            try:
                slots.put(outcome, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=produce, name="detector-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
