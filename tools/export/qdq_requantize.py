"""Scalar affine convolutions of a QDQ model folded into the quantization before them (int8 only; within
one uint8 step, not exact).

PPLCNetV3's learnable affine after each hard-swish, ``y = a · p + b`` with the same ``a`` and ``b`` for
every channel, reaches the quantized model as a 1×1 depthwise convolution (affine_as_depthwise_conv; the
hard-swish product p is a QLinearMul after hard_swish_gate.py). onnxruntime runs it as a QLinearConv of
its own: a pass over the map for what is a change of scale and offset. The uint8 value of p quantized
with scale ``s / a`` and zero point ``z + round(b / s)`` already represents y at y's own scale s and zero
point z, so the product writes y directly:

    Mul → Quantize(s_p, z_p) → Dequantize → Conv(a, b) → Quantize(s, z)   becomes   Mul → Quantize(s / a, z')

One rounding instead of two (p's, then y's), and b rounded to a whole step: each value is within one step
of the exact ``a · p + b`` of the float product (half a step each from the rounding and from b), where the
two-step form could be off by more; the two forms differ by up to two steps. PP-OCRv4_mobile_det at
960x672: 13 such QLinearConvs, about 0.7 ms of its 23.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from detector.optimize.rewrites.conv_affine import drop_dead_nodes
from detector.optimize.rewrites.onnx_graph import Graph, attribute
from tools.export.qdq_tidy import quantization_of

AFFINE_REQUANTIZED = "affines_into_quantization"  # the export record's key (under "tidied")
UINT8_RANGE = (0, 255)
UNIFORM_RTOL = 1e-6  # channels' scales (or shifts) this close are one scalar


def dequantized(graph: Graph, name: str) -> Optional[np.ndarray]:
    """The float64 values of a DequantizeLinear of constants (per-tensor or per-channel, axis 0)."""
    from onnx import numpy_helper

    node = graph.source(name, "DequantizeLinear")
    if node is None or not all(part in graph.initializers for part in node.input[:2]):
        return None
    values, scale = (numpy_helper.to_array(graph.initializers[part]).astype(np.float64) for part in node.input[:2])
    zero = (
        numpy_helper.to_array(graph.initializers[node.input[2]]).astype(np.float64)
        if len(node.input) > 2 and node.input[2] in graph.initializers
        else np.zeros(1)
    )
    shape = (-1,) + (1,) * (values.ndim - 1) if scale.size > 1 else ()
    return (values - zero.reshape(shape)) * scale.reshape(shape)


def uniform(values: np.ndarray) -> Optional[float]:
    """The one value every element holds (within UNIFORM_RTOL), else None."""
    flat = values.ravel()
    first = float(flat[0])
    return first if np.allclose(flat, first, rtol=UNIFORM_RTOL, atol=0.0) else None


def scalar_affine(graph: Graph, conv: Any) -> Optional[tuple[float, float]]:
    """(a, b) if conv is a 1×1 depthwise convolution of dequantized constants scaling every channel by the
    same a > 0 and shifting it by the same b; else None."""
    if conv.op_type != "Conv" or len(conv.input) < 3 or any(attribute(conv, "pads", [0, 0, 0, 0])):
        return None
    weight, bias = dequantized(graph, conv.input[1]), dequantized(graph, conv.input[2])
    if weight is None or bias is None or weight.ndim != 4 or weight.shape[1:] != (1, 1, 1):
        return None
    if attribute(conv, "group", 1) != weight.shape[0] or list(attribute(conv, "strides", [1, 1])) != [1, 1]:
        return None
    scale, shift = uniform(weight), uniform(bias)
    if scale is None or shift is None or scale <= 0:
        return None
    return scale, shift


def affines_into_quantization(model: Any) -> int:
    """Fold every scalar affine convolution between a QuantizeLinear and a QuantizeLinear into the first
    one's scale and zero point (in place); returns how many."""
    from onnx import numpy_helper

    graph = Graph(model)
    folded = 0
    for conv in [node for node in graph.graph.node if node.op_type == "Conv"]:
        found = scalar_affine(graph, conv)
        dequantize = graph.source(conv.input[0], "DequantizeLinear")
        after = graph.only_consumer(conv.output[0], "QuantizeLinear")
        if found is None or dequantize is None or after is None or conv.output[0] in graph.outputs:
            continue
        before = graph.source(dequantize.input[0], "QuantizeLinear")
        if before is None or graph.only_consumer(dequantize.input[0], "DequantizeLinear") is None:
            continue
        if graph.only_consumer(dequantize.output[0], "Conv") is None:
            continue
        parameters = quantization_of(graph, after)
        if parameters is None or quantization_of(graph, before) is None:
            continue
        (a, b), (scale, zero, zero_type) = found, parameters
        new_zero = zero + int(np.round(b / scale))
        if not UINT8_RANGE[0] <= new_zero <= UINT8_RANGE[1] or zero_type != np.uint8:
            continue
        stem = graph.fresh(before.name or "quantize", "requantized")
        graph.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale / a, np.float32), f"{stem}_scale"),
                numpy_helper.from_array(np.array(new_zero, np.uint8), f"{stem}_zero_point"),
            ]
        )
        before.input[1:3] = [f"{stem}_scale", f"{stem}_zero_point"]
        before.output[0] = after.output[0]
        for old in (dequantize, conv, after):
            graph.graph.node.remove(old)
        graph.refresh()
        folded += 1
    drop_dead_nodes(graph)  # the convolutions' dequantized weights and biases, and their constants
    return folded
