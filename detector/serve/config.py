"""ServeConfig: everything a `detect serve` worker runs with, and the one home of those defaults (the
process-level ones, host, port and workers, are the command's: serve/command.py).

Kept apart from app.py so the command can show these defaults without importing FastAPI.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

from ..prefetch import threads_within_cores

# The environment variable that carries the ServeConfig (JSON) to uvicorn's worker processes.
CONFIG_ENV_VAR = "DETECTOR_SERVE_CONFIG"
MIB = 1024 * 1024
# Retry-After of a request refused because max_url_fetches URLs are being fetched (a fetch lasts at most
# the URL timeout, usually well under a second)
URL_FETCH_RETRY_AFTER_S = 2


@dataclass(frozen=True)
class ServeConfig:
    model_name: Optional[str] = None
    model_dir: Optional[str] = None
    device: Optional[str] = None
    cpu_threads: Optional[int] = None  # onnxruntime threads per inference; None: every core
    # TextDetection's cpu_spinning; `detect serve` turns it off where its inferences at once would
    # ask for more threads than there are cores (cores_are_shared)
    cpu_spinning: bool = True
    precision: Optional[str] = None  # TextDetection's precision: the fp32 file (None), or its int8 / fp16 variant
    shape_bucket: Optional[int] = None  # TextDetection's shape_bucket; None: off
    max_concurrency: int = 1  # inferences at once per worker; onnxruntime already uses every core for one
    max_queue: int = 8  # requests that may wait for a slot per worker; more get 503
    max_body_mb: float = 20.0
    max_pixels: Optional[int] = None  # None: the library's default (Pillow's bomb limit)
    timeout_s: float = 60.0  # per request, waiting for a slot included
    # seconds a client may stall, sending no byte of a request's body (408) or taking none of its answer (the
    # connection reset), and that a request's head may take from its first byte (uvicorn has none of these)
    stall_timeout_s: float = 60.0
    # seconds a request's body may take to arrive in all, from its head (408): a byte now and then keeps clear of
    # the stall timeout, and a 20-MiB body at a byte a second held its connection and what it had sent for days;
    # 300 s lets the default 20-MiB body come at 70 KB/s
    body_timeout_s: float = 300.0
    allow_urls: bool = False  # {"url": …} makes the server fetch: off by default (SSRF)
    max_url_fetches: int = 16  # image URLs fetched at once per worker, each on a thread of its own; more get 503
    # At shutdown, end the process at once if inferences are still running past the graceful --timeout
    # (Python would otherwise wait for their threads at exit). `detect serve` sets it; an app made
    # with create_app inside another program leaves its process alone.
    exit_past_timeout: bool = False
    # Where a --workers process that cannot load the model writes why, for `detect serve` to exit with it (uvicorn's
    # supervisor stops on such a worker, then returns as from a requested stop).
    startup_failure_file: Optional[str] = None

    def cores_are_shared(self, workers: int, cores: Optional[int]) -> bool:
        """Whether ``workers`` processes of this config, each running max_concurrency inferences on
        cpu_threads threads (None: every core; never more than the cores, as TextDetection runs them), ask for
        more threads than the machine's cores."""
        cores = cores or 1
        return workers * self.max_concurrency * threads_within_cores(self.cpu_threads or cores, cores) > cores

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MIB)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))
