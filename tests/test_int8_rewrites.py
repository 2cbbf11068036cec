"""The rewrites applied before int8 quantization only: hard_swish_as_clipped_product (hard-swish becomes
y · clip(y + beta/alpha, 0, 1/alpha) with alpha moved into the convolutions that read it),
gelu_as_sigmoid_product (GELU becomes u · sigmoid(u) / k, u = k · x, approximate) and
spatial_mean_as_global_pool. Checked on small graphs built like the detectors' (no Paddle needed)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from detector.optimize.rewrites.hard_swish_gate import HARD_SWISH_GATE_REWRITE, rewrite_hard_swish_gates
from tests.rewrite_checks import cpu_session
from tests.test_block_rewrites import Builder


def run(model, x):
    session = cpu_session(model)
    return session.run(None, {"x": x})


def rewritten_by(rewrite, model, **options):
    """A checked copy of model after rewrite(copy, **options), and what the rewrite returned."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    result = rewrite(copy, **options)
    onnx.checker.check_model(copy)
    return copy, result


def rewritten_copy(model, skip=()):
    return rewritten_by(rewrite_hard_swish_gates, model, skip=skip)


def image(seed=1, side=12):
    return np.random.default_rng(seed).uniform(-3, 3, (1, 3, side, side)).astype(np.float32)


def fused_model():
    """x → conv → HardSwish → conv (the exported graph's form)."""
    b = Builder(0)
    y = b.conv("x", "c1", (8, 3, 3, 3))
    h = b.add("HardSwish", [y], "act")
    b.conv(h, "c2", (4, 8, 1, 1))
    return b.model(["c2"])


def decomposed_model():
    """x → conv → y · HardSigmoid(y) (quant_pre_process's form, alpha 1/6) read by a conv and an Add;
    then an SE-style product of another tensor by a HardSigmoid gate, which is not a hard-swish."""
    b = Builder(2)
    y = b.conv("x", "c1", (8, 3, 3, 3))
    gate = b.add("HardSigmoid", [y], "hs", alpha=1 / 6, beta=0.5)
    h = b.add("Mul", [gate, y], "act")
    c2 = b.conv(h, "c2", (8, 8, 3, 3))
    total = b.add("Add", [c2, h], "sum")
    pooled = b.add("GlobalAveragePool", [total], "pool")
    se_gate = b.add("HardSigmoid", [b.conv(pooled, "se", (8, 8, 1, 1))], "se_hs", alpha=0.2, beta=0.5)
    b.add("Mul", [total, se_gate], "out")
    return b.model(["out"])


