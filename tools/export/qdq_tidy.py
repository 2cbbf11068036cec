"""Exact clean-ups of a QDQ model after onnxruntime.quantization wrote it, before onnxruntime loads it.

The quantizer puts a DequantizeLinear before and a QuantizeLinear after every quantized operator and
leaves onnxruntime to fuse them. Two patterns it writes survive onnxruntime's fusions as full passes over
a map in float, which these passes remove without changing a value:

- a Shape reading a quantized map reads its float form (a DequantizeLinear kept only for the Shape);
- a data movement (Transpose, Reshape, ...) between a DequantizeLinear and a QuantizeLinear of the same
  scale and zero point: once onnxruntime's layout optimizer cancels the Transpose against its own, the
  pair is left behind as a uint8 -> float -> uint8 round trip. The movement runs on the uint8 tensor
  instead (the round trip is the identity: the movement only copies values).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

DATA_MOVEMENT_OP_TYPES = ("Transpose", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Flatten")


def tidy_quantized(model: Any) -> dict[str, int]:
    """Both passes, in place; how many nodes each changed."""
    return {"shapes_read_uint8": shapes_read_quantized(model), "movements_in_uint8": movements_in_uint8(model)}


def _producers(graph: Any) -> dict[str, Any]:
    return {name: node for node in graph.node for name in node.output}


def _readers(graph: Any) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def shapes_read_quantized(model: Any) -> int:
    """Point every Shape that reads a DequantizeLinear's output at the DequantizeLinear's uint8 input (the
    same shape) and drop the DequantizeLinears nothing reads any more; returns how many Shapes moved
    (PP-OCRv4_mobile_det's broadcast sums at 960x672: a 0.55 ms pass over the stride-4 map each)."""
    graph = model.graph
    producers = _producers(graph)
    moved = 0
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "Shape" else None
        if source is not None and source.op_type == "DequantizeLinear":
            node.input[0] = source.input[0]
            moved += 1
    read = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in read]:
        graph.node.remove(node)
    return moved


def quantization_of(graph: Any, node: Any) -> Optional[tuple[float, int, Any]]:
    """(scale, zero point, zero point's type) of a per-tensor Quantize/DequantizeLinear with constant
    parameters, else None."""
    from onnx import numpy_helper

    if len(node.input) < 3:
        return None
    initializers = {init.name: init for init in graph.initializer}
    if node.input[1] not in initializers or node.input[2] not in initializers:
        return None
    scale, zero = (numpy_helper.to_array(initializers[name]) for name in node.input[1:3])
    if scale.size != 1 or zero.size != 1:
        return None
    return float(np.float32(scale.ravel()[0])), int(zero.ravel()[0]), zero.dtype


def movements_in_uint8(model: Any) -> int:
    """Run every data movement that reads only a DequantizeLinear and feeds only a QuantizeLinear of the
    same parameters on the quantized tensor itself, dropping the pair (in place); returns how many."""
    graph = model.graph
    producers, readers = _producers(graph), _readers(graph)
    outputs = {output.name for output in graph.output}
    dropped = []
    for node in graph.node:
        if node.op_type not in DATA_MOVEMENT_OP_TYPES or node.output[0] in outputs:
            continue
        dequantize = producers.get(node.input[0])
        after = readers.get(node.output[0], [])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(after) != 1:
            continue
        quantize = after[0]
        if quantize.op_type != "QuantizeLinear" or len(readers.get(dequantize.output[0], [])) != 1:
            continue
        if dequantize.output[0] in outputs or quantization_of(graph, dequantize) is None:
            continue
        if quantization_of(graph, dequantize) != quantization_of(graph, quantize):
            continue
        node.input[0] = dequantize.input[0]
        node.output[0] = quantize.output[0]
        dropped += [dequantize, quantize]
    for old in dropped:
        graph.node.remove(old)
    return len(dropped) // 2
