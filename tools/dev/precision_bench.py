"""Time a model's precision variants against its fp32 file, side by side in one run.

    python -m tools.dev.precision_bench MODEL_DIR_OR_ONNX [--labels LABELS] [--rounds 5] [--threads N]

For each rendered page of tests/rendered.py's sizes (or the images of a label file), times
``session.run`` on the same preprocessed tensor and ``TextDetection.predict`` on the decoded image for
fp32 and every variant beside it, alternating variants inside each round; reports the best of the
rounds (a shared machine has slow spells) and each variant's ratio to fp32, summed over the images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from detector import TextDetection
from detector.evaluation.evaluate import load_labelled_images
from detector.evaluation.labels import read_labels
from detector.precision import PRECISIONS, variant_path
from detector.session_run import run_session
from tools.export.variant_scoring import network_inputs


def _images(labels: Optional[str]) -> list[np.ndarray]:
    if labels:
        return load_labelled_images(read_labels(labels))
    from tools.dev.labelled_set import render_labelled_set

    with tempfile.TemporaryDirectory() as folder:
        return load_labelled_images(read_labels(render_labelled_set(Path(folder), 8, seed=99)))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.dev.precision_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="fp32 .onnx file or its folder")
    parser.add_argument("--labels", help="time on these images instead of 8 rendered ones")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    path = Path(args.model)
    fp32 = path if path.suffix == ".onnx" else path / "inference.onnx"
    detectors: dict[str, TextDetection] = {
        precision: TextDetection(model_dir=variant_path(fp32, precision), device="cpu", cpu_threads=args.threads)
        for precision in PRECISIONS
        if variant_path(fp32, precision).is_file()
    }
    images = _images(args.labels)
    settings = detectors["fp32"].settings
    tensors = network_inputs(images, settings)
    names = list(detectors)
    best_run = {name: [float("inf")] * len(images) for name in names}
    best_e2e = {name: [float("inf")] * len(images) for name in names}
    for detector in detectors.values():  # warm-up
        detector.predict(images[0])
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for index, (image, tensor) in enumerate(zip(images, tensors)):
            for name in order:
                detector = detectors[name]
                started = time.perf_counter()
                run_session(detector._session, detector._input_name, detector._output_name, tensor)
                best_run[name][index] = min(best_run[name][index], time.perf_counter() - started)
                started = time.perf_counter()
                detector.predict(image)
                best_e2e[name][index] = min(best_e2e[name][index], time.perf_counter() - started)
    print(f"{fp32}: {len(images)} images, best of {args.rounds} rounds, ms summed over the images")
    print(f"{'variant':<8} {'session.run':>12} {'ratio':>7} {'end-to-end':>11} {'ratio':>7}")
    base_run, base_e2e = sum(best_run["fp32"]), sum(best_e2e["fp32"])
    for name in names:
        run_ms, e2e_ms = sum(best_run[name]), sum(best_e2e[name])
        print(
            f"{name:<8} {run_ms * 1000:>12.1f} {run_ms / base_run:>7.3f}"
            f" {e2e_ms * 1000:>11.1f} {e2e_ms / base_e2e:>7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
