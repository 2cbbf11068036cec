"""GELU as a sigmoid-gated product whose steps have uint8 kernels, for the int8 variant only.

``GELU(x) = x · Φ(x)``, Φ the standard normal distribution function: in the exported PP-OCRv6 graphs
``x · (1 + erf(x / √2)) · 0.5``. onnxruntime has no int8 kernel for Erf or Gelu, so in a QDQ model each
GELU runs in float between a DequantizeLinear and a QuantizeLinear, and every convolution around it
converts its map twice: PP-OCRv6_small_det's int8 variant was no faster than fp32 (README, "Precision
variants"). With the logistic approximation ``Φ(x) ≈ sigmoid(SIGMOID_SLOPE · x)`` every step has one:
the sigmoid is a QLinearSigmoid (a 256-entry table), the product a QLinearMul. Written as

    u · sigmoid(u) / k,   u = k · x,   k = SIGMOID_SLOPE

k moves into the weights and bias of the convolution that computes x, 1/k into the weights of the
convolutions that read the GELU (linear, as in hard_swish_gate); where either is not a convolution with
weights of its own, a Mul by k (before) or by 1/k (after) does it.

Not exact: ``max |GELU(x) - x · sigmoid(1.702 x)| = 0.0203`` (at x ≈ -2.27), the size of one uint8 step of a
map spanning ±2.6. Hence not one of the fp32 speed rewrites; the int8 variant that uses it is scored
against fp32 like any other (README).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Optional

import numpy as np

from .hard_swish_gate import scalable_readers, scale_weights
from .onnx_graph import Graph, Subgraph, as_text, attribute, scale_initializer

GELU_SIGMOID_REWRITE = "gelu_as_sigmoid_product"
SIGMOID_SLOPE = 1.702  # Φ(x) ≈ sigmoid(1.702 x), the logistic fit of GELU's own paper


def scalar_input(graph: Graph, node: Any, value: float) -> Optional[str]:
    """The other input of a two-input node whose one input is the constant scalar value (float32), else None."""
    if len(node.input) != 2:
        return None
    for index in (0, 1):
        constant = graph.constant(node.input[index])
        if constant is not None and constant.size == 1 and np.isclose(float(constant.ravel()[0]), value, rtol=1e-6):
            return node.input[1 - index]
    return None


def match_erf(graph: Graph, erf: Any) -> Optional[tuple[str, list]]:
    """(x, the nodes computing GELU(x)) if erf is the Erf of ``x · (1 + erf(x / √2)) · 0.5`` (x/√2 as a Div
    or a Mul by 1/√2; the halving before or after the product by x), its steps read by nothing else; else None."""
    scaled = graph.producer.get(erf.input[0])
    if scaled is None or len(graph.consumers.get(scaled.output[0], [])) != 1:
        return None
    x = None
    if scaled.op_type == "Div":  # x / √2, not √2 / x
        x = scaled.input[0] if scalar_input(graph, scaled, np.sqrt(2.0)) == scaled.input[0] else None
    elif scaled.op_type == "Mul":
        x = scalar_input(graph, scaled, 1 / np.sqrt(2.0))
    if x is None:
        return None
    plus_one = graph.only_consumer(erf.output[0], "Add")
    if plus_one is None or scalar_input(graph, plus_one, 1.0) != erf.output[0]:
        return None
    first = graph.only_consumer(plus_one.output[0], "Mul")
    second = graph.only_consumer(first.output[0], "Mul") if first is not None else None
    if first is None or second is None:
        return None
    by_x_first = x in first.input and scalar_input(graph, second, 0.5) == first.output[0]
    halved_first = scalar_input(graph, first, 0.5) == plus_one.output[0] and x in second.input
    if not (by_x_first or halved_first):
        return None
    return x, [scaled, erf, plus_one, first, second]


def match(graph: Graph, node: Any) -> Optional[tuple[str, list]]:
    """(x, the nodes computing GELU(x)) if node is an exact GELU: the Erf of the decomposed form, or an ONNX
    Gelu (opset 20) without the tanh approximation; else None."""
    if node.op_type == "Gelu" and node.domain in ("", "ai.onnx"):
        return (node.input[0], [node]) if as_text(attribute(node, "approximate", "none")) == "none" else None
    return match_erf(graph, node) if node.op_type == "Erf" else None


def scalable_producer(graph: Graph, x: str, replaced: list) -> Optional[Any]:
    """The convolution computing x, if only the GELU's nodes read x and its weight and bias are
    initializers no other node reads; else None."""
    conv = graph.source(x, "Conv")
    if conv is None or x in graph.outputs or len(conv.output) != 1:
        return None
    if any(reader not in replaced for reader in graph.consumers.get(x, [])):
        return None
    constants = [name for name in conv.input[1:] if name]
    if not constants or any(name not in graph.initializers for name in constants):
        return None
    if any(len(graph.consumers.get(name, [])) != 1 for name in constants):
        return None
    return conv


def rewrite_gelus_as_sigmoid_products(model: Any, skip: Collection[str] = ()) -> int:
    """Rewrite every GELU in model (in place) as the sigmoid-gated product, but those with a node named in
    skip (they stay float and exact); returns how many."""
    graph = Graph(model)
    skip = set(skip)
    count = 0
    # a snapshot: the steps after an Erf that its match removes are visited later, but only Erf and Gelu match
    for node in list(graph.graph.node):
        found = match(graph, node)
        if found is None:
            continue
        x, replaced = found
        if any(step.name and step.name in skip for step in replaced):
            continue
        output = replaced[-1].output[0]
        producer = scalable_producer(graph, x, replaced)
        readers = scalable_readers(graph, output)
        new = Subgraph(graph, GELU_SIGMOID_REWRITE)
        if producer is not None:
            for name in producer.input[1:]:
                if name:
                    scale_initializer(graph, name, SIGMOID_SLOPE)
            u = x
        else:
            u = new.node("Mul", [x, new.const("slope", SIGMOID_SLOPE)], "scaled")
        gate = new.node("Sigmoid", [u], "gate")
        if readers is not None:
            new.node("Mul", [u, gate], "product", output=output)
            for conv in readers:
                scale_weights(graph, conv, 1 / SIGMOID_SLOPE)
        else:
            product = new.node("Mul", [u, gate], "product")
            new.node("Mul", [product, new.const("unscale", 1 / SIGMOID_SLOPE)], "gelu", output=output)
        new.replace(replaced)
        count += 1
    return count
