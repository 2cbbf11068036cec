"""Scale-and-shift chains after an activation folded into the 1×1 convolution that reads them.

PPLCNetV3 ends every activation with a learnable affine block, ``y = a · hardswish(x) + b`` (scalar
``a``, ``b``; paddle2onnx writes ``Mul`` and ``Add`` by one-element constants). Where a 3×3 depthwise
convolution reads y its zero padding forbids a fold (affine_depthwise.py makes those a 1×1 depthwise
convolution), but every other block has a pointwise convolution next, which has no padding: each of
its outputs reads one pixel of y, so

    W · (a ⊙ h + b) + B = (W · diag(a)) · h + (B + W · b)

folds the chain into that convolution's weight (each input channel's column scaled) and bias, and a
pass over the map goes away. The same sums in another association order (maps within ~1e-7 of the
unrewritten graph on PP-OCRv4_mobile_det). Only a plain 1×1 convolution (one group, no padding) that is
the chain's only reader takes it; the chain's channel count comes from the convolution before the
activation, as in affine_depthwise.py.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .affine_depthwise import activation_affines
from .onnx_graph import Graph, Subgraph, attribute, unpadded

AFFINE_POINTWISE_REWRITE = "affine_into_pointwise_conv"


def pointwise_parameters(graph: Graph, node: Any, channels: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) in float64 if node is a 1×1 Conv of one group over `channels` input channels, no
    padding, constant weights (bias zeros where it has none); else None."""
    if node.op_type != "Conv" or len(node.input) < 2 or attribute(node, "group", 1) != 1:
        return None
    if not unpadded(node):
        return None
    weight = graph.constant(node.input[1])
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or weight.shape[1:] != (channels, 1, 1):
        return None
    bias = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(len(weight))
    return None if bias is None else (weight.astype(np.float64), bias.reshape(-1).astype(np.float64))


def fold_affines_into_pointwise(graph: Graph) -> int:
    """Fold every Mul/Add constant chain after an activation into the unpadded 1×1 convolution that is its
    only reader; returns how many convolutions changed."""
    folded = 0
    for activation, channels, chain, scale, shift in activation_affines(graph):
        end = chain[-1].output[0]
        conv = graph.only_consumer(end, "Conv")
        parameters = None if conv is None or conv.input[0] != end else pointwise_parameters(graph, conv, channels)
        if conv is None or parameters is None:
            continue
        weight, bias = parameters
        sub = Subgraph(graph, conv.name or "conv")
        new_weight = sub.const("weight", weight * scale[None, :, None, None])
        new_bias = sub.const("bias", bias + weight[:, :, 0, 0] @ shift)
        sub.node_like(conv, [activation.output[0], new_weight, new_bias], "scaled", output=conv.output[0])
        sub.replace([*chain, conv], at=conv)
        folded += 1
    return folded
