"""conv_affine_fold, affine_into_pointwise_conv and affine_as_depthwise_conv: exact rewrites of PPLCNetV3's
learnable affine blocks, checked on small graphs built like paddle2onnx's output of PP-OCRv4_mobile_det (no
Paddle needed)."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from detector.optimize.rewrites import AFFINE_DEPTHWISE_REWRITE, AFFINE_POINTWISE_REWRITE, CONV_AFFINE_REWRITE
from tests.rewrite_checks import cpu_session, rewritten

CHANNELS = 12  # PPLCNetV3 x0.75's first width: off onnxruntime's channel blocks, as in the real model


def lcnet_model(
    seed: int = 0,
    shared_tap: bool = False,
    vector_shift: bool = False,
    scale_from_input: bool = False,
    last_conv: Optional[dict] = None,
    last_tap: bool = False,
) -> onnx.ModelProto:
    """x → conv 3×3 → +bias → ·a+b → hardswish → ·c+d → depthwise 3×3 → +bias → ·e+f → hardswish → ·g+h → 1×1
    conv (with bias; last_conv: other attributes) → y, with the constants written as paddle2onnx does (Constant
    nodes, bias through Reshape); last_tap: the last chain's output is a graph output too."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(name, shape):
        inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, shape).astype(np.float32), name))
        return name

    def constant(name, value):
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                [name],
                value=numpy_helper.from_array(
                    np.asarray(value, dtype=np.float32 if np.asarray(value).dtype.kind == "f" else None), name
                ),
            )
        )
        return name

    def add(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    shape = constant("bias_shape", np.array([1, -1, 1, 1], np.int64))

    def affine(x, stem):
        scale = "k" if scale_from_input and stem == "a1" else constant(f"{stem}_scale", rng.uniform(0.5, 1.5, (1,)))
        shift_value = rng.uniform(-0.5, 0.5, (CHANNELS,) if vector_shift and stem == "a1" else (1,))
        scaled = add("Mul", [scale, x], f"{stem}_mul")  # paddle2onnx puts the constant first
        return add("Add", [scaled, constant(f"{stem}_shift", shift_value)], f"{stem}_add")

    def conv_bias(x, stem, **attrs):
        conv = add("Conv", [x, weight(f"{stem}_w", attrs.pop("wshape"))], stem, **attrs)
        bias = add("Reshape", [weight(f"{stem}_b", (CHANNELS,)), shape], f"{stem}_bias")
        return add("Add", [conv, bias], f"{stem}_biased")

    first = conv_bias("x", "conv1", wshape=(CHANNELS, 3, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    act1 = affine(add("HardSwish", [affine(first, "a1")], "act1"), "b1")
    depthwise = conv_bias(
        act1, "conv2", wshape=(CHANNELS, 1, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=CHANNELS
    )
    act2 = affine(add("HardSwish", [affine(depthwise, "a2")], "act2"), "b2")
    conv3 = {"kernel_shape": [1, 1], **(last_conv or {})}
    kernel = conv3["kernel_shape"][0]
    groups = conv3.get("group", 1)
    conv3_weight = weight("conv3_w", (4, CHANNELS // groups, kernel, kernel))
    add("Conv", [act2, conv3_weight, weight("conv3_b", (4,))], "y", **conv3)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"])]
    if scale_from_input:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, [1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, None, None])]
    if last_tap:
        outputs.append(helper.make_tensor_value_info("b2_add", TensorProto.FLOAT, ["N", CHANNELS, "h", "w"]))
    if shared_tap:  # the first conv's biased output is also a graph output: its chain must stay
        outputs.append(helper.make_tensor_value_info("conv1_biased", TensorProto.FLOAT, ["N", CHANNELS, "h", "w"]))
    model = helper.make_model(
        helper.make_graph(nodes, "lcnet", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 14)],
        ir_version=8,
    )
    onnx.checker.check_model(model)
    return model


def run(model, x, k=None):
    feeds = {"x": x} if k is None else {"x": x, "k": np.asarray([k], np.float32)}
    return cpu_session(model).run(None, feeds)


def op_counts(model) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (2, 3, 32, 40)])
def test_affine_blocks_fold_into_convolutions_with_the_same_output(shape):
    model = lcnet_model()
    after, applied = rewritten(model)
    assert applied == [CONV_AFFINE_REWRITE, AFFINE_POINTWISE_REWRITE, AFFINE_DEPTHWISE_REWRITE]
    # every Mul/Add is gone: two biases + two affines fold into the convs before them; of the two after
    # hardswish, the one the 1×1 conv reads folds into it, the one the padded depthwise conv reads became a
    # 1×1 depthwise conv
    assert op_counts(after)["Mul"] == op_counts(after)["Add"] == 0
    assert op_counts(after)["Conv"] == 3 + 1
    assert not any(node.op_type == "Constant" for node in after.graph.node)  # the folded weights were dropped
    x = np.random.default_rng(1).uniform(-2, 2, shape).astype(np.float32)
    (before,), (got,) = run(model, x), run(after, x)
    assert got.shape == before.shape
    np.testing.assert_allclose(got, before, atol=1e-5, rtol=1e-5)


def test_a_tensor_read_elsewhere_keeps_its_chain():
    model = lcnet_model(shared_tap=True)
    after, _ = rewritten(model)
    names = {output for node in after.graph.node for output in node.output}
    assert "conv1_biased" in names  # still computed, still a graph output
    x = np.random.default_rng(2).uniform(-2, 2, (1, 3, 16, 16)).astype(np.float32)
    for got, want in zip(run(after, x), run(model, x)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_a_shift_that_broadcasts_along_width_is_not_folded():
    # a (C,)-shaped constant broadcasts over the last axis (width), not over channels
    model = lcnet_model(vector_shift=True)
    after, _ = rewritten(model)
    assert "a1_add" in {output for node in after.graph.node for output in node.output}
    x = np.random.default_rng(3).uniform(-2, 2, (1, 3, 8, CHANNELS)).astype(np.float32)
    np.testing.assert_allclose(run(after, x)[0], run(model, x)[0], atol=1e-5, rtol=1e-5)


def test_a_scale_computed_at_run_time_is_not_folded():
    model = lcnet_model(scale_from_input=True)
    after, _ = rewritten(model)
    assert "a1_mul" in {output for node in after.graph.node for output in node.output}
    x = np.random.default_rng(4).uniform(-2, 2, (1, 3, 16, 16)).astype(np.float32)
    for k in (0.5, 3.0):
        np.testing.assert_allclose(run(after, x, k)[0], run(model, x, k)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("last_conv", [{"strides": [2, 2]}, {"pads": [0, 0, 0, 0]}, {"auto_pad": "VALID"}])
def test_the_chain_a_pointwise_convolution_reads_folds_into_its_weights(last_conv):
    model = lcnet_model(seed=5, last_conv=last_conv)
    after, applied = rewritten(model)
    assert AFFINE_POINTWISE_REWRITE in applied
    final = next(node for node in after.graph.node if "y" in node.output)
    assert final.op_type == "Conv" and final.input[0] == "act2"  # reads the activation itself
    x = np.random.default_rng(6).uniform(-2, 2, (2, 3, 18, 22)).astype(np.float32)
    np.testing.assert_allclose(run(after, x)[0], run(model, x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"last_conv": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}},  # padding would see b at the borders
        {"last_conv": {"pads": [1, 1, 1, 1]}},  # a padded 1×1 too
        {"last_conv": {"auto_pad": "SAME_UPPER", "strides": [2, 2]}},
        {"last_conv": {"group": 2}},
        {"last_tap": True},  # the chain's output is read elsewhere too
    ],
)
def test_chains_other_convolutions_read_do_not_fold_into_them(options):
    model = lcnet_model(seed=7, **options)
    after, applied = rewritten(model)
    assert AFFINE_POINTWISE_REWRITE not in applied
    assert AFFINE_DEPTHWISE_REWRITE in applied  # they become 1×1 depthwise convs instead
    x = np.random.default_rng(8).uniform(-2, 2, (1, 3, 16, 20)).astype(np.float32)
    for got, want in zip(run(after, x), run(model, x)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
