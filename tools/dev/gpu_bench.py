"""GPU benchmark of detection models on onnxruntime's CUDA provider (developer tool).

    python -m tools.dev.gpu_bench --onnx PATH [--onnx PATH ...] [--repeat N] [--json OUT]
    python -m tools.dev.gpu_bench --pages [--model-dir DIR] [--device gpu|cpu] [--shape-bucket N]
                                  [--batch-size N] [--rounds N] [--json OUT]

For each model and each cuDNN convolution-algorithm search mode (EXHAUSTIVE, HEURISTIC, DEFAULT),
it measures what a detection service meets on a GPU:

- ``cold``: the first run at each of several network input shapes, as a stream of mixed images
  gives them (every new shape makes cuDNN choose convolution algorithms again);
- ``warm``: the median latency at 960×960 (batch 1) and per image at batch 8, after warm-up;
- ``iobinding``: the same warm latency with inputs and outputs bound on the GPU;
- ``bucketed``: the cold pass when inputs are padded up to a few fixed sizes
  (BUCKET_SIDES below), so the search runs once per bucket, not once per shape.

``--random-weights`` fills the initializers of a model saved with external data (graph only) with
small random values: timing does not depend on weight values, and the rebuilt server network's
weights are random anyway. Needs onnxruntime-gpu and a CUDA device; prints one JSON document.

``--pages`` times the library instead: ``TextDetection.predict`` over rendered pages of mixed sizes
(PAGE_SIZES), without and with ``shape_bucket``, in interleaved rounds after one warm-up pass each,
and reports how far the bucketed boxes moved. It runs on the CPU too (``--device cpu``); the GPU
mode of this one is written for the CUDA path but was not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from detector.cuda_provider import cuda_provider_options  # noqa: E402 (after the path set-up above)

SEARCH_MODES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
# Network input sizes (H, W) of a mixed stream: pages, photos, banners, crops (multiples of 32).
MIXED_SHAPES: tuple[tuple[int, int], ...] = (
    (960, 736),
    (736, 960),
    (960, 672),
    (640, 480),
    (480, 640),
    (960, 192),
    (224, 960),
    (320, 320),
    (960, 704),
    (544, 960),
    (96, 288),
    (960, 960),
)
BUCKET_SIDES = (320, 640, 960)
# (width, height) of the --pages set: photos, scans, an A4 page at 300 dpi, a banner, a small crop.
PAGE_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480),
    (1280, 960),
    (1240, 1754),
    (2000, 400),
    (2480, 3508),
    (768, 1024),
    (300, 80),
)


def bucket_side(side: int) -> int:
    return next((bucket for bucket in BUCKET_SIDES if side <= bucket), side)


def cuda_session(path: str, search: str, ort_module):
    options = ort_module.SessionOptions()
    options.log_severity_level = 3
    # the runtime's own options (no TF32, arena, workspace), but for the search mode under test
    cuda_options = {**cuda_provider_options(0), "cudnn_conv_algo_search": search}
    providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    started = time.perf_counter()
    session = ort_module.InferenceSession(path, sess_options=options, providers=providers)
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"CUDA provider not in use: {session.get_providers()}")
    return session, (time.perf_counter() - started) * 1000


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def once_ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def random_batch(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width)).astype(np.float32)


def first_runs_ms(session, shapes: Sequence[tuple[int, int]], bucketed: bool) -> list:
    """The first run at each shape (convolution-algorithm search included), padded to buckets if asked."""
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    times = []
    for h, w in shapes:
        batch = random_batch(1, h, w)
        if bucketed:
            padded = np.zeros((1, 3, bucket_side(h), bucket_side(w)), np.float32)
            padded[:, :, :h, :w] = batch
            batch = padded
        times.append(once_ms(lambda b=batch: session.run([out], {name: b})))
    return times


def warm_runs_ms(session, shapes: Sequence[tuple[int, int]], bucketed: bool, repeat: int) -> list:
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    sides = [(bucket_side(h), bucket_side(w)) if bucketed else (h, w) for h, w in shapes]
    return [
        median_ms(lambda b=random_batch(1, h, w): session.run([out], {name: b}), repeat, warmup=1)  # noqa: B008 (one batch per side, made before the timing)
        for h, w in sides
    ]


def measure_search_mode(path: str, search: str, repeat: int, ort_module) -> dict[str, object]:
    session, load_ms = cuda_session(path, search, ort_module)
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    cold = first_runs_ms(session, MIXED_SHAPES, bucketed=False)
    mixed_warm = warm_runs_ms(session, MIXED_SHAPES, bucketed=False, repeat=max(3, repeat // 3))
    single = random_batch(1, 960, 960)
    warm_960 = median_ms(lambda: session.run([out], {name: single}), repeat)
    batch8 = random_batch(8, 960, 960)
    warm_b8 = median_ms(lambda: session.run([out], {name: batch8}), max(3, repeat // 2)) / 8

    binding = session.io_binding()
    binding.bind_ortvalue_input(name, ort_module.OrtValue.ortvalue_from_numpy(single, "cuda", 0))
    binding.bind_output(out, "cuda", 0)
    io_ms = median_ms(lambda: session.run_with_iobinding(binding), repeat)

    bucketed_session, _ = cuda_session(path, search, ort_module)
    bucketed_cold = first_runs_ms(bucketed_session, MIXED_SHAPES, bucketed=True)
    bucketed_warm = warm_runs_ms(bucketed_session, MIXED_SHAPES, bucketed=True, repeat=max(3, repeat // 3))
    return {
        "session_ms": round(load_ms, 1),
        "cold_first_runs_ms": [round(t, 1) for t in cold],
        "cold_total_ms": round(sum(cold), 1),
        "mixed_warm_total_ms": round(sum(mixed_warm), 1),
        "warm_960_ms": round(warm_960, 2),
        "warm_batch8_per_image_ms": round(warm_b8, 2),
        "iobinding_960_ms": round(io_ms, 2),
        "bucketed_cold_total_ms": round(sum(bucketed_cold), 1),
        "bucketed_warm_total_ms": round(sum(bucketed_warm), 1),
    }


def measure_model(path: str, repeat: int, ort_module) -> dict[str, object]:
    results: dict[str, object] = {}
    for search in SEARCH_MODES:
        results[search] = measure_search_mode(path, search, repeat, ort_module)
        print(f"{Path(path).parent.name} {search}: {json.dumps(results[search])}", file=sys.stderr, flush=True)
    return results


def fill_random_weights(path: str, output: str, seed: int = 0) -> str:
    """A copy of a graph-only model (external data missing) with small random initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path, load_external_data=False)
    rng = np.random.default_rng(seed)
    for index, init in enumerate(model.graph.initializer):
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        values = (rng.standard_normal(tuple(init.dims)) * 0.05).astype(dtype)
        filled = numpy_helper.from_array(values, init.name)
        model.graph.initializer[index].CopyFrom(filled)
    onnx.save(model, output)
    return output


