"""PaddleOCR's detection scoring of a set of cases, run in the Paddle environment (.venv-paddle):
``python -m tests.detmetric_reference CASES.json OUT.json``.

PaddleOCR's ``ppocr/metrics/eval_det_iou.py`` is a copy of DB's ``iou.py`` (its header says so); the PaddleOCR
wheel does not ship it, but the modelscope package PaddleX 3.7 installs carries the same file, unchanged in
``evaluate_image`` and ``combine_results``, which is what runs here. Each case's regions go through the steps of
PaddleOCR's ``DetLabelEncode`` first: '###' and '*' are don't-care, every region is padded with its last point
to the image's longest, the points become float32, a region with a NaN is don't-care; no regions, no scoring.
Exit status 3: no such evaluator in this environment.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

EVALUATOR_IN_MODELSCOPE = "msdatasets/dataset_cls/custom_datasets/ocr_detection/measures/iou_evaluator.py"


def load_evaluator():
    spec = importlib.util.find_spec("modelscope")
    path = Path(spec.origin).parent / EVALUATOR_IN_MODELSCOPE if spec and spec.origin else None
    if path is None or not path.is_file():
        print("no DetectionIoUEvaluator: modelscope (installed with PaddleX) is missing", file=sys.stderr)
        sys.exit(3)
    module_spec = importlib.util.spec_from_file_location("iou_evaluator", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # by file: modelscope's own __init__ takes seconds
    return module.DetectionIoUEvaluator()


def encoded_labels(regions: list[dict]) -> tuple[np.ndarray, np.ndarray] | None:
    if not regions:
        return None
    longest = max(len(region["points"]) for region in regions)
    points = np.array(
        [region["points"] + [region["points"][-1]] * (longest - len(region["points"])) for region in regions],
        dtype=np.float32,
    )
    ignore = np.array([region["transcription"] in ("*", "###") for region in regions], dtype=np.bool_)
    ignore[np.isnan(points).any(axis=(1, 2))] = True
    return points, ignore


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    evaluator = load_evaluator()
    images, scored = [], []
    for case in cases:
        encoded = encoded_labels(case["regions"])
        polys, ignore = encoded if encoded is not None else (np.zeros((0, 4, 2), np.float32), np.zeros(0, np.bool_))
        gt = [{"points": p, "text": "", "ignore": bool(i)} for p, i in zip(polys, ignore)]
        dtype = np.int16 if case["int16"] else np.float64
        pred = [{"points": np.array(d, dtype=dtype), "text": ""} for d in case["detections"]]
        try:
            result = evaluator.evaluate_image(gt, pred)
        except Exception as exc:  # shapely refuses a ring of fewer than 3 points: PaddleOCR's evaluation stops
            images.append({"raised": f"{type(exc).__name__}: {exc}"})
            continue
        images.append({key: result[key] for key in ("gtCare", "detCare", "detMatched")})
        scored.append(result)
    Path(sys.argv[2]).write_text(json.dumps({"images": images, "combined": evaluator.combine_results(scored)}))


if __name__ == "__main__":
    main()
