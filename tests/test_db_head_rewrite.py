"""db_head_depth_to_space: the DB head's two 2×2 stride-2 transposed convolutions as 1×1 convolutions and
one DepthToSpace, checked on small graphs built like paddle2onnx's output of the DB heads (no Paddle needed)."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from detector.optimize.rewrites import DB_HEAD_REWRITE
from tests.rewrite_checks import cpu_session, rewritten

CHANNELS, MIDDLE = 12, 6  # the head's input channels and the first transposed conv's; off any channel block


def db_head_model(
    seed: int = 0,
    batch_norm: bool = True,
    bias_input: bool = False,
    out_channels: int = 1,
    second_kernel: int = 2,
    second_attrs: Optional[dict] = None,
    tap_hidden: bool = False,
) -> onnx.ModelProto:
    """x → 1×1 conv → ConvTranspose 2×2/2 → +bias → [bn] → relu → ConvTranspose 2×2/2 → +bias → sigmoid → y,
    with biases through Reshape of a Constant shape as paddle2onnx writes them."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(name, shape, low=-0.5, high=0.5):
        inits.append(numpy_helper.from_array(rng.uniform(low, high, shape).astype(np.float32), name))
        return name

    def add(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    nodes.append(
        helper.make_node(
            "Constant", [], ["bias_shape"], value=numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64), "s")
        )
    )

    def biased(x, stem, channels):
        return add(
            "Add", [x, add("Reshape", [weight(f"{stem}_b", (channels,)), "bias_shape"], f"{stem}_bias")], stem + "_add"
        )

    stem = add("Conv", ["x", weight("stem_w", (CHANNELS, 3, 1, 1))], "stem", kernel_shape=[1, 1])
    first_inputs = [stem, weight("t1_w", (CHANNELS, MIDDLE, 2, 2))]
    if bias_input:
        first_inputs.append(weight("t1_own_bias", (MIDDLE,)))
    hidden = add("ConvTranspose", first_inputs, "t1", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
    hidden = biased(hidden, "t1", MIDDLE)
    if batch_norm:
        norm = [
            weight("bn_gamma", (MIDDLE,), 0.5, 1.5),
            weight("bn_beta", (MIDDLE,)),
            weight("bn_mean", (MIDDLE,)),
            weight("bn_var", (MIDDLE,), 0.2, 1.0),
        ]
        hidden = add("BatchNormalization", [hidden, *norm], "bn", epsilon=1e-5)
    hidden = add("Relu", [hidden], "relu")
    attrs = {"kernel_shape": [second_kernel] * 2, "strides": [2, 2], "pads": [0, 0, 0, 0], **(second_attrs or {})}
    group = attrs.get("group", 1)
    second_weight = weight("t2_w", (MIDDLE, out_channels // group, second_kernel, second_kernel), -1.0, 1.0)
    logits = biased(add("ConvTranspose", [hidden, second_weight], "t2", **attrs), "t2", out_channels)
    add("Sigmoid", [logits], "y")
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None, None, None])]
    if tap_hidden:  # the relu's output is also a graph output: nothing may change
        outputs.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", MIDDLE, None, None]))
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "db_head",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"])],
            outputs,
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 14)],
        ir_version=8,
    )
    onnx.checker.check_model(model)
    return model


def outputs(model, x):
    return cpu_session(model).run(None, {"x": x})


def op_counts(model) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize(
    "shape, options",
    [
        ((1, 3, 7, 11), {}),  # PP-OCRv4/v5 mobile: batch norm after the first transposed conv
        ((2, 3, 16, 20), {}),
        ((1, 3, 9, 5), {"batch_norm": False}),  # PP-OCRv6 small/tiny
        ((1, 3, 6, 13), {"bias_input": True, "seed": 3}),  # the ConvTranspose's own bias input
        ((2, 3, 5, 8), {"out_channels": 3, "seed": 4}),  # more than one output channel: DCR order per channel
    ],
)
def test_the_head_becomes_two_convolutions_and_one_depth_to_space_with_the_same_map(shape, options):
    model = db_head_model(**options)
    after, applied = rewritten(model)
    assert DB_HEAD_REWRITE in applied
    counts = op_counts(after)
    assert counts["ConvTranspose"] == counts["BatchNormalization"] == counts["Add"] == 0
    assert counts["DepthToSpace"] == 1 and counts["Conv"] == 3
    x = np.random.default_rng(1).uniform(-2, 2, shape).astype(np.float32)
    (before,), (got,) = outputs(model, x), outputs(after, x)
    assert got.shape == before.shape == (shape[0], options.get("out_channels", 1), 4 * shape[2], 4 * shape[3])
    assert before.std() > 0.05  # the sigmoid is not saturated: the comparison means something
    np.testing.assert_allclose(got, before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"second_kernel": 3},  # kernel 3, stride 2: taps overlap
        {"second_attrs": {"strides": [1, 1]}},
        {"second_attrs": {"pads": [1, 1, 0, 0]}},
        {"second_attrs": {"output_padding": [1, 1]}},
        {"second_attrs": {"group": 2}, "out_channels": 2},
        {"second_attrs": {"dilations": [2, 2]}},
        {"tap_hidden": True},
    ],
)
def test_near_misses_are_left_alone(options):
    model = db_head_model(**options)
    after, applied = rewritten(model)
    assert DB_HEAD_REWRITE not in applied
    assert op_counts(after)["ConvTranspose"] == 2 and op_counts(after)["DepthToSpace"] == 0
    x = np.random.default_rng(2).uniform(-2, 2, (1, 3, 6, 7)).astype(np.float32)
    for got, want in zip(outputs(after, x), outputs(model, x)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
