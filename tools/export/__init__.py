"""The export path: a DB text-detection model in, a verified ONNX file with its settings out.

    python -m tools.export --model NAME [--source …]     (see pipeline.py)

One module per source kind (paddle.py), shared verification (verify.py) and metadata writing
(metadata.py), where sources come from (sources.py, default_model.py), and the exact graph
rewrites (rewrites/). Developer-only tools live apart, in tools/dev/.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def progress(message: str) -> None:
    print(f"export: {message}", file=sys.stderr, flush=True)
