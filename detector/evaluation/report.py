"""Evaluation reports: a text table (one row per detector, plus the difference for two) and JSON.

"boxes/img" (JSON ``boxes_per_image``, with the total in ``boxes``) is what the model returned per
image, before the metric drops invalid polygons and detections inside don't-care regions;
``detections`` is what the metric counted (precision's denominator).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..precision import PRECISIONS
from .evaluate import EvaluationRow

_COLUMNS = ("model", "variant", "precision", "recall", "hmean", "images", "boxes/img", "s/img")


def _cells(row: EvaluationRow) -> list[str]:
    # --compare fp32 int8 names precisions: show the model; two models: show what the user named
    return [
        row.model_name if row.name in PRECISIONS else row.name,
        row.model_precision,
        f"{row.score.precision:.4f}",
        f"{row.score.recall:.4f}",
        f"{row.score.hmean:.4f}",
        str(row.images),
        f"{row.boxes_per_image:.2f}",
        f"{row.seconds_per_image:.4f}",
    ]


def comparison(rows: Sequence[EvaluationRow]) -> dict[str, float]:
    """Second row minus first (precision, recall, hmean) and the second's time over the first's."""
    first, second = rows[0], rows[1]
    return {
        "precision": second.score.precision - first.score.precision,
        "recall": second.score.recall - first.score.recall,
        "hmean": second.score.hmean - first.score.hmean,
        "boxes_per_image": second.boxes_per_image - first.boxes_per_image,
        "time_ratio": second.seconds / first.seconds if first.seconds > 0 else float("nan"),
    }


def format_table(rows: Sequence[EvaluationRow]) -> str:
    table = [list(_COLUMNS)] + [_cells(row) for row in rows]
    if len(rows) == 2:
        diff = comparison(rows)
        table.append(
            [
                f"{rows[1].name} - {rows[0].name}",
                "",
                f"{diff['precision']:+.4f}",
                f"{diff['recall']:+.4f}",
                f"{diff['hmean']:+.4f}",
                "",
                f"{diff['boxes_per_image']:+.2f}",
                f"x{diff['time_ratio']:.3f}",
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths))
        ).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if len(rows) == 2:
        lines.insert(len(lines) - 1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def report_dict(rows: Sequence[EvaluationRow]) -> dict[str, Any]:
    """One row: its fields at the top level. Two: {"rows": [...], "difference": {...}, "time_ratio": r}."""
    if len(rows) == 1:
        return rows[0].to_dict()
    diff = comparison(rows)
    return {
        "rows": [row.to_dict() for row in rows],
        "difference": {k: v for k, v in diff.items() if k != "time_ratio"},
        "time_ratio": diff["time_ratio"],
    }


def format_json(rows: Sequence[EvaluationRow]) -> str:
    return json.dumps(report_dict(rows), sort_keys=True)
