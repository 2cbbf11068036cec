"""Convolution outputs padded with zero channels to onnxruntime's channel block.

onnxruntime's blocked (NCHWc) kernels want channel counts that are a multiple of the block (16 with
AVX-512, 8 with AVX2). PPLCNetV3's detection outputs (PP-OCRv4/v5 mobile) have 12, 18, 42 and 360
channels, PP-OCRv6's stem 24- and 12-channel convolutions whose maps a MaxPool and a Concat read at
half resolution: each of those runs unblocked, with the maps reordered out of the blocked layout
before and back into it after.

A convolution ``W * x + b`` given extra output channels with zero weight and zero bias makes those
channels exactly 0. Relu, a per-channel bias Add padded with zeros and MaxPool keep them 0 (the max
of zeros); Concat places them between the real ones; a convolution that reads them with zero weight
adds 0 · 0 = 0 to every sum. So padding the producers' outputs to a multiple of the block, and giving
every convolution that reads them zero weights at the padded positions, changes no value and lets
onnxruntime keep those maps blocked. Anything else reading a padded map (a graph output, a pool that
averages, a reshape, a depthwise convolution) leaves its producers unpadded.

The block is the CPU's, and the file is made once for the CPUs it will run on: the export pads to the
block of the CPU it runs on (detector/cpu_features.py: this_cpu_block), or to the one it is told; a file
loaded on a CPU with another block says so (cpu_features.made_for_another_cpu).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ...cpu_features import CHANNEL_BLOCK, CHANNEL_BLOCKS
from .affine_depthwise import channels_of
from .conv_affine import channel_constant
from .onnx_graph import Graph, Subgraph, attribute

CHANNEL_PADDING_REWRITE = "conv_channels_padded_to_block"
MIN_CHANNELS = 8  # below one AVX2 block onnxruntime takes the input as plain NCHW anyway
ZERO_KEEPING_OPS = frozenset({"Relu", "MaxPool"})  # f(0) = 0 channel by channel


def constant_weight(graph: Graph, node: Any) -> Optional[np.ndarray]:
    """The weight of a one-group Conv with constant float32 weight (and bias, if any); None otherwise."""
    if node.op_type != "Conv" or len(node.input) < 2 or attribute(node, "group", 1) != 1:
        return None
    weight = graph.constant(node.input[1])
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32:
        return None
    if len(node.input) > 2 and node.input[2] and graph.constant(node.input[2]) is None:
        return None
    return weight


def block_size(channels: int, block: int = CHANNEL_BLOCK) -> int:
    return -(-channels // block) * block


class Layout:
    """Where each real channel of a padded map sits (positions), its padded width, and the producers behind it."""

    def __init__(self, positions: np.ndarray, width: int, producers: frozenset):
        self.positions, self.width, self.producers = positions, width, producers


def propagate(graph: Graph, producers: dict, block: int) -> tuple[dict, set]:
    """Layouts of the maps the padded producers (by id) reach, and the ids of producers some reader cannot take."""
    layouts: dict[str, Layout] = {}
    for key, conv in producers.items():
        weight = constant_weight(graph, conv)
        assert weight is not None  # pad_conv_channels takes as producers only convs with a constant weight
        channels = weight.shape[0]
        layouts[conv.output[0]] = Layout(np.arange(channels), block_size(channels, block), frozenset([key]))
    failed: set = set()
    for node in graph.graph.node:  # topological order
        mapped = [name for name in node.input if name in layouts]
        if not mapped:
            continue
        layout = layouts[mapped[0]]
        sources = frozenset().union(*(layouts[name].producers for name in mapped))
        if node.op_type == "Conv" and constant_weight(graph, node) is not None and mapped == [node.input[0]]:
            continue  # a reader: its weight gets zero columns
        keeps_zeros = node.op_type in ZERO_KEEPING_OPS and len(node.output) == 1
        adds_bias = (
            node.op_type == "Add" and channel_constant(graph, node, mapped[0], len(layout.positions)) is not None
        )
        if len(mapped) == 1 and (keeps_zeros or adds_bias):
            layouts[node.output[0]] = layout
        elif node.op_type == "Concat" and attribute(node, "axis") == 1:
            positions, width = [], 0
            for name in node.input:
                part = layouts.get(name)
                if part is None:
                    channels = channels_of(graph, name)
                    if channels is None:
                        failed |= sources
                        break
                    part = Layout(np.arange(channels), channels, frozenset())
                positions.append(part.positions + width)
                width += part.width
            else:
                layouts[node.output[0]] = Layout(np.concatenate(positions), width, sources)
        else:
            failed |= sources
    for name in graph.outputs:
        if name in layouts:
            failed |= layouts[name].producers
    return layouts, failed


def pad_conv_channels(graph: Graph, block: int = CHANNEL_BLOCK) -> int:
    """Pad every convolution output off the block (and its readers' inputs) where exact; returns how many."""
    if block not in CHANNEL_BLOCKS:
        raise ValueError(f"channel block {block}: onnxruntime's blocks are {CHANNEL_BLOCKS}")
    producers = {}
    for conv in graph.graph.node:
        weight = constant_weight(graph, conv) if conv.op_type == "Conv" else None
        if weight is not None and weight.shape[0] % block and weight.shape[0] >= MIN_CHANNELS:
            producers[id(conv)] = conv
    layouts: dict = {}
    while producers:
        layouts, failed = propagate(graph, producers, block)
        if not failed:
            break
        producers = {key: conv for key, conv in producers.items() if key not in failed}
    if not producers:
        return 0
    new = Subgraph(graph, CHANNEL_PADDING_REWRITE)
    for node in graph.graph.node:
        if node.op_type == "Conv" and (id(node) in producers or node.input[0] in layouts):
            weight = constant_weight(graph, node)
            assert weight is not None  # producers have one, and propagate fails any reader that has none
            layout = layouts.get(node.input[0])
            if layout is not None:  # a reader: zero weight for the padded input channels
                wider = np.zeros((weight.shape[0], layout.width, *weight.shape[2:]), np.float32)
                wider[:, layout.positions] = weight
                weight = wider
            if id(node) in producers:  # a producer: zero weight and bias for the padded output channels
                channels = weight.shape[0]
                weight = np.pad(weight, [(0, block_size(channels, block) - channels), (0, 0), (0, 0), (0, 0)])
                if len(node.input) > 2 and node.input[2]:
                    constant_bias = graph.constant(node.input[2])
                    assert constant_bias is not None  # constant_weight accepted the conv only with a constant bias
                    bias = constant_bias.reshape(channels).astype(np.float32)
                    node.input[2] = new.const("bias", np.pad(bias, (0, block_size(channels, block) - channels)))
            node.input[1] = new.const("weight", weight)
        elif node.op_type == "Add" and node.output[0] in layouts:
            operand = next(name for name in node.input if name in layouts)
            layout = layouts[operand]
            shift = np.zeros((1, layout.width, 1, 1), np.float32)
            shift[0, layout.positions, 0, 0] = channel_constant(graph, node, operand, len(layout.positions))
            node.input[1 if node.input[0] == operand else 0] = new.const("shift", shift)
    graph.graph.initializer.extend(new.initializers)
    # the shapes recorded for the widened maps are wrong now: leave them to onnxruntime's inference
    stale = [info for info in graph.graph.value_info if info.name in layouts]
    for info in stale:
        graph.graph.value_info.remove(info)
    graph.refresh()
    return len(producers)
