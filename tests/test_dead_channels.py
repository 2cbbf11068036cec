"""dead_hidden_channels_removed: hidden channels with all-zero weights leave a pair of convolutions, the
results unchanged (synthetic graphs: a channel mixer with GELU between, as in PP-OCRv6)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from detector.optimize.rewrites import CHANNEL_PADDING_REWRITE, DEAD_CHANNEL_REWRITE
from tests.rewrite_checks import cpu_session, rewritten

IN, HIDDEN, OUT = 16, 24, 16
SKIP = (CHANNEL_PADDING_REWRITE,)  # keep the channel counts the rewrite leaves


def mixer(
    zero_rows=(),
    zero_columns=(),
    second_kernel: int = 1,
    first_kernel: int = 1,
    gate: str = "gelu",
    extra_reader: bool = False,
    hidden: int = HIDDEN,
) -> onnx.ModelProto:
    """x -> Conv A (IN -> hidden) -> gate -> Conv B (hidden -> OUT) -> y, with A's weights zero for
    zero_rows and B's for zero_columns (biases nonzero everywhere)."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.3, (hidden, IN, first_kernel, first_kernel)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (OUT, hidden, second_kernel, second_kernel)).astype(np.float32)
    w1[list(zero_rows)] = 0
    w2[:, list(zero_columns)] = 0
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(rng.normal(0, 1, hidden).astype(np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(rng.normal(0, 1, OUT).astype(np.float32), "b2"),
        numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(rng.normal(1, 0.2, (1, hidden, 1, 1)).astype(np.float32), "per_channel"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[first_kernel // 2] * 4, name="A")]
    if gate == "gelu":
        nodes += [
            helper.make_node("Div", ["h", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["a"]),
            helper.make_node("Mul", ["h", "a"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["g"]),
        ]
    elif gate == "per_channel":  # a per-channel operand: not valuewise
        nodes += [helper.make_node("Mul", ["h", "per_channel"], ["g"])]
    else:
        nodes += [helper.make_node("Relu", ["h"], ["g"])]
    pads = [second_kernel // 2] * 4
    nodes.append(helper.make_node("Conv", ["g", "w2", "b2"], ["y"], pads=pads, name="B"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, OUT, None, None])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, hidden, None, None]))
    graph = helper.make_graph(
        nodes, "mixer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN, None, None])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return cpu_session(model).run(["y"], {"x": x})[0]


def weight(model: onnx.ModelProto, conv: str) -> np.ndarray:
    node = next(node for node in model.graph.node if node.name == conv)
    init = next(init for init in model.graph.initializer if init.name == node.input[1])
    return numpy_helper.to_array(init)


def check_same(model: onnx.ModelProto, changed: onnx.ModelProto, atol: float = 1e-5) -> None:
    rng = np.random.default_rng(3)
    for shape in ((1, IN, 7, 9), (1, IN, 16, 5)):
        x = rng.normal(0, 1, shape).astype(np.float32)
        np.testing.assert_allclose(run(changed, x), run(model, x), rtol=0, atol=atol)


@pytest.mark.parametrize("gate", ["gelu", "relu"])
def test_channels_without_weights_on_either_side_leave_both_convolutions(gate):
    # 8 of 24 dead: 16 stay, one block of 16 instead of two
    model = mixer(zero_rows=(0, 5, 6, 10), zero_columns=(6, 9, 23, 11, 12), gate=gate)
    changed, applied = rewritten(model, skip=SKIP)
    assert DEAD_CHANNEL_REWRITE in applied
    assert weight(changed, "A").shape[0] == HIDDEN - 8 == weight(changed, "B").shape[1]
    check_same(model, changed)


def test_a_constant_channel_stays_where_the_second_convolution_pads():
    # a 3x3 reader with zero padding sees the constant channel's border as zeros: only B's zero columns go
    model = mixer(zero_rows=(1, 3), zero_columns=(2, 7, 8, 13, 14, 15, 16, 17), second_kernel=3)
    changed, applied = rewritten(model, skip=SKIP)
    assert DEAD_CHANNEL_REWRITE in applied
    assert weight(changed, "A").shape[0] == HIDDEN - 8  # rows 1 and 3 stay
    check_same(model, changed)


def test_a_padded_first_convolution_still_makes_constant_channels():
    model = mixer(zero_rows=range(3, 11), first_kernel=3)
    changed, applied = rewritten(model, skip=SKIP)
    assert DEAD_CHANNEL_REWRITE in applied and weight(changed, "A").shape[0] == HIDDEN - 8
    check_same(model, changed)


def test_a_width_of_whole_blocks_stays_whole_blocks():
    # 32 hidden channels, 20 dead: 16 stay (four dead among them), not 12, so the blocked kernels keep them
    model = mixer(zero_rows=range(10), zero_columns=range(22, 32), hidden=32)
    changed, applied = rewritten(model, skip=SKIP)
    assert DEAD_CHANNEL_REWRITE in applied and weight(changed, "A").shape[0] == 16 == weight(changed, "B").shape[1]
    check_same(model, changed)
    few = mixer(zero_rows=(1, 2, 3), hidden=32)  # 29 would stay, 32 is the next whole block: nothing to gain
    assert DEAD_CHANNEL_REWRITE not in rewritten(few, skip=SKIP)[1]
    same_blocks = mixer(zero_rows=(1, 2), zero_columns=(5,))  # 21 of 24: still two blocks
    assert DEAD_CHANNEL_REWRITE not in rewritten(same_blocks, skip=SKIP)[1]


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"zero_rows": range(8), "gate": "per_channel"}, "a per-channel operand in the chain"),
        ({"zero_rows": range(4), "zero_columns": range(4, 8), "extra_reader": True}, "the hidden map read elsewhere"),
        ({}, "no dead channel"),
        ({"zero_columns": tuple(range(HIDDEN))}, "every channel dead"),
    ],
)
def test_the_pair_is_left_alone(options: dict, why: Optional[str]):
    model = mixer(**options)
    changed, applied = rewritten(model, skip=SKIP)
    assert DEAD_CHANNEL_REWRITE not in applied, why
    assert weight(changed, "A").shape[0] == HIDDEN, why
