"""PaddleOCR 3.x keywords that mean nothing on onnxruntime: accepted so migrated code runs, each
ignored with one warning that says why. Everything else PaddleOCR's TextDetection takes is supported
(see the README table "PaddleOCR's TextDetection surface")."""

from __future__ import annotations

import warnings
from typing import Any, Optional

from .errors import InvalidParameterError
from .process_lock import ProcessLock

# PaddleOCR's own lists (paddleocr/_common_args.py, paddleocr/_constants.py).
PADDLEOCR_ENGINES = ("paddle", "paddle_static", "paddle_dynamic", "transformers", "onnxruntime")
OUR_ENGINE = "onnxruntime"

IGNORED_KEYWORDS: dict[str, str] = {
    "engine": "this package always runs onnxruntime; there is no Paddle or transformers engine to choose",
    "engine_config": "it configures Paddle's engines; onnxruntime settings here are device and cpu_threads",
    "enable_hpi": (
        "PaddleX's high-performance inference plugin chooses a Paddle backend; this package is onnxruntime already"
    ),
    "use_tensorrt": (
        "it switches Paddle Inference's TensorRT subgraph engine; this package runs onnxruntime's CUDA or CPU provider"
    ),
    "enable_mkldnn": "MKL-DNN (oneDNN) is Paddle Inference's CPU backend; onnxruntime uses its own CPU kernels",
    "mkldnn_cache_capacity": "it sizes Paddle Inference's MKL-DNN shape cache; onnxruntime has none",
    "enable_cinn": "CINN is Paddle's compiler; onnxruntime optimizes the graph itself when the session opens",
}

_warned: set[str] = set()
_warned_lock = ProcessLock()


class IgnoredArgumentWarning(UserWarning):
    """A PaddleOCR keyword was given that has no meaning on onnxruntime; it changes nothing."""


def check_ignored_keywords(given: dict[str, Any]) -> None:
    """Validate PaddleOCR's engine keywords as PaddleOCR does, then warn once per process for each one given."""
    engine: Optional[str] = given.get("engine")
    if engine is not None and engine not in PADDLEOCR_ENGINES:
        raise InvalidParameterError(f"engine must be one of {', '.join(PADDLEOCR_ENGINES)}, got {engine!r}")
    for name, value in given.items():
        if value is None or (name == "engine" and value == OUR_ENGINE):
            continue
        with _warned_lock:
            if name in _warned:
                continue
            _warned.add(name)
        warnings.warn(f"{name}={value!r} is ignored: {IGNORED_KEYWORDS[name]}", IgnoredArgumentWarning, stacklevel=3)
