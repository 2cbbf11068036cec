"""Squeeze-excitation products with the gate expanded along a row, for the int8 variant only.

A squeeze-excitation block scales a map by a per-channel gate, ``x · g`` with g of shape (N, C, 1, 1)
(a pooled gate, see se_residual.is_pooled). In a QDQ model onnxruntime runs the product as a QLinearMul
on its channels-last uint8 maps, x [N, H, W, C] by g [N, 1, 1, C], and its broadcast calls the kernel
once per pixel on C values: PP-OCRv6_tiny_det at 960x672 spent 4.5 ms of its 25 in QLinearMul, 1 ms for
one 64-channel product at stride 4 where an elementwise one of that size takes 0.3. With the gate first
expanded along the width, to [N, 1, W, C] (W·C values), the broadcast is one call per row:

    x [N, C, H, W] -> channels last [N, H, W, C]
    g [N, C, 1, 1] -> channels last [N, 1, 1, C] -> Expand to the map's (W, C): [N, 1, W, C]
    x · g -> [N, H, W, C] -> channels first

The Transposes cancel against the ones onnxruntime puts around its channels-last uint8 convolutions,
the Expand copies W·C gate values (the shape comes from a Shape and a Slice of the map's, int64), and
the same products are computed: exact in float and in uint8. Not an fp32 speed rewrite (in float the
NCHWc layout has no use for it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Optional

from .neck_upsample import TO_CHANNELS_FIRST, TO_CHANNELS_LAST
from .onnx_graph import Graph, Subgraph, default_opset
from .se_residual import is_pooled

GATE_ROWS_REWRITE = "gated_product_as_rows"
# The operators the rewritten form moves the map and the gate with: the int8 rules that use it quantize
# these where it made them, and no others of their type.
GATE_ROWS_OP_TYPES = ("Transpose", "Expand")
SLICE_INPUTS_OPSET = 10  # from here Slice takes starts and ends as inputs, as the rewritten form gives them


@dataclass
class GateRowRewrites:
    """What rewrite_gated_products made: how many products, the nodes moving the map and the gate (the
    quantizer must quantize them) and the ones computing the Expand's int64 shape (to leave alone)."""

    products: int = 0
    moving: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)


def gated_operands(graph: Graph, node: Any) -> Optional[tuple[int, int]]:
    """(index of the map, index of the gate) if node is a Mul of a map by a pooled gate; else None."""
    if node.op_type != "Mul" or len(node.input) != 2 or node.input[0] == node.input[1]:
        return None
    for gate in (1, 0):
        map_name = node.input[1 - gate]
        if is_pooled(graph, node.input[gate]) and not is_pooled(graph, map_name) and graph.constant(map_name) is None:
            return 1 - gate, gate
    return None


def rewrite_gated_products(model: Any, skip: Collection[str] = ()) -> GateRowRewrites:
    """Rewrite (in place) every product of a map by a pooled gate as the channels-last product by the gate
    expanded along the width, but the Muls named in skip. A model before SLICE_INPUTS_OPSET is left alone."""
    made = GateRowRewrites()
    if default_opset(model) < SLICE_INPUTS_OPSET:
        return made
    graph = Graph(model)
    skip = set(skip)
    for node in list(graph.graph.node):
        operands = None if node.name in skip else gated_operands(graph, node)
        if operands is None:
            continue
        map_index, gate_index = operands
        new = Subgraph(graph, GATE_ROWS_REWRITE)
        map_last = new.node("Transpose", [node.input[map_index]], "map_channels_last", perm=TO_CHANNELS_LAST)
        gate_last = new.node("Transpose", [node.input[gate_index]], "gate_channels_last", perm=TO_CHANNELS_LAST)
        shape = new.node("Shape", [map_last], "map_shape")
        row = new.node("Slice", [shape, new.ints("width_from", [2]), new.ints("width_to", [4])], "row_shape")
        rows = new.node("Expand", [gate_last, row], "gate_row")
        operands_last = [map_last, rows] if map_index == 0 else [rows, map_last]
        product = new.node("Mul", operands_last, "product_channels_last")
        new.node("Transpose", [product], "product", output=node.output[0], perm=TO_CHANNELS_FIRST)
        made.products += 1
        for built in new.nodes:
            if built.op_type in ("Shape", "Slice"):
                made.shapes.append(built.name)
            elif built.op_type in GATE_ROWS_OP_TYPES:
                made.moving.append(built.name)
        new.replace([node])
    return made
