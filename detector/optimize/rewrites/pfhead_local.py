"""PFHeadLocal at half resolution (``pfhead_local_half_resolution``), one of the exact rewrites
rewrite_for_speed applies (the list and their order: rewrites/__init__.py). Like each of them it
recognises one pattern in the converted graph, replaces it by an algebraically equal subgraph, and
leaves the graph untouched when anything about the pattern differs; the export verifies the result.

PFHeadLocal at half resolution (the head of PP-OCRv4_server_det). It ends at full image resolution:

    f = relu(bn(conv_transpose(x)))                 64 channels at 1/2 resolution
    s = sigmoid(conv_transpose(f, 64→1, 2×2, stride 2))                  shrink map, full resolution
    u = resize_nearest_2x(f)                                                  64 channels, full
    t = sigmoid(conv1x1(relu(bn(conv3x3(concat(s, u))))))                                  full
    y = k · (s + t)

Every full-resolution tensor there is a function of f, one 2×2 phase at a time: pixel (2i+a, 2j+b)
of u is f[i, j], of s is a 1×1 convolution of f[i, j] with the transposed kernel's tap (a, b), and a
3×3 tap lands on half-resolution row i-1, i or i+1 depending on a. So each output phase (a, b) is a
2×2 convolution of concat(f, the four shrink phases) at half resolution, and DepthToSpace
interleaves the four phase maps into the full-resolution output. The same products summed in
another order (maps differ by ~1e-7), 0.55× the multiply-adds of the 3×3 at full resolution, and no
65-channel full-resolution tensor (65 channels are off onnxruntime's blocked NCHWc kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

# the AVX-512 block whatever the CPU: padding these few channels to 8 instead measured no different on AVX2
from ...cpu_features import CHANNEL_BLOCK
from .onnx_graph import (
    Graph,
    Subgraph,
    as_text,
    attribute,
    batch_norm_affine,
    channel_bias,
    is_plain_conv,
    self_contained,
)

PFHEAD_LOCAL_REWRITE = "pfhead_local_half_resolution"


@dataclass
class PFHeadLocalMatch:
    """The pieces of one PFHeadLocal tail, as float64 arrays; names of its input f and output y."""

    features: str  # f: (N, C, h, w), the half-resolution features
    output: str  # y: (N, 1, 2h, 2w)
    shrink_kernel: np.ndarray  # (C, 1, 2, 2) transposed-conv kernel
    shrink_bias: float
    local_kernel: np.ndarray  # (M, 1 + C, 3, 3): input channel 0 is the shrink map, 1.. are u
    local_bias: np.ndarray  # (M,) after folding the batch norm
    final_kernel: np.ndarray  # (1, M, 1, 1)
    final_bias: float
    scale: float  # k
    replaced: list  # nodes that go
    shape_readers: list  # Shape nodes that read s + t, to read y instead


def match_pfhead_local(graph: Graph, concat: Any) -> Optional[PFHeadLocalMatch]:
    """A PFHeadLocal tail around this Concat, or None if any detail differs from the pattern."""
    if concat.op_type != "Concat" or attribute(concat, "axis") != 1 or len(concat.input) != 2:
        return None
    shrink_sigmoid = graph.source(concat.input[0], "Sigmoid")
    resize = graph.source(concat.input[1], "Resize")
    if shrink_sigmoid is None or resize is None:
        return None
    if (
        as_text(attribute(resize, "mode", b"nearest")) != "nearest"
        or as_text(attribute(resize, "coordinate_transformation_mode", b"half_pixel")) != "asymmetric"
        or as_text(attribute(resize, "nearest_mode", b"round_prefer_floor")) != "floor"
        or len(resize.input) != 3
    ):
        return None
    scales = graph.constant(resize.input[2])
    if scales is None or list(scales) != [1.0, 1.0, 2.0, 2.0]:
        return None
    features = resize.input[0]
    # s = sigmoid(conv_transpose(f) + b)
    shrink_add = graph.source(shrink_sigmoid.input[0], "Add")
    if shrink_add is None:
        return None
    transposed = graph.source(shrink_add.input[0], "ConvTranspose") or graph.source(
        shrink_add.input[1], "ConvTranspose"
    )
    if transposed is None or len(transposed.input) != 2 or transposed.input[0] != features:
        return None
    shrink_kernel = graph.constant(transposed.input[1])
    if (
        shrink_kernel is None
        or shrink_kernel.ndim != 4
        or shrink_kernel.shape[1:] != (1, 2, 2)
        or list(attribute(transposed, "strides", [])) != [2, 2]
        or list(attribute(transposed, "pads", [0, 0, 0, 0])) != [0, 0, 0, 0]
        or attribute(transposed, "group", 1) != 1
        or list(attribute(transposed, "dilations", [1, 1])) != [1, 1]
        or attribute(transposed, "output_padding")
        or attribute(transposed, "output_shape")
    ):
        return None
    channels = shrink_kernel.shape[0]
    shrink_bias = channel_bias(graph, shrink_add, 1)
    if shrink_bias is None or shrink_bias[1] != transposed.output[0]:
        return None
    # t = sigmoid(conv1x1(relu(bn(conv3x3(concat(s, u))))) + b)
    local = graph.only_consumer(concat.output[0], "Conv")
    if local is None or len(local.input) != 2 or not is_plain_conv(local, 3, 1):
        return None
    local_kernel = graph.constant(local.input[1])
    if local_kernel is None or local_kernel.shape[1] != 1 + channels:
        return None
    middle = local_kernel.shape[0]
    norm = graph.only_consumer(local.output[0], "BatchNormalization")
    norm_affine = batch_norm_affine(graph, norm, middle) if norm is not None else None
    if norm is None or norm_affine is None:
        return None
    relu = graph.only_consumer(norm.output[0], "Relu")
    final = relu and graph.only_consumer(relu.output[0], "Conv")
    if final is None or len(final.input) != 2 or not is_plain_conv(final, 1, 0):
        return None
    final_kernel = graph.constant(final.input[1])
    final_add = graph.only_consumer(final.output[0], "Add")
    if final_kernel is None or final_kernel.shape != (1, middle, 1, 1) or final_add is None:
        return None
    final_bias = channel_bias(graph, final_add, 1)
    final_sigmoid = graph.only_consumer(final_add.output[0], "Sigmoid")
    if final_bias is None or final_bias[1] != final.output[0] or final_sigmoid is None:
        return None
    # y = k · (s + t)
    total = graph.only_consumer(final_sigmoid.output[0], "Add")
    if total is None or set(total.input) - {final_sigmoid.output[0]} != {shrink_sigmoid.output[0]}:
        return None
    # paddle2onnx reshapes y to Shape(s + t), a no-op: Shape readers may stay, pointed at y.
    readers = graph.consumers.get(total.output[0], [])
    scaled = [node for node in readers if node.op_type == "Mul"]
    shape_readers = [node for node in readers if node.op_type == "Shape"]
    if len(scaled) != 1:
        return None
    scaled = scaled[0]
    scale = channel_bias(graph, scaled, 1)
    replaced = [
        shrink_sigmoid,
        shrink_add,
        transposed,
        resize,
        concat,
        local,
        norm,
        relu,
        final,
        final_add,
        final_sigmoid,
        total,
        scaled,
    ]
    if (
        scale is None
        or scale[1] != total.output[0]
        or not self_contained(graph, replaced, exit_name=scaled.output[0], shape_readers=shape_readers)
    ):
        return None
    bn_scale, bn_shift = norm_affine
    return PFHeadLocalMatch(
        features=features,
        output=scaled.output[0],
        shrink_kernel=shrink_kernel.astype(np.float64),
        shrink_bias=float(shrink_bias[0][0]),
        local_kernel=local_kernel.astype(np.float64) * bn_scale[:, None, None, None],
        local_bias=bn_shift,
        final_kernel=final_kernel.astype(np.float64),
        final_bias=float(final_bias[0][0]),
        scale=float(scale[0][0]),
        replaced=replaced,
        shape_readers=shape_readers,
    )


def half_row(phase: int, tap: int) -> int:
    """Half-resolution row offset (-1, 0, 1) of full-resolution row 2i + phase + tap (tap in -1, 0, 1)."""
    return (phase + tap) // 2


def phase_kernels(match: PFHeadLocalMatch, shrink_channels: int) -> list[np.ndarray]:
    """For output phases (0,0), (0,1), (1,0), (1,1): the 2×2 kernel over concat(f, shrink phases).

    Kernel row 0 is half-resolution offset -1 for phase 0 and 0 for phase 1 (the pads differ to match).
    """
    middle, channels = match.local_kernel.shape[0], match.shrink_kernel.shape[0]
    kernels = []
    for a in (0, 1):
        for b in (0, 1):
            kernel = np.zeros((middle, channels + shrink_channels, 2, 2))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    row, col = half_row(a, dy) + 1 - a, half_row(b, dx) + 1 - b
                    tap = match.local_kernel[:, :, dy + 1, dx + 1]
                    kernel[:, :channels, row, col] += tap[:, 1:]
                    shrink_phase = ((a + dy) % 2) * 2 + (b + dx) % 2
                    kernel[:, channels + shrink_phase, row, col] += tap[:, 0]
            kernels.append(kernel)
    return kernels


def rewrite_pfhead_local(graph: Graph, match: PFHeadLocalMatch) -> None:
    """Replace the matched tail by its half-resolution form (see the module docstring)."""
    channels, middle = match.shrink_kernel.shape[0], match.local_kernel.shape[0]
    shrink_channels = CHANNEL_BLOCK  # phases 0..3 are real; the rest have zero weight downstream
    new = Subgraph(graph, PFHEAD_LOCAL_REWRITE)
    f = match.features
    # The four shrink phases (a*2 + b takes tap (a, b)), padded with zero channels to a block.
    shrink_weight = np.zeros((shrink_channels, channels, 1, 1))
    shrink_weight[:4, :, 0, 0] = match.shrink_kernel[:, 0].reshape(channels, 4).T
    shrink_bias = np.zeros(shrink_channels)
    shrink_bias[:4] = match.shrink_bias
    shrink = new.node(
        "Sigmoid",
        [
            new.node(
                "Conv",
                [f, new.const("shrink_w", shrink_weight), new.const("shrink_b", shrink_bias)],
                "shrink_conv",
                kernel_shape=[1, 1],
            )
        ],
        "shrink",
    )
    stacked = new.node("Concat", [f, shrink], "features_and_shrink", axis=1)
    # The 1×1 convolution to one channel, per phase, padded to a channel block so onnxruntime keeps
    # the phase features in its blocked layout instead of reordering 4 × M channels at half resolution.
    final_weight = np.zeros((CHANNEL_BLOCK, middle, 1, 1))
    final_weight[0] = match.final_kernel[0]
    final_w, final_b = (
        new.const("final_w", final_weight),
        new.const("final_b", np.full(CHANNEL_BLOCK, match.final_bias)),
    )
    first_channel = [new.ints("start", [0]), new.ints("end", [1]), new.ints("axis", [1])]
    logits = []
    for index, kernel in enumerate(phase_kernels(match, shrink_channels)):
        a, b = divmod(index, 2)
        pads = [1 - a, 1 - b, a, b]  # top, left, bottom, right: phase 0 reaches back a row, phase 1 ahead
        hidden = new.node(
            "Relu",
            [
                new.node(
                    "Conv",
                    [stacked, new.const("local_w", kernel), new.const("local_b", match.local_bias)],
                    "local_conv",
                    kernel_shape=[2, 2],
                    pads=pads,
                )
            ],
            "local_relu",
        )
        padded = new.node("Conv", [hidden, final_w, final_b], "final_conv", kernel_shape=[1, 1])
        logits.append(new.node("Slice", [padded, *first_channel], "final_logit"))
    local_map = new.node("Sigmoid", [new.node("Concat", logits, "final_logits", axis=1)], "local_map")
    shrink_map = new.node(
        "Slice", [shrink, new.ints("starts", [0]), new.ints("ends", [4]), new.ints("axes", [1])], "shrink_map"
    )
    summed = new.node(
        "Mul", [new.node("Add", [shrink_map, local_map], "sum"), new.const("scale", np.float32(match.scale))], "scaled"
    )
    # DCR: channel a*2 + b becomes pixel (2i + a, 2j + b)
    new.node("DepthToSpace", [summed], "interleave", output=match.output, blocksize=2, mode="DCR")
    for reader in match.shape_readers:
        reader.input[0] = match.output
    new.replace(match.replaced)


def rewrite_pfhead_locals(graph: Graph) -> int:
    """Rewrite every PFHeadLocal tail in the graph; returns how many were rewritten."""
    count = 0
    for concat in [node for node in graph.graph.node if node.op_type == "Concat"]:
        match = match_pfhead_local(graph, concat)
        if match is not None:
            rewrite_pfhead_local(graph, match)
            count += 1
    return count
