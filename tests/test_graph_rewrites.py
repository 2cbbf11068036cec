"""tools/graph_rewrites: exact rewrites, checked on small graphs built like paddle2onnx's output.

No Paddle needed: the graphs are made here with onnx.helper and compared on onnxruntime before and
after the rewrite. tests/test_server_det.py checks the rewrite on the whole server network against
Paddle Inference.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from detector.optimize.rewrites import PFHEAD_LOCAL_REWRITE, bypass_identities
from tests.rewrite_checks import cpu_session, rewritten

CHANNELS, MIDDLE = 8, 6  # f's channels and the local conv's; small, and off any channel block


def pfhead_local_model(
    seed: int = 0,
    resize_mode: str = "nearest",
    local_kernel: int = 3,
    extra_output: str = "",
    scale_from_input: bool = False,
) -> onnx.ModelProto:
    """(N, 3, h, w) image → 1×1 conv → f → the PFHeadLocal tail → (N, 1, 2h, 2w), as paddle2onnx writes it:
    Identity hops, biases through Reshape, BatchNormalization after the conv, y reshaped to Shape(s + t)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name, shape, low=-0.5, high=0.5):
        inits.append(numpy_helper.from_array(rng.uniform(low, high, shape).astype(np.float32), name))
        return name

    def constant(name, value):
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)))
        return name

    def add(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    stem = add(
        "Relu",
        [
            add(
                "Conv",
                ["x", weight("stem_w", (CHANNELS, 3, 1, 1)), weight("stem_b", (CHANNELS,))],
                "stem",
                kernel_shape=[1, 1],
            )
        ],
        "f",
    )
    f_hop = add("Identity", [stem], "f_hop")
    transposed = add(
        "ConvTranspose",
        [f_hop, weight("shrink_w", (CHANNELS, 1, 2, 2))],
        "transposed",
        kernel_shape=[2, 2],
        strides=[2, 2],
        pads=[0, 0, 0, 0],
    )
    bias_shape = constant("bias_shape", np.array([1, -1, 1, 1], np.int64))
    shrink_bias = add("Reshape", [weight("shrink_b", (1,)), bias_shape], "shrink_bias")
    shrink = add("Sigmoid", [add("Add", [transposed, shrink_bias], "shrink_logit")], "shrink")
    resize_attrs = (
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        if resize_mode == "nearest"
        else {"mode": resize_mode, "coordinate_transformation_mode": "half_pixel"}
    )
    upsampled = add(
        "Resize",
        [f_hop, constant("roi", np.zeros(0, np.float32)), constant("scales", np.array([1, 1, 2, 2], np.float32))],
        "upsampled",
        **resize_attrs,
    )
    concat = add("Concat", [add("Identity", [shrink], "shrink_hop"), upsampled], "concat", axis=1)
    local = add(
        "Conv",
        [concat, weight("local_w", (MIDDLE, 1 + CHANNELS, local_kernel, local_kernel))],
        "local",
        kernel_shape=[local_kernel, local_kernel],
        pads=[local_kernel // 2] * 4,
    )
    norm = add(
        "BatchNormalization",
        [
            local,
            weight("bn_gamma", (MIDDLE,), 0.5, 1.5),
            weight("bn_beta", (MIDDLE,)),
            weight("bn_mean", (MIDDLE,)),
            weight("bn_var", (MIDDLE,), 0.5, 2.0),
        ],
        "norm",
        epsilon=1e-5,
    )
    final = add(
        "Conv", [add("Relu", [norm], "hidden"), weight("final_w", (1, MIDDLE, 1, 1))], "final", kernel_shape=[1, 1]
    )
    final_bias = add("Reshape", [weight("final_b", (1,)), bias_shape], "final_bias")
    local_map = add("Sigmoid", [add("Add", [final, final_bias], "final_logit")], "local_map")
    total = add("Add", [shrink, local_map], "total")
    scale = "k" if scale_from_input else constant("half", np.float32(0.5))
    scaled = add("Mul", [total, scale], "scaled")
    add("Identity", [add("Reshape", [scaled, add("Shape", [total], "total_shape")], "reshaped")], "maps")

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"])]
    if scale_from_input:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, []))
    outputs = [helper.make_tensor_value_info("maps", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, ["n", "c", "h2", "w2"]))
    graph = helper.make_graph(nodes, "pfhead_local", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray, k: float = 0.5) -> list:
    session = cpu_session(model)
    feed = {"x": x} if len(session.get_inputs()) == 1 else {"x": x, "k": np.array(k, np.float32)}
    return session.run(None, feed)


