"""Many inputs at once: folder workers, and a producer run one step ahead in a background thread.

Decoding (OpenCV), resizing and normalizing (numpy) and session.run (onnxruntime) all release the
GIL, so threads overlap. On the CPU a folder is split across FOLDER_WORKERS threads, each running its
own images with a share of the intra-op threads (:func:`folder_workers`, :func:`ordered_map`); where
one worker runs (a GPU, one thread), the next images are read while the network runs on these
(:func:`prefetch`). Items and exceptions come out in input order; closing the consumer stops the rest.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Images of a folder run FOLDER_WORKERS at a time on the CPU, the intra-op threads split between them.
# One image on two intra-op threads runs only 1.4-1.75x faster than on one (the least on small maps:
# 1.42-1.48x at 320x320 and 64x960), and a worker's decode and postprocess overlap the other's
# network. Measured on the 2-core bench machine, the bench's 10 mixed images, best of 11 interleaved:
# two workers of one thread took 0.87x, 0.88x and 0.79x the time of the serial loop on two threads
# (PP-OCRv4_mobile_det, PP-OCRv6_small_det, PP-OCRv6_tiny_det); three workers, in a first trial,
# 0.85-0.93x.
FOLDER_WORKERS = 2
# Folders of a larger network stay serial. The workers' second session holds the weights (and the
# constants onnxruntime folds from them) once more, and a large network's convolutions already keep
# two threads busy: PP-OCRv4_server_det (114 MB file) ran the bench set in 0.96x the serial loop's
# time for +1220 MiB resident, against 0.79-0.88x for +216-241 MiB with the 1.8-10 MB models.
FOLDER_WORKERS_MAX_MODEL_BYTES = 32 * 2**20
# Items handed out ahead per worker. Images differ in size, and the oldest result is yielded first: with
# one item ahead, a worker done with a small image waited on its neighbour's large one (PP-OCRv6_tiny_det,
# whole bench set: 0.91x the serial loop's time, against 0.81x with four ahead). Memory: up to
# workers x AHEAD_PER_WORKER items of batch_size images (results keep their input image), of which at most
# workers + 1 drawn with their images read (a PDF's pages: ordered_map's holds_images).
AHEAD_PER_WORKER = 4

# Chunks read ahead of the one being run: one is enough to hide decoding behind inference, and
# bounds memory to one extra chunk of images.
PREFETCH_DEPTH = 1
# Read ahead only on machines with more cores than this. On 2 cores onnxruntime's two intra-op threads
# already use both, and the reading thread competes with them: measured on the 2-core bench machine,
# the whole bench set took 1.03x (PP-OCRv4_mobile_det) to 1.20x (PP-OCRv6_tiny_det) the serial loop's
# time with read-ahead.
READ_AHEAD_MIN_CORES = 3
_DONE = object()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset, Kubernetes' static
    CPU manager), where os.cpu_count() counts every core of the machine; os.cpu_count() where the platform
    tells no affinity (macOS, Windows)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(0)) or 1
        except OSError:
            pass
    return os.cpu_count() or 1


def threads_within_cores(threads: int, cores: Optional[int] = None) -> int:
    """The intra-op threads to run for a cpu_threads of ``threads``: at most the cores the process may run on
    (``cores``: usable_cores()). PaddleOCR's default, cpu_threads=10, passed on to onnxruntime as it is on 2
    cores ran PP-OCRv4_mobile_det 4x slower (0.38-0.40 s for 0.094 on a 2500x1800 JPEG: its threads spin, each
    waiting for a core; an audit measured 1.8x with them sleeping); Paddle's own engine ran 10 as fast as 2."""
    cores = usable_cores() if cores is None else cores
    if threads > cores:
        logger.info("cpu_threads=%d: %d onnxruntime threads, the cores this process may run on", threads, cores)
        return cores
    return threads


def read_ahead_depth(cores: Optional[int] = None) -> int:
    """PREFETCH_DEPTH where the machine has a core to spare for reading (``cores``: usable_cores()), else 0."""
    cores = usable_cores() if cores is None else cores
    return PREFETCH_DEPTH if (cores or 1) >= READ_AHEAD_MIN_CORES else 0


def folder_workers(threads: Optional[int] = None, cores: Optional[int] = None, model_bytes: int = 0) -> tuple[int, int]:
    """(workers, intra-op threads per worker) for many images on the CPU: ``threads`` (the user's
    cpu_threads, else ``cores``, else usable_cores()) shared by up to FOLDER_WORKERS workers; one
    worker with them all for a model file over FOLDER_WORKERS_MAX_MODEL_BYTES."""
    total = threads or (usable_cores() if cores is None else cores) or 1
    if model_bytes > FOLDER_WORKERS_MAX_MODEL_BYTES:
        return 1, total
    workers = min(FOLDER_WORKERS, total)
    return workers, total // workers


