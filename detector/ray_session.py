"""Ray for `detect batch` (extra [ray]): a cluster joined or a local instance started, ray.init on a thread of
its own (signals), Ray left with SIGINT and SIGTERM ignored; Ray Data's failure records kept off the terminal."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Optional

import ray

from .errors import DetectorError, callers_sigterm_handler_kept
from .prefetch import usable_cores

# How long a cluster address given as host:port may take to accept a TCP connection. ray.init itself retries
# an address nobody answers at for ~7 minutes (Ray 2.60: 'Failed to connect to GCS … within 5 seconds' lines,
# then a timeout), so a mistyped address is tried here first.
CLUSTER_CONNECT_TIMEOUT_S = 10.0
# How often the main thread looks whether ray.init, on a thread of its own, finished: a signal another thread
# received is handled then
RAY_STARTER_POLL_S = 0.2
# A local Ray instance started by `detect batch`: a small object store, since rows are small.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def connect(address: Optional[str]) -> None:
    """Join the Ray cluster at ``address`` ("auto" or host:port / ray://…), or start a small local one."""
    if ray.is_initialized():
        return
    # Python's handler put back: the core worker ray.init starts sets one of its own (a stack dump, then Python's)
    with callers_sigterm_handler_kept():
        started_off_the_main_thread(lambda: _init(address))


class _RaysThreadWarningDropped(logging.Filter):
    """ray.init's warning that, off the main thread, it sets no SIGTERM handler: what it is called there for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def started_off_the_main_thread(start: Callable[[], None]) -> None:
    """Run ``start`` (ray.init) on a thread of its own, and wait for it.

    On the main thread ray.init puts its own SIGTERM handler in place while it starts Ray's processes
    (sys.exit(15)): a SIGTERM then ended `detect batch` with exit 15 and no line, left the output folder it had
    made, and two Ray agents running a minute or more (Ray 2.60); a Ctrl-C left the agents too. Off it, Ray sets
    no handler, so a signal reaches the command's own, in the main thread: the start is let finish, what it
    started stopped (ray.shutdown), and the signal goes on its way. A second signal does not wait."""
    failed: list[BaseException] = []
    finished = threading.Event()  # not Thread.join: a join a signal interrupted returns at once after (3.11)

    def run() -> None:
        try:
            start()
        except BaseException as exc:  # given to the main thread, which raises it
            failed.append(exc)
            finished.set()
            return
        finished.set()
        # parked for good: Linux kills the processes ray.init started (PR_SET_PDEATHSIG) when the *thread* that
        # started them ends, as the process does; ended sooner, it cut ray.shutdown's stop of Ray's agents short
        threading.Event().wait()

    worker_log = logging.getLogger("ray._private.worker")
    dropped = _RaysThreadWarningDropped()
    worker_log.addFilter(dropped)
    try:
        threading.Thread(target=run, name="ray.init", daemon=True).start()
        while not finished.wait(RAY_STARTER_POLL_S):  # wakes for a signal another thread received
            pass
    except BaseException:  # Ctrl-C, SIGTERM (Terminated) while Ray starts
        finished.wait()
        ray.shutdown()
        raise
    finally:
        worker_log.removeFilter(dropped)
    if failed:  # ray.init's own failure, as it raised it
        raise failed[0]


def disconnect() -> None:
    """Leave Ray (stop the local instance, or leave the cluster) with SIGINT and SIGTERM ignored meanwhile, a
    second or two: the run is over. Left to Ray's exit hook, a signal then ('why does it not return?') printed
    'Exception ignored in atexit callback' and a traceback, and left Ray's agents and actors running."""
    if not ray.is_initialized():
        return
    if threading.current_thread() is not threading.main_thread():  # where signal handlers cannot be set
        ray.shutdown()
        return
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.shutdown()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def unreachable_cluster(address: str, timeout_s: float = CLUSTER_CONNECT_TIMEOUT_S) -> Optional[str]:
    """Why nothing accepts a TCP connection at a host:port (or ray://host:port) cluster address; None when
    something does, or when the address is not of that form ("auto", "local": Ray finds those itself)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:  # refused, timed out, unknown host
        return str(exc) or type(exc).__name__
    return None


def _init(address: Optional[str]) -> None:
    if address:
        reason = unreachable_cluster(address)
        if reason is not None:
            raise DetectorError(
                f"cannot join the Ray cluster at {address!r}: nothing answers there ({reason}); "
                f"check the address (the head node's GCS port, 6379 by default; ray:// addresses use 10001)"
            )
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as exc:  # no cluster there: the user's address, not our bug
            raise DetectorError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
    else:
        ray.init(
            address="local",  # a local instance as documented, also where RAY_ADDRESS names a cluster (ray job submit)
            num_cpus=usable_cores(),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )


class _RayDataFailuresLeftOut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def ray_data_failures_kept_off_the_terminal() -> contextlib.AbstractContextManager[None]:
    """Ray Data's error records kept from its terminal handlers (not from its log file, in Ray's session folder):
    they are the job's failure with Ray's tracebacks, ~100 lines for a model the actors cannot load, ~260 for a
    full disk, where run_batch raises that failure as one error."""
    return ray_data_terminal_filtered(_RayDataFailuresLeftOut())


@contextlib.contextmanager
def ray_data_terminal_filtered(record_filter: logging.Filter) -> Iterator[None]:
    """``record_filter`` added last to Ray Data's terminal handlers (its stream handlers, not its log file's) while
    the block runs: it sees only the records the filters added before it let through."""
    handlers = [
        handler
        for handler in logging.getLogger("ray.data").handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]
    for handler in handlers:
        handler.addFilter(record_filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(record_filter)


class _ProgressOffNoticeDropped(logging.Filter):
    """Ray Data's warning (Ray 2.60) that its progress bars are off, where `detect batch` shows its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")


@contextlib.contextmanager
def ray_data_progress_off() -> Iterator[None]:
    """Ray Data's progress off for the datasets made meanwhile: `detect batch` shows its own. On a terminal Ray's
    bars need tqdm, which the [ray] extra does not bring: Ray 2.60 said 'tqdm is not installed. Progress bars will
    be disabled' (2.40 printed '[dataset]: Run `pip install tqdm`' on stdout); elsewhere it logged ~10 lines of
    progress every 10 s. Off through DataContext.enable_progress_bars (Ray 2.40 and 2.60 alike), put back after."""
    context = ray.data.DataContext.get_current()
    enabled = context.enable_progress_bars
    notices = logging.getLogger("ray.data._internal.progress")  # where Ray 2.60 logs that they are off
    dropped = _ProgressOffNoticeDropped()
    context.enable_progress_bars = False
    notices.addFilter(dropped)
    try:
        yield
    finally:
        notices.removeFilter(dropped)
        context.enable_progress_bars = enabled
