"""The probability map interleaved before its sigmoid, channels last, for the int8 variant only.

db_head_depth_to_space ends a DB head with a convolution to k²·O channels, a Sigmoid and a
DepthToSpace(k). In a QDQ model the convolution is a channels-last QLinearConv and the Sigmoid stays
float (a uint8 map would move box scores by up to 1/255), so onnxruntime runs Transpose (uint8, back to
channels first) → DequantizeLinear → Sigmoid → DepthToSpace, the interleave on float. A sigmoid works
value by value, so it commutes with any data movement; and for the one-channel map of every DB head
(O = 1) the DepthToSpace orders DCR and CRD are the same: channel dy·k + dx becomes pixel (k·i + dy,
k·j + dx). On the channels-last map that interleave is one transpose of the two block axes:

    t [N, k², H, W] -> channels last [N, H, W, k²] -> [N, H, W, k, k] -> Transpose (0, 1, 3, 2, 4)
      -> [N, H, k, W, k] -> [N, 1, kH, kW] -> Sigmoid

The first Transpose cancels against the one onnxruntime puts after its channels-last convolution, the
rest moves uint8 values (the quantizer is told to quantize them, qdq_tidy moves them onto the uint8
tensor), and the float Sigmoid reads the interleaved map. The same values reach the same pixels: the
int8 maps are bit-identical. Measured on PP-OCRv6_tiny_det's map at 960x672 (onnxruntime 1.31, uint8
[1, 168, 240, 16] in, float map out, best of 40): 0.57 ms as Transpose, DequantizeLinear, Sigmoid and
DepthToSpace, 0.25 ms in this form. (Written with the block axes kept apart from a size-1 channel axis,
[N, H, W, k, k, 1], onnxruntime's transpose took 1.77 ms: hence one channel only.)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Optional

from .neck_upsample import SHAPE_OP_TYPES, TO_CHANNELS_LAST, ChannelsLastNodes
from .onnx_graph import Graph, Subgraph, attribute, rewritable_nodes

MAP_INTERLEAVE_REWRITE = "map_interleaved_channels_last"
# The operators the rewritten form moves the map with: the int8 rules that use it quantize these where it
# made them, and no others of their type.
MAP_INTERLEAVE_OP_TYPES = ("Transpose", "Reshape")
INTERLEAVE_SHAPE_OP_TYPES = (*SHAPE_OP_TYPES, "Div")  # the ones computing the last Reshape's int64 shape
RESHAPE_INPUT_OPSET = 5  # from here Reshape takes its shape as an input, as the rewritten form gives it
BLOCK_AXES_SWAPPED = [0, 1, 3, 2, 4]  # [N, H, W, dy, dx] -> [N, H, dy, W, dx]


@dataclass
class MapInterleaves(ChannelsLastNodes):
    """What rewrite_map_interleaves made: how many maps, and the nodes moving them and computing the last
    Reshape's shape."""

    maps: int = 0


def one_channel_interleave(graph: Graph, node: Any) -> Optional[tuple[Any, int]]:
    """(the Sigmoid, the block size) if node is a DepthToSpace of a Sigmoid (read by it alone) of a
    convolution with constant weights making block² channels: a one-channel map interleaved after its
    sigmoid; else None."""
    if node.op_type != "DepthToSpace":
        return None
    sigmoid = graph.source(node.input[0], "Sigmoid")
    if sigmoid is None or len(graph.consumers.get(sigmoid.output[0], [])) != 1 or sigmoid.output[0] in graph.outputs:
        return None
    conv = graph.source(sigmoid.input[0], "Conv")
    weights = None if conv is None else graph.constant(conv.input[1])
    block = int(attribute(node, "blocksize", 0))
    return (sigmoid, block) if weights is not None and block > 1 and weights.shape[0] == block * block else None


def rewrite_map_interleaves(model: Any, skip: Collection[str] = ()) -> MapInterleaves:
    """Rewrite (in place) every one-channel map's Sigmoid → DepthToSpace as the channels-last interleave
    followed by the Sigmoid (which keeps its name, so a rule that keeps it float still does), but the
    DepthToSpaces named in skip. A model before RESHAPE_INPUT_OPSET is left alone."""
    from onnx import helper

    made = MapInterleaves()
    for graph, node in rewritable_nodes(model, RESHAPE_INPUT_OPSET, set(skip)):
        found = one_channel_interleave(graph, node)
        if found is None:
            continue
        sigmoid, block = found
        logits = sigmoid.input[0]
        new = Subgraph(graph, MAP_INTERLEAVE_REWRITE)
        last = new.node("Transpose", [logits], "channels_last", perm=TO_CHANNELS_LAST)
        blocks = new.node("Reshape", [last, new.ints("block_axes", [0, 0, 0, block, block])], "blocks")
        moved = new.node("Transpose", [blocks], "blocks_in_place", perm=BLOCK_AXES_SWAPPED)
        scaled = new.node(
            "Mul", [new.node("Shape", [logits], "shape"), new.ints("factors", [1, 1, block, block])], "scaled"
        )
        size = new.node("Div", [scaled, new.ints("divisors", [1, block * block, 1, 1])], "map_shape")
        interleaved = new.node("Reshape", [moved, size], "interleaved")
        new.nodes.append(helper.make_node("Sigmoid", [interleaved], [node.output[0]], name=sigmoid.name))
        made.maps += 1
        made.record(new.nodes[:-1], INTERLEAVE_SHAPE_OP_TYPES)  # the float Sigmoid aside
        new.replace([sigmoid, node])
    return made
