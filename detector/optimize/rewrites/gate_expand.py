"""Squeeze-excitation products with the gate expanded to the map's shape, for the int8 variant only.

A squeeze-excitation block scales a map by a per-channel gate, ``x · g`` with g of shape (N, C, 1, 1)
(a pooled gate, see se_residual.is_pooled). In a QDQ model onnxruntime runs the product as a QLinearMul
on its channels-last uint8 maps, x [N, H, W, C] by g [N, 1, 1, C], and its broadcast calls the kernel
once per pixel on C values: PP-OCRv6_tiny_det at 960x672 spent 4.5 ms of its 25 in QLinearMul, 1 ms for
one 64-channel product at stride 4 where an elementwise one of that size takes 0.3. With the gate first
expanded to the map's whole shape the product is one elementwise QLinearMul over the map:

    x [N, C, H, W] -> channels last [N, H, W, C]
    g [N, C, 1, 1] -> channels last [N, 1, 1, C] -> Expand to Shape(x channels last): [N, H, W, C]
    x · g -> [N, H, W, C] -> channels first

The Transposes cancel against the ones onnxruntime puts around its channels-last uint8 convolutions, the
Expand copies the gate's C values to every pixel (a uint8 copy the size of the map), and the same
products are computed: exact in float and in uint8. Measured against expanding the gate along one row
only ([N, 1, W, C], one kernel call per row, this rewrite's first form): a 64-channel product at
168x240, Expand and QLinearMul together 0.35 ms against 0.51. Not an fp32 speed rewrite (in float the
NCHWc layout has no use for it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Optional

from .neck_upsample import TO_CHANNELS_FIRST, TO_CHANNELS_LAST, ChannelsLastNodes
from .onnx_graph import Graph, Subgraph, rewritable_nodes
from .se_residual import is_pooled

GATE_EXPAND_REWRITE = "gated_product_expanded"
# The operators the rewritten form moves the map and the gate with: the int8 rules that use it quantize
# these where it made them, and no others of their type.
GATE_EXPAND_OP_TYPES = ("Transpose", "Expand")
EXPAND_OPSET = 8  # the first opset with Expand


@dataclass
class GateExpansions(ChannelsLastNodes):
    """What rewrite_gated_products made: how many products, and the nodes moving the map and the gate and
    computing the Expand's shape."""

    products: int = 0


def gated_operands(graph: Graph, node: Any) -> Optional[tuple[int, int]]:
    """(index of the map, index of the gate) if node is a Mul of a map by a pooled gate; else None."""
    if node.op_type != "Mul" or len(node.input) != 2 or node.input[0] == node.input[1]:
        return None
    for gate in (1, 0):
        map_name = node.input[1 - gate]
        if is_pooled(graph, node.input[gate]) and not is_pooled(graph, map_name) and graph.constant(map_name) is None:
            return 1 - gate, gate
    return None


def rewrite_gated_products(model: Any, skip: Collection[str] = ()) -> GateExpansions:
    """Rewrite (in place) every product of a map by a pooled gate as the channels-last product by the gate
    expanded to the map's shape, but the Muls named in skip. A model before EXPAND_OPSET is left alone."""
    made = GateExpansions()
    for graph, node in rewritable_nodes(model, EXPAND_OPSET, set(skip)):
        operands = gated_operands(graph, node)
        if operands is None:
            continue
        map_index, gate_index = operands
        new = Subgraph(graph, GATE_EXPAND_REWRITE)
        map_last = new.node("Transpose", [node.input[map_index]], "map_channels_last", perm=TO_CHANNELS_LAST)
        gate_last = new.node("Transpose", [node.input[gate_index]], "gate_channels_last", perm=TO_CHANNELS_LAST)
        shape = new.node("Shape", [map_last], "map_shape")
        expanded = new.node("Expand", [gate_last, shape], "gate_expanded")
        operands_last = [map_last, expanded] if map_index == 0 else [expanded, map_last]
        product = new.node("Mul", operands_last, "product_channels_last")
        new.node("Transpose", [product], "product", output=node.output[0], perm=TO_CHANNELS_FIRST)
        made.products += 1
        made.record([built for built in new.nodes if built.op_type != "Mul"], ("Shape",))  # the product aside
        new.replace([node])
    return made
