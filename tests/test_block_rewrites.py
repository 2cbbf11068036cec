"""se_residual_as_one_mul, conv_channels_padded_to_block, concat_conv_split and
wide_pointwise_conv_unblocked: exact rewrites around the squeeze-and-excitation layers, the off-block
channel counts of the mobile detectors, PP-OCRv6's stem Concat and the server model's wide pointwise
convolutions, checked on small graphs built like paddle2onnx's output (no Paddle needed)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from detector.optimize.rewrites import (
    CHANNEL_BLOCKS,
    CHANNEL_PADDING_REWRITE,
    CONCAT_CONV_SPLIT_REWRITE,
    POINTWISE_UNBLOCKED_REWRITE,
    SE_RESIDUAL_REWRITE,
    block_record,
    this_cpu_block,
)
from detector.optimize.rewrites.onnx_graph import GLOBAL, Graph, downsampling
from detector.optimize.rewrites.pointwise_unblocked import MIN_INPUT_CHANNELS
from tests.rewrite_checks import cpu_session, rewritten


class Builder:
    """Nodes and random initializers for a small test graph."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def weight(self, name, shape, low=-0.5, high=0.5):
        self.inits.append(numpy_helper.from_array(self.rng.uniform(low, high, shape).astype(np.float32), name))
        return name

    def add(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv(self, x, stem, shape, bias=True, **attrs):
        kernel = shape[2]
        inputs = [x, self.weight(f"{stem}_w", shape)] + ([self.weight(f"{stem}_b", (shape[0],))] if bias else [])
        return self.add("Conv", inputs, stem, kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4, **attrs)

    def model(self, outputs, extra_inputs=()):
        graph = helper.make_graph(
            self.nodes,
            "g",
            [
                helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, None, None])
                for name in ("x", *extra_inputs)
            ],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", None, None, None]) for name in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
        onnx.checker.check_model(model)
        return model


def se_model(seed=0, pool="GlobalAveragePool", residual_first=False, gate_from_map=False, tap_product=False):
    """x → conv → t → RSE: y = t + t · hardsigmoid(conv(relu(conv(pool(t))))) → conv → out."""
    b = Builder(seed)
    t = b.conv("x", "stem", (8, 3, 3, 3))
    if pool == "GlobalAveragePool":
        pooled = b.add("GlobalAveragePool", [t], "pool")
    else:
        pooled = b.add("ReduceMean", [t], "pool", axes=[2, 3], keepdims=1)
    squeezed = b.add("Relu", [b.conv(pooled, "squeeze", (4, 8, 1, 1))], "squeeze_relu")
    gate = b.add("HardSigmoid", [b.conv(squeezed, "excite", (8, 4, 1, 1))], "gate", alpha=1 / 6, beta=0.5)
    if gate_from_map:  # a full-size "gate": x + x · g is no RSE then
        gate = b.add("Sigmoid", [b.conv(t, "map_gate", (8, 8, 1, 1))], "map_gate_sigmoid")
    product = b.add("Mul", [t, gate] if not residual_first else [gate, t], "product")
    total = b.add("Add", [product, t] if not residual_first else [t, product], "total")
    b.conv(total, "out", (4, 8, 3, 3))
    return b.model(["out", "product"] if tap_product else ["out"])


def op_counts(model) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def run(model, x):
    return cpu_session(model).run(None, {"x": x})


def assert_same_outputs(after, model, seed, shape):
    """Every output of the rewritten graph equals the original's (same shape, within 1e-5) on one random input."""
    x = np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)
    for got, want in zip(run(after, x), run(model, x)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{}, {"residual_first": True, "seed": 1}, {"pool": "ReduceMean", "seed": 2}])
