"""Write the parity tests' rendered pages as a labelled set, to score models on them with detect eval.

    python -m tools.dev.parity_set OUT_DIR

writes OUT_DIR/<page>.png and OUT_DIR/labels.txt in PaddleOCR's det label format; each label is the
ink box of one rendered line (the boxes the tests compare against). Then, for example,
``python -m tools.dev.eval_models --labels OUT_DIR/labels.txt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from tools.dev.sample_image import RENDERED_PAGES, write_rendered_pages


def write_parity_set(folder: Path) -> Path:
    """The pages and their labels file (returned) in folder."""
    pages = write_rendered_pages(folder)
    lines = []
    for name, (path, boxes) in pages.items():
        labels = [
            {"transcription": text, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}
            for text, (x0, y0, x1, y1) in zip(RENDERED_PAGES[name]["lines"], boxes)
        ]
        lines.append(f"{path.name}\t{json.dumps(labels, ensure_ascii=False)}")
    labels_path = folder / "labels.txt"
    labels_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return labels_path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dev.parity_set", description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    labels = write_parity_set(args.out)
    print(f"wrote {len(RENDERED_PAGES)} pages and {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
