"""Check a written ONNX detector against a reference on the same input tensors.

The inputs are seeded pages of random words, normalized by the runtime's own normalize_image, so the
probability maps are far from all-0 or all-1 and any conversion error shows. compare_outputs does the
comparison for any reference; compare_with_onnx (the source ONNX file on onnxruntime) and
compare_with_unrewritten give it one here, tools/export/verify.py adds Paddle Inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ExportError
from ..preprocess import normalize_image
from ..settings import DetectionSettings

TOLERANCE = 1e-4  # max |reference - ONNX| on the probability map
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


def cpu_session(model: bytes | str | Path, what: str) -> Any:
    """A quiet onnxruntime CPU session, or an ExportError naming what could not be loaded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # its failures are raised and reported (3 still printed run errors in red)
    try:
        return ort.InferenceSession(
            model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ExportError(f"onnxruntime {ort.__version__} cannot load {what}: {exc}") from None


def onnx_runner(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda batch: session.run([output_name], {input_name: batch})[0]


# A DB detector's map ends in a Sigmoid; a little past [0, 1] is rounding, more is logits or another output.
PROBABILITY_SLACK = 1e-5


def check_probability_map(values: np.ndarray, where: str) -> None:
    """Refuse a map that is not probabilities: NaN or infinite values (a broken weight would otherwise pass
    any tolerance, since NaN > tolerance is False), or values outside [0, 1] (logits: thresh would mean
    nothing on them)."""
    if not np.isfinite(values).all():
        raise ExportError(f"{where} gives NaN or infinite values in its map: the model is broken, nothing written")
    low, high = float(values.min()), float(values.max())
    if low < -PROBABILITY_SLACK or high > 1 + PROBABILITY_SLACK:
        raise ExportError(
            f"{where} gives values from {low:.3g} to {high:.3g}, not probabilities in [0, 1]: a DB detector's "
            f"output ends in a Sigmoid (logits, or another output first?); nothing written"
        )


def _ran(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, what: str) -> np.ndarray:
    """run(batch), or an ExportError naming the input where the runtime fails on it (a shape baked into
    the graph, an operator that refuses this size): onnxruntime and Paddle raise their own types from C++."""
    try:
        return run(batch)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{what} fails on input {tuple(batch.shape)}: {reason}; nothing written") from None


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
    per_shape: list[dict[str, Any]] = []
    for shape in shapes:
        batch = verification_batch(shape, settings)
        expected = _ran(run_reference, batch, f"the source ({reference})")
        got = _ran(run_ours, batch, "the converted model")
        wanted_shape = (shape[0], 1, shape[2], shape[3])
        if got.shape != wanted_shape or expected.shape != wanted_shape:
            raise ExportError(
                f"for input {tuple(shape)} the source gives {expected.shape} and ONNX {got.shape}, "
                f"expected {wanted_shape}: not a DB probability map"
            )
        for what, values in (("the source", expected), ("the ONNX model", got)):
            check_probability_map(values, f"for input {tuple(shape)} {what}")
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
