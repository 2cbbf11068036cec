"""Fold constant scale-and-shift chains that follow a convolution into its weight and bias.

PPLCNetV3 (the backbone of PP-OCRv4_mobile_det) follows every convolution with a learnable affine
block, ``y = a · x + b`` with scalar ``a`` and ``b``, which paddle2onnx writes as ``Mul`` and
``Add`` by one-element constants. onnxruntime folds per-channel constants of shape (C, 1, 1) into a
convolution, but not these (1,)-shaped ones, so each stays an elementwise pass over the whole map,
and worse, it splits the blocked NCHWc convolutions with layout reorders on both sides.

For a convolution ``W * x + B`` followed by Mul/Add nodes with constant scalar or per-channel
operands, ``a · (W * x + B) + b = (a W) * x + (a B + b)``: the chain folds into one convolution.
The same products in another association order (maps within ~1e-7 of the unrewritten graph).
A chain stops at the first node that is not such a Mul/Add, or whose input has other readers.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .onnx_graph import Graph, Subgraph

CONV_AFFINE_REWRITE = "conv_affine_fold"


def channel_constant(graph: Graph, node: Any, tensor: str, channels: int) -> Optional[np.ndarray]:
    """The (C,) float64 constant this Mul/Add applies to tensor, if it is a scalar or per-channel one."""
    if len(node.input) != 2 or tensor not in node.input:
        return None
    other = node.input[1] if node.input[0] == tensor else node.input[0]
    if other == tensor:
        return None
    value = graph.constant(other)
    if value is None or value.dtype != np.float32:
        return None
    if value.size == 1 and value.ndim <= 4:
        return np.full(channels, float(value.reshape(())), dtype=np.float64)
    # per-channel: (C, 1, 1) or (1, C, 1, 1) broadcasts over an NCHW map; (C,) would not
    if value.size == channels and value.ndim in (3, 4) and value.shape[-2:] == (1, 1) and value.shape[-3] == channels:
        return value.reshape(channels).astype(np.float64)
    return None


def is_scalar_scale(graph: Graph, node: Any) -> bool:
    """Whether node multiplies by a one-element constant (what onnxruntime's own fusion leaves alone)."""
    if node.op_type != "Mul":
        return False
    values = [graph.constant(name) for name in node.input]
    return any(value is not None and value.size == 1 for value in values)


def affine_chain(graph: Graph, conv: Any, channels: int) -> tuple[list, np.ndarray, np.ndarray]:
    """The Mul/Add nodes after conv that fold into it, and the per-channel (scale, shift) they apply."""
    scale, shift = np.ones(channels), np.zeros(channels)
    chain: list = []
    current = conv.output[0]
    while True:
        readers = graph.consumers.get(current, [])
        if len(readers) != 1 or current in graph.outputs or readers[0].op_type not in ("Mul", "Add"):
            break
        node = readers[0]
        value = channel_constant(graph, node, current, channels)
        if value is None:
            break
        if node.op_type == "Mul":
            scale, shift = scale * value, shift * value
        else:
            shift = shift + value
        chain.append(node)
        current = node.output[0]
    return chain, scale, shift


def fold_conv_affines(graph: Graph) -> int:
    """Fold every foldable Mul/Add chain into the Conv before it; returns how many convolutions changed."""
    folded = 0
    for conv in [node for node in graph.graph.node if node.op_type == "Conv"]:
        weight = graph.constant(conv.input[1]) if len(conv.input) > 1 else None
        has_bias = len(conv.input) > 2 and conv.input[2] != ""
        bias = graph.constant(conv.input[2]) if has_bias else None
        if weight is None or weight.ndim != 4 or weight.dtype != np.float32 or (has_bias and bias is None):
            continue
        channels = weight.shape[0]
        chain, scale, shift = affine_chain(graph, conv, channels)
        if not any(is_scalar_scale(graph, node) for node in chain):
            continue  # per-channel biases and scales alone onnxruntime folds itself
        base = np.zeros(channels) if bias is None else bias.reshape(channels).astype(np.float64)
        new_weight = weight.astype(np.float64) * scale[:, None, None, None]
        new_bias = base * scale + shift
        sub = Subgraph(graph, conv.name or "conv")
        inputs = [conv.input[0], sub.const("weight", new_weight), sub.const("bias", new_bias)]
        sub.node_like(conv, inputs, "folded", output=chain[-1].output[0])
        sub.replace([conv, *chain])
        folded += 1
    return folded


def drop_dead_nodes(graph: Graph) -> int:
    """Remove nodes and initializers nothing reads any more (the weights and bias reshapes a fold replaced)."""
    removed = 0
    while True:
        used = {name for node in graph.graph.node for name in node.input} | graph.outputs
        dead_nodes = [node for node in graph.graph.node if not any(name in used for name in node.output)]
        dead_inits = [init for init in graph.graph.initializer if init.name not in used]
        if not dead_nodes and not dead_inits:
            break
        for node in dead_nodes:
            graph.graph.node.remove(node)
        for init in dead_inits:
            graph.graph.initializer.remove(init)
        removed += len(dead_nodes) + len(dead_inits)
    graph.refresh()
    return removed