def ordered_map(
    function: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    cost: Optional[Callable[[T], Optional[float]]] = None,
    holds_images: Optional[Callable[[T], bool]] = None,
) -> Iterator[R]:
    """``function(item)`` for each item, computed by ``workers`` threads, yielded in item order.

    Items are drawn in the caller's thread, at most ``workers`` x AHEAD_PER_WORKER ahead of the result
    yielded, so a worker finds the next one ready while the oldest is still running elsewhere; of those, at
    most ``workers`` + 1 for which ``holds_images`` is true (items drawn with their images already decoded: a
    PDF's pages, rendered as they are drawn, where a file is read by its worker). With
    ``cost``, the items drawn together at the start are started dearest first (None: unknown, first),
    so that no large image is left to run alone at the end while the other workers idle; items drawn
    later start as they come. An exception from drawing an item or from ``function`` is raised in that
    item's place, after the results before it; closing the iterator cancels what has not started (what
    has finishes in its worker, unwaited) and closes ``items``.

    Nothing here waits for a thread when the iterator is closed: a generator dropped in a reference cycle is
    closed by the garbage collector, in whatever thread allocates, maybe a worker of its own pool ("cannot
    join current thread") or a thread starting up inside threading's own locks (a join there hung the
    process: an audit, 3 runs in 4).
    """
    if workers < 2:
        yield from map(function, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detector-worker")
    pending: deque[tuple[Future, bool]] = deque()  # each with whether its item holds images
    iterator = iter(items)
    window, images_window = workers * AHEAD_PER_WORKER, workers + 1

    def holding(item: Any) -> bool:
        return holds_images is not None and not isinstance(item, _Raised) and holds_images(item)

    def room(drawn: list[Any]) -> bool:
        held = sum(flag for _, flag in pending) + sum(holding(item) for item in drawn)
        return len(pending) + len(drawn) < window and held < images_window

    try:
        first: list[Any] = []
        exhausted = False
        while not exhausted and room(first):
            drawn = _draw(iterator, 1)
            first.extend(drawn)
            exhausted = not drawn or isinstance(drawn[0], _Raised)
        order: list[int] = list(range(len(first)))
        if cost is not None:
            costs = [math.inf if isinstance(item, _Raised) else _known(cost(item)) for item in first]
            order.sort(key=lambda index: -costs[index])  # stable: equal costs keep their order
        started = {index: _submit(pool, function, first[index]) for index in order}
        pending.extend((started[index], holding(first[index])) for index in range(len(first)))
        # the first items and futures are held by pending alone from here: kept in these names, their results
        # (with their images) lived until the run ended (a 256-photo folder at batch 16: 3.0 GB more)
        del first, started
        while pending:
            yield pending.popleft()[0].result()
            while not exhausted and room([]):
                drawn = _draw(iterator, 1)
                if drawn:
                    pending.append((_submit(pool, function, drawn[0]), holding(drawn[0])))
                exhausted = not drawn or isinstance(drawn[0], _Raised)
    finally:
        for future, _ in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        _close(iterator)  # drawn here only, so not running: a PDF's page generator closes its document now


def _known(cost: Optional[float]) -> float:
    """An unknown cost counts as the largest: such items keep their place at the front."""
    return math.inf if cost is None else cost


def _draw(iterator: Iterator[T], count: int) -> list:
    """Up to count items; an exception from drawing ends the list as a _Raised."""
    drawn: list = []
    while len(drawn) < count:
        try:
            drawn.append(next(iterator))
        except StopIteration:
            break
        except Exception as exc:  # raised in its place, after the results before it
            drawn.append(_Raised(exc))
            break
    return drawn


def _submit(pool: ThreadPoolExecutor, function: Callable[[T], R], item: Any) -> Future:
    if isinstance(item, _Raised):
        failed: Future = Future()
        failed.set_exception(item.exc)
        return failed
    return pool.submit(function, item)


def _close(iterator: Iterator[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: Optional[int] = None) -> Iterator[T]:
    """Yield items as ``items`` would, produced up to ``depth`` ahead in a daemon thread (default:
    :func:`read_ahead_depth`; 0 produces them in the caller's thread). Closing the iterator stops the
    producer, which closes ``items`` (the thread that draws from it) and ends within 0.1 s: not waited for,
    as ordered_map says why."""
    depth = read_ahead_depth() if depth is None else depth
    if depth < 1:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    iterator = iter(items)

    def produce() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    _close(iterator)
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
