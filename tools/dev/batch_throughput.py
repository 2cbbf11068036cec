"""Images/s of `detect batch` (detector.distributed) with 1 and 2 actors on a local Ray instance.

Renders --images pages into a temporary folder, starts one local Ray instance (num_cpus = the
machine's cores), and runs the same job at each actor count, one CPU (and one onnxruntime thread)
per actor. The time is the whole job as a user sees it: actor start and model load included.
Run: ``python -m tools.dev.batch_throughput [--images 48]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.dev.sample_image import SAMPLE_LINES, render_text_image  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO_ROOT / "models" / "PP-OCRv4_mobile_det" / "inference.onnx"))
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    from detector import batch_rows, distributed, ray_session

    with tempfile.TemporaryDirectory(prefix="batch-throughput-") as work:
        folder = Path(work) / "in"
        folder.mkdir()
        for index in range(args.images):
            lines = [f"{index:04d} {line}" for line in SAMPLE_LINES]
            image, _ = render_text_image(lines, width=1000)
            cv2.imwrite(str(folder / f"page_{index:04d}.png"), image)
        ray_session.connect(None)
        spec = batch_rows.ModelSpec(model_dir=args.model, device="cpu")
        print(f"{args.images} rendered 1000x384 PNG pages, {os.cpu_count()} CPUs, one CPU per actor")
        print("| actors | seconds | images/s |")
        print("|---|---|---|")
        for run, actors in enumerate(args.actors):
            summary = distributed.run_batch(
                [str(folder)], str(Path(work) / f"out_{run}"), spec=spec, concurrency=actors
            )
            assert summary.errors == 0 and summary.rows == args.images
            print(f"| {actors} | {summary.seconds:.1f} | {summary.images_per_second:.2f} |", flush=True)


if __name__ == "__main__":
    main()
