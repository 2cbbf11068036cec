"""The exact clean-ups of a quantized model (tools/export/qdq_tidy.py), on small QDQ graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.rewrite_checks import cpu_session
from tools.export.qdq_tidy import movements_in_uint8, shapes_read_quantized


def qdq_model(nodes, outputs, scales=(("s", 0.1, 0), ("t", 0.1, 0), ("u", 0.2, 3))):
    initializers = []
    for name, scale, zero in scales:
        initializers.append(numpy_helper.from_array(np.array(scale, np.float32), name))
        initializers.append(numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_zero"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None, None])],
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in outputs],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def outputs_of(model, x):
    return cpu_session(model).run(None, {"x": x})


def image(seed=4, side=5):
    return np.random.default_rng(seed).uniform(-3, 3, (1, 3, side, side)).astype(np.float32)


def test_shapes_read_the_quantized_tensor_not_its_float_form():
    """x → Q → DQ → Shape (and → Relu): the Shape reads Q's output instead; a DQ nothing reads is dropped."""
    model = qdq_model(
        [
            node("QuantizeLinear", ["x", "s", "s_zero"], "q"),
            node("DequantizeLinear", ["q", "s", "s_zero"], "dq_a"),
            node("DequantizeLinear", ["q", "s", "s_zero"], "dq_b"),
            node("Shape", ["dq_a"], "shape"),
            node("Relu", ["dq_b"], "relu"),
        ],
        [("shape", TensorProto.INT64, [4]), ("relu", TensorProto.FLOAT, ["N", 3, None, None])],
    )
    x = image()
    before = outputs_of(model, x)
    assert shapes_read_quantized(model) == 1
    onnx.checker.check_model(model)
    assert [n.name for n in model.graph.node] == ["q", "dq_b", "shape", "relu"]
    assert model.graph.node[2].input[0] == "q"
    for new, old in zip(outputs_of(model, x), before):
        np.testing.assert_array_equal(new, old)


def movement_model(after_scale="t"):
    """x → Q(s) → DQ(s) → Transpose → Q(after_scale) → DQ → Relu, and a Reshape between pairs of other
    scales (s → u), which must stay."""
    return qdq_model(
        [
            node("QuantizeLinear", ["x", "s", "s_zero"], "q"),
            node("DequantizeLinear", ["q", "s", "s_zero"], "dq"),
            node("Transpose", ["dq"], "moved", perm=[0, 2, 3, 1]),
            node("QuantizeLinear", ["moved", after_scale, f"{after_scale}_zero"], "moved_q"),
            node("DequantizeLinear", ["moved_q", after_scale, f"{after_scale}_zero"], "moved_dq"),
            node("Relu", ["moved_dq"], "relu"),
        ],
        [("relu", TensorProto.FLOAT, ["N", None, None, 3])],
    )


def test_a_movement_between_equal_quantizations_runs_on_the_uint8_tensor():
    model = movement_model()
    x = image(5, side=6)
    before = outputs_of(model, x)
    assert movements_in_uint8(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "Transpose", "DequantizeLinear", "Relu"]
    assert model.graph.node[1].input[0] == "q"
    np.testing.assert_array_equal(outputs_of(model, x)[0], before[0])


def test_a_movement_that_requantizes_is_left_alone():
    model = movement_model(after_scale="u")
    assert movements_in_uint8(model) == 0 and len(model.graph.node) == 6


def test_a_movement_whose_dequantize_is_read_elsewhere_too_runs_on_the_uint8_tensor():
    """x → Q → DQ, read by the Transpose (→ Q → DQ → Relu) and by a Sigmoid: the Transpose reads Q's output,
    the DQ stays for the Sigmoid."""
    model = qdq_model(
        [
            node("QuantizeLinear", ["x", "s", "s_zero"], "q"),
            node("DequantizeLinear", ["q", "s", "s_zero"], "dq"),
            node("Transpose", ["dq"], "moved", perm=[0, 2, 3, 1]),
            node("QuantizeLinear", ["moved", "s", "s_zero"], "moved_q"),
            node("DequantizeLinear", ["moved_q", "s", "s_zero"], "moved_dq"),
            node("Relu", ["moved_dq"], "relu"),
            node("Sigmoid", ["dq"], "sigmoid"),
        ],
        [("relu", TensorProto.FLOAT, ["N", None, None, 3]), ("sigmoid", TensorProto.FLOAT, ["N", 3, None, None])],
    )
    x = image(6, side=4)
    before = outputs_of(model, x)
    assert movements_in_uint8(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "DequantizeLinear", "Transpose", "DequantizeLinear", "Relu", "Sigmoid"]
    assert model.graph.node[2].input[0] == "q"
    for new, old in zip(outputs_of(model, x), before):
        np.testing.assert_array_equal(new, old)


