"""What the graph-rewrite tests share: applying the rewrites to a copy, and a quiet CPU session."""

from __future__ import annotations

from collections.abc import Collection

import onnx
import onnxruntime as ort

from detector.optimize.rewrites import rewrite_for_speed
from detector.optimize.rewrites.channel_padding import CHANNEL_BLOCK


def rewritten(model: onnx.ModelProto, skip: Collection[str] = (), channel_block: int = CHANNEL_BLOCK):
    """A checked copy of model with rewrite_for_speed applied (but the rewrites named in skip), and the
    names of the rewrites applied. Channels padded to AVX-512's block unless told, whatever the CPU."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    applied = rewrite_for_speed(copy, skip=skip, channel_block=channel_block)
    onnx.checker.check_model(copy)
    return copy, applied


def cpu_session(model: onnx.ModelProto, options: ort.SessionOptions = None) -> ort.InferenceSession:
    options = options or ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
