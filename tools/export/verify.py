"""Check an exported ONNX detector against Paddle Inference on the same input tensors.

The comparison itself, its inputs and the ONNX-against-ONNX checks live in detector/optimize/verify.py
(the runtime's `detect optimize` uses them too); this adds Paddle Inference as a reference, and the
tolerance for networks whose own float32 rounding spreads past TOLERANCE.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from detector.optimize.verify import TOLERANCE, VERIFY_SHAPES, compare_outputs, verification_batch  # noqa: E402
from detector.settings import DetectionSettings  # noqa: E402

# Where float32 rounding alone moves a network's map by more than that (Paddle's own maps on 1 and on
# 2 threads differ), the tolerance is this many times that spread, up to MAX_TOLERANCE: the rebuilt
# PP-OCRv4_server_det with random weights, on an Intel Xeon, differed from Paddle by 1.1e-4 with and
# without the rewrites, where Paddle's 1- and 2-thread maps differed by 6.1e-5 and onnxruntime's own
# optimization levels by 7.9e-5. A conversion error moves maps by 1e-2 and more.
REFERENCE_SPREAD_MARGIN = 2.0
MAX_TOLERANCE = 1e-3


def compare_with_paddle(
    onnx_bytes: bytes,
    paddle_dir: Path,
    settings: DetectionSettings,
    report: Callable[[str], None],
    shapes: Sequence[Sequence[int]] = VERIFY_SHAPES,
) -> dict:
    """Paddle Inference vs onnxruntime (CPU) on the same batches."""
    from tools.export.paddle import paddle_load_failure, paddle_predictor

    # oneDNN off: Paddle's plain CPU kernels are what the ONNX graph reproduces; oneDNN's fused
    # kernels round differently (measured: ~4e-5 against ~3e-5 without; both pass).
    try:
        run_paddle = paddle_predictor(paddle_dir, mkldnn=False, ir_optim=True)
    except Exception as exc:  # Paddle raises a zoo of types from C++
        raise paddle_load_failure(paddle_dir, exc) from None
    result = compare_outputs(onnx_bytes, run_paddle, settings, report, "Paddle Inference", shapes)
    result["paddle_config"] = "Paddle Inference CPU, oneDNN off, IR optim on"
    return result


def tolerance_for(reference_spread: float) -> float:
    """TOLERANCE, or REFERENCE_SPREAD_MARGIN times the reference's own spread where that is larger,
    never above MAX_TOLERANCE."""
    return min(MAX_TOLERANCE, max(TOLERANCE, REFERENCE_SPREAD_MARGIN * reference_spread))


def paddle_spread(
    paddle_dir: Path,
    settings: DetectionSettings,
    report: Callable[[str], None],
    shapes: Sequence[Sequence[int]] = VERIFY_SHAPES,
) -> float:
    """max |Paddle on 1 thread - Paddle on 2 threads| over the verification batches: how far float32
    rounding alone moves this network's map."""
    from tools.export.paddle import paddle_predictor

    one, two = (paddle_predictor(paddle_dir, threads, mkldnn=False, ir_optim=True) for threads in (1, 2))
    spread = 0.0
    for shape in shapes:
        batch = verification_batch(shape, settings)
        spread = max(spread, float(np.abs(one(batch).astype(np.float64) - two(batch)).max()))
    report(f"Paddle's own maps on 1 and 2 threads differ by up to {spread:.3g}")
    return spread
