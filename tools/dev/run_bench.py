"""Benchmark of the network alone: onnxruntime session.run of one or more ONNX files, and Paddle Inference's
predictor.run on the same tensors, interleaved.

    python -m tools.dev.run_bench --onnx OURS.onnx [--onnx OTHER.onnx ...] [--source PADDLE_DIR]
                                  [--rounds N] [--sizes 672x960,64x960,...]

For a network whose end-to-end bench takes too long (the rebuilt PP-OCRv4_server_det: one round of
`make bench` is about ten minutes on 2 cores), and for A/B runs of two exports (with and without a
rewrite). Every side runs each size once per round, the order of the sides rotating by one each
round, each call after bench.SETTLE_SECONDS (Paddle's OpenMP threads stay busy for a while after a
run). Prints per size the best of the rounds, and over the sizes summed: each side against the first
--onnx and against Paddle Inference, best / best and the median of per-round ratios. Paddle
Inference runs as PaddleOCR runs it on a CPU (oneDNN on), on all cores, like onnxruntime here.
`make bench MODEL=… SOURCE=… RUN_ONLY=1` runs it on the export and its --no-rewrites twin.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from detector.session import load_session, parse_device  # noqa: E402
from tools.dev.bench import SETTLE_SECONDS, cpu_description, onnxruntime_version, rotated  # noqa: E402

# Network input sizes (height x width) as the detectors' resize makes them: a 640x480 photo, a
# 1280x720 page, an A4 page or a 3000x2000 photo at max side 960, a long banner, a small crop.
DEFAULT_SIZES = ((480, 640), (544, 960), (672, 960), (64, 960), (32, 128))
PADDLE = "Paddle"


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'672x960,64x960' -> ((672, 960), (64, 960)); sides must be positive multiples of 32."""
    sizes = []
    for part in text.split(","):
        height, _, width = part.strip().partition("x")
        try:
            size = (int(height), int(width))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not HEIGHTxWIDTH") from None
        if min(size) <= 0 or size[0] % 32 or size[1] % 32:
            raise argparse.ArgumentTypeError(f"{part!r}: sides must be positive multiples of 32")
        sizes.append(size)
    return tuple(sizes)


def ratio_line(name: str, times: list[list[float]], base: list[list[float]], base_name: str) -> str:
    """name against base_name over the sizes summed: best / best, and the median of per-round ratios."""
    best = sum(min(per_size) for per_size in times) / sum(min(per_size) for per_size in base)
    rounds = len(times[0])
    per_round = [
        sum(per_size[index] for per_size in times) / sum(per_size[index] for per_size in base)
        for index in range(rounds)
    ]
    return f"  {name} / {base_name}: {best:.3f} (best / best); per-round median {statistics.median(per_round):.3f}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, action="append", required=True, help="an ONNX file (repeatable)")
    parser.add_argument("--source", type=Path, help="the Paddle inference model folder, to time Paddle Inference")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES, help="HxW,HxW,... network inputs")
    args = parser.parse_args(argv)
    for path in args.onnx + ([args.source] if args.source else []):
        if not path.exists():
            print(f"run_bench: error: {path} does not exist", file=sys.stderr)
            return 1
    if args.rounds < 1:
        print("run_bench: error: --rounds must be at least 1", file=sys.stderr)
        return 2

    threads = os.cpu_count() or 1
    print(f"run_bench: {cpu_description()}, {threads} cores, onnxruntime {onnxruntime_version()}")
    sides: dict[str, Callable[[np.ndarray], object]] = {}  # by label: A, B, ... for the ONNX files, then Paddle
    described: dict[str, Path] = {}
    for index, path in enumerate(args.onnx):
        session, _ = load_session(path, parse_device("cpu"), threads=threads)
        input_name = session.get_inputs()[0].name
        label = chr(ord("A") + index)
        sides[label], described[label] = (lambda x, s=session, n=input_name: s.run(None, {n: x})), path
    if args.source:
        from tools.export.paddle import paddle_predictor

        sides[PADDLE], described[PADDLE] = paddle_predictor(args.source, threads, mkldnn=True), args.source
    tensors = [np.random.default_rng(index).random((1, 3, *size), np.float32) for index, size in enumerate(args.sizes)]
    for x in tensors:  # warm-up: first-shape allocations
        for run in sides.values():
            run(x)
    times: dict[str, list[list[float]]] = {label: [[] for _ in tensors] for label in sides}
    for round_index in range(args.rounds):
        for size_index, x in enumerate(tensors):
            for label, run in rotated(sides, round_index):
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                run(x)
                times[label][size_index].append((time.perf_counter() - start) * 1000)
        summed = ", ".join(f"{label} {sum(per[-1] for per in per_size):.0f} ms" for label, per_size in times.items())
        print(f"round {round_index + 1}: {summed}", file=sys.stderr)

    labels = list(sides)
    print(f"\nsession.run (Paddle: predictor.run), ms, best of {args.rounds} rounds")
    for label in labels:
        print(f"  {label}: {described[label]}")
    print(" | ".join(["size", *labels]))
    for size_index, (height, width) in enumerate(args.sizes):
        print(" | ".join([f"{height}x{width}"] + [f"{min(times[label][size_index]):.1f}" for label in labels]))
    print(" | ".join(["summed"] + [f"{sum(min(per) for per in times[label]):.1f}" for label in labels]))
    for label in labels[1:]:
        if label != PADDLE:
            print(ratio_line(label, times[label], times["A"], "A"))
    if args.source:
        for label in labels[:-1]:
            print(ratio_line(label, times[label], times[PADDLE], PADDLE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
