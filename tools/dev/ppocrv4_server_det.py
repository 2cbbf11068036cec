"""PP-OCRv4_server_det rebuilt in paddle.nn and saved as a PaddleX-layout inference model.

    python -m tools.dev.ppocrv4_server_det --output DIR [--seed N] [--verify]

The official weights cannot be fetched here, so this builds the same network (PPHGNet_small with
det=True → LKPAN(256, large, intracl) → PFHeadLocal(k=50, large)) with seeded random weights and
saves it as PaddleX ships it: PIR ``inference.json`` + ``inference.pdiparams`` + ``inference.yml``.
Layer shapes, counts and forward wiring follow PaddleOCR's configs/det/PP-OCRv4/PP-OCRv4_server_det.yml
and the modules it names; sub-layer names follow PaddleOCR's too, so a training checkpoint's
state_dict would load. The point is a model that exercises the export path like the real one:
same operators, same parameter count (inference.pdiparams ≈ 109 MiB), same single (N, 1, H, W) output.
Needs the [export] extra (.venv-paddle).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Paddle 3.0 saves PIR programs (inference.json) only while the PIR API is on; set before import.
os.environ.setdefault("FLAGS_enable_pir_api", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np
import paddle
import paddle.nn as nn

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from detector.settings import IMAGENET_MEAN as IMAGENET_MEAN_BGR  # noqa: E402
from detector.settings import IMAGENET_STD as IMAGENET_STD_BGR  # noqa: E402
from tools.dev.ppocrv4_server_det_net import PPOCRv4ServerDet  # noqa: E402
from tools.export.default_model import paddlex_det_inference_yml  # noqa: E402
from tools.export.paddle import paddle_predictor  # noqa: E402

MODEL_NAME = "PP-OCRv4_server_det"
# (N, C, H, W) the saved program is checked at against the dygraph network: tall, square, wide.
VERIFY_SHAPES = ((1, 3, 960, 736), (1, 3, 640, 640), (1, 3, 320, 1280))
VERIFY_TOLERANCE = 1e-5  # same kernels on both sides: only summation order may differ
OFFICIAL_PDIPARAMS_MB = 109.0  # PaddleX / PaddleOCR 3.x model list, "model storage size (MB)"


# --- backbone: PPHGNet_small, det=True -------------------------------------------------------------

# --- build and save ------------------------------------------------------------------------------


IMAGENET_MEAN = np.array(IMAGENET_MEAN_BGR, dtype=np.float32)
IMAGENET_STD = np.array(IMAGENET_STD_BGR, dtype=np.float32)


def page_like_batch(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """NCHW float32 pages of dark glyph-like strokes in lines on light paper, normalised as the
    detector's preprocessing does (BGR / 255, ImageNet mean and std)."""
    pages = []
    for _ in range(count):
        page = np.full((height, width, 3), rng.uniform(190, 255), np.float32)
        y = int(rng.integers(2, 20))
        while True:
            line_height = int(rng.integers(8, 48))
            if y + line_height >= height:
                break
            x = int(rng.integers(0, 30))
            while x < width - 8:
                word_width = int(rng.integers(10, 160))
                color = rng.uniform(0, 120, 3)
                stroke_x = x
                while stroke_x < min(x + word_width, width):  # vertical strokes of glyph-like widths
                    stroke = int(rng.integers(1, 1 + max(2, line_height // 5)))
                    top = y + int(rng.integers(0, max(1, line_height // 3)))
                    page[top : y + line_height, stroke_x : stroke_x + stroke] = color
                    stroke_x += stroke + int(rng.integers(1, 1 + max(2, line_height // 3)))
                x += word_width + int(rng.integers(6, 40))
            y += line_height + int(rng.integers(4, 40))
        page += rng.normal(0, 6, page.shape).astype(np.float32)
        page = (np.clip(page, 0, 255) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        pages.append(page.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(pages), dtype=np.float32)


def calibrate_batch_norms(model: nn.Layer, seed: int, size: int = 320) -> None:
    """Set every BatchNorm's running statistics from one forward pass over seeded page-like images.

    Random weights are nothing like trained ones, and the statistics decide how ill-conditioned the
    result is. Taken on Gaussian noise, they left the head's logits at rms ~280 on page images: a 0/1
    map with knife-edge transitions that float32 rounding alone (Paddle float32 vs float64) moved by
    2.6e-4. Taken on pages, activations stay near unit scale as in training, the map spreads over
    (0, 1), and rounding alone moves it by ~3.5e-5 — a conversion is then judged on its merits.
    """
    batch_norms = [layer for layer in model.sublayers() if isinstance(layer, nn.layer.norm._BatchNormBase)]
    for layer in batch_norms:
        layer._momentum = 0.0  # running stat := this batch's stat
    batch = page_like_batch(np.random.default_rng(seed), 2, size, size)
    model.train()
    with paddle.no_grad():
        model(paddle.to_tensor(batch))
    for layer in batch_norms:
        layer._momentum = 0.9
    model.eval()


def build_model(seed: int = 0) -> PPOCRv4ServerDet:
    paddle.seed(seed)
    model = PPOCRv4ServerDet()
    calibrate_batch_norms(model, seed)
    model.eval()
    return model


def count_tensors(model: nn.Layer, include_thresh: bool = True) -> tuple[int, int, int]:
    """(tensors, trainable elements, BatchNorm running-stat elements) of the model.

    Paddle keeps BatchNorm's running mean/variance as non-trainable parameters, not buffers; both
    kinds are what inference.pdiparams stores.
    """
    tensors = [(n, p) for n, p in model.named_parameters() if include_thresh or not n.startswith("head.thresh.")]
    trainable = sum(int(np.prod(p.shape)) for _, p in tensors if not p.stop_gradient)
    stats = sum(int(np.prod(p.shape)) for _, p in tensors if p.stop_gradient)
    return len(tensors), trainable, stats


def save_inference_model(model: PPOCRv4ServerDet, output: Path) -> Path:
    """Write output/inference.{json,pdiparams,yml}; returns output."""
    if not paddle.framework.use_pir_api():
        raise RuntimeError("the PIR API is off (FLAGS_enable_pir_api=0): Paddle would write inference.pdmodel")
    output.mkdir(parents=True, exist_ok=True)
    spec = [paddle.static.InputSpec(shape=[None, 3, None, None], dtype="float32", name="x")]
    static_model = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    paddle.jit.save(static_model, str(output / "inference"))
    (output / "inference.yml").write_text(paddlex_det_inference_yml(MODEL_NAME), encoding="utf-8")
    for name in ("inference.json", "inference.pdiparams", "inference.yml"):
        if not (output / name).is_file():
            raise RuntimeError(f"paddle.jit.save wrote no {output / name}")
    return output


def verify_saved_model(model: PPOCRv4ServerDet, model_dir: Path, seed: int) -> float:
    """Run the saved model on Paddle Inference and the dygraph network on the same tensors at
    VERIFY_SHAPES; print each max |diff| and the output's spread, return the overall max |diff|."""
    # oneDNN off: its fused kernels move values by ~1e-5, too loose to check a save with
    run = paddle_predictor(model_dir, mkldnn=False)
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    for shape in VERIFY_SHAPES:
        batch = page_like_batch(rng, shape[0], shape[2], shape[3])
        saved = run(batch)
        with paddle.no_grad():
            expected = model(paddle.to_tensor(batch)).numpy()
        if saved.shape != (shape[0], 1, shape[2], shape[3]) or saved.shape != expected.shape:
            raise RuntimeError(f"input {shape}: saved model gives {saved.shape}, dygraph {expected.shape}")
        diff = float(np.abs(saved - expected).max())
        worst = max(worst, diff)
        print(
            f"verify {shape}: output {saved.shape}, max |inference - dygraph| = {diff:.2e}; "
            f"probabilities min {saved.min():.3f} mean {saved.mean():.3f} max {saved.max():.3f}"
        )
    print(f"verify: overall max |diff| = {worst:.2e}")
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="folder for inference.json/.pdiparams/.yml")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument(
        "--verify", action="store_true", help="compare Paddle Inference on the saved model with the network"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model = build_model(args.seed)
    built = time.perf_counter()
    save_inference_model(model, args.output)
    saved = time.perf_counter()

    tensors, trainable, stats = count_tensors(model)
    _, live_trainable, live_stats = count_tensors(model, include_thresh=False)
    size = (args.output / "inference.pdiparams").stat().st_size
    print(f"{MODEL_NAME} (seed {args.seed}) saved to {args.output}")
    print(
        f"parameters: {trainable:,} trainable + {stats:,} BatchNorm running stats in {tensors} tensors "
        f"(used at inference: {live_trainable:,} + {live_stats:,}; the rest is DB's threshold branch)"
    )
    print(
        f"inference.pdiparams: {size:,} bytes = {size / 1e6:.2f} MB = {size / 2**20:.2f} MiB; official "
        f"{OFFICIAL_PDIPARAMS_MB:g}: {100 * (size / (OFFICIAL_PDIPARAMS_MB * 2**20) - 1):+.1f}% if MiB, "
        f"{100 * (size / (OFFICIAL_PDIPARAMS_MB * 1e6) - 1):+.1f}% if 10^6 bytes"
    )
    print(f"time: build {built - started:.1f} s, save {saved - built:.1f} s")
    if args.verify:
        worst = verify_saved_model(model, args.output, args.seed)
        if worst > VERIFY_TOLERANCE:
            print(f"verify: FAILED, {worst:.2e} > {VERIFY_TOLERANCE:g}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
