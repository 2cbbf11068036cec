"""`detect eval`: label readers, PaddleOCR's DetMetric rules, and reports. Imports the runtime; the
runtime never imports this package."""

from .evaluate import EvaluationRow, evaluate
from .labels import LabelFileError, LabelledImage, read_labels
from .metric import LabelledPolygon, SetScore, combine_scores, score_image

__all__ = [
    "EvaluationRow",
    "LabelFileError",
    "LabelledImage",
    "LabelledPolygon",
    "SetScore",
    "combine_scores",
    "evaluate",
    "read_labels",
    "score_image",
]
