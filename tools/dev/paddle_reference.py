"""Run Paddle itself on a Paddle inference model: the reference our ONNX pipeline is measured against.

    python -m tools.dev.paddle_reference --model-dir DIR --model-name NAME --out OUT.json [--engine onnxruntime]
        [--limit-side-len N --limit-type max|min --thresh F --box-thresh F --unclip-ratio F] IMAGE...

runs PaddleOCR's own ``TextDetection`` (PaddleOCR 3.7.0, in .venv-paddle) on each image and writes a
JSON list of {"input_path", "page_index", "dt_polys", "dt_scores"}. ``--engine onnxruntime`` runs
PaddleOCR's onnxruntime engine on a folder holding ``inference.onnx`` + ``inference.yml`` (PaddlePaddle's
ONNX releases); the default engine runs Paddle Inference on a Paddle model folder. Either way it is
PaddleOCR's own pre- and post-processing. The raw Paddle Inference predictor
(one tensor in, the probability map out) lives in tools/export/paddle.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from tools.export.paddle import paddle_predictor, quiet_offline_environment  # noqa: F401 (re-exported for bench)


def detect_with_paddleocr(
    model_dir: Path, model_name: str, images: Sequence[str], engine: Optional[str] = None, **settings: object
) -> list[dict[str, object]]:
    """PaddleOCR's TextDetection on each image; settings are its keywords (None = the model's default).

    engine: PaddleOCR's ``engine`` keyword ("onnxruntime", …); None keeps its default (Paddle Inference).
    """
    quiet_offline_environment()
    from paddleocr import TextDetection

    given = {key: value for key, value in settings.items() if value is not None}
    if engine is not None:
        given["engine"] = engine
    detector = TextDetection(model_name=model_name, model_dir=str(model_dir), device="cpu", **given)
    results = []
    for image in images:
        for result in detector.predict(str(image)):
            results.append(
                {
                    "input_path": str(image),
                    "page_index": result.get("page_index"),
                    "dt_polys": np.asarray(result["dt_polys"]).tolist(),
                    "dt_scores": [float(score) for score in result["dt_scores"]],
                }
            )
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="Paddle inference model folder (--engine onnxruntime: inference.onnx + inference.yml)",
    )
    parser.add_argument(
        "--engine",
        choices=("paddle", "onnxruntime"),
        default=None,
        help="PaddleOCR's inference engine (default: its own default, Paddle Inference)",
    )
    parser.add_argument("--model-name", required=True, help="name PaddleOCR knows, e.g. PP-OCRv4_mobile_det")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--limit-side-len", type=int)
    parser.add_argument("--limit-type", choices=("max", "min", "resize_long"))
    parser.add_argument("--thresh", type=float)
    parser.add_argument("--box-thresh", type=float)
    parser.add_argument("--unclip-ratio", type=float)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        print(f"paddle_reference: error: no such image(s): {', '.join(missing)}", file=sys.stderr)
        return 1
    if not args.model_dir.is_dir():
        print(f"paddle_reference: error: --model-dir {args.model_dir} is not a folder", file=sys.stderr)
        return 1
    results = detect_with_paddleocr(
        args.model_dir,
        args.model_name,
        args.images,
        engine=args.engine,
        limit_side_len=args.limit_side_len,
        limit_type=args.limit_type,
        thresh=args.thresh,
        box_thresh=args.box_thresh,
        unclip_ratio=args.unclip_ratio,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results))
    print(f"paddle_reference: {len(results)} result(s) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
