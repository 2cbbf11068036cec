"""A convolution over a channel Concat as one convolution per Concat input, summed.

``conv(concat(a, b), W) + bias = conv(a, W[:, :Ca]) + conv(b, W[:, Ca:]) + bias``: a convolution with
one group is a sum over its input channels, so it splits along them. onnxruntime then skips the
Concat's copy of every input into one map, and folds each sum into the next convolution of its
blocked layout (its NchwcConv takes the map to add), activation included. Equal in real arithmetic;
in float32 the channel sums are rounded in a different order (a few ulp).

PP-OCRv6's stem concatenates two 32-channel maps at half resolution (a MaxPool branch and a
convolution branch) for a 3×3 stride-2 convolution: the Concat wrote 64 channels at half resolution
to feed a convolution whose output has a quarter of the pixels. Split, PP-OCRv6_small_det's
``session.run`` took 0.95× the time on one and on two threads. Only such strided convolutions are split:
at stride 1 the Concat is small beside the convolution, and the narrower convolutions can lose more
than the copy costs (measured per model, see the README).
"""

from __future__ import annotations

from typing import Optional

from tools.export.rewrites.affine_depthwise import CHANNEL_PRESERVING_OPS
from tools.export.rewrites.onnx_graph import Graph, Subgraph, attribute

CONCAT_CONV_SPLIT_REWRITE = "concat_conv_split"
# ops whose output has as many channels as their first input
SAME_CHANNEL_OPS = CHANNEL_PRESERVING_OPS | {"MaxPool", "AveragePool"}


def channels_of(graph: Graph, tensor: str, depth: int = 0) -> Optional[int]:
    """Channel count of a 4-D map made by a constant-weight Conv or a channel Concat of such maps,
    through pools and activations; None where it cannot be read off the graph."""
    node = graph.producer.get(tensor)
    while node is not None and node.op_type in SAME_CHANNEL_OPS and len(node.output) == 1:
        node = graph.producer.get(node.input[0])
    if node is None or depth > 8:
        return None
    if node.op_type == "Concat" and attribute(node, "axis") == 1:
        counts = [channels_of(graph, name, depth + 1) for name in node.input]
        return None if any(count is None for count in counts) else sum(counts)  # type: ignore[misc]
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    weight = graph.constant(node.input[1])
    return int(weight.shape[0]) if weight is not None and weight.ndim == 4 else None


def match(graph: Graph, concat) -> Optional[tuple[object, list[int]]]:
    """(the Conv, each input's channel count) if concat feeds only a one-group, strided Conv with
    constant weights whose input channels the Concat's inputs add up to; else None."""
    if concat.op_type != "Concat" or attribute(concat, "axis") != 1 or len(concat.input) < 2:
        return None
    conv = graph.only_consumer(concat.output[0], "Conv")
    if conv is None or conv.input[0] != concat.output[0] or attribute(conv, "group", 1) != 1:
        return None
    if max(attribute(conv, "strides", [1, 1])) < 2:
        return None
    weight = graph.constant(conv.input[1])
    if weight is None or weight.ndim != 4:
        return None
    if len(conv.input) > 2 and conv.input[2] and graph.constant(conv.input[2]) is None:
        return None
    counts = [channels_of(graph, name) for name in concat.input]
    if any(count is None or count == 0 for count in counts) or sum(counts) != weight.shape[1]:  # type: ignore[misc]
        return None
    return conv, counts  # type: ignore[return-value]


def split_concat_convs(graph: Graph) -> int:
    """Split every strided convolution over a channel Concat into one per input, summed; returns how many."""
    count = 0
    for concat in [node for node in graph.graph.node if node.op_type == "Concat"]:
        found = match(graph, concat)
        if found is None:
            continue
        conv, counts = found
        weight = graph.constant(conv.input[1])
        assert weight is not None  # match checked it
        attrs = {attr.name: attribute(conv, attr.name) for attr in conv.attribute}
        new = Subgraph(graph, CONCAT_CONV_SPLIT_REWRITE)
        partial, start = "", 0
        for index, (name, channels) in enumerate(zip(concat.input, counts)):
            inputs = [name, new.const("weight", weight[:, start : start + channels])]
            if index == 0 and len(conv.input) > 2 and conv.input[2]:
                inputs.append(conv.input[2])  # the bias, once
            start += channels
            part = new.node("Conv", inputs, "part", **attrs)
            last = index == len(counts) - 1
            partial = (
                part
                if not partial
                else new.node("Add", [partial, part], "sum", output=conv.output[0] if last else None)
            )
        new.replace([concat, conv])
        count += 1
    return count
