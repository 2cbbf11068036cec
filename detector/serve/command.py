"""`detect serve`: run the HTTP service with uvicorn (extra [serve]).

FastAPI and uvicorn are imported inside the command, so listing `detect --help` stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import click

from ..command_messages import exit_for_missing_extra, fail_usage
from ..command_options import (
    CONTEXT_SETTINGS,
    cpu_threads_option_saying,
    device_option,
    max_pixels_option,
    model_arguments,
    model_dir_option,
    model_option,
    precision_option,
    shape_bucket_option,
)
from ..errors import DetectorError
from ..prefetch import threads_within_cores, usable_cores
from .config import CONFIG_ENV_VAR, ServeConfig

DEFAULT_HOST = "127.0.0.1"  # loopback: a laptop's server is not reachable from the network unless asked
DEFAULT_PORT = 8080
DEFAULTS = ServeConfig()
# An idle keep-alive connection's life, longer than common load balancers' idle timeouts (AWS ALB 60 s; nginx's
# own keepalive_timeout 75 s): uvicorn's 5 s closed connections a balancer was about to reuse, its 502s.
KEEP_ALIVE_S = 75.0


@click.command("serve", context_settings=CONTEXT_SETTINGS)
@model_option
@model_dir_option
@device_option
@click.option("--host", default=DEFAULT_HOST, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=DEFAULT_PORT, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, type=click.IntRange(min=1), help="Processes, each loading the model once.")
@click.option(
    "--max-concurrency",
    default=DEFAULTS.max_concurrency,
    type=click.IntRange(min=1),
    help="Inferences running at once per worker.",
)
@click.option(
    "--max-queue",
    default=DEFAULTS.max_queue,
    type=click.IntRange(min=0),
    help="Requests that may wait for an inference per worker; more get 503 + Retry-After.",
)
@click.option(
    "--max-body-mb",
    default=DEFAULTS.max_body_mb,
    type=click.FloatRange(0, min_open=True),
    help="Largest request body in MiB (413 above).",
)
@max_pixels_option
@click.option(
    "--timeout",
    "timeout_s",
    default=DEFAULTS.timeout_s,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a request may wait and run before 503.",
)
@click.option(
    "--timeout-stall",
    "stall_timeout_s",
    default=DEFAULTS.stall_timeout_s,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a client may stall: send no byte of a request body (then 408: a stalled upload, a Content-Length "
    "longer than the body sent), or take no byte of its answer (then the connection is reset); and that a "
    "request's head may take from its first byte.",
)
@click.option(
    "--timeout-body",
    "body_timeout_s",
    default=DEFAULTS.body_timeout_s,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a request's body may take to arrive in all, from the request's head (then 408): a client sending "
    "a byte now and then never stalls.",
)
@click.option(
    "--timeout-keep-alive",
    "keep_alive_s",
    default=KEEP_ALIVE_S,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds an idle client connection is kept open: longer than a load balancer's idle timeout "
    "(AWS ALB 60 s), so the balancer never reuses a connection this server is closing (502s).",
)
@cpu_threads_option_saying("onnxruntime threads per inference [default: every core].")
@precision_option
@shape_bucket_option
@click.option(
    "--allow-urls", is_flag=True, help='Accept {"url": …}: the server then fetches any URL a client names (see README).'
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def serve(
    model: tuple[str, ...],
    model_dir: Optional[str],
    device: Optional[str],
    host: str,
    port: int,
    workers: int,
    max_concurrency: int,
    max_queue: int,
    max_body_mb: float,
    max_pixels: Optional[int],
    timeout_s: float,
    stall_timeout_s: float,
    body_timeout_s: float,
    keep_alive_s: float,
    cpu_threads: Optional[int],
    precision: Optional[str],
    shape_bucket: Optional[int],
    allow_urls: bool,
    debug: bool,
) -> None:
    """Serve text detection over HTTP: POST /detect, GET /health, GET /models, and a page at / (needs the
    [serve] extra)."""
    try:
        import uvicorn

        from .app import create_app
        from .connection import serve_protocol
        from .inference import load_detector
        from .worker import log_beside_uvicorn
    except ImportError as exc:
        exit_for_missing_extra("serve", "serve", exc)
    model_name, model_dir = model_arguments(model, model_dir)
    config = ServeConfig(
        model_name=model_name,
        model_dir=model_dir,
        device=device,
        cpu_threads=cpu_threads,
        precision=precision,
        shape_bucket=shape_bucket,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        max_body_mb=max_body_mb,
        max_pixels=max_pixels,
        timeout_s=timeout_s,
        stall_timeout_s=stall_timeout_s,
        body_timeout_s=body_timeout_s,
        allow_urls=allow_urls,
        exit_past_timeout=True,
    )
    cores = usable_cores()
    if config.cores_are_shared(workers, cores):
        config = dataclasses.replace(config, cpu_spinning=False)
        click.echo(
            f"detect serve: {workers} worker(s) x {max_concurrency} inference(s) x "
            f"{threads_within_cores(cpu_threads or cores, cores)} thread(s) exceed the {cores} cores: "
            f"onnxruntime's threads sleep between operators instead of spinning",
            err=True,
        )
    try:
        detector = load_detector(config)  # also proves the model loads before any worker starts
    except DetectorError as exc:
        fail_usage(exc, debug, command="detect serve")
    log_level = "debug" if debug else "info"
    log_beside_uvicorn(logging.DEBUG if debug else logging.INFO)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal with the handler it found:
    # this one makes a requested stop exit 0, as service managers expect.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # uvicorn types both timeouts as int, but its timers are asyncio's, which take any float
    served: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level=log_level,
        timeout_keep_alive=keep_alive_s,
        timeout_graceful_shutdown=config.timeout_s,
        http=serve_protocol(stall_timeout_s=config.stall_timeout_s),
    )
    if workers == 1:
        app = create_app(config, detector)
        with sigints_noted() as sigints:
            uvicorn.run(app, **served)
    else:
        del detector
        with tempfile.TemporaryDirectory(prefix="detect-serve-") as folder, sigints_noted() as sigints:
            startup_failure = Path(folder) / "startup-failure"
            worker_config = dataclasses.replace(config, startup_failure_file=str(startup_failure))
            os.environ[CONFIG_ENV_VAR] = worker_config.to_json()
            uvicorn.run("detector.serve.worker:app_from_environment", factory=True, workers=workers, **served)
            # uvicorn's supervisor stopped the workers: a failure, where uvicorn returns as from a requested stop
            if startup_failure.exists():
                fail_usage(DetectorError(startup_failure.read_text(encoding="utf-8")), False, command="detect serve")
    if sigints:
        raise KeyboardInterrupt  # the command line's Ctrl-C: "detect serve: interrupted", exit 130


@contextlib.contextmanager
def sigints_noted() -> Iterator[list[int]]:
    """A list that holds, once the block has run (uvicorn), the SIGINTs (Ctrl-C) that came meanwhile. uvicorn stops on
    SIGINT as on SIGTERM and returns as from a requested stop (0.39 and 0.55 swallow the KeyboardInterrupt they raise
    again at the end; the --workers supervisor keeps the signal), so `detect serve` exited 0, where the command
    line's Ctrl-C is 130.

    Seen two ways, one for each of uvicorn's: a SIGINT handler of ours, which a single server puts back when it has
    stopped and calls with the signals it took (the loop it ran may have had the signal wakeup file to itself: uvloop
    does); and the signal wakeup file, which the interpreter writes each signal's number to, whatever the handler,
    the supervisor's included.
    """
    seen: list[int] = []
    sigints: list[int] = []
    previous_handler = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        yield sigints
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        signal.signal(signal.SIGINT, previous_handler)
        with contextlib.suppress(BlockingIOError):
            seen.extend(os.read(read_end, 4096))
        os.close(read_end)
        os.close(write_end)
        sigints.extend(signum for signum in seen if signum == signal.SIGINT)
