"""tools/dft_convolution: large-kernel convolutions through the DFT, checked against onnxruntime's own Conv.

No Paddle needed. tests/test_server_det.py checks the rewrite on the whole server network against
Paddle Inference.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from detector.optimize.rewrites.dft_convolution import (
    DFT_CONV_REWRITE,
    MAX_DOWNSAMPLING,
    TILE,
    kernel_spectrum_basis,
    transform_size,
)
from tests.rewrite_checks import cpu_session, rewritten


def conv_model(
    channels: int = 6,
    outputs: int = 5,
    kernel: int = 9,
    bias: bool = True,
    seed: int = 0,
    opset: int = 14,
    weight_as_input: bool = False,
    count: int = 1,
    dtype=np.float32,
    downsample: int = 1,
    **conv_attrs,
) -> onnx.ModelProto:
    """x (N, C, H, W) → count chained K×K 'same' convolutions (C → O, then O → O), as paddle2onnx writes them;
    with downsample > 1, after a 1×1 convolution of that stride (C → C), so they run on a smaller map."""
    rng = np.random.default_rng(seed)
    attrs = {
        "kernel_shape": [kernel, kernel],
        "pads": [kernel // 2] * 4,
        "strides": [1, 1],
        "dilations": [1, 1],
        "group": 1,
        **conv_attrs,
    }
    element = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("x", element, ["N", channels, "H", "W"])]
    current, current_channels = "x", channels
    if downsample > 1:
        inits.append(numpy_helper.from_array(rng.uniform(-1, 1, (channels, channels, 1, 1)).astype(dtype), "w_down"))
        nodes.append(helper.make_node("Conv", ["x", "w_down"], ["small"], name="down", strides=[downsample] * 2))
        current = "small"
    for index in range(count):
        shape = (outputs, current_channels // attrs["group"], kernel, kernel)
        weight = (rng.uniform(-1, 1, shape) / np.sqrt(current_channels * kernel * kernel)).astype(dtype)
        if weight_as_input:
            inputs.append(helper.make_tensor_value_info(f"w{index}", element, list(shape)))
        else:
            inits.append(numpy_helper.from_array(weight, f"w{index}"))
        conv_inputs = [current, f"w{index}"]
        if bias:
            inits.append(numpy_helper.from_array(rng.uniform(-1, 1, outputs).astype(dtype), f"b{index}"))
            conv_inputs.append(f"b{index}")
        current = f"y{index}" if index < count - 1 else "y"
        nodes.append(helper.make_node("Conv", conv_inputs, [current], name=f"conv{index}", **attrs))
        current_channels = outputs
    output = helper.make_tensor_value_info("y", element, ["N", outputs, "Y", "X"])
    model = helper.make_model(
        helper.make_graph(nodes, "conv", inputs, [output], inits),
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=7,
    )
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    return cpu_session(model).run(None, feed)[0]


def conv_kernels(model: onnx.ModelProto) -> list:
    return [
        tuple(helper.get_attribute_value(attr))
        for node in model.graph.node
        if node.op_type == "Conv"
        for attr in node.attribute
        if attr.name == "kernel_shape"
    ]


# (batch, height, width): sizes below, at and across tile boundaries, odd ones, 1×1, batches of two. The
# heights cover each case of the stacked planes: H + K//2 just below a whole number of tiles (12), at it
# (TILE - 4 = 12 for K = 9, so the windows of a plane's last tile read the next plane's rows), just past it
# (13, TILE, 2·TILE - 1).
SHAPES = (
    (1, 1, 1),
    (2, 3, 5),
    (1, 12, 7),
    (1, 13, 7),
    (2, TILE, 2 * TILE),
    (1, TILE + 1, 3 * TILE - 1),
    (2, 2 * TILE - 1, 9),
    (1, 40, 33),
)


@pytest.mark.parametrize("kernel, bias, seed", [(9, True, 0), (9, False, 1), (11, True, 2)])
def test_dft_convolution_matches_the_direct_one(kernel, bias, seed):
    model = conv_model(kernel=kernel, bias=bias, seed=seed)
    fast, applied = rewritten(model)
    assert applied == [DFT_CONV_REWRITE]
    assert all(1 in shape for shape in conv_kernels(fast)), "only the 1-D transforms are convolutions now"
    rng = np.random.default_rng(10 + seed)
    for batch, height, width in SHAPES:
        x = rng.uniform(-2, 2, (batch, 6, height, width)).astype(np.float32)
        expected, got = run(model, {"x": x}), run(fast, {"x": x})
        assert got.shape == expected.shape == (batch, 5, height, width)
        # float32 sums in another order: ~1e-6 of the values' size
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=str(x.shape))
        assert np.abs(expected).max() > 0.01, "the outputs are not all ~0, so a misplaced tap would show"


def test_chained_convolutions_share_the_dft_matrices():
    model = conv_model(count=3)
    fast, applied = rewritten(model)
    assert applied == [DFT_CONV_REWRITE]
    basis = [init.name for init in fast.graph.initializer if "kernel_spectrum_basis" in init.name]
    assert len(basis) == 1, basis
    x = np.random.default_rng(3).uniform(-2, 2, (1, 6, 21, 34)).astype(np.float32)
    np.testing.assert_allclose(run(fast, {"x": x}), run(model, {"x": x}), rtol=0, atol=1e-5)


def test_kernel_spectrum_basis_is_the_conjugate_dft():
    kernel, size = 9, transform_size(9)
    weight = np.random.default_rng(4).standard_normal((kernel, kernel))
    padded = np.zeros((size, size))
    padded[:kernel, :kernel] = weight
    expected = np.conj(np.fft.rfft2(padded))  # (T rows k, L columns l)
    got = (weight.reshape(1, -1) @ kernel_spectrum_basis(kernel, size)).reshape(size // 2 + 1, size, 2)
    np.testing.assert_allclose(got[..., 0], expected.real.T, atol=1e-9)
    np.testing.assert_allclose(got[..., 1], expected.imag.T, atol=1e-9)


@pytest.mark.parametrize(
    "variant",
    [
        {"kernel": 7},  # below MIN_KERNEL: direct is fast enough
        {"kernel": 10, "pads": [5, 5, 4, 4]},  # even kernel
        {"strides": [2, 2]},
        {"dilations": [2, 2], "pads": [8, 8, 8, 8]},
        {"group": 2, "channels": 6, "outputs": 4},
        {"pads": [0, 0, 0, 0]},  # 'valid', not 'same'
        {"weight_as_input": True},  # the kernel is not a constant
        {"opset": 10},  # below the rewrites' MIN_OPSET
        {"dtype": np.float64},  # the DFT matrices are float32
    ],
)
def test_other_convolutions_are_left_as_they_are(variant):
    model = conv_model(**variant)
    fast, applied = rewritten(model)
    assert applied == []
    assert [node.op_type for node in fast.graph.node] == ["Conv"]


@pytest.mark.parametrize("stride, expected", [(MAX_DOWNSAMPLING, [DFT_CONV_REWRITE]), (2 * MAX_DOWNSAMPLING, [])])
def test_only_maps_up_to_max_downsampling_go_through_the_dft(stride, expected):
    """LKPAN's 1/32 maps keep the direct convolution: there the DFT was no faster on pages and slower on crops."""
    model = conv_model(downsample=stride)
    fast, applied = rewritten(model)
    assert applied == expected
    assert ("conv0" in [node.name for node in fast.graph.node]) == (not expected)
    x = np.random.default_rng(6).uniform(-2, 2, (1, 6, 40 * stride, 33 * stride)).astype(np.float32)
    np.testing.assert_allclose(run(fast, {"x": x}), run(model, {"x": x}), rtol=0, atol=1e-5)


def test_onnxruntime_folds_the_kernel_spectrum_when_the_session_is_created(tmp_path):
    """The spectrum is computed from the weight in the graph; onnxruntime must turn it into a constant
    at session creation (else every run would recompute it)."""
    fast, _ = rewritten(conv_model())
    optimized = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(optimized)
    cpu_session(fast, options)
    nodes = onnx.load(str(optimized)).graph.node
    assert not [node.name for node in nodes if "kernel_spectrum" in node.name or "spectrum_by_frequency" in node.name]
    assert [node.op_type for node in nodes].count("MatMul") == 3  # the product and the two inverse transforms
    # Two transposes, to the image, each moving one axis: none of the spectrum (the channels are stacked
    # for that), and not merged into one (which ran 5-8 times slower than both).
    perms = [list(attr.ints) for node in nodes if node.op_type == "Transpose" for attr in node.attribute]
    assert len(perms) == 2 and all(moves_one_axis(perm) for perm in perms), perms


def moves_one_axis(perm: list[int]) -> bool:
    return any(perm[:i] + perm[i + 1 :] == sorted(perm[:i] + perm[i + 1 :]) for i in range(len(perm)))
