"""PaddleOCR text detection (PP-OCR DB models) on onnxruntime, without Paddle at inference time."""

from .api import TextDetection
from .errors import (
    DetectorError,
    DeviceUnavailableError,
    ExportError,
    ImageTooLargeError,
    InferenceError,
    InputNotFoundError,
    InvalidModelError,
    InvalidParameterError,
    ModelNotFoundError,
    SourceUnavailableError,
    UnreadableImageError,
    UnsupportedInputError,
)
from .paddleocr_compat import IgnoredArgumentWarning
from .result import DetectionResult
from .settings import DetectionSettings

__version__ = "0.1.0"

__all__ = [
    "DetectionResult",
    "DetectionSettings",
    "DetectorError",
    "DeviceUnavailableError",
    "ExportError",
    "IgnoredArgumentWarning",
    "ImageTooLargeError",
    "InferenceError",
    "InputNotFoundError",
    "InvalidModelError",
    "InvalidParameterError",
    "ModelNotFoundError",
    "SourceUnavailableError",
    "TextDetection",
    "UnreadableImageError",
    "UnsupportedInputError",
]
