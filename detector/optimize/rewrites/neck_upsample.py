"""The DB neck's nearest upsamples as channels-last expansions, for the int8 variant only.

The DB necks upsample maps by whole factors with nearest-neighbour Resizes in two places: the top-down
path adds each map to the next stage's map upsampled twice, ``y + Resize(x, [1, 1, 2, 2])``, and the
head's input concatenates the four stages upsampled 1, 2, 4 and 8 times. In a QDQ model onnxruntime runs
such a Resize in uint8 through a general kernel that reads an index per element (PP-OCRv4_mobile_det at
960x672: 2.6 ms for the stride-4 one, ten times a QLinearAdd of the same size), or in float between a
DequantizeLinear and a QuantizeLinear. A nearest upsample by k only repeats each pixel k x k times, so
in channels-last order (where onnxruntime keeps its uint8 maps anyway) it is an Expand over two new
axes, which copies whole channel vectors:

    x [N, C, H, W] -> channels last, [N, H, 1, W, 1, C] -> Expand to [N, H, k, W, k, C]
                   -> reshaped to [N, kH, kW, C]
    sum:    y channels last + the upsampled x (an elementwise QLinearAdd)
    concat: the parts channels last, upsampled where they were, concatenated over channels (axis 3)
    -> channels first

Every step is a data movement, a QLinearAdd or a QLinearConcat, and the Transposes cancel against the ones
onnxruntime puts around its channels-last uint8 convolutions. The same values are added or copied: exact
in float; in uint8 the moved tensors keep their input's range. The sum's first form added y as
[N, H, k, W, k, C] to x as [N, H, 1, W, 1, C] by broadcasting, with no copy; onnxruntime's broadcast
then calls its kernel once per pixel on C values (PP-OCRv6_tiny_det's stride-4 sum at 960x672: 1.05 ms,
against 0.33 ms for the Expand and the elementwise QLinearAdd). Not fp32 speed rewrites: in float
(NCHWc) a broadcast over inner axes is several times slower than the Resize it replaces.

The Add keeps its broadcasting: a term that broadcasts against the upsampled map in the original (a
pooled [N, C, 1, 1]) broadcasts the same way channels last.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil, floor
from typing import Any, Optional

from .onnx_graph import Graph, Subgraph, as_text, attribute, rewritable_nodes

UPSAMPLE_SUM_REWRITE = "upsampled_sum_as_expand"
UPSAMPLE_CONCAT_REWRITE = "upsampled_concat_as_expand"
# The operators the rewritten forms consist of (besides Add and Concat): the int8 rules that use them
# quantize these where the rewrites made them, and no others of their type.
UPSAMPLE_OP_TYPES = ("Transpose", "Unsqueeze", "Reshape", "Expand", "Concat")
SHAPE_OP_TYPES = ("Shape", "Mul")  # the ones computing a Reshape's int64 shape
TO_CHANNELS_LAST, TO_CHANNELS_FIRST = [0, 2, 3, 1], [0, 3, 1, 2]
AXES_INPUT_OPSET = 13  # from here Unsqueeze takes its axes as an input, as the rewritten form writes them
# onnxruntime's defaults when the attributes are absent
DEFAULT_TRANSFORM, DEFAULT_NEAREST = "half_pixel", "round_prefer_floor"


def source_pixel(index: int, factor: int, transform: str, nearest: str) -> Optional[int]:
    """The input pixel ONNX Resize's nearest mode reads for output pixel index at a whole scale factor
    (before clamping to the image), or None for a coordinate transformation that depends on the sizes."""
    position = {
        "asymmetric": Fraction(index, factor),
        "half_pixel": Fraction(2 * index + 1, 2 * factor) - Fraction(1, 2),
        "pytorch_half_pixel": Fraction(2 * index + 1, 2 * factor) - Fraction(1, 2),
        "tf_half_pixel_for_nn": Fraction(2 * index + 1, 2 * factor),
    }.get(transform)
    if position is None:
        return None
    tie = position - floor(position) == Fraction(1, 2)
    return {
        "floor": floor(position),
        "ceil": ceil(position),
        "round_prefer_floor": floor(position) if tie else floor(position + Fraction(1, 2)),
        "round_prefer_ceil": ceil(position) if tie else floor(position + Fraction(1, 2)),
    }.get(nearest)


def repeats_pixels(transform: str, nearest: str, factor: int) -> bool:
    """Whether output pixel i reads input pixel i // factor (each pixel repeated factor times). The
    position grows by exactly one pixel every factor outputs, so one period decides; an unclamped -1 at
    its start would read one pixel too few in every later period."""
    return all(source_pixel(index, factor, transform, nearest) == 0 for index in range(factor))


def upsample_factor(graph: Graph, name: str) -> Optional[tuple[Any, int]]:
    """(the Resize, its factor) if name is made by a nearest upsample of height and width by one whole
    factor that repeats each pixel, read by nothing else; else None."""
    resize = graph.source(name, "Resize")
    if resize is None or len(graph.consumers.get(name, [])) != 1 or name in graph.outputs:
        return None
    if as_text(attribute(resize, "mode", "nearest")) != "nearest":
        return None
    if len(resize.input) < 3 or (len(resize.input) > 3 and resize.input[3]):
        return None
    scales = graph.constant(resize.input[2])
    if scales is None or scales.size != 4:
        return None
    batch, channels, height, width = scales.ravel().tolist()
    factor = int(height)
    if batch != 1 or channels != 1 or height != width or factor != height or factor < 2:
        return None
    transform = as_text(attribute(resize, "coordinate_transformation_mode", DEFAULT_TRANSFORM))
    nearest = as_text(attribute(resize, "nearest_mode", DEFAULT_NEAREST))
    return (resize, factor) if repeats_pixels(transform, nearest, factor) else None


@dataclass
class ChannelsLastNodes:
    """The nodes an int8-only channels-last form built, by what the quantizer must do with them: those
    that move (or add, multiply, concatenate) the maps, to quantize, and those computing int64 shapes for
    a Reshape or an Expand, to leave alone."""

    moving: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)

    def record(self, nodes: list, shape_op_types: tuple[str, ...]) -> None:
        """File built nodes: those of shape_op_types under shapes, the others under moving."""
        for built in nodes:
            (self.shapes if built.op_type in shape_op_types else self.moving).append(built.name)

    def extend(self, other: ChannelsLastNodes) -> None:
        self.moving += other.moving
        self.shapes += other.shapes


@dataclass
class UpsampleRewrites(ChannelsLastNodes):
    """What rewrite_neck_upsamples made: how many sums and concatenations, and their nodes."""

    sums: int = 0
    concats: int = 0


def phases(new: Subgraph, small_last: str) -> str:
    """A channels-last [N, H, W, C] as [N, H, 1, W, 1, C]."""
    return new.node("Unsqueeze", [small_last, new.ints("phase_axes", [2, 4])], "phases")


def scaled_shape(new: Subgraph, name: str, factors: list[int]) -> str:
    """The shape of name times factors (int64)."""
    return new.node("Mul", [new.node("Shape", [name], "shape"), new.ints("factors", factors)], "scaled_shape")


def upsampled_channels_last(new: Subgraph, small_last: str, factor: int) -> str:
    """A channels-last [N, H, W, C] upsampled by factor: expanded to [N, H, k, W, k, C] (whole channel
    vectors copied), reshaped to [N, kH, kW, C]."""
    repeated = new.ints("repeats", [1, 1, factor, 1, factor, 1])
    expanded = new.node("Expand", [phases(new, small_last), repeated], "expanded")
    size = scaled_shape(new, small_last, [1, factor, factor, 1])
    return new.node("Reshape", [expanded, size], "upsampled")


def channels_last(new: Subgraph, name: str) -> str:
    return new.node("Transpose", [name], "channels_last", perm=TO_CHANNELS_LAST)


def is_channel_concat(node: Any) -> bool:
    return node.op_type == "Concat" and int(attribute(node, "axis", 0)) in (1, -3)


def rewrite_neck_upsamples(
    model: Any, skip: Collection[str] = (), sums: bool = True, concats: bool = True
) -> UpsampleRewrites:
    """Rewrite (in place) every Add of a map and a nearest upsample as the channels-last sum of the map and
    the expanded one (sums) and every channel Concat of rank-4 maps some of which are nearest upsamples as
    the channels-last concatenation of expanded maps (concats), but those whose nodes are named in skip. A
    model of an opset before AXES_INPUT_OPSET is left alone."""
    made = UpsampleRewrites()
    skip = set(skip)
    for graph, node in rewritable_nodes(model, AXES_INPUT_OPSET, skip):
        if sums and node.op_type == "Add" and len(node.input) == 2 and expanded_sum(graph, node, skip, made):
            made.sums += 1
        elif concats and is_channel_concat(node) and expanded_concat(graph, node, skip, made):
            made.concats += 1
    return made


def expanded_sum(graph: Graph, node: Any, skip: set, made: UpsampleRewrites) -> bool:
    for index in (0, 1):
        found = upsample_factor(graph, node.input[index])
        if found is not None and found[0].name not in skip:
            break
    else:
        return False
    resize, factor = found
    new = Subgraph(graph, UPSAMPLE_SUM_REWRITE)
    upsampled = upsampled_channels_last(new, channels_last(new, resize.input[0]), factor)
    terms = [upsampled, channels_last(new, node.input[1 - index])]
    total = new.node("Add", terms[:: 1 if index == 0 else -1], "sum_channels_last")
    new.node("Transpose", [total], "sum", output=node.output[0], perm=TO_CHANNELS_FIRST)
    made.record(new.nodes, SHAPE_OP_TYPES)
    new.replace([node, resize], at=node)  # the Resize may come before the other term's producer
    return True


def expanded_concat(graph: Graph, node: Any, skip: set, made: UpsampleRewrites) -> bool:
    upsampled = [upsample_factor(graph, name) for name in node.input]
    if not any(found is not None and found[0].name not in skip for found in upsampled):
        return False
    if any(found is not None and found[0].name in skip for found in upsampled):
        return False
    new = Subgraph(graph, UPSAMPLE_CONCAT_REWRITE)
    parts = []
    for name, found in zip(node.input, upsampled):
        if found is None:
            parts.append(channels_last(new, name))
            continue
        resize, factor = found
        parts.append(upsampled_channels_last(new, channels_last(new, resize.input[0]), factor))
    joined = new.node("Concat", parts, "concat_channels_last", axis=3)
    new.node("Transpose", [joined], "concat", output=node.output[0], perm=TO_CHANNELS_FIRST)
    made.record(new.nodes, SHAPE_OP_TYPES)
    new.replace([node, *(found[0] for found in upsampled if found is not None)], at=node)
    return True