def test_hard_swish_read_by_a_conv_becomes_the_clipped_product_with_alpha_in_the_weights():
    model = fused_model()
    new, gates = rewritten_copy(model)
    ops = Counter(node.op_type for node in new.graph.node)
    assert ops["HardSwish"] == 0 and ops["Clip"] == 1 and ops["Mul"] == 1 and ops["Add"] == 1
    assert list(gates.values()) == [(0.0, 6.0)]
    (gate,) = gates
    assert gate.startswith(HARD_SWISH_GATE_REWRITE)
    weights = {init.name: numpy_helper.to_array(init) for init in new.graph.initializer}
    original = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    np.testing.assert_allclose(weights["c2_w"], original["c2_w"] / 6, rtol=1e-6)
    np.testing.assert_array_equal(weights["c1_w"], original["c1_w"])  # the producer keeps its weights
    x = image()
    np.testing.assert_allclose(run(new, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_product_read_by_something_else_keeps_alpha_as_a_mul_and_se_gates_stay():
    model = decomposed_model()
    new, gates = rewritten_copy(model)
    ops = Counter(node.op_type for node in new.graph.node)
    assert len(gates) == 1  # the SE product multiplies another tensor by its gate: not a hard-swish
    assert ops["HardSigmoid"] == 1 and ops["Clip"] == 1
    # the Add reads the product too, so alpha stays as a Mul and no weight is scaled
    assert ops["Mul"] == 3  # product, rescale, SE
    weights = {init.name: numpy_helper.to_array(init) for init in new.graph.initializer}
    original = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    np.testing.assert_array_equal(weights["c2_w"], original["c2_w"])
    for seed in (1, 2):
        x = image(seed, side=16)
        np.testing.assert_allclose(run(new, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_gate_range_follows_the_hard_sigmoid_slope():
    b = Builder(3)
    y = b.conv("x", "c1", (4, 3, 3, 3))
    b.add("Mul", [y, b.add("HardSigmoid", [y], "hs", alpha=0.25, beta=0.5)], "act")
    b.conv("act", "c2", (4, 4, 1, 1))
    model = b.model(["c2"])
    new, gates = rewritten_copy(model)
    assert list(gates.values()) == [(0.0, 4.0)]
    x = image(4)
    np.testing.assert_allclose(run(new, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_skipped_nodes_stay_fused():
    model = fused_model()
    new, gates = rewritten_copy(model, skip={"act"})
    assert gates == {}
    assert [node.op_type for node in new.graph.node] == ["Conv", "HardSwish", "Conv"]


# gelu_as_sigmoid_product: GELU(x) = x·Φ(x) becomes u·sigmoid(u)/k with u = k·x, k folded into the convolutions


def exact_gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def constant(b, name, value):
    b.inits.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def erf_gelu(b, x, stem, halved_first=False, by_reciprocal=False):
    """x · (1 + erf(x/√2)) · 0.5 as paddle2onnx writes it (or with x·(1/√2), or the halving first)."""
    if by_reciprocal:
        scaled = b.add("Mul", [x, constant(b, f"{stem}_r", 1 / np.sqrt(2))], f"{stem}_div")
    else:
        scaled = b.add("Div", [x, constant(b, f"{stem}_s", np.sqrt(2))], f"{stem}_div")
    plus = b.add("Add", [b.add("Erf", [scaled], f"{stem}_erf"), constant(b, f"{stem}_one", 1.0)], f"{stem}_plus")
    if halved_first:
        half = b.add("Mul", [plus, constant(b, f"{stem}_h", 0.5)], f"{stem}_half")
        return b.add("Mul", [x, half], f"{stem}_out")
    product = b.add("Mul", [x, plus], f"{stem}_prod")
    return b.add("Mul", [product, constant(b, f"{stem}_h", 0.5)], f"{stem}_out")


def mlp_model(**gelu_form):
    """x → conv (expand) → GELU → conv (contract): PP-OCRv6's MetaFormer feed-forward."""
    b = Builder(5)
    y = b.conv("x", "c1", (8, 3, 1, 1))
    b.conv(erf_gelu(b, y, "g", **gelu_form), "c2", (4, 8, 1, 1))
    return b.model(["c2"])


def gelu_rewritten(model, skip=()):
    from detector.optimize.rewrites.gelu_sigmoid import rewrite_gelus_as_sigmoid_products

    return rewritten_by(rewrite_gelus_as_sigmoid_products, model, skip=skip)


def test_sigmoid_product_is_within_its_stated_error_of_gelu():
    from detector.optimize.rewrites.gelu_sigmoid import SIGMOID_SLOPE

    x = np.linspace(-8, 8, 160001)
    error = np.abs(x / (1 + np.exp(-SIGMOID_SLOPE * x)) - exact_gelu(x))
    assert 0.019 < error.max() < 0.021  # the module's stated bound, 0.0203 at x ≈ -2.27
    assert abs(x[error.argmax()] + 2.27) < 0.01


@pytest.mark.parametrize("form", [{}, {"halved_first": True}, {"by_reciprocal": True}])
def test_gelu_between_convolutions_becomes_a_sigmoid_product_with_the_slope_in_the_weights(form):
    from detector.optimize.rewrites.gelu_sigmoid import GELU_SIGMOID_REWRITE, SIGMOID_SLOPE

    model = mlp_model(**form)
    new, count = gelu_rewritten(model)
    assert count == 1
    ops = Counter(node.op_type for node in new.graph.node)
    assert ops["Erf"] == ops["Div"] == ops["Add"] == 0
    assert ops == Counter({"Conv": 2, "Sigmoid": 1, "Mul": 1})  # no Mul by the slope: it is in the weights
    assert all(node.name.startswith(GELU_SIGMOID_REWRITE) for node in new.graph.node if node.op_type != "Conv")
    weights = {init.name: numpy_helper.to_array(init) for init in new.graph.initializer}
    original = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    np.testing.assert_allclose(weights["c1_w"], original["c1_w"] * SIGMOID_SLOPE, rtol=1e-6)
    np.testing.assert_allclose(weights["c1_b"], original["c1_b"] * SIGMOID_SLOPE, rtol=1e-6)
    np.testing.assert_allclose(weights["c2_w"], original["c2_w"] / SIGMOID_SLOPE, rtol=1e-6)
    np.testing.assert_array_equal(weights["c2_b"], original["c2_b"])
    # the same network but for the approximation: against the graph with x·sigmoid(1.702x) spelled out
    x = image(6)
    hidden = run_to(model, "c1", x)
    approximate = hidden / (1 + np.exp(-SIGMOID_SLOPE * hidden))
    c2 = original["c2_w"].reshape(4, 8)
    expected = np.einsum("oc,nchw->nohw", c2, approximate) + original["c2_b"].reshape(1, 4, 1, 1)
    np.testing.assert_allclose(run(new, x)[0], expected, rtol=1e-4, atol=1e-4)
    # and within the stated error of the exact network, scaled by the second convolution
    exact = run(model, x)[0]
    assert np.abs(run(new, x)[0] - exact).max() <= 0.0204 * np.abs(c2).sum(axis=1).max()


def run_to(model, tensor, x):
    """The value of an intermediate tensor of model on x."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([onnx.helper.make_empty_tensor_value_info(tensor)])
    return cpu_session(probe).run([tensor], {"x": x})[0]


def test_gelu_whose_input_or_output_is_read_elsewhere_keeps_the_slope_as_muls():
    from detector.optimize.rewrites.gelu_sigmoid import SIGMOID_SLOPE

    b = Builder(7)
    y = b.conv("x", "c1", (8, 3, 1, 1))
    g = erf_gelu(b, y, "g")
    b.add("Add", [g, y], "out")  # y read outside the GELU, the GELU read by an Add
    model = b.model(["out"])
    new, count = gelu_rewritten(model)
    assert count == 1
    ops = Counter(node.op_type for node in new.graph.node)
    assert ops["Mul"] == 3 and ops["Sigmoid"] == 1  # the slope, the product, the unscaling
    weights = {init.name: numpy_helper.to_array(init) for init in new.graph.initializer}
    np.testing.assert_array_equal(weights["c1_w"], numpy_helper.to_array(model.graph.initializer[0]))
    x = image(8)
    hidden = run_to(model, "c1", x)
    expected = hidden / (1 + np.exp(-SIGMOID_SLOPE * hidden)) + hidden
    np.testing.assert_allclose(run(new, x)[0], expected, rtol=1e-5, atol=1e-5)


def test_onnx_gelu_op_is_rewritten_but_not_its_tanh_approximation_nor_skipped_ones():
    for approximate, expected in (("none", 1), ("tanh", 0)):
        b = Builder(9)
        y = b.conv("x", "c1", (8, 3, 1, 1))
        b.conv(b.add("Gelu", [y], "g", approximate=approximate), "c2", (4, 8, 1, 1))
        graph = helper.make_graph(
            b.nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
            [helper.make_tensor_value_info("c2", TensorProto.FLOAT, [1, 4, 4, 4])],
            b.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
        assert gelu_rewritten(model)[1] == expected
    assert gelu_rewritten(mlp_model(), skip={"g_erf"})[1] == 0


def test_erf_that_is_not_a_gelu_is_left_alone():
    b = Builder(10)
    y = b.conv("x", "c1", (8, 3, 1, 1))
    scaled = b.add("Div", [y, constant(b, "s", 2.0)], "div")  # erf(x/2): not GELU's √2
    plus = b.add("Add", [b.add("Erf", [scaled], "erf"), constant(b, "one", 1.0)], "plus")
    b.add("Mul", [b.add("Mul", [y, plus], "prod"), constant(b, "h", 0.5)], "out")
    assert gelu_rewritten(b.model(["out"]))[1] == 0


# spatial_mean_as_global_pool: ReduceMean over H and W with keepdims → GlobalAveragePool


def mean_model(axes, keepdims=1, opset=14):
    b = Builder(11)
    y = b.conv("x", "c1", (8, 3, 3, 3))
    if opset >= 18:
        b.inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        pooled = b.add("ReduceMean", [y, "axes"], "mean", keepdims=keepdims)
    else:
        pooled = b.add("ReduceMean", [y], "mean", axes=axes, keepdims=keepdims)
    b.add("Mul", [y, pooled], "out") if keepdims else b.add("Identity", [pooled], "out")
    graph = helper.make_graph(
        b.nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9 if opset >= 18 else 8)
    return onnx.shape_inference.infer_shapes(model)  # the ranks, as the quantizer's preparation records them


def means_rewritten(model):
    from detector.optimize.rewrites.mean_pool import rewrite_spatial_means

    return rewritten_by(rewrite_spatial_means, model)


@pytest.mark.parametrize("axes,opset", [([2, 3], 14), ([-2, -1], 14), ([3, 2], 18)])
def test_spatial_mean_becomes_a_global_pool(axes, opset):
    model = mean_model(axes, opset=opset)
    new, count = means_rewritten(model)
    assert count == 1 and [node.op_type for node in new.graph.node] == ["Conv", "GlobalAveragePool", "Mul"]
    x = image(12, side=9)
    np.testing.assert_allclose(run(new, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes,keepdims", [([1, 2, 3], 1), ([2], 1), ([2, 3], 0)])
def test_other_means_are_left_alone(axes, keepdims):
    assert means_rewritten(mean_model(axes, keepdims))[1] == 0


def test_mean_of_a_map_of_unknown_rank_is_left_alone():
    model = mean_model([2, 3])
    del model.graph.value_info[:]
    assert means_rewritten(model)[1] == 0


def neck_model(mode="nearest", transform="asymmetric", nearest="floor", scale=2.0, resized_first=False, tap=False):
    """x → conv (stride = scale) → small; x → conv → large; large + Resize(small) → conv → out, the DB
    neck's top-down step (tap: the upsample is read by a second node too)."""
    b = Builder(21)
    stride = max(1, int(scale))
    small = b.conv("x", "small", (6, 3, 3, 3), strides=[stride, stride])
    large = b.conv("x", "large", (6, 3, 3, 3))
    up = b.add("Resize", [small, "", resize_scales(b, scale)], "up", **resize_modes(mode, transform, nearest))
    total = b.add("Add", [up, large] if resized_first else [large, up], "sum")
    outputs = [b.conv(total, "out", (4, 6, 3, 3))]
    if tap:
        outputs.append(b.add("Relu", [up], "tap"))
    return b.model(outputs)


def resize_scales(b, scale):
    name = f"scales_{len(b.inits)}"
    b.inits.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), name))
    return name


def resize_modes(mode="nearest", transform="asymmetric", nearest="floor"):
    return {"mode": mode, "coordinate_transformation_mode": transform, "nearest_mode": nearest}


def upsamples_rewritten(model, skip=()):
    from detector.optimize.rewrites.neck_upsample import rewrite_neck_upsamples

    return rewritten_by(rewrite_neck_upsamples, model, skip=skip)


@pytest.mark.parametrize(
    "transform,nearest,scale",
    [
        ("asymmetric", "floor", 2.0),
        ("asymmetric", "round_prefer_floor", 2.0),
        ("half_pixel", "round_prefer_ceil", 2.0),
        ("asymmetric", "floor", 4.0),
    ],
)
@pytest.mark.parametrize("resized_first", [False, True])
def test_sum_with_an_upsample_becomes_a_channels_last_sum_with_the_map_expanded(
    transform, nearest, scale, resized_first
):
    model = neck_model(transform=transform, nearest=nearest, scale=scale, resized_first=resized_first)
    new, made = upsamples_rewritten(model)
    ops = Counter(node.op_type for node in new.graph.node)
    assert (made.sums, made.concats) == (1, 0) and ops["Resize"] == 0 and ops["Transpose"] == 3 and ops["Add"] == 1
    built = {node.name: node.op_type for node in new.graph.node}
    moving = ["Add", "Expand", "Reshape", "Transpose", "Transpose", "Transpose", "Unsqueeze"]
    assert sorted(built[name] for name in made.moving) == moving
    assert sorted(built[name] for name in made.shapes) == ["Mul", "Shape"]
    producers = {output: node for node in new.graph.node for output in node.output}
    (add,) = [node for node in new.graph.node if node.op_type == "Add"]  # elementwise: the map, the upsampled map
    assert sorted(producers[name].op_type for name in add.input) == ["Reshape", "Transpose"]
    for side in (16, 24):  # the same values are added: equal, not close
        x = image(21, side=side)
        np.testing.assert_array_equal(run(new, x)[0], run(model, x)[0])


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "linear"},
        {"scale": 1.5},
        {"transform": "align_corners"},
        {"transform": "asymmetric", "nearest": "ceil"},
        {"transform": "half_pixel", "nearest": "floor"},  # reads pixel i // 2 - 1 at even i
        {"transform": "asymmetric", "nearest": "round_prefer_floor", "scale": 4.0},  # 3 / 4 rounds up
        {"tap": True},
    ],
)
def test_other_resizes_and_shared_upsamples_are_left_alone(options):
    assert upsamples_rewritten(neck_model(**options))[1].sums == 0


