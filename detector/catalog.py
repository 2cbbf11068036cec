"""The DB text-detection models this package knows by name, and where their official weights live.

Only facts about the models sit here; their pre/post-processing settings travel inside each exported
ONNX file (see settings.py), and the downloading is done by tools/ at export time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from .session import MODEL_FILENAME, models_folders

# PaddleX's official inference models for Paddle 3.0 (PIR layout: inference.json + .pdiparams + .yml).
OFFICIAL_BASE_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0"
BASE_URL_ENV_VAR = "DETECTOR_MODEL_BASE_URL"  # a mirror (or a test server) in place of the official host


@dataclass(frozen=True)
class KnownModel:
    name: str
    summary: str
    size_mb: float  # model size published in PaddleX's docs; a hint for progress, not a check
    sha256: Optional[str] = None  # of the official tar, where known

    @property
    def archive_name(self) -> str:
        return f"{self.name}_infer.tar"

    def official_url(self) -> str:
        base = os.environ.get(BASE_URL_ENV_VAR) or OFFICIAL_BASE_URL
        return f"{base.rstrip('/')}/{self.archive_name}"


KNOWN_MODELS: Dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel("PP-OCRv4_server_det", "PPHGNet_small + LKPAN + PFHeadLocal; accurate, for servers", 109.0),
        KnownModel("PP-OCRv4_mobile_det", "PPLCNetV3 + RSEFPN; fast, the default", 4.7),
        KnownModel("PP-OCRv5_server_det", "PP-OCRv5 server detector", 84.3),
        KnownModel("PP-OCRv5_mobile_det", "PP-OCRv5 mobile detector", 4.7),
        KnownModel("PP-OCRv3_server_det", "PP-OCRv3 server detector", 102.1),
        KnownModel("PP-OCRv3_mobile_det", "PP-OCRv3 mobile detector", 2.1),
    )
}


def exported_models() -> Dict[str, Path]:
    """Every model name with an exported inference.onnx in the lookup folders (first folder wins)."""
    found: Dict[str, Path] = {}
    for folder in models_folders():
        if folder.is_dir():
            for candidate in sorted(folder.glob(f"*/{MODEL_FILENAME}")):
                found.setdefault(candidate.parent.name, candidate)
    return found
