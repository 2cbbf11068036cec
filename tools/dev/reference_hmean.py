"""Hmean of PaddleOCR itself on a labelled set, beside ours: the runtime-agreement check of `make eval`.

    python -m tools.dev.reference_hmean --labels LABELS --paddle-python .venv-paddle/bin/python \\
        --source-dir .cache/sources/PP-OCRv4_mobile_det --model-name PP-OCRv4_mobile_det [--onnx PATH]

Runs PaddleOCR 3.7's TextDetection (tools/dev/paddle_reference.py, in the Paddle environment) and our
TextDetection on the same images, scores both with detect eval's metric, and prints both Hmeans and
their difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from detector import TextDetection
from detector.evaluation.labels import read_labels
from detector.evaluation.metric import combine_scores, score_image

REPO_ROOT = Path(__file__).resolve().parents[2]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.dev.reference_hmean",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--labels", required=True)
    parser.add_argument("--paddle-python", required=True)
    parser.add_argument("--source-dir", required=True, help="the Paddle inference model folder")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--onnx", help="our exported model (default: the model name's)")
    args = parser.parse_args(argv)
    labelled = read_labels(args.labels)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "paddle.json"
        done = subprocess.run(
            [
                args.paddle_python,
                "-m",
                "tools.dev.paddle_reference",
                "--model-dir",
                args.source_dir,
                "--model-name",
                args.model_name,
                "--out",
                str(out),
                *[str(item.image_path) for item in labelled],
            ],
            cwd=REPO_ROOT,
        )
        if done.returncode != 0:
            return done.returncode
        paddle = json.loads(out.read_text())
    ours = TextDetection(model_name=args.model_name, model_dir=args.onnx, device="cpu")
    paddle_scores, our_scores = [], []
    for item, reference in zip(labelled, paddle):
        paddle_scores.append(score_image(item.labels, reference["dt_polys"]))
        (result,) = ours.predict(str(item.image_path))
        our_scores.append(score_image(item.labels, result["dt_polys"]))
    theirs, mine = combine_scores(paddle_scores), combine_scores(our_scores)
    print(
        f"{len(labelled)} images: Hmean PaddleOCR {theirs.hmean:.4f} (P {theirs.precision:.4f} R {theirs.recall:.4f}), "
        f"ours {mine.hmean:.4f} (P {mine.precision:.4f} R {mine.recall:.4f}),"
        f" difference {mine.hmean - theirs.hmean:+.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
