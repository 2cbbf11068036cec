"""Scale-and-shift chains after an activation as a 1×1 depthwise convolution.

PPLCNetV3 ends every activation with a learnable affine block, ``y = a · hardswish(x) + b``
(scalar ``a``, ``b``; paddle2onnx writes ``Mul`` and ``Add`` by one-element constants). Unlike the
affine block after a convolution (conv_affine.py), this one cannot fold into a neighbour: the
activation sits between it and the convolution before, and the zero padding of the 3×3/5×5
depthwise convolution after it would see ``b`` instead of 0 at the borders. As Mul and Add,
onnxruntime runs it in plain NCHW, so every block pays a layout reorder out of and back into its
blocked NCHWc convolutions, plus two passes over the map.

A 1×1 convolution with one group per channel, weight ``a`` and bias ``b``, computes the same
``a · x + b`` (one fused multiply-add instead of a multiply then an add: maps within ~1e-7), and
onnxruntime runs it blocked, between blocked convolutions, with no reorder. The channel count comes
from the convolution that feeds the activation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

from .conv_affine import affine_chain
from .onnx_graph import Graph, Subgraph

AFFINE_DEPTHWISE_REWRITE = "affine_as_depthwise_conv"
# Elementwise ops that keep the channel count of the convolution before them.
CHANNEL_PRESERVING_OPS = frozenset({"HardSwish", "Relu", "HardSigmoid", "Sigmoid", "Clip", "LeakyRelu", "Tanh"})


def channels_of(graph: Graph, tensor: str, through: frozenset[str] = CHANNEL_PRESERVING_OPS) -> Optional[int]:
    """Channel count of a 4-D tensor made by a constant-weight Conv, through the ops named in through
    (each keeps the channel count of its first input)."""
    node = graph.producer.get(tensor)
    while node is not None and node.op_type in through:
        node = graph.producer.get(node.input[0])
    if node is None or node.op_type != "Conv" or len(node.input) < 2:
        return None
    weight = graph.constant(node.input[1])
    return int(weight.shape[0]) if weight is not None and weight.ndim == 4 else None


def activation_affines(graph: Graph) -> Iterator[tuple[Any, int, list, np.ndarray, np.ndarray]]:
    """(activation, its channel count, the Mul/Add constant chain after it, the chain's per-channel scale
    and shift) for every activation a chain follows; each found after the caller changed the graph for
    the ones before."""
    for activation in [node for node in graph.graph.node if node.op_type in CHANNEL_PRESERVING_OPS]:
        channels = channels_of(graph, activation.output[0])
        if channels is None:
            continue
        chain, scale, shift = affine_chain(graph, activation, channels)
        if chain:
            yield activation, channels, chain, scale, shift


def rewrite_affines_as_depthwise(graph: Graph) -> int:
    """Replace Mul/Add constant chains that follow an activation by 1×1 depthwise convolutions."""
    rewritten = 0
    for activation, channels, chain, scale, shift in activation_affines(graph):
        sub = Subgraph(graph, activation.name or "activation")
        weight = sub.const("scale", scale.reshape(channels, 1, 1, 1))
        bias = sub.const("shift", shift)
        sub.node(
            "Conv",
            [activation.output[0], weight, bias],
            "affine",
            output=chain[-1].output[0],
            group=channels,
            kernel_shape=[1, 1],
        )
        sub.replace(chain)
        rewritten += 1
    return rewritten