def test_skipped_sums_are_left_alone():
    assert upsamples_rewritten(neck_model(), skip={"sum"})[1].sums == 0
    assert upsamples_rewritten(neck_model(), skip={"up"})[1].sums == 0


def test_a_model_before_opset_13_is_left_alone():
    """Its Unsqueeze would take the axes as an attribute, not the input the rewritten form gives it."""
    from detector.optimize.rewrites.neck_upsample import rewrite_neck_upsamples

    model = neck_model()
    model.opset_import[0].version = 12  # (not a valid opset-12 graph: only the rewrite reads it)
    assert rewrite_neck_upsamples(model).sums == 0 and [n.op_type for n in model.graph.node].count("Resize") == 1


TRANSFORMS = ("asymmetric", "half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "align_corners")
NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_repeats_pixels_agrees_with_onnxruntime(factor):
    """For every coordinate transformation and rounding whose pixel choice does not depend on the sizes,
    repeats_pixels says yes exactly where onnxruntime's Resize repeats each pixel factor times (maps of
    distinct values, two sizes); align_corners (which depends on them) is never taken."""
    from detector.optimize.rewrites.neck_upsample import repeats_pixels

    for transform in TRANSFORMS:
        for nearest in NEAREST_MODES:
            repeats = [resize_repeats(factor, transform, nearest, shape) for shape in ((2, 3, 5, 7), (1, 2, 6, 4))]
            expected = transform != "align_corners" and all(repeats)
            assert repeats_pixels(transform, nearest, factor) == expected, (transform, nearest)


def resize_repeats(factor, transform, nearest, shape):
    """Whether onnxruntime's nearest Resize by factor repeats each pixel of a map of shape."""
    b = Builder(0)
    b.add("Resize", ["x", "", resize_scales(b, float(factor))], "up", **resize_modes("nearest", transform, nearest))
    graph = helper.make_graph(
        b.nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("up", TensorProto.FLOAT, None)],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    (out,) = run_feed(model, {"x": x})
    return bool(np.array_equal(out, x.repeat(factor, axis=2).repeat(factor, axis=3)))


def run_feed(model, feed):
    return cpu_session(model).run(None, feed)


def concat_model(skip_name=None, resized=(2, 4)):
    """x → convs at strides 1, 2 and 4; the latter two upsampled to stride 1 and concatenated with the
    first over channels → conv → out: the DB head's input."""
    b = Builder(23)
    parts = [b.conv("x", "p1", (4, 3, 3, 3))]
    for factor in (2, 4):
        part = b.conv("x", f"p{factor}", (4, 3, 3, 3), strides=[factor, factor])
        if factor in resized:
            part = b.add("Resize", [part, "", resize_scales(b, float(factor))], f"up{factor}", **resize_modes())
        parts.append(part)
    joined = b.add("Concat", parts, "concat", axis=1)
    b.conv(joined, "out", (2, 12, 3, 3))
    return b.model(["out"])


def test_concat_of_upsamples_becomes_a_channels_last_concat_of_expanded_maps():
    model = concat_model()
    new, made = upsamples_rewritten(model)
    ops = Counter(node.op_type for node in new.graph.node)
    assert (made.sums, made.concats) == (0, 1) and ops["Resize"] == 0 and ops["Expand"] == 2
    assert ops["Transpose"] == 4 and ops["Concat"] == 1
    for side in (16, 24):
        x = image(23, side=side)
        np.testing.assert_array_equal(run(new, x)[0], run(model, x)[0])


def test_concats_with_no_or_a_skipped_upsample_are_left_alone():
    assert upsamples_rewritten(concat_model(resized=()))[1].concats == 0
    assert upsamples_rewritten(concat_model(), skip={"up4"})[1].concats == 0
    assert upsamples_rewritten(concat_model(), skip={"concat"})[1].concats == 0


def test_a_sum_that_broadcasts_broadcasts_the_same_way_channels_last():
    """large + up(small) where large is a pooled [N, C, 1, 1] (a broadcast sum): the rewritten Add
    broadcasts it over the upsampled map as the original did, to the same values."""
    b = Builder(22)
    small = b.conv("x", "small", (6, 3, 3, 3), strides=[2, 2])
    pooled = b.add("GlobalAveragePool", [b.conv("x", "large", (6, 3, 3, 3))], "pooled")
    b.inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    up = b.add("Resize", [small, "", "scales"], "up", mode="nearest", coordinate_transformation_mode="asymmetric")
    b.add("Add", [pooled, up], "sum")
    model = b.model(["sum"])
    new, made = upsamples_rewritten(model)
    assert made.sums == 1
    for side in (8, 12):
        np.testing.assert_array_equal(run(new, image(3, side=side))[0], run(model, image(3, side=side))[0])


def gates_rewritten(model, skip=()):
    from detector.optimize.rewrites.gate_expand import rewrite_gated_products

    return rewritten_by(rewrite_gated_products, model, skip=skip)


@pytest.mark.parametrize(
    "options",
    [{}, {"residual_first": True, "seed": 1}, {"pool": "ReduceMean", "seed": 2}],
)
def test_product_by_a_pooled_gate_becomes_a_channels_last_product_by_the_expanded_gate(options):
    """Both squeeze-excitation products (the gate read by the Mul, either operand order, a GlobalAveragePool
    or a ReduceMean before it) become map · gate expanded to [N, H, W, C]: the same products, equal values
    at several sizes and a batch of two (each image its own gate)."""
    from tests.test_block_rewrites import se_model

    model = se_model(**options)
    new, made = gates_rewritten(model)
    ops = Counter(node.op_type for node in new.graph.node)
    assert made.products == 1 and ops["Mul"] == 1 and ops["Expand"] == 1 and ops["Transpose"] == 3
    built = {node.name: node.op_type for node in new.graph.node}
    assert sorted(built[name] for name in made.moving) == ["Expand", "Transpose", "Transpose", "Transpose"]
    assert sorted(built[name] for name in made.shapes) == ["Shape"]
    assert "product" in [output for node in new.graph.node for output in node.output]
    for shape in ((1, 3, 12, 12), (2, 3, 9, 13), (1, 3, 1, 7)):
        x = np.random.default_rng(shape[3]).uniform(-2, 2, shape).astype(np.float32)
        np.testing.assert_array_equal(run(new, x)[0], run(model, x)[0])


def test_products_of_maps_skipped_or_before_opset_8_are_left_alone():
    from tests.test_block_rewrites import se_model

    full_size = se_model(gate_from_map=True)  # the gate is a map: no squeeze-excitation product
    assert gates_rewritten(full_size)[1].products == 0
    assert gates_rewritten(se_model(), skip={"product"})[1].products == 0
    old = se_model()
    old.opset_import[0].version = 7  # no Expand yet (only the rewrite reads the version)
    assert gates_rewritten(old)[1].products == 0


def test_product_by_a_constant_is_left_alone():
    b = Builder(5)
    t = b.conv("x", "c", (4, 3, 3, 3))
    b.add("Mul", [t, b.weight("scale", (1, 4, 1, 1))], "scaled")
    assert gates_rewritten(b.model(["scaled"]))[1].products == 0


def map_model(block=4, mode="DCR", channels=1, tap=False, with_sigmoid=True):
    """x → conv (block² · channels outputs) → Sigmoid → DepthToSpace(block): db_head_depth_to_space's end
    (tap: the Sigmoid is read by a second node too)."""
    b = Builder(31)
    logits = b.conv("x", "logits", (block * block * channels, 3, 3, 3))
    probability = b.add("Sigmoid", [logits], "probability") if with_sigmoid else logits
    outputs = [b.add("DepthToSpace", [probability], "map", blocksize=block, mode=mode)]
    if tap:
        outputs.append(b.add("Relu", [probability], "tap"))
    return b.model(outputs)


def interleaves_rewritten(model, skip=()):
    from detector.optimize.rewrites.map_interleave import rewrite_map_interleaves

    return rewritten_by(rewrite_map_interleaves, model, skip=skip)


@pytest.mark.parametrize("block,mode", [(4, "DCR"), (4, "CRD"), (2, "DCR")])
def test_one_channel_map_is_interleaved_channels_last_before_its_sigmoid(block, mode):
    """The same values reach the same pixels (equal, not close) at several sizes and a batch of two; the
    Sigmoid keeps its name (a rule that keeps it float still finds it) and now makes the map."""
    model = map_model(block, mode)
    new, made = interleaves_rewritten(model)
    ops = Counter(node.op_type for node in new.graph.node)
    assert made.maps == 1 and ops["DepthToSpace"] == 0 and ops["Sigmoid"] == 1
    built = {node.name: node.op_type for node in new.graph.node}
    assert sorted(built[name] for name in made.moving) == ["Reshape", "Reshape", "Transpose", "Transpose"]
    assert sorted(built[name] for name in made.shapes) == ["Div", "Mul", "Shape"]
    (sigmoid,) = [node for node in new.graph.node if node.op_type == "Sigmoid"]
    assert sigmoid.name == "probability" and list(sigmoid.output) == ["map"]
    for shape in ((1, 3, 8, 12), (2, 3, 10, 6), (1, 3, 1, 9)):
        x = np.random.default_rng(shape[2]).uniform(-2, 2, shape).astype(np.float32)
        np.testing.assert_array_equal(run(new, x)[0], run(model, x)[0])


@pytest.mark.parametrize(
    "options",
    [{"channels": 2}, {"tap": True}, {"with_sigmoid": False}],
)
def test_other_interleaves_are_left_alone(options):
    """Several channels (DCR and CRD differ there), a sigmoid read by another node, no sigmoid."""
    assert interleaves_rewritten(map_model(**options))[1].maps == 0


def test_skipped_interleaves_are_left_alone():
    assert interleaves_rewritten(map_model(), skip={"map"})[1].maps == 0
