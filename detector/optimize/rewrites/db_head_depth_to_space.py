"""The DB head's two stride-2 transposed convolutions as 1×1 convolutions at quarter resolution.

Every DB head (PP-OCRv4/v5 mobile, PP-OCRv6 small/tiny) ends with

    u = relu(bn(conv_transpose(x, C→M, 2×2, stride 2) + b1))        M channels at 1/2 resolution
    y = sigmoid(conv_transpose(u, M→O, 2×2, stride 2) + b2)         O (= 1) channels, full resolution

(the batch norm, the relu, the sigmoid and either bias may be absent). onnxruntime has no blocked
(NCHWc) kernel for ConvTranspose: each one pays a layout reorder out of and back into the blocked
convolutions around it, and the half-resolution M-channel map in between is written twice.

A transposed convolution whose kernel equals its stride (2×2, stride 2, no padding, group 1) gives
every output pixel (2i + a, 2j + b) exactly one tap: the 1×1 product of x[:, i, j] with W[:, :, a, b].
So the first one is a 1×1 convolution C → 4·M (channel (2a + b)·M + m holds sub-position (a, b) of
channel m), with the batch norm folded into its weight and bias per m and the relu fused after it. The
second one maps each of those sub-positions' M channels through its own 2×2 taps: output pixel
(4i + 2a + a', 4j + 2b + b') is the 1×1 product of sub-position (a, b)'s M channels with W2[:, :, a', b'].
One 1×1 convolution 4·M → 16·O gives all sixteen at quarter resolution (its weight is zero outside
each sub-position's block, and 0 · x adds exactly nothing), the sigmoid runs there, and one
DepthToSpace(blocksize 4, DCR: channel (dy·4 + dx)·O + o becomes pixel (4i + dy, 4j + dx) of channel o,
dy = 2a + a', dx = 2b + b') writes the full-resolution map. The same products summed in another order
(maps within ~1e-6); every convolution stays in onnxruntime's blocked layout and only the final map
leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .conv_affine import channel_constant
from .onnx_graph import Graph, Subgraph, as_text, attribute, batch_norm_affine

DB_HEAD_REWRITE = "db_head_depth_to_space"


@dataclass
class Stage:
    """One stride-2 transposed convolution and what follows it, folded: 1×1 taps, per-channel scale/shift."""

    transposed: Any
    kernel: np.ndarray  # (C_in, C_out, 2, 2), float64
    scale: np.ndarray  # (C_out,): the batch norm's scale (1 without one)
    shift: np.ndarray  # (C_out,): bias and batch norm folded
    nodes: list  # the nodes this stage replaces, transposed conv first
    output: str  # the tensor its last node makes
    activation: Optional[str]  # "Relu" or "Sigmoid" after it, or None


def is_kernel_equals_stride_2(graph: Graph, node: Optional[Any]) -> Optional[np.ndarray]:
    """The (C_in, C_out, 2, 2) kernel of a 2×2 stride-2 ConvTranspose with no padding, group 1; else None."""
    if node is None or node.op_type != "ConvTranspose" or len(node.input) < 2:
        return None
    kernel = graph.constant(node.input[1])
    if (
        kernel is None
        or kernel.dtype != np.float32
        or kernel.ndim != 4
        or kernel.shape[2:] != (2, 2)
        or list(attribute(node, "kernel_shape", [2, 2])) != [2, 2]
        or list(attribute(node, "strides", [1, 1])) != [2, 2]
        or list(attribute(node, "pads", [0, 0, 0, 0])) != [0, 0, 0, 0]
        or list(attribute(node, "dilations", [1, 1])) != [1, 1]
        or list(attribute(node, "output_padding", [0, 0])) != [0, 0]
        or attribute(node, "output_shape") is not None
        or attribute(node, "group", 1) != 1
        or as_text(attribute(node, "auto_pad", b"NOTSET")) != "NOTSET"
    ):
        return None
    return kernel


def next_reader(graph: Graph, name: str) -> Optional[Any]:
    """The single node reading name (None if several read it, or it is a graph output)."""
    readers = graph.consumers.get(name, [])
    return readers[0] if len(readers) == 1 and name not in graph.outputs else None


def match_stage(graph: Graph, transposed: Optional[Any], activations: tuple[str, ...]) -> Optional[Stage]:
    """transposed [→ Add bias] [→ BatchNormalization] [→ one of activations], folded; None if no match."""
    kernel = is_kernel_equals_stride_2(graph, transposed)
    if kernel is None or transposed is None:  # a kernel implies a node; the None test only narrows the type
        return None
    channels = kernel.shape[1]
    scale, shift = np.ones(channels), np.zeros(channels)
    if len(transposed.input) > 2 and transposed.input[2]:
        bias = graph.constant(transposed.input[2])
        if bias is None or bias.size != channels:
            return None
        shift = shift + bias.reshape(channels).astype(np.float64)
    nodes, current = [transposed], transposed.output[0]
    node = next_reader(graph, current)
    if node is not None and node.op_type == "Add":
        value = channel_constant(graph, node, current, channels)
        if value is not None:
            shift = shift + value
            nodes.append(node)
            current = node.output[0]
            node = next_reader(graph, current)
    affine = batch_norm_affine(graph, node, channels) if node is not None else None
    if node is not None and affine is not None:
        factor, offset = affine
        scale, shift = scale * factor, shift * factor + offset
        nodes.append(node)
        current = node.output[0]
        node = next_reader(graph, current)
    activation = None
    if node is not None and node.op_type in activations and len(node.input) == 1:
        activation = node.op_type
        nodes.append(node)
        current = node.output[0]
    return Stage(transposed, kernel.astype(np.float64), scale, shift, nodes, current, activation)


def rewrite_db_head(graph: Graph, first: Stage, second: Stage) -> None:
    """Replace both stages by conv 1×1 (C → 4M) [relu] → conv 1×1 (4M → 16·O) [sigmoid] → DepthToSpace(4)."""
    c_in, middle = first.kernel.shape[:2]
    out = second.kernel.shape[1]
    # first: channel (2a + b)·M + m ← W1[:, m, a, b] · scale[m]
    weight1 = np.zeros((4 * middle, c_in))
    bias1 = np.zeros(4 * middle)
    # second: channel ((2a + a')·4 + 2b + b')·O + o ← sub-position (a, b)'s M channels through W2[:, o, a', b']
    weight2 = np.zeros((16 * out, 4 * middle))
    bias2 = np.zeros(16 * out)
    for a in (0, 1):
        for b in (0, 1):
            block = slice((2 * a + b) * middle, (2 * a + b + 1) * middle)
            weight1[block] = (first.kernel[:, :, a, b] * first.scale[None, :]).T
            bias1[block] = first.shift
            for a2 in (0, 1):
                for b2 in (0, 1):
                    position = (2 * a + a2) * 4 + 2 * b + b2
                    rows = slice(position * out, (position + 1) * out)
                    weight2[rows, block] = (second.kernel[:, :, a2, b2] * second.scale[None, :]).T
                    bias2[rows] = second.shift
    new = Subgraph(graph, DB_HEAD_REWRITE)
    hidden = new.node(
        "Conv",
        [first.transposed.input[0], new.const("w1", weight1[:, :, None, None]), new.const("b1", bias1)],
        "conv1",
        kernel_shape=[1, 1],
    )
    if first.activation:
        hidden = new.node(first.activation, [hidden], "act1")
    phases = new.node(
        "Conv",
        [hidden, new.const("w2", weight2[:, :, None, None]), new.const("b2", bias2)],
        "conv2",
        kernel_shape=[1, 1],
    )
    if second.activation:
        phases = new.node(second.activation, [phases], "act2")
    new.node("DepthToSpace", [phases], "interleave", output=second.output, blocksize=4, mode="DCR")
    new.replace(first.nodes + second.nodes)


def rewrite_db_heads(graph: Graph) -> int:
    """Rewrite every pair of chained 2×2 stride-2 transposed convolutions; returns how many pairs."""
    count = 0
    for transposed in [node for node in graph.graph.node if node.op_type == "ConvTranspose"]:
        if transposed not in graph.graph.node:
            continue  # replaced as the second of an earlier pair
        first = match_stage(graph, transposed, ("Relu",))
        if first is None:
            continue
        second = match_stage(graph, next_reader(graph, first.output), ("Sigmoid",))
        if second is None or second.kernel.shape[0] != first.kernel.shape[1]:
            continue
        rewrite_db_head(graph, first, second)
        count += 1
    return count
