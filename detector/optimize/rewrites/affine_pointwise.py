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

from typing import Any

import numpy as np

from .affine_depthwise import activation_affines
from .onnx_graph import Graph, Subgraph, attribute

AFFINE_POINTWISE_REWRITE = "affine_into_pointwise_conv"


def is_unpadded_pointwise(graph: Graph, node: Any, channels: int) -> bool:
    """Whether node is a 1×1 Conv of one group over `channels` input channels, no padding, constant weights."""
    if node.op_type != "Conv" or len(node.input) < 2 or attribute(node, "group", 1) != 1:
        return False
    weight = graph.constant(node.input[1])
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or weight.shape[1:] != (channels, 1, 1):
        return False
    if len(node.input) > 2 and node.input[2] and graph.constant(node.input[2]) is None:
        return False
    auto_pad = attribute(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return auto_pad in ("NOTSET", "VALID") and not any(attribute(node, "pads", [0, 0, 0, 0]))


def fold_affines_into_pointwise(graph: Graph) -> int:
    """Fold every Mul/Add constant chain after an activation into the unpadded 1×1 convolution that is its
    only reader; returns how many convolutions changed."""
    from onnx import helper

    folded = 0
    for activation, channels, chain, scale, shift in activation_affines(graph):
        end = chain[-1].output[0]
        readers = graph.consumers.get(end, [])
        if len(readers) != 1 or end in graph.outputs or not is_unpadded_pointwise(graph, readers[0], channels):
            continue
        conv = readers[0]
        weight, bias = graph.constant(conv.input[1]), None
        if len(conv.input) > 2 and conv.input[2]:
            bias = graph.constant(conv.input[2])
        if conv.input[0] != end or weight is None:
            continue
        columns = weight[:, :, 0, 0].astype(np.float64)
        base = np.zeros(weight.shape[0]) if bias is None else bias.reshape(-1).astype(np.float64)
        sub = Subgraph(graph, conv.name or "conv")
        new_weight = sub.const("weight", weight.astype(np.float64) * scale[None, :, None, None])
        new_bias = sub.const("bias", base + columns @ shift)
        inputs = [activation.output[0], new_weight, new_bias]
        node = helper.make_node("Conv", inputs, list(conv.output), name=graph.fresh(conv.name or "conv", "scaled"))
        node.attribute.extend(conv.attribute)
        sub.nodes.append(node)
        sub.replace([*chain, conv], at=conv)
        folded += 1
    return folded
