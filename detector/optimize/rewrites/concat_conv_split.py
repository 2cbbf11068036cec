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

from typing import Any, Optional

import numpy as np

from .affine_depthwise import CHANNEL_PRESERVING_OPS, channels_of
from .onnx_graph import Graph, Subgraph, attribute

CONCAT_CONV_SPLIT_REWRITE = "concat_conv_split"
# ops whose output has as many channels as their first input: activations and pools
SAME_CHANNEL_OPS = CHANNEL_PRESERVING_OPS | {"MaxPool", "AveragePool"}


def match(graph: Graph, concat: Any) -> Optional[tuple[Any, np.ndarray, list[int]]]:
    """(the Conv, its weight, each input's channel count) if concat feeds only a one-group, strided Conv
    with constant weights whose input channels the Concat's inputs add up to; else None."""
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
    counts = [channels_of(graph, name, SAME_CHANNEL_OPS) for name in concat.input]
    known = [count for count in counts if count]  # drops None and 0: then some input's channels are unknown
    if len(known) != len(counts) or sum(known) != weight.shape[1]:
        return None
    return conv, weight, known


def split_concat_convs(graph: Graph) -> int:
    """Split every strided convolution over a channel Concat into one per input, summed; returns how many."""
    count = 0
    for concat in [node for node in graph.graph.node if node.op_type == "Concat"]:
        found = match(graph, concat)
        if found is None:
            continue
        conv, weight, counts = found
        attrs = {attr.name: attribute(conv, attr.name) for attr in conv.attribute}
        new = Subgraph(graph, CONCAT_CONV_SPLIT_REWRITE)
        parts: list[str] = []
        start = 0
        for name, channels in zip(concat.input, counts):
            inputs = [name, new.const("weight", weight[:, start : start + channels])]
            if not parts and len(conv.input) > 2 and conv.input[2]:
                inputs.append(conv.input[2])  # the bias, once
            start += channels
            parts.append(new.node("Conv", inputs, "part", **attrs))
        total = parts[0]
        for number, part in enumerate(parts[1:], start=2):
            total = new.node("Add", [total, part], "sum", output=conv.output[0] if number == len(parts) else None)
        new.replace([concat, conv])
        count += 1
    return count