def affine_model(weights=(0.5, 0.5, 0.5), biases=(0.25, 0.25, 0.25)):
    """x → Q → DQ → Mul (x · x) → Q(u) → DQ → 1×1 depthwise Conv (dequantized weights a, bias b per channel)
    → Q(t) → DQ → Relu: a hard-swish product and PPLCNetV3's learnable affine after it, as quantized."""
    weights, biases = np.asarray(weights, np.float32), np.asarray(biases, np.float32)
    channels = len(weights)
    model = qdq_model(
        [
            node("QuantizeLinear", ["x", "s", "s_zero"], "q"),
            node("DequantizeLinear", ["q", "s", "s_zero"], "dq"),
            node("Mul", ["dq", "dq"], "product"),
            node("QuantizeLinear", ["product", "u", "u_zero"], "product_q"),
            node("DequantizeLinear", ["product_q", "u", "u_zero"], "product_dq"),
            node("DequantizeLinear", ["w_q", "w_scale"], "w", axis=0),
            node("DequantizeLinear", ["b_q", "b_scale"], "b", axis=0),
            helper.make_node("Conv", ["product_dq", "w", "b"], ["affine"], name="affine", group=channels),
            node("QuantizeLinear", ["affine", "t", "t_zero"], "affine_q"),
            node("DequantizeLinear", ["affine_q", "t", "t_zero"], "affine_dq"),
            node("Relu", ["affine_dq"], "relu"),
        ],
        [("relu", TensorProto.FLOAT, ["N", channels, None, None])],
        scales=(("s", 0.02, 128), ("t", 0.01, 20), ("u", 0.02, 0)),
    )
    weight_scale = np.abs(weights) / 127
    bias_scale = weight_scale * 0.05
    model.graph.initializer.extend(
        [
            numpy_helper.from_array((127 * np.sign(weights)).astype(np.int8).reshape(-1, 1, 1, 1), "w_q"),
            numpy_helper.from_array(weight_scale.astype(np.float32), "w_scale"),
            numpy_helper.from_array(np.round(biases / bias_scale).astype(np.int32), "b_q"),
            numpy_helper.from_array(bias_scale.astype(np.float32), "b_scale"),
        ]
    )
    return model


def test_a_scalar_affine_folds_into_the_quantization_before_it_within_one_step():
    """The product is quantized at the affine's output scale / a, zero point shifted by round(b / t): every
    value within one step (t = 0.01) of the exact a · p + b of the float product, the Conv and its
    quantizations gone."""
    from tools.export.qdq_requantize import affines_into_quantization

    model = affine_model()
    x = np.random.default_rng(7).uniform(-1.5, 1.5, (1, 3, 6, 5)).astype(np.float32)
    before = outputs_of(model, x)[0]
    assert affines_into_quantization(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "DequantizeLinear", "Mul", "QuantizeLinear", "DequantizeLinear", "Relu"]
    assert {init.name for init in model.graph.initializer}.isdisjoint({"w_q", "w_scale", "b_q", "b_scale"})
    after = outputs_of(model, x)[0]
    x_dq = (np.clip(np.round(x / 0.02) + 128, 0, 255) - 128) * 0.02
    exact = np.maximum(0.5 * x_dq * x_dq + 0.25, 0)
    assert np.abs(after - exact).max() <= 0.01 + 1e-6
    assert np.abs(after - before).max() <= 0.02 + 1e-6  # the two-step form rounded the product first


@pytest.mark.parametrize(
    "weights,biases",
    [((0.5, 0.25, 0.5), (0.25,) * 3), ((0.5,) * 3, (0.25, -0.5, 0.25)), ((-0.5,) * 3, (0.0,) * 3)],
)
def test_affines_that_differ_per_channel_or_flip_the_sign_are_left_alone(weights, biases):
    from tools.export.qdq_requantize import affines_into_quantization

    model = affine_model(weights, biases)
    assert affines_into_quantization(model) == 0 and len(model.graph.node) == 11
