"""`make eval`: score every exported model, and each of its precision variants, on one labelled set.

    python -m tools.dev.eval_models --labels LABELS [--image-dir DIR] [--device cpu]

For each models/<MODEL>/inference.onnx (and $DETECTOR_MODELS), the fp32 file and every
inference.<precision>.onnx beside it run in one interleaved pass (detect eval's evaluate), so their
times compare; prints one table per model with each variant's difference and time ratio to fp32.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from detector import TextDetection
from detector.catalog import exported_models
from detector.evaluation.evaluate import evaluate, load_labelled_images
from detector.evaluation.labels import read_labels
from detector.evaluation.report import comparison, format_table
from detector.precision import PRECISIONS, variant_path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.dev.eval_models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--labels", required=True)
    parser.add_argument("--image-dir")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    labelled = read_labels(args.labels, args.image_dir)
    decoded = load_labelled_images(labelled)
    models = exported_models()
    if not models:
        print("eval_models: no exported models (make export)", file=sys.stderr)
        return 1
    for name, path in sorted(models.items()):
        detectors = {
            precision: TextDetection(model_dir=variant_path(path, precision), device=args.device)
            for precision in PRECISIONS
            if variant_path(path, precision).is_file()
        }
        rows = evaluate(detectors, labelled, decoded)
        print(f"\n{name} ({len(labelled)} images, {args.labels})")
        print(format_table(rows[:1]))
        for row in rows[1:]:
            diff = comparison([rows[0], row])
            print(
                format_table([row]).splitlines()[-1],
                f"  Hmean {diff['hmean']:+.4f} vs fp32, time x{diff['time_ratio']:.3f}",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
