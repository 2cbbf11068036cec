"""Exact clean-ups of a QDQ model after onnxruntime.quantization wrote it, before onnxruntime loads it.

The quantizer puts a DequantizeLinear before and a QuantizeLinear after every quantized operator and
leaves onnxruntime to fuse them. Two patterns it writes survive onnxruntime's fusions as full passes over
a map in float, which these passes remove without changing a value:

- a Shape reading a quantized map reads its float form (a DequantizeLinear kept only for the Shape);
- a data movement (Transpose, Reshape, ...) between a DequantizeLinear and a QuantizeLinear of the same
  scale and zero point: once onnxruntime's layout optimizer cancels the Transpose against its own, the
  pair is left behind as a uint8 -> float -> uint8 round trip. The movement runs on the uint8 tensor
  instead (the round trip is the identity: the movement only copies values), also where the
  DequantizeLinear has other readers (a map read by a squeeze-excitation pool and by the product with
  its gate), which keep it.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from detector.optimize.rewrites.conv_affine import drop_dead_nodes
from detector.optimize.rewrites.onnx_graph import Graph

DATA_MOVEMENT_OP_TYPES = ("Transpose", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Flatten")


def tidy_quantized(model: Any) -> dict[str, int]:
    """Both passes, in place; how many nodes each changed."""
    return {"shapes_read_uint8": shapes_read_quantized(model), "movements_in_uint8": movements_in_uint8(model)}


def shapes_read_quantized(model: Any) -> int:
    """Point every Shape that reads a DequantizeLinear's output at the DequantizeLinear's uint8 input (the
    same shape) and drop the DequantizeLinears nothing reads any more; returns how many Shapes moved
    (PP-OCRv4_mobile_det's upsampled sums at 960x672: a 0.55 ms pass over the stride-4 map each)."""
    graph = Graph(model)
    moved = 0
    for node in graph.graph.node:
        source = graph.source(node.input[0], "DequantizeLinear") if node.op_type == "Shape" else None
        if source is not None:
            node.input[0] = source.input[0]
            moved += 1
    drop_dead_nodes(graph)  # the DequantizeLinears only those Shapes read
    return moved


def quantization_of(graph: Graph, node: Any) -> Optional[tuple[float, int, Any]]:
    """(scale, zero point, zero point's type) of a per-tensor Quantize/DequantizeLinear whose parameters
    are initializers, else None."""
    from onnx import numpy_helper

    if len(node.input) < 3 or not all(name in graph.initializers for name in node.input[1:3]):
        return None
    scale, zero = (numpy_helper.to_array(graph.initializers[name]) for name in node.input[1:3])
    if scale.size != 1 or zero.size != 1:
        return None
    return float(np.float32(scale.ravel()[0])), int(zero.ravel()[0]), zero.dtype


def movements_in_uint8(model: Any) -> int:
    """Run every data movement that reads a DequantizeLinear and feeds only a QuantizeLinear of the same
    parameters on the quantized tensor itself, dropping the QuantizeLinear, and the DequantizeLinear where
    nothing else reads it (in place); returns how many movements moved."""
    graph = Graph(model)
    moved, dropped = 0, []
    for node in graph.graph.node:
        if node.op_type not in DATA_MOVEMENT_OP_TYPES or node.output[0] in graph.outputs:
            continue
        dequantize = graph.source(node.input[0], "DequantizeLinear")
        quantize = graph.only_consumer(node.output[0], "QuantizeLinear")
        if dequantize is None or quantize is None:
            continue
        parameters = quantization_of(graph, dequantize)
        if parameters is None or parameters != quantization_of(graph, quantize):
            continue
        node.input[0] = dequantize.input[0]
        node.output[0] = quantize.output[0]
        dropped.append(quantize)
        moved += 1
    for old in dropped:
        graph.graph.node.remove(old)
    drop_dead_nodes(graph)  # the DequantizeLinears only those movements read
    return moved
