"""Wide 1×1 convolutions on large maps computed as 1-D convolutions, out of onnxruntime's blocked layout.

onnxruntime's blocked (NCHWc) pointwise kernel walks a thread's whole share of the map for each group
of four channel blocks of outputs (32 channels where AVX2 blocks by 8) and each 128 input channels:
on a large map that is the whole input streamed from memory again and again. PP-OCRv4_server_det's
backbone and neck hold 1×1 convolutions with 512 to 1920 input channels at 1/4 to 1/16 of the input;
in the blocked kernel they ran at 22–31 GMAC/s on an AVX2-only CPU (AMD EPYC Zen 3), where its 3×3
convolutions ran at 55–75.

A Conv over a 3-D map is not blocked: ``Reshape (N, C, H, W) → (N, C, H·W)``, a 1-D convolution with
kernel 1 (the same weight, the batch normalization after it folded in, and the Relu after that
fused), ``Reshape`` back. onnxruntime runs it as one matrix product per image (its GEMM, cache-blocked)
with bias and activation applied as it goes; the maps leave and re-enter the blocked layout around it.
The same sums in another order: maps within about 1e-6 relative.

It pays only where the product is large against the reorders. One such convolution between two 3×3
convolutions, blocked and as 1-D, on the AMD EPYC Zen 3 (2 threads, best of 9, ratio of the three
convolutions' time): 896→256 at 168×240 0.72, 1216→512 at 84×120 0.62 (at 42×60 0.84), 1920→768 at
42×60 0.75, 512→256 at 84×120 0.80, 768→256 at 42×60 0.96; but 2112→1024 at 21×30 1.13, 768→384 at
21×30 1.12, 384→192 at 42×60 1.08, 256→256 at 168×240 0.92, 96→48 at 168×240 1.11. Hence the rule: at
least MIN_INPUT_CHANNELS input channels, on a map at most MAX_DOWNSAMPLING times smaller than the
network input (for the usual 960-pixel side). Where onnxruntime blocks by 16 (AVX-512: AMD EPYC with
VNNI, the same shapes between two depthwise 3×3, best of 15) it loses: 1216→512 at 42×60 1.06, 1920→768
at 42×60 1.14, 512→256 at 84×120 1.68, 896→256 at 168×240 1.05, 1216→512 at 84×120 1.15. So
rewrite_for_speed applies this one only for CPUs that block by 8, like the channel padding.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .channel_padding import constant_weight
from .onnx_graph import GLOBAL, Graph, Subgraph, as_text, attribute, batch_norm_affine, downsampling, spatial_strides

POINTWISE_UNBLOCKED_REWRITE = "wide_pointwise_conv_unblocked"
MIN_INPUT_CHANNELS = 512
MAX_DOWNSAMPLING = 16


def folded_batch_norm(graph: Graph, conv: Any, weight: np.ndarray, bias: np.ndarray) -> Optional[tuple]:
    """The BatchNormalization that alone reads conv's output, and the (weight, bias) with it folded in."""
    norm = graph.only_consumer(conv.output[0], "BatchNormalization")
    affine = batch_norm_affine(graph, norm, weight.shape[0]) if norm is not None else None
    if affine is None:
        return None
    scale, shift = affine
    return norm, weight * scale[:, None], bias * scale + shift


def unblock_wide_pointwises(graph: Graph) -> int:
    """Rewrite every wide 1×1 convolution on a large map as a 1-D one (see the module); returns how many."""
    factors = downsampling(graph)
    count = 0
    for conv in list(graph.graph.node):
        weight = constant_weight(graph, conv) if conv.op_type == "Conv" else None
        if weight is None or weight.shape[2:] != (1, 1) or weight.shape[1] < MIN_INPUT_CHANNELS:
            continue
        if spatial_strides(conv) != 1 or any(attribute(conv, "pads") or [0]):
            continue
        if as_text(attribute(conv, "auto_pad", "NOTSET")) != "NOTSET":
            continue
        factor = factors.get(conv.input[0])
        if factor is None or factor == GLOBAL or factor > MAX_DOWNSAMPLING:
            continue
        outputs, inputs = weight.shape[:2]
        matrix = weight.reshape(outputs, inputs).astype(np.float64)
        has_bias = len(conv.input) > 2 and conv.input[2]
        constant_bias = graph.constant(conv.input[2]) if has_bias else None
        bias = np.zeros(outputs) if constant_bias is None else constant_bias.reshape(outputs).astype(np.float64)
        replaced, output = [conv], conv.output[0]
        folded = folded_batch_norm(graph, conv, matrix, bias)
        if folded is not None:
            norm, matrix, bias = folded
            replaced.append(norm)
            output = norm.output[0]
        relu = graph.only_consumer(output, "Relu")  # None where output is a graph output
        new = Subgraph(graph, POINTWISE_UNBLOCKED_REWRITE)
        source = conv.input[0]
        rows = new.node("Reshape", [source, new.ints("rows", [0, inputs, -1])], "rows")
        product = new.node(
            "Conv",
            [rows, new.const("weight", matrix.reshape(outputs, inputs, 1)), new.const("bias", bias)],
            "conv",
            kernel_shape=[1],
        )
        if relu is not None:
            replaced.append(relu)
            output = relu.output[0]
            product = new.node("Relu", [product], "relu")
        shape = new.node("Shape", [source], "shape")
        batch = new.node("Slice", [shape, new.ints("batch_start", [0]), new.ints("batch_end", [1])], "batch")
        size = new.node("Slice", [shape, new.ints("size_start", [2]), new.ints("size_end", [4])], "size")
        target = new.node("Concat", [batch, new.ints("channels", [outputs]), size], "target", axis=0)
        new.node("Reshape", [product, target], "map", output=output)
        new.replace(replaced)
        count += 1
    return count