def test_the_residual_gate_becomes_one_multiplication_with_the_same_output(options):
    model = se_model(**options)
    after, applied = rewritten(model)
    assert SE_RESIDUAL_REWRITE in applied
    mul = next(node for node in after.graph.node if node.op_type == "Mul")
    assert "t" not in mul.output and mul.output[0] == "total"  # the Mul makes the sum's tensor itself
    assert op_counts(after)["Mul"] == 1 and op_counts(after)["Add"] == 1  # the Add is 1 + g now
    x = np.random.default_rng(3).uniform(-2, 2, (2, 3, 9, 13)).astype(np.float32)
    np.testing.assert_allclose(run(after, x)[0], run(model, x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{"gate_from_map": True}, {"tap_product": True}])
def test_a_gate_of_full_size_or_a_product_read_elsewhere_is_left_alone(options):
    model = se_model(**options)
    after, applied = rewritten(model)
    assert SE_RESIDUAL_REWRITE not in applied
    assert_same_outputs(after, model, seed=4, shape=(1, 3, 8, 8))


def padding_model(seed=0, channels=12, reader="Conv", relu=True, bias_add=True, tap=False):
    """x → conv (channels out) [→ +bias (Reshape)] [→ relu] → reader → out: PPLCNetV3's 12/18/42/360-channel
    outputs and PP-OCRv6's 12-channel stem convolution."""
    b = Builder(seed)
    t = b.conv("x", "producer", (channels, 3, 3, 3), bias=not bias_add)
    if bias_add:
        b.nodes.append(
            helper.make_node(
                "Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64), "s")
            )
        )
        t = b.add("Add", [t, b.add("Reshape", [b.weight("producer_bias", (channels,)), "shape"], "bias")], "biased")
    if relu:
        t = b.add("Relu", [t], "relu")
    if reader == "Conv":
        b.conv(t, "out", (20, channels, 3, 3))
        b.conv(t, "out2", (16, channels, 1, 1))
        outputs = ["out", "out2"]
    elif reader == "depthwise":
        b.conv(t, "out", (channels, 1, 3, 3), group=channels)
        outputs = ["out"]
    else:  # a pool reads the channels: the extra ones would show
        b.add("GlobalAveragePool", [t], "out")
        outputs = ["out"]
    return b.model(outputs + (["producer"] if tap else []))


