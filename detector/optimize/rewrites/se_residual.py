"""The residual squeeze-and-excitation ``x + x · g`` as one multiplication ``x · (1 + g)``.

The RSE layers of the RSEFPN neck (PP-OCRv4/v5 mobile, PP-OCRv6) end with ``y = x + x · g``, where the
gate ``g = hardsigmoid(conv(relu(conv(GlobalAveragePool(x)))))`` has shape (N, C, 1, 1). onnxruntime
runs a Mul by a broadcast gate outside its blocked layout, so x is reordered out of the blocked
convolution, multiplied (one pass over the map) and added to itself (a second pass). ``1 + g`` is a
tensor of N·C values, so ``y = x · (1 + g)`` makes the map in one pass. Equal in real arithmetic; in
float32 the sum is rounded at a different step (within a few ulp of the unrewritten map).

The gate is recognised by its shape: it is made from a GlobalAveragePool (or a ReduceMean over H and
W that keeps them) through 1×1 convolutions and elementwise activations only, so it is (N, C, 1, 1).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .onnx_graph import Graph, Subgraph, attribute

SE_RESIDUAL_REWRITE = "se_residual_as_one_mul"
# ops that keep a (N, C, 1, 1) tensor (N, C', 1, 1): elementwise activations and 1×1 convolutions
GATE_OPS = frozenset({"Relu", "HardSigmoid", "Sigmoid", "HardSwish", "Clip", "Conv", "Add", "Mul"})


def is_pooled(graph: Graph, name: str, depth: int = 0) -> bool:
    """Whether tensor name is (N, C, 1, 1): pooled over H and W, then only 1×1 convs and elementwise ops
    with constant operands of at most that shape."""
    node = graph.producer.get(name)
    if node is None or depth > 16:
        return False
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type == "ReduceMean":
        axes = attribute(node, "axes")
        if axes is None and len(node.input) > 1:
            value = graph.constant(node.input[1])
            axes = None if value is None else value.tolist()
        return axes is not None and sorted(axes) in ([2, 3], [-2, -1]) and attribute(node, "keepdims", 1) == 1
    if node.op_type not in GATE_OPS:
        return False
    if node.op_type == "Conv":
        weight = graph.constant(node.input[1]) if len(node.input) > 1 else None
        if weight is None or weight.ndim != 4 or weight.shape[2:] != (1, 1):
            return False
        strides = list(attribute(node, "strides", [1, 1]))
        if list(attribute(node, "pads", [0, 0, 0, 0])) != [0, 0, 0, 0] or strides != [1, 1]:
            return False
        return is_pooled(graph, node.input[0], depth + 1)
    tensors = []
    for operand in node.input:
        if operand == "":
            continue
        value = graph.constant(operand)
        if value is None:
            tensors.append(operand)
        elif (
            value.ndim > 4 or (value.ndim >= 2 and value.shape[-2:] != (1, 1)) or (value.ndim == 1 and value.size != 1)
        ):
            return False  # a constant that would widen H or W
    return bool(tensors) and all(is_pooled(graph, operand, depth + 1) for operand in tensors)


def match(graph: Graph, add: Any) -> Optional[tuple[str, str, Any]]:
    """(x, g, the Mul) if add computes x + x · g with g pooled; else None."""
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    for index in (0, 1):
        x, product = add.input[index], add.input[1 - index]
        mul = graph.source(product, "Mul")
        if mul is None or len(mul.input) != 2 or x not in mul.input or mul.input[0] == mul.input[1]:
            continue
        if len(graph.consumers.get(product, [])) != 1 or product in graph.outputs:
            continue
        gate = mul.input[1] if mul.input[0] == x else mul.input[0]
        if is_pooled(graph, gate) and not is_pooled(graph, x):
            return x, gate, mul
    return None


def rewrite_se_residuals(graph: Graph) -> int:
    """Rewrite every x + x · g with a pooled gate g as x · (1 + g); returns how many."""
    count = 0
    for add in [node for node in graph.graph.node if node.op_type == "Add"]:
        found = match(graph, add)
        if found is None:
            continue
        x, gate, mul = found
        new = Subgraph(graph, SE_RESIDUAL_REWRITE)
        one_plus = new.node("Add", [gate, new.const("one", np.float32(1.0))], "one_plus_gate")
        new.node("Mul", [x, one_plus], "scaled", output=add.output[0])
        new.replace([mul, add])
        count += 1
    return count
