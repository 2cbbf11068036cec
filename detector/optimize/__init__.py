"""Exact speed rewrites for onnxruntime, applied to an ONNX detector on the machine that runs it.

PaddlePaddle's ONNX releases (and any DB detector already in ONNX) run as published unless imported:
the import (onnx_import.py) rewrites the graph where its patterns match (rewrites/, one module per
rewrite; channels padded to this CPU's block), verifies the result against the source on onnxruntime
(verify.py) and writes it with its settings in the detector.* metadata (model_file.py). It needs the
``onnx`` package (extra [optimize]); nothing on the runtime's data path imports this package, and
``import detector`` never loads it. The hub imports a release as it downloads it; ``detect optimize``
imports any file; tools/export (a checkout's export tool) uses the same code for its sources.
"""

from __future__ import annotations

import importlib.util

from ..errors import pip_install

INSTALL_HINT = f"{pip_install('optimize')} (the onnx package)"


def optimizer_available() -> bool:
    """Whether the import can run here: it needs the onnx package."""
    return importlib.util.find_spec("onnx") is not None