@pytest.mark.parametrize("block", CHANNEL_BLOCKS)
@pytest.mark.parametrize(
    "options", [{}, {"channels": 18, "relu": False}, {"channels": 42, "bias_add": False, "seed": 1}]
)
def test_off_block_channels_are_padded_with_zeros_and_the_outputs_stay_the_same(options, block):
    model = padding_model(**options)
    after, applied = rewritten(model, channel_block=block)
    assert CHANNEL_PADDING_REWRITE in applied
    weights = {init.name: numpy_helper.to_array(init) for init in after.graph.initializer}
    convs = {node.output[0]: node for node in after.graph.node if node.op_type == "Conv"}
    assert weights[convs["producer"].input[1]].shape[0] == block * -(-options.get("channels", 12) // block)
    assert weights[convs["out"].input[1]].shape[1] == weights[convs["producer"].input[1]].shape[0]
    assert_same_outputs(after, model, seed=5, shape=(2, 3, 11, 7))


@pytest.mark.parametrize(
    "options", [{"reader": "depthwise"}, {"reader": "pool"}, {"tap": True, "bias_add": False}, {"channels": 16}]
)
def test_channels_something_else_reads_or_already_on_the_block_are_left_alone(options):
    model = padding_model(**options)
    after, applied = rewritten(model)
    assert CHANNEL_PADDING_REWRITE not in applied
    assert_same_outputs(after, model, seed=6, shape=(1, 3, 8, 9))


def test_channels_on_the_avx2_block_are_left_alone_for_it():
    model = padding_model(channels=24)
    assert CHANNEL_PADDING_REWRITE in rewritten(model, channel_block=16)[1]
    after, applied = rewritten(model, channel_block=8)
    assert CHANNEL_PADDING_REWRITE not in applied
    assert_same_outputs(after, model, seed=6, shape=(1, 3, 8, 9))


@pytest.mark.parametrize(
    "machine, flags, block",
    [
        ("x86_64", "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni", 16),  # Zen 4, Xeon since Skylake-SP
        ("x86_64", "fpu sse2 avx avx2 fma sha_ni vaes", 8),  # Zen 3: AVX2 only
        ("x86_64", "fpu sse2 avx", 8),  # no AVX2: onnxruntime's x86-64 default block, 8
        ("AMD64", "fpu sse2 avx avx2", 8),  # Windows spells the machine so
        ("aarch64", "fp asimd evtstrm aes pmull sha1 sha2 crc32", 1),  # Graviton: no blocked layout
        ("arm64", "", 1),  # Apple silicon (no /proc/cpuinfo there)
    ],
)
def test_the_export_pads_to_the_block_of_the_cpu_it_runs_on(tmp_path, machine, flags, block):
    key = "Features" if "asimd" in flags else "flags"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some CPU\n{key}\t\t: {flags}\n\nprocessor\t: 1\n")
    assert this_cpu_block(cpuinfo, machine=machine) == block


def test_without_proc_cpuinfo_the_block_comes_from_numpys_cpu_features(tmp_path, monkeypatch):
    # macOS and Windows have no /proc/cpuinfo: an x86-64 CPU's block is read from numpy's dispatcher
    from detector import cpu_features

    monkeypatch.setattr(cpu_features, "numpy_cpu_flags", lambda: frozenset({"sse2", "avx", "avx2"}))
    assert this_cpu_block(tmp_path / "missing", machine="x86_64") == 8
    monkeypatch.setattr(cpu_features, "numpy_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert this_cpu_block(tmp_path / "missing", machine="x86_64") == 16
    monkeypatch.setattr(cpu_features, "numpy_cpu_flags", lambda: None)
    assert this_cpu_block(tmp_path / "missing", machine="x86_64") == 16  # unknown: as before
    monkeypatch.undo()
    # numpy's own, spelt as Linux does
    if cpu_features.platform.machine().lower() in cpu_features.BLOCKED_LAYOUT_MACHINES:
        flags = cpu_features.numpy_cpu_flags()
        assert flags is not None and "sse2" in flags
        assert cpu_features.nchwc_block(flags) == cpu_features.nchwc_block(cpu_features.cpu_flags() or flags)


def test_a_file_for_a_cpu_without_blocks_is_not_padded():
    model = padding_model(channels=18)
    after, applied = rewritten(model, channel_block=1)
    assert CHANNEL_PADDING_REWRITE not in applied
    assert_same_outputs(after, model, seed=6, shape=(1, 3, 8, 9))


def test_a_block_onnxruntime_does_not_use_is_refused():
    with pytest.raises(ValueError, match="channel block 4"):
        rewritten(padding_model(), channel_block=4)


def stem_model(seed=0, pool="MaxPool", concat_input=False):
    """PP-OCRv6's stem: x → conv 24 → relu → r0; conv 2×2 (12) → relu → conv 2×2 (24) → relu → r2;
    concat(maxpool 2×2 (r0), r2) → conv 3×3 stride 2 → out (24- and 12-channel maps at half resolution)."""
    b = Builder(seed)
    same = {"auto_pad": "SAME_UPPER"}

    def conv_relu(x, stem, shape, **attrs):
        kernel = [shape[2], shape[3]]
        return b.add(
            "Relu", [b.add("Conv", [x, b.weight(f"{stem}_w", shape)], stem, kernel_shape=kernel, **attrs)], "r" + stem
        )

    r0 = conv_relu("x", "c0", (24, 3, 3, 3), pads=[1] * 4, strides=[2, 2])
    r2 = conv_relu(conv_relu(r0, "c1", (12, 24, 2, 2), **same), "c2", (24, 12, 2, 2), **same)
    pooled = b.add(pool, [r0], "pool", kernel_shape=[2, 2], strides=[1, 1], **same)
    parts = [pooled, r2] + (["x_half"] if concat_input else [])
    joined = b.add("Concat", parts, "joined", axis=1)
    b.conv(joined, "out", (16, 48 + (3 if concat_input else 0), 3, 3), strides=[2, 2])
    # with concat_input, a Concat input whose channel count the rewrite cannot know; shapes recorded
    # for every map, as paddle2onnx records them
    return onnx.shape_inference.infer_shapes(b.model(["out"], extra_inputs=["x_half"] if concat_input else []))


def test_the_stem_maps_are_padded_through_relu_maxpool_and_concat_with_the_same_output():
    model = stem_model()
    # the padding through a Concat, which concat_conv_split would otherwise take away here
    after, applied = rewritten(model, skip={CONCAT_CONV_SPLIT_REWRITE})
    assert CHANNEL_PADDING_REWRITE in applied
    weights = {init.name: numpy_helper.to_array(init) for init in after.graph.initializer}
    convs = {node.output[0]: node for node in after.graph.node if node.op_type == "Conv"}
    assert weights[convs["c0"].input[1]].shape[0] == 32 and weights[convs["c2"].input[1]].shape[0] == 32
    assert weights[convs["c1"].input[1]].shape[:2] == (16, 32)  # padded inputs and outputs
    out_weight = weights[convs["out"].input[1]]
    assert out_weight.shape[1] == 64 and not out_weight[:, 24:32].any() and not out_weight[:, 56:].any()
    widened = {"c0", "rc0", "pool", "joined"}
    assert widened <= {info.name for info in model.graph.value_info}
    assert not widened & {info.name for info in after.graph.value_info}  # recorded with 24 and 48 channels
    x = np.random.default_rng(7).uniform(-2, 2, (2, 3, 19, 14)).astype(np.float32)
    (got,), (want,) = run(after, x), run(model, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{"pool": "AveragePool"}, {"concat_input": True}])
def test_a_stem_with_an_averaging_pool_or_an_unknown_concat_input_keeps_the_concatenated_maps(options):
    model = stem_model(**options)
    after, _ = rewritten(model, skip={CONCAT_CONV_SPLIT_REWRITE})
    weights = {init.name: numpy_helper.to_array(init) for init in after.graph.initializer}
    convs = {node.output[0]: node for node in after.graph.node if node.op_type == "Conv"}
    assert weights[convs["c0"].input[1]].shape[0] == 24 and weights[convs["c2"].input[1]].shape[0] == 24
    feeds = {"x": np.random.default_rng(8).uniform(-2, 2, (1, 3, 19, 14)).astype(np.float32)}
    if options.get("concat_input"):
        feeds["x_half"] = np.random.default_rng(9).uniform(-2, 2, (1, 3, 10, 7)).astype(np.float32)
    (got,), (want,) = cpu_session(after).run(None, feeds), cpu_session(model).run(None, feeds)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def concat_stem_model(seed=0, inputs=2, stride=2, tap_concat=False, unknown_channels=False):
    """PP-OCRv6's stem: x → conv s2 → relu → a; Concat(MaxPool(a), conv branches of a) → 3×3 conv (stride)
    → relu → out."""
    b = Builder(seed)
    a = b.add("Relu", [b.conv("x", "stem1", (16, 3, 3, 3), strides=[2, 2])], "stem1_relu")
    parts = [b.add("MaxPool", [a], "pool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])]
    t, channels = a, 16
    for index in range(inputs - 1):
        width = 8 * (index + 1)
        t = b.add("Relu", [b.conv(t, f"branch{index}", (width, channels, 3, 3))], f"branch{index}_relu")
        parts.append(t)
        channels = width
    if unknown_channels:  # an Add of two maps: nothing in the graph says how many channels it has
        parts.append(b.add("Add", [a, a], "doubled"))
    total = 16 + sum(8 * (index + 1) for index in range(inputs - 1)) + (16 if unknown_channels else 0)
    joined = b.add("Concat", parts, "joined", axis=1)
    b.add("Relu", [b.conv(joined, "stem3", (24, total, 3, 3), strides=[stride, stride])], "out")
    return b.model(["out", "joined"] if tap_concat else ["out"])


@pytest.mark.parametrize("inputs", [2, 3])
def test_a_strided_convolution_over_a_concat_becomes_one_per_input_summed(inputs):
    model = concat_stem_model(inputs=inputs)
    after, applied = rewritten(model)
    assert CONCAT_CONV_SPLIT_REWRITE in applied
    assert op_counts(after)["Concat"] == 0
    assert op_counts(after)["Conv"] == op_counts(model)["Conv"] + inputs - 1
    assert op_counts(after)["Add"] == inputs - 1
    assert_same_outputs(after, model, seed=5, shape=(2, 3, 17, 23))  # odd sizes: the padding at every edge


@pytest.mark.parametrize("options", [{"stride": 1}, {"tap_concat": True}, {"unknown_channels": True}])
def test_a_concat_read_elsewhere_at_stride_one_or_of_unknown_width_is_left_alone(options):
    model = concat_stem_model(**options)
    after, applied = rewritten(model)
    assert CONCAT_CONV_SPLIT_REWRITE not in applied
    assert op_counts(after)["Concat"] == 1
    assert_same_outputs(after, model, seed=6, shape=(1, 3, 16, 20))


def test_the_stem_split_and_padded_together_keeps_its_output():
    # the order the export applies them in: the Concat split first, then the padding of what is left
    model = stem_model()
    after, applied = rewritten(model)
    assert {CONCAT_CONV_SPLIT_REWRITE, CHANNEL_PADDING_REWRITE} <= set(applied)
    assert op_counts(after)["Concat"] == 0
    assert_same_outputs(after, model, seed=10, shape=(2, 3, 19, 14))


def pointwise_model(seed=0, stride=4, inputs=MIN_INPUT_CHANNELS, norm=True, relu=True, tap=False, pooled=False):
    """x → conv stride s (inputs channels) → relu → [global pool →] 1×1 conv (64) [→ BN] [→ relu] → 3×3 conv → out:
    the aggregation convolutions of PPHGNet_small's stages and LKPAN's input convolutions."""
    b = Builder(seed)
    scale = 1 / stride / np.sqrt(3)  # weights of about 1/sqrt(fan-in): maps of about 1 whatever the stride
    stem = b.add(
        "Conv", ["x", b.weight("stem_w", (inputs, 3, stride, stride), -scale, scale)], "stem", strides=[stride] * 2
    )
    t = b.add("Relu", [stem], "stem_relu")
    if pooled:
        t = b.add("GlobalAveragePool", [t], "pool")
    t = b.add("Conv", [t, b.weight("wide_w", (64, inputs, 1, 1), -0.05, 0.05), b.weight("wide_b", (64,))], "wide")
    if norm:
        parameters = [
            b.weight("bn_scale", (64,), 0.5, 1.5),
            b.weight("bn_shift", (64,)),
            b.weight("bn_mean", (64,)),
            b.weight("bn_var", (64,), 0.5, 2.0),
        ]
        t = b.add("BatchNormalization", [t, *parameters], "bn", epsilon=1e-5)
    if relu:
        t = b.add("Relu", [t], "wide_relu")
    b.conv(t, "out", (8, 64, 3, 3))
    return b.model(["out"] + (["wide"] if tap else []))


def conv_inputs(model) -> list:
    """The input channel counts of the 4-D 1×1 convolutions and the shapes of the 1-D ones' weights."""
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    convs = [weights[node.input[1]].shape for node in model.graph.node if node.op_type == "Conv"]
    return [shape for shape in convs if shape[2:] in ((1, 1), (1,))]


@pytest.mark.parametrize("options", [{}, {"norm": False, "seed": 1}, {"relu": False, "stride": 16, "seed": 2}])
def test_wide_pointwise_convolutions_leave_the_blocked_layout_on_avx2_with_the_same_outputs(options):
    model = pointwise_model(**options)
    after, applied = rewritten(model, channel_block=8)
    assert POINTWISE_UNBLOCKED_REWRITE in applied
    assert conv_inputs(after) == [(64, MIN_INPUT_CHANNELS, 1)]  # one 1-D convolution, the norm folded into it
    assert "BatchNormalization" not in op_counts(after)
    relus = [node for node in after.graph.node if node.op_type == "Relu"]
    assert len(relus) == 1 + options.get("relu", True)  # moved before the Reshape back: onnxruntime fuses it
    assert block_record(applied, 8) == {"channel_block": 8}  # the file is made for AVX2's block
    assert_same_outputs(after, model, seed=7, shape=(2, 3, 24, 40))
    assert_same_outputs(after, model, seed=8, shape=(1, 3, 33, 17))


@pytest.mark.parametrize(
    "options",
    [
        {"stride": 32},  # a map too small: the blocked kernel is faster there
        {"inputs": MIN_INPUT_CHANNELS // 2},  # too narrow to pay for the reorders
        {"pooled": True},  # a squeeze-and-excitation 1×1 map
    ],
)
def test_narrow_or_small_pointwise_convolutions_stay_blocked(options):
    model = pointwise_model(**options)
    after, applied = rewritten(model, channel_block=8)
    assert POINTWISE_UNBLOCKED_REWRITE not in applied
    assert_same_outputs(after, model, seed=9, shape=(1, 3, 64, 64))


def test_pointwise_convolutions_stay_blocked_for_avx512_and_an_output_read_elsewhere_keeps_its_norm():
    model = pointwise_model()
    assert POINTWISE_UNBLOCKED_REWRITE not in rewritten(model)[1]  # block 16: the 1-D form loses there
    tapped = pointwise_model(tap=True)
    after, applied = rewritten(tapped, channel_block=8)
    assert POINTWISE_UNBLOCKED_REWRITE in applied
    assert op_counts(after)["BatchNormalization"] == 1  # the convolution's own output is a graph output
    assert_same_outputs(after, tapped, seed=10, shape=(1, 3, 16, 24))


def test_map_sizes_follow_strides_transposed_convolutions_resizes_and_global_pools():
    b = Builder(0)
    quarter = b.conv("x", "quarter", (8, 3, 4, 4), strides=[4, 4])
    eighth = b.add("MaxPool", [quarter], "eighth", kernel_shape=[2, 2], strides=[2, 2])
    scales = b.add("Constant", [], "scales", value=numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "v"))
    back = b.add("Resize", [eighth, "", scales], "back", mode="nearest")
    summed = b.add("Add", [quarter, back], "summed")
    gate = b.add("GlobalAveragePool", [summed], "gate")
    gated = b.add("Mul", [summed, gate], "gated")
    up = b.add("ConvTranspose", [gated, b.weight("up_w", (8, 8, 2, 2))], "up", strides=[2, 2])
    flat = b.add("Flatten", [up], "flat")
    factors = downsampling(Graph(b.model([flat])))
    assert [factors[name] for name in (quarter, eighth, back, summed, gate, gated, up)] == [4, 8, 4, 4, GLOBAL, 4, 2]
    assert flat not in factors  # an op that does not keep the map's layout: unknown


def test_a_file_made_for_another_kind_of_cpu_says_so():
    import json

    from detector.cpu_features import made_for_another_cpu

    def record(block):
        return {"detector.export": json.dumps({"channel_block": block})}

    on_arm = made_for_another_cpu(record(16), 1)
    assert (
        "a CPU with AVX-512" in on_arm and "no blocked layout on this CPU" in on_arm and "--channel-block 1" in on_arm
    )
    from_arm = made_for_another_cpu(record(1), 16)
    assert "without onnxruntime's blocked channel layout" in from_arm and "blocks them by 16" in from_arm
    assert made_for_another_cpu(record(1), 1) is None and made_for_another_cpu({}, 1) is None