# Odd and even sizes, a batch of two: the rewrite must hold for any f, not just multiples of 32.
SHAPES = ((1, 3, 4, 6), (2, 3, 7, 5), (1, 3, 16, 24), (1, 3, 1, 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pfhead_local_rewrite_gives_the_same_maps(seed):
    model = pfhead_local_model(seed)
    fast, applied = rewritten(model)
    assert applied[0] == PFHEAD_LOCAL_REWRITE  # (the 8-channel stem is padded to a channel block after it)
    rng = np.random.default_rng(100 + seed)
    for shape in SHAPES:
        x = rng.uniform(-2, 2, shape).astype(np.float32)
        (expected,), (got,) = run(model, x), run(fast, x)
        assert got.shape == expected.shape == (shape[0], 1, 2 * shape[2], 2 * shape[3])
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6, err_msg=str(shape))
        assert expected.std() > 0.01, "the maps vary, so a misplaced tap would show"


def test_pfhead_local_rewrite_leaves_nothing_at_full_resolution():
    fast, _ = rewritten(pfhead_local_model())
    ops = [node.op_type for node in fast.graph.node]
    for gone in ("Resize", "ConvTranspose", "BatchNormalization", "Identity"):
        assert gone not in ops or (gone == "Identity" and ops.count("Identity") == 1), ops
    assert ops.count("DepthToSpace") == 1
    assert [output.name for output in fast.graph.output] == ["maps"]
    # Every Conv now reads half-resolution tensors: the 3×3 is four 2×2 phase convolutions.
    kernels = sorted(
        tuple(helper.get_attribute_value(attr))
        for node in fast.graph.node
        if node.op_type == "Conv"
        for attr in node.attribute
        if attr.name == "kernel_shape"
    )
    assert kernels.count((2, 2)) == 4 and (3, 3) not in kernels


@pytest.mark.parametrize(
    "variant",
    [
        {"resize_mode": "linear"},  # bilinear upsampling: not a pure copy of f
        {"local_kernel": 5},  # a 5×5 conv: another tap layout
        {"extra_output": "shrink"},  # the shrink map is needed at full resolution anyway
        {"extra_output": "upsampled"},  # so is the upsampled f
        {"extra_output": "total"},  # and s + t
        {"scale_from_input": True},  # k is not a constant
    ],
)
def test_other_graphs_are_left_as_they_are(variant):
    model = pfhead_local_model(**variant)
    fast, applied = rewritten(model)
    assert applied == []
    assert [node.op_type for node in fast.graph.node if node.op_type != "Identity"] == [
        node.op_type for node in model.graph.node if node.op_type != "Identity"
    ]
    x = np.random.default_rng(5).uniform(-2, 2, (1, 3, 6, 4)).astype(np.float32)
    for got, expected in zip(run(fast, x), run(model, x)):
        np.testing.assert_array_equal(got, expected)


def test_bypassing_identities_keeps_the_output_names():
    model = pfhead_local_model()
    removed = bypass_identities(model)
    assert removed == 2  # f_hop and shrink_hop; "maps" is a graph output and stays
    assert [node.output[0] for node in model.graph.node if node.op_type == "Identity"] == ["maps"]
    onnx.checker.check_model(model)
    x = np.random.default_rng(6).uniform(-2, 2, (1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(model, x)[0], run(pfhead_local_model(), x)[0])


@pytest.mark.parametrize(
    ("opset", "weights", "reason", "in_constant_node"),
    [
        (14, TensorProto.FLOAT, None, False),
        (14, TensorProto.FLOAT, None, True),
        (10, TensorProto.FLOAT, "opset 10: the rewrites need opset 11 or later", False),
        (14, TensorProto.FLOAT16, "float16 weights: the rewrites are for float32 graphs", False),
        # weights in Constant nodes (paddle2onnx's older files): a float16 conversion of one went through
        # the rewrites, whose float32 constants onnxruntime then refused beside float16 tensors
        (14, TensorProto.FLOAT16, "float16 weights: the rewrites are for float32 graphs", True),
    ],
)
def test_the_export_says_why_no_rewrite_applies(opset, weights, reason, in_constant_node):
    from detector.optimize.rewrites import rewrite_for_speed, why_not_rewritable

    weight = helper.make_tensor("w", weights, [1, 1, 1, 1], [1.0])
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    nodes = [helper.make_node("Constant", [], ["w"], value=weight), conv] if in_constant_node else [conv]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [] if in_constant_node else [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    assert why_not_rewritable(model) == reason
    if opset < 11:
        assert rewrite_for_speed(model) == []
