"""The int8 variant's rules: what one int8 model quantizes and what it leaves float (INT8_RULES), found on the
graph (convolution strides from one probe run, the stem, the squeeze-excitation gates, the head, the map's
sigmoid); quantize.py makes a variant by one of them, int8_choice.py tries each for AUTO_RULE."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Optional

import numpy as np

from detector.optimize.rewrites.gate_expand import GATE_EXPAND_OP_TYPES, GATE_EXPAND_REWRITE
from detector.optimize.rewrites.gelu_sigmoid import GELU_SIGMOID_REWRITE
from detector.optimize.rewrites.hard_swish_gate import HARD_SWISH_GATE_REWRITE
from detector.optimize.rewrites.map_interleave import MAP_INTERLEAVE_OP_TYPES, MAP_INTERLEAVE_REWRITE
from detector.optimize.rewrites.mean_pool import MEAN_POOL_REWRITE
from detector.optimize.rewrites.neck_upsample import UPSAMPLE_CONCAT_REWRITE, UPSAMPLE_OP_TYPES, UPSAMPLE_SUM_REWRITE
from detector.optimize.rewrites.onnx_graph import attribute

# Operators quantized: convolutions, and the Relu / Clip / MaxPool after them. Those three only clamp or
# pick values, so they share the quantization parameters of their input: onnxruntime then drops the
# Relu into the QLinearConv before it instead of running Dequantize -> Quantize between two QLinearConvs
# (PP-OCRv4_server_det, every convolution int8: session.run 0.52 -> 0.48x fp32).
INT8_OP_TYPES = ("Conv", "ConvTranspose", "Relu", "Clip", "MaxPool")
# The "stem" rule quantizes the Add / Mul between the convolutions too (the hard-swish products, the
# squeeze-excitation products and the neck's sums): past the stem the network then runs in uint8.
ELEMENTWISE_OP_TYPES = ("Add", "Mul")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
EARLY_STRIDE = 32
STEM_STRIDE = 8  # "stem": the nodes before the first convolution at this stride stay float
INPUT_STRIDE = 4  # "input": the nodes before the first convolution reading a map at this stride stay float
# "input" quantizes these too: the sigmoid of GELU's rewritten form (a QLinearSigmoid, a table of 256
# entries) and the squeeze-excitation pools (QLinearGlobalAveragePool).
GATE_OP_TYPES = ("Sigmoid", "GlobalAveragePool")
# The data movements of the channels-last forms (neck upsamples, expanded gates, the map's interleave):
# quantized where those rewrites made them, no others (a Transpose elsewhere stays as it was).
MOVEMENT_OP_TYPES = tuple(dict.fromkeys(UPSAMPLE_OP_TYPES + GATE_EXPAND_OP_TYPES + MAP_INTERLEAVE_OP_TYPES))
LAYOUT_OP_TYPES = ("DepthToSpace", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze")
PROBE_SIDE = 128  # the image side convolution_strides runs on; a 1x1 output means a pooled gate


def convolution_strides(model, side: Optional[int] = None) -> dict[str, int]:
    """Each convolution's output stride (input side / output side), from one run on a small image."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    convs = [node for node in probe.graph.node if node.op_type in ("Conv", "ConvTranspose")]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(node.output[0]) for node in convs)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    side = side or PROBE_SIDE
    outputs = session.run(None, {probe.graph.input[0].name: np.zeros((1, 3, side, side), np.float32)})
    return {node.name: max(1, side // output.shape[-1]) for node, output in zip(convs, outputs)}


def squeeze_excitation_convs(model, strides: Optional[dict[str, int]] = None) -> list[str]:
    """Convolutions on globally pooled tensors (1x1 output), the squeeze-excitation gates: no time to
    save there, only error to add (the gate multiplies every pixel of its block)."""
    strides = strides or convolution_strides(model)
    return [name for name, stride in strides.items() if stride >= PROBE_SIDE]


def head_nodes(model) -> list[str]:
    """The DB head: every node after the neck's last Concat (convolutions at 1/4 and full resolution)."""
    nodes = list(model.graph.node)
    last_concat = max((i for i, node in enumerate(nodes) if node.op_type == "Concat"), default=None)
    return [node.name for node in nodes[last_concat + 1 :] if node.name] if last_concat is not None else []


def early_convs(model, strides: Optional[dict[str, int]] = None, below_stride: Optional[int] = None) -> list[str]:
    """The backbone's convolutions before the first one at ``below_stride`` (default EARLY_STRIDE: the
    stem and the stride-2 to stride-16 stages), gates on pooled tensors aside."""
    below_stride = below_stride or EARLY_STRIDE
    names = []
    for name, stride in (strides or convolution_strides(model)).items():
        if stride >= PROBE_SIDE:
            continue
        if stride >= below_stride:
            break
        names.append(name)
    return names


def default_float_nodes(model) -> list[str]:
    """Nodes int8 leaves in float (measured, see the README): the backbone up to its stride-16 stage,
    the squeeze-excitation gates, and the head (the probability map, whose small steps move box edges)."""
    strides = convolution_strides(model)
    return list(
        dict.fromkeys(early_convs(model, strides) + squeeze_excitation_convs(model, strides) + head_nodes(model))
    )


def nodes_before(model, names: Collection[str]) -> list[str]:
    """Every node (any operator) before the first of names in graph order."""
    before = []
    for node in model.graph.node:
        if node.name in names:
            break
        if node.name:
            before.append(node.name)
    return before


def stem_nodes(model, below_stride: Optional[int] = None) -> list[str]:
    """Every node before the first convolution at ``below_stride`` (STEM_STRIDE), and the
    squeeze-excitation gates."""
    strides = convolution_strides(model)
    below_stride = below_stride or STEM_STRIDE
    first = [name for name, stride in strides.items() if below_stride <= stride < PROBE_SIDE][:1]
    return list(dict.fromkeys(nodes_before(model, first) + squeeze_excitation_convs(model, strides)))


@dataclass(frozen=True)
class Int8Rule:
    """How one int8 variant is made: what stays float, which operators are quantized, how activation
    ranges are calibrated, and which activations are first rewritten into forms onnxruntime has uint8
    kernels for (the rewrites' names: hard-swish, GELU, spatial means; see uint8_forms)."""

    float_nodes: Callable[[object], list[str]]
    op_types: tuple[str, ...]
    method: str
    uint8_forms: tuple[str, ...]
    summary: str


def input_nodes(model) -> list[str]:
    """The "input" rule's float nodes: every node before the first convolution that reads a map at
    INPUT_STRIDE (so the convolutions that bring the image down to it stay float too: the float / uint8
    boundary falls on the smaller stride-4 map, not on the stride-2 ones), the squeeze-excitation gates,
    and the Sigmoid that makes the probability map (a uint8 map would move box scores by up to 1/255)."""
    strides = convolution_strides(model)
    own = {node.name: conv_stride(node) for node in model.graph.node if node.name in strides}
    reading = [name for name, stride in strides.items() if stride < PROBE_SIDE and stride // own[name] == INPUT_STRIDE]
    gates = squeeze_excitation_convs(model, strides)
    return list(dict.fromkeys(nodes_before(model, reading[:1]) + gates + map_sigmoids(model)))


def conv_stride(node) -> int:
    """A convolution's own stride (the larger of height's and width's; 1 for a ConvTranspose)."""
    return max(1, *attribute(node, "strides", [1])) if node.op_type == "Conv" else 1


def map_sigmoids(model) -> list[str]:
    """The Sigmoids whose output becomes a graph output through layout operators only (the head's
    DepthToSpace, a Reshape): the ones that make the probability map."""
    producers = {name: node for node in model.graph.node for name in node.output}
    found = []
    for output in model.graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type in LAYOUT_OP_TYPES:
            node = producers.get(node.input[0])
        if node is not None and node.op_type == "Sigmoid" and node.name:
            found.append(node.name)
    return found


# Measured on the rendered 80-image set (seed 2026), README "Precision variants". "stem" is the fast one
# where the network is convolutions, Relu and hard-swish (PP-OCRv4_mobile_det: end to end 0.68-0.70x fp32,
# Hmean +0.002 to +0.006 with 16 or 32 calibration images). Quantizing the stem too cost 0.007-0.020 Hmean
# depending on the calibration images (the activations there have the widest ranges), the squeeze-
# excitation gates only add error (1x1 tensors: nothing to save). Where GELU stays float (PP-OCRv6) "stem"
# loses 0.009-0.015 Hmean and is slower than "early", which keeps them within 0.006; "input" rewrites GELU
# as a uint8 sigmoid product and runs PP-OCRv6_small_det's network in uint8 from its stride-4 stage on.
# "head": the rebuilt server network's fastest (0.48x fp32; Hmean -0.013 to -0.017 on PP-OCRv4_mobile_det).
# "stem" and "input" also run the neck's upsamples in uint8 (neck_upsample.py, exact): with them "input"
# became auto's choice for PP-OCRv4_mobile_det too (validation Hmean +0.0007, end to end 0.655x fp32
# against stem's +0.0052, 0.686x). "input" floating the convolutions that reach stride 4 as well (the
# uint8 boundary on the stride-4 map instead of the stride-2 ones): faster on PP-OCRv4_mobile_det and
# PP-OCRv6_tiny_det (0.63x / 0.75x end to end on the validation images, were 0.655x / 0.80x) and more
# accurate on PP-OCRv6_small_det (Hmean -0.0000 against -0.0042 there, as fast). Both also write the
# squeeze-excitation products with the gate expanded (gate_expand.py, exact; first by gate rows): "input"
# end to end 0.587x / 0.561x / 0.726x fp32 on the validation images (PP-OCRv4_mobile_det /
# PP-OCRv6_small_det / tiny), were 0.633x / 0.581x / 0.754x.
INT8_RULES = {
    "stem": Int8Rule(
        stem_nodes,
        INT8_OP_TYPES + ELEMENTWISE_OP_TYPES,
        "percentile",
        (
            HARD_SWISH_GATE_REWRITE,
            UPSAMPLE_SUM_REWRITE,
            UPSAMPLE_CONCAT_REWRITE,
            GATE_EXPAND_REWRITE,
            MAP_INTERLEAVE_REWRITE,
        ),
        "int8 from the stride-8 stage on, the elementwise operators, hard-swish (as a uint8 clipped "
        "product), the neck's upsamples (as channels-last expansions) and the squeeze-excitation products "
        "(by the expanded gate) too; the stem and the squeeze-excitation gates float; percentile calibration",
    ),
    "input": Int8Rule(
        input_nodes,
        INT8_OP_TYPES + ELEMENTWISE_OP_TYPES + GATE_OP_TYPES,
        "percentile",
        (
            HARD_SWISH_GATE_REWRITE,
            GELU_SIGMOID_REWRITE,
            MEAN_POOL_REWRITE,
            UPSAMPLE_SUM_REWRITE,
            UPSAMPLE_CONCAT_REWRITE,
            GATE_EXPAND_REWRITE,
            MAP_INTERLEAVE_REWRITE,
        ),
        "int8 from the stride-4 stage on, the elementwise operators, hard-swish (as a uint8 clipped product), "
        "GELU (as a uint8 sigmoid product, approximate), the squeeze-excitation pools and products (by the "
        "expanded gate) and the neck's upsamples (as channels-last expansions) too; the input layers (up to the first "
        "convolution reading the stride-4 map), the gates' convolutions and the map's sigmoid float; percentile "
        "calibration",
    ),
    "early": Int8Rule(
        default_float_nodes,
        INT8_OP_TYPES,
        "minmax",
        (),
        "convolutions int8 from the stride-32 stage on; the backbone before it, the squeeze-excitation "
        "gates and the head float",
    ),
    "head": Int8Rule(head_nodes, INT8_OP_TYPES, "minmax", (), "convolutions int8 but the head's"),
}
# The default tries every rule on rendered validation images and keeps the fastest that loses at most
# HMEAN_TOLERANCE Hmean against fp32 (tools/export/int8_choice.py).
AUTO_RULE = "auto"
DEFAULT_INT8_RULE = AUTO_RULE
