"""Run Paddle itself on a Paddle inference model: the reference our ONNX pipeline is measured against.

    python -m tools.paddle_reference --model-dir DIR --model-name NAME --out OUT.json
        [--limit-side-len N --limit-type max|min --thresh F --box-thresh F --unclip-ratio F] IMAGE...

runs PaddleOCR's own ``TextDetection`` (PaddleOCR 3.7.0, in .venv-paddle) on each image and writes a
JSON list of {"input_path", "page_index", "dt_polys", "dt_scores"}. :func:`paddle_predictor` is the raw Paddle
Inference predictor (one tensor in, the probability map out) for export verification and benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

# PaddleX probes model hosts on import unless told not to; glog chatter is noise on stderr.
REFERENCE_ENVIRONMENT = {
    "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True",
    "GLOG_minloglevel": "2",
    "GLOG_v": "0",
}


def quiet_offline_environment() -> None:
    for key, value in REFERENCE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # Paddle warns on import that it cannot find ccache: about building extensions, irrelevant here.
    warnings.filterwarnings("ignore", message="No ccache found")


def paddle_model_file(model_dir: Path) -> Path:
    """The program file of a Paddle inference folder: PIR inference.json, else legacy inference.pdmodel."""
    for name in ("inference.json", "inference.pdmodel"):
        if (Path(model_dir) / name).is_file():
            return Path(model_dir) / name
    raise FileNotFoundError(f"{model_dir} holds neither inference.json nor inference.pdmodel")


def paddle_predictor(
    model_dir: Path, threads: Optional[int] = None, mkldnn: bool = False, ir_optim: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """A function NCHW float32 -> the model's first output, on Paddle Inference (CPU).

    mkldnn=False keeps Paddle's plain CPU kernels; PaddleOCR enables oneDNN on CPU for speed, which
    moves probabilities by ~1e-5 — fine for boxes, too loose to check a conversion with.
    """
    quiet_offline_environment()
    import paddle.inference as paddle_infer

    config = paddle_infer.Config(str(paddle_model_file(model_dir)), str(Path(model_dir) / "inference.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads or os.cpu_count() or 1)
    if mkldnn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    config.switch_ir_optim(ir_optim)
    predictor = paddle_infer.create_predictor(config)
    input_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output_handle = predictor.get_output_handle(predictor.get_output_names()[0])

    def run(batch: np.ndarray) -> np.ndarray:
        input_handle.reshape(list(batch.shape))
        input_handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        predictor.run()
        return output_handle.copy_to_cpu()

    return run


def detect_with_paddleocr(
    model_dir: Path, model_name: str, images: Sequence[str], **settings: object
) -> List[Dict[str, object]]:
    """PaddleOCR's TextDetection on each image; settings are its keywords (None = the model's default)."""
    quiet_offline_environment()
    from paddleocr import TextDetection

    given = {key: value for key, value in settings.items() if value is not None}
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="Paddle inference model folder")
    parser.add_argument("--model-name", required=True, help="name PaddleOCR knows, e.g. PP-OCRv4_mobile_det")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--limit-side-len", type=int)
    parser.add_argument("--limit-type", choices=("max", "min"))
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
        args.model_dir, args.model_name, args.images,
        limit_side_len=args.limit_side_len, limit_type=args.limit_type, thresh=args.thresh,
        box_thresh=args.box_thresh, unclip_ratio=args.unclip_ratio,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results))
    print(f"paddle_reference: {len(results)} result(s) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
