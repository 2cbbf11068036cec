"""Check an exported ONNX detector against its source on the same input tensors.

The inputs are seeded pages of random words, normalized by the runtime's own normalize_image, so the
probability maps are far from all-0 or all-1 and any conversion error shows. compare_outputs does the
comparison for any reference; compare_with_paddle (Paddle Inference, needs Paddle) and
compare_with_onnx (the source ONNX file on onnxruntime, needs nothing more) give it one.
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

from detector.errors import ExportError  # noqa: E402
from detector.preprocess import normalize_image  # noqa: E402
from detector.settings import DetectionSettings  # noqa: E402

TOLERANCE = 1e-4  # max |Paddle - ONNX| on the probability map
# Where float32 rounding alone moves a network's map by more than that (Paddle's own maps on 1 and on
# 2 threads differ), the tolerance is this many times that spread, up to MAX_TOLERANCE: the rebuilt
# PP-OCRv4_server_det with random weights, on an Intel Xeon, differed from Paddle by 1.1e-4 with and
# without the rewrites, where Paddle's 1- and 2-thread maps differed by 6.1e-5 and onnxruntime's own
# optimization levels by 7.9e-5. A conversion error moves maps by 1e-2 and more.
REFERENCE_SPREAD_MARGIN = 2.0
MAX_TOLERANCE = 1e-3
# (N, C, H, W): tall, square, wide, and a batch of two — the dimensions left dynamic must all work.
VERIFY_SHAPES = ((1, 3, 960, 736), (1, 3, 640, 640), (1, 3, 320, 1280), (2, 3, 320, 320))


def text_like_image(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded BGR page of random words in OpenCV's Hershey fonts: the detector fires on it, as on text."""
    import cv2

    rng = np.random.default_rng(seed)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    image = np.full((height, width, 3), 255, np.uint8)
    y = 0
    while True:
        scale = float(rng.uniform(0.4, 1.6))
        y += int(30 * scale) + int(rng.integers(6, 30))
        if y >= height - 4:
            break
        x = int(rng.integers(2, 40))
        while x < width - 40:
            word = "".join(rng.choice(letters, int(rng.integers(2, 9))))
            color = tuple(int(c) for c in rng.integers(0, 100, 3))
            cv2.putText(
                image,
                word,
                (x, y),
                int(rng.choice([0, 1, 2, 3, 4])),
                scale,
                color,
                int(rng.integers(1, 3)),
                cv2.LINE_AA,
            )
            x += int(len(word) * 20 * scale) + int(rng.integers(10, 60))
    noise = rng.integers(-10, 11, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def verification_batch(shape: Sequence[int], settings: DetectionSettings) -> np.ndarray:
    """An NCHW float32 batch of text-like images, normalized exactly as the runtime does."""
    count, _, height, width = shape
    return np.stack(
        [
            normalize_image(
                text_like_image(height, width, seed=1000 * index + height + width),
                settings.mean,
                settings.std,
                settings.scale,
            )
            for index in range(count)
        ]
    )


def cpu_session(model: bytes | str | Path, what: str):
    """A quiet onnxruntime CPU session, or an ExportError naming what could not be loaded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ExportError(f"onnxruntime {ort.__version__} cannot load {what}: {exc}") from None


def onnx_runner(session) -> Callable[[np.ndarray], np.ndarray]:
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda batch: session.run([output_name], {input_name: batch})[0]


def compare_outputs(
    onnx_bytes: bytes,
    run_reference: Callable[[np.ndarray], np.ndarray],
    settings: DetectionSettings,
    report: Callable[[str], None],
    reference: str,
    shapes: Sequence[Sequence[int]] = VERIFY_SHAPES,
) -> dict:
    """The reference vs the written ONNX (onnxruntime, CPU) on the same batches; per-shape and overall max |diff|."""
    import onnxruntime as ort

    run_ours = onnx_runner(cpu_session(onnx_bytes, "the converted model"))
    per_shape = []
    for shape in shapes:
        batch = verification_batch(shape, settings)
        expected = run_reference(batch)
        got = run_ours(batch)
        wanted_shape = (shape[0], 1, shape[2], shape[3])
        if got.shape != wanted_shape or expected.shape != wanted_shape:
            raise ExportError(
                f"for input {tuple(shape)} the source gives {expected.shape} and ONNX {got.shape}, "
                f"expected {wanted_shape}: not a DB probability map"
            )
        diff = float(np.abs(expected.astype(np.float64) - got).max())
        per_shape.append(
            {
                "input": list(shape),
                "output": list(got.shape),
                "max_abs_diff": diff,
                "mean_probability": round(float(expected.mean()), 6),
            }
        )
        report(f"verify {'x'.join(map(str, shape))}: max |diff| {diff:.3g}")
    overall = max(item["max_abs_diff"] for item in per_shape)
    return {
        "max_abs_diff": overall,
        "tolerance": TOLERANCE,
        "shapes": per_shape,
        "reference": reference,
        "onnxruntime": ort.__version__,
        "provider": "CPUExecutionProvider",
    }


def compare_with_paddle(
    onnx_bytes: bytes,
    paddle_dir: Path,
    settings: DetectionSettings,
    report: Callable[[str], None],
    shapes: Sequence[Sequence[int]] = VERIFY_SHAPES,
) -> dict:
    """Paddle Inference vs onnxruntime (CPU) on the same batches."""
    from tools.export.paddle import paddle_predictor

    # oneDNN off: Paddle's plain CPU kernels are what the ONNX graph reproduces; oneDNN's fused
    # kernels round differently (measured: ~4e-5 against ~3e-5 without; both pass).
    try:
        run_paddle = paddle_predictor(paddle_dir, mkldnn=False, ir_optim=True)
    except Exception as exc:  # Paddle raises a zoo of types from C++
        raise ExportError(f"Paddle Inference cannot load {paddle_dir}: {exc}") from None
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


def compare_with_unrewritten(
    rewritten: bytes, unrewritten: bytes, settings: DetectionSettings, report: Callable[[str], None]
) -> float:
    """max |rewritten - unrewritten graph|, both on onnxruntime (CPU): what the rewrites alone change."""
    run_unrewritten = onnx_runner(cpu_session(unrewritten, "the unrewritten graph"))
    result = compare_outputs(
        rewritten, run_unrewritten, settings, lambda line: report(f"rewrites: {line}"), "the unrewritten graph"
    )
    return float(result["max_abs_diff"])


def compare_with_onnx(
    onnx_bytes: bytes,
    source_onnx: Path,
    settings: DetectionSettings,
    report: Callable[[str], None],
    shapes: Sequence[Sequence[int]] = VERIFY_SHAPES,
) -> dict:
    """The source ONNX file vs the written one, both on onnxruntime (CPU), on the same batches."""
    run_source = onnx_runner(cpu_session(source_onnx, str(source_onnx)))
    return compare_outputs(onnx_bytes, run_source, settings, report, "source ONNX on onnxruntime", shapes)
