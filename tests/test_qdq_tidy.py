"""The exact clean-ups of a quantized model (tools/export/qdq_tidy.py), on small QDQ graphs."""

from __future__ import annotations

import numpy as np
import onnx
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
