"""The rewrite applied before int8 quantization only, hard_swish_as_clipped_product: hard-swish becomes
y · clip(y + beta/alpha, 0, 1/alpha) with alpha moved into the convolutions that read it. Checked on small
graphs built like the mobile detectors' (no Paddle needed)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from detector.optimize.rewrites.hard_swish_gate import HARD_SWISH_GATE_REWRITE, rewrite_hard_swish_gates
from tests.rewrite_checks import cpu_session
from tests.test_block_rewrites import Builder


def run(model, x):
    session = cpu_session(model)
    return session.run(None, {"x": x})


def rewritten_copy(model, skip=()):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    gates = rewrite_hard_swish_gates(copy, skip=skip)
    onnx.checker.check_model(copy)
    return copy, gates


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
