"""Hard-swish as a clipped product whose factors quantize to uint8, for the int8 variant only.

``hardswish(y) = y · hardsigmoid(y)`` with ``hardsigmoid(y) = clip(alpha·y + beta, 0, 1)`` (alpha = 1/6, beta = 1/2).
onnxruntime has no int8 kernel for HardSigmoid or HardSwish, so in a QDQ model each one sits between a
DequantizeLinear and a QuantizeLinear in float: three passes over the map per activation, more time
than the int8 convolutions themselves took on PP-OCRv4_mobile_det (README, "Precision variants").
Written as

    y · clip(y + beta/alpha, 0, 1/alpha) = hardswish(y) / alpha

every step has an int8 kernel: the Add is a QLinearAdd whose output range [0, 1/alpha] is the Clip (the
quantizer is told that range, GATE_RANGES, so saturation does the clipping exactly), the product a
QLinearMul. The factor alpha moves into the weights of the convolutions that read the product (linear, so
``conv_{W}(h) = conv_{alpha·W}(h / alpha)``); where something else reads it, a Mul by alpha restores hardswish(y).

Equal in real arithmetic; in float32 within a few ulp of the unrewritten graph. Not one of the fp32
speed rewrites: in float, onnxruntime fuses HardSwish into the convolution before it, which this form
would undo.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Optional

from .onnx_graph import Graph, Subgraph, attribute, scale_initializer

HARD_SWISH_GATE_REWRITE = "hard_swish_as_clipped_product"
HARD_SIGMOID_ALPHA, HARD_SIGMOID_BETA = 0.2, 0.5  # ONNX's HardSigmoid defaults
HARD_SWISH_ALPHA, HARD_SWISH_BETA = 1 / 6, 0.5  # ONNX's HardSwish, fixed


def match(graph: Graph, node: Any) -> Optional[tuple[str, float, float, list]]:
    """(y, alpha, beta, the nodes computing y · hardsigmoid(y)) if node is a HardSwish, or a Mul of y by a
    HardSigmoid of the same y read by nothing else; else None."""
    if node.op_type == "HardSwish":
        return node.input[0], HARD_SWISH_ALPHA, HARD_SWISH_BETA, [node]
    if node.op_type != "Mul" or len(node.input) != 2 or node.input[0] == node.input[1]:
        return None
    for index in (0, 1):
        y, gate = node.input[index], node.input[1 - index]
        sigmoid = graph.source(gate, "HardSigmoid")
        if sigmoid is None or sigmoid.input[0] != y or len(graph.consumers.get(gate, [])) != 1 or gate in graph.outputs:
            continue
        alpha = float(attribute(sigmoid, "alpha", HARD_SIGMOID_ALPHA))
        beta = float(attribute(sigmoid, "beta", HARD_SIGMOID_BETA))
        return (y, alpha, beta, [sigmoid, node]) if alpha > 0 else None
    return None


def scalable_readers(graph: Graph, name: str) -> Optional[list]:
    """The convolutions reading name as their data input with constant weights no other node reads,
    if those are all its readers; else None."""
    readers = graph.consumers.get(name, [])
    if not readers or name in graph.outputs:
        return None
    for reader in readers:
        if reader.op_type != "Conv" or reader.input[0] != name or len(reader.input) < 2:
            return None
        if reader.input[1] not in graph.initializers or len(graph.consumers.get(reader.input[1], [])) != 1:
            return None
    return readers


def scale_weights(graph: Graph, conv: Any, factor: float) -> None:
    scale_initializer(graph, conv.input[1], factor)


def rewrite_hard_swish_gates(model: Any, skip: Collection[str] = ()) -> dict[str, tuple[float, float]]:
    """Rewrite every hard-swish in model (in place) as the clipped product, but those of the nodes
    named in skip (that stay float: there the fused HardSwish is faster); returns the gate tensors with
    the range [0, 1/alpha] the quantizer must give them."""
    graph = Graph(model)
    skip = set(skip)
    gate_ranges: dict[str, tuple[float, float]] = {}
    # a snapshot: a matched HardSigmoid comes before its Mul, so it is never visited after its removal
    for node in list(graph.graph.node):
        found = match(graph, node)
        if found is None:
            continue
        y, alpha, beta, replaced = found
        if any(step.name and step.name in skip for step in replaced):
            continue
        output = replaced[-1].output[0]
        readers = scalable_readers(graph, output)
        new = Subgraph(graph, HARD_SWISH_GATE_REWRITE)
        shifted = new.node("Add", [y, new.const("shift", beta / alpha)], "shifted")
        gate = new.node("Clip", [shifted, new.const("low", 0.0), new.const("high", 1 / alpha)], "gate")
        if readers is not None:
            new.node("Mul", [y, gate], "product", output=output)
            for conv in readers:
                scale_weights(graph, conv, alpha)
        else:
            product = new.node("Mul", [y, gate], "product")
            new.node("Mul", [product, new.const("alpha", alpha)], "hard_swish", output=output)
        new.replace(replaced)
        gate_ranges[gate] = (0.0, 1 / alpha)
    return gate_ranges
