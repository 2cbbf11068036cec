"""Convolution outputs padded with zero channels to onnxruntime's channel block.

onnxruntime's blocked (NCHWc) convolutions take an input whose channel count is a multiple of the
block (16 with AVX-512, 8 with AVX2), or fewer channels than one block. PPLCNetV3's detection
outputs (PP-OCRv4/v5 mobile) have 12, 18, 42 and 360 channels, PP-OCRv6's stem a 12-channel 2×2
convolution: the convolution reading each of them runs unblocked, with its input reordered out of
the blocked layout before and its output back into it after.

A convolution ``W * x + b`` given extra output channels with zero weight and zero bias makes those
channels exactly 0; a per-channel bias Add padded with zeros and a Relu keep them 0; a convolution
that reads them with zero weight adds 0 · 0 = 0 to every sum. So padding the producer's outputs to
a multiple of 16 (a multiple of 8 too) and its readers' input channels alike changes no value, and
lets onnxruntime keep the readers blocked. It fires only where every reader at the end of that
chain is a one-group convolution with constant weights, and nothing else sees the extra channels.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tools.export.rewrites.conv_affine import channel_constant
from tools.export.rewrites.onnx_graph import Graph, Subgraph, attribute

CHANNEL_PADDING_REWRITE = "conv_channels_padded_to_block"
CHANNEL_BLOCK = 16
MIN_CHANNELS = 8  # below one AVX2 block onnxruntime takes the input as plain NCHW anyway


def constant_weight(graph: Graph, node) -> Optional[np.ndarray]:
    """The weight of a one-group Conv with constant float32 weight (and bias, if any); None otherwise."""
    if node.op_type != "Conv" or len(node.input) < 2 or attribute(node, "group", 1) != 1:
        return None
    weight = graph.constant(node.input[1])
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32:
        return None
    if len(node.input) > 2 and node.input[2] and graph.constant(node.input[2]) is None:
        return None
    return weight


def padded(value: np.ndarray, axis: int, size: int) -> np.ndarray:
    """value with zeros appended along axis up to size."""
    widths = [(0, 0)] * value.ndim
    widths[axis] = (0, size - value.shape[axis])
    return np.pad(value.astype(np.float32), widths)


def pad_conv_channels(graph: Graph) -> int:
    """Pad every convolution output off the block (and its readers' inputs) where exact; returns how many."""
    count = 0
    for conv in [node for node in graph.graph.node if node.op_type == "Conv"]:
        weight = constant_weight(graph, conv)
        if weight is None:
            continue
        channels = weight.shape[0]
        target = -(-channels // CHANNEL_BLOCK) * CHANNEL_BLOCK
        if channels % CHANNEL_BLOCK == 0 or channels < MIN_CHANNELS:
            continue
        # follow single-reader bias Adds and Relus to the convolutions that read the channels
        tensor, biases = conv.output[0], []
        readers = graph.consumers.get(tensor, [])
        while len(readers) == 1 and tensor not in graph.outputs and readers[0].op_type in ("Add", "Relu"):
            node = readers[0]
            if node.op_type == "Add":
                if channel_constant(graph, node, tensor, channels) is None:
                    break
                biases.append((node, tensor))
            elif len(node.input) != 1:
                break
            tensor = node.output[0]
            readers = graph.consumers.get(tensor, [])
        if not readers or tensor in graph.outputs:
            continue
        reader_weights = [constant_weight(graph, reader) for reader in readers]
        if any(w is None or reader.input[0] != tensor or w.shape[1] != channels for reader, w in zip(readers, reader_weights)):
            continue
        new = Subgraph(graph, CHANNEL_PADDING_REWRITE)
        conv.input[1] = new.const("weight", padded(weight, 0, target))
        if len(conv.input) > 2 and conv.input[2]:
            conv.input[2] = new.const("bias", padded(graph.constant(conv.input[2]).reshape(channels), 0, target))
        for add, operand in biases:
            shift = channel_constant(graph, add, operand, channels)
            index = 1 if add.input[0] == operand else 0
            add.input[index] = new.const("shift", padded(shift.reshape(1, channels, 1, 1), 1, target))
        for reader, w in zip(readers, reader_weights):
            reader.input[1] = new.const("reader_weight", padded(w, 1, target))
        graph.graph.initializer.extend(new.initializers)
        graph.refresh()
        count += 1
    return count