def mixed_pages() -> list[np.ndarray]:
    """One rendered text page per PAGE_SIZES entry, the font scaled to the page."""
    from tools.dev.sample_image import SAMPLE_LINES, render_text_image

    pages = []
    for width, height in PAGE_SIZES:
        font = max(12, min(width, height) // 24)
        lines = list(SAMPLE_LINES) * max(1, height // (font * 8))
        image, _ = render_text_image(lines, width=width, height=height, font_size=font, line_gap=font, margin=font)
        pages.append(image)
    return pages


def box_shift(plain: list, bucketed: list) -> list[object]:
    """How far bucketing moved the boxes, per page: "N->M boxes" where the count changed, else the
    largest corner shift (px), each box matched to the bucketed box nearest it (a line split
    differently at the same count shows as hundreds of px)."""
    shifts: list[object] = []
    for a, b in zip(plain, bucketed):
        polys_a, polys_b = a["dt_polys"].astype(int), b["dt_polys"].astype(int)
        if len(polys_a) != len(polys_b):
            shifts.append(f"{len(polys_a)}->{len(polys_b)} boxes")
            continue
        shifts.append(max((int(min(np.abs(box - other).max() for other in polys_b)) for box in polys_a), default=0))
    return shifts


def measure_pages(model_dir: Optional[str], device: str, shape_bucket: int, batch_size: int, rounds: int) -> dict:
    """predict over the mixed pages, plain and bucketed, in interleaved rounds (median ms per pass)."""
    from detector import TextDetection

    pages = mixed_pages()
    models = {
        "plain": TextDetection(model_dir=model_dir, device=device),
        "bucketed": TextDetection(model_dir=model_dir, device=device, shape_bucket=shape_bucket),
    }
    results = {key: model.predict(pages, batch_size=batch_size) for key, model in models.items()}  # warm-up
    times: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            times[key].append(once_ms(lambda m=model: m.predict(pages, batch_size=batch_size)))
    plain_ms, bucketed_ms = statistics.median(times["plain"]), statistics.median(times["bucketed"])
    return {
        "device": models["plain"].device,
        "model": models["plain"].model_name,
        "pages": [list(size) for size in PAGE_SIZES],
        "shape_bucket": shape_bucket,
        "batch_size": batch_size,
        "rounds": rounds,
        "plain_ms": round(plain_ms, 1),
        "bucketed_ms": round(bucketed_ms, 1),
        "bucketed_over_plain": round(bucketed_ms / plain_ms, 3),
        "box_shift_per_page": box_shift(results["plain"], results["bucketed"]),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.dev.gpu_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--onnx", action="append")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pages", action="store_true", help="time TextDetection.predict, plain vs shape_bucket")
    parser.add_argument("--model-dir", default=None, help="--pages: the model (default: the library's)")
    parser.add_argument("--device", default="gpu", help="--pages: gpu, gpu:N or cpu")
    parser.add_argument("--shape-bucket", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.pages:
        pages_report = measure_pages(args.model_dir, args.device, args.shape_bucket, args.batch_size, args.rounds)
        text = json.dumps(pages_report, indent=1)
        print(text)
        if args.json:
            args.json.write_text(text)
        return 0
    if not args.onnx:
        parser.error("give --onnx PATH (the provider-level benchmark) or --pages")
    missing = [str(path) for path in args.onnx if not Path(path).is_file()]
    if missing:
        said = f"no model file {', '.join(missing)}: export it first (make export MODEL=…)"
        print(f"gpu_bench: error: {said}", file=sys.stderr)
        return 2
    from detector.cuda_provider import cuda_unavailable_reason

    unusable = cuda_unavailable_reason()
    if unusable is not None:  # before any session: onnxruntime would print its library-load errors first
        print(f"gpu_bench: error: no usable GPU here: {unusable}", file=sys.stderr)
        return 2
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    report: dict[str, object] = {"onnxruntime": ort.__version__, "device": ort.get_device(), "models": {}}
    for path in args.onnx:
        if args.random_weights:
            path = fill_random_weights(path, str(Path(path).with_suffix(".filled.onnx")))
        report["models"][Path(path).parent.name] = measure_model(path, args.repeat, ort)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
