"""The CPU session's blocked-layout pass (detector/blocked_layout.py): squeeze-excitation products, residual
sums, nearest upsampling and channel concatenation moved into onnxruntime's blocked layout give exactly the
plain session's maps; anything else, or any difference, leaves the plain session in use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import detector.blocked_layout as blocked_layout
from detector.blocked_layout import BLOCKED_DOMAIN, keep_maps_blocked, open_cpu_session
from detector.cpu_features import this_cpu_block
from detector.errors import InvalidModelError
from detector.onnx_messages import model_metadata, parse_model
from detector.session import CPU_PROVIDER, _open, load_session, parse_device, session_options
from detector.session_run import run_session

pytestmark = pytest.mark.runtime

SHAPES = [(1, 32, 24, 40), (1, 32, 7, 9), (1, 32, 1, 1), (1, 32, 64, 48)]


def squeeze_excitation_net(channels: int = 32, gate_product: str = "gate") -> onnx.ModelProto:
    """x -> conv -> x·gate(x) (pooled, two 1×1 convs, hard sigmoid) -> + conv(that) -> 2× nearest upsample,
    concatenated with its own conv -> conv -> y. gate_product="map": the product is of two maps instead."""
    rng = np.random.default_rng(3)

    def weight(name, out_channels, in_channels, kernel=1):
        return numpy_helper.from_array(
            rng.normal(0, 0.3, (out_channels, in_channels, kernel, kernel)).astype(np.float32), name
        )

    inits = [
        weight("w_in", channels, 32, 3),
        weight("w_squeeze", 8, channels),
        weight("w_excite", channels, 8),
        weight("w_mix", channels, channels),
        weight("w_side", channels, channels),
        weight("w_out", 1, 2 * channels, 3),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_in"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["a"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "w_squeeze"], ["squeezed"]),
        helper.make_node("Relu", ["squeezed"], ["squeezed_relu"]),
        helper.make_node("Conv", ["squeezed_relu", "w_excite"], ["excited"]),
        helper.make_node("HardSigmoid", ["excited"], ["gate"]),
        helper.make_node("Add", ["gate", "one"], ["one_plus_gate"]),
    ]
    if gate_product == "map":
        nodes += [
            helper.make_node("Conv", ["a", "w_side"], ["other_map"]),
            helper.make_node("Mul", ["a", "other_map"], ["m"]),
        ]
    else:
        nodes.append(helper.make_node("Mul", ["a", "one_plus_gate"], ["m"]))
    nodes += [
        helper.make_node("Conv", ["m", "w_mix"], ["mixed"]),
        helper.make_node("Add", ["m", "mixed"], ["r"]),
        helper.make_node(
            "Resize",
            ["r", "roi", "scales"],
            ["up"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        helper.make_node("Conv", ["up", "w_side"], ["side"]),
        helper.make_node("Concat", ["up", "side"], ["both"], axis=1),
        helper.make_node("Conv", ["both", "w_out"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "squeeze_excitation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write(model: onnx.ModelProto, tmp_path: Path, name: str = "net.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, path)
    return path


def open_both(path: Path):
    plain, _ = load_session(path, parse_device("cpu"), 2, blocked_layout=False)
    blocked, moved = open_cpu_session(
        path,
        lambda: session_options(2),
        this_cpu_block(),
        lambda model, options: _open(path, options, [CPU_PROVIDER], model),
    )
    return plain, blocked, moved


def optimized_graph(path: Path, tmp_path: Path):
    """onnxruntime's optimized graph of the model, as the pass reads it."""
    options = session_options(2)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=[CPU_PROVIDER])
    return parse_model((tmp_path / "optimized.onnx").read_bytes())


def test_products_sums_upsampling_and_concat_move_and_give_the_same_maps(tmp_path):
    path = write(squeeze_excitation_net(), tmp_path)
    plain, blocked, moved = open_both(path)
    assert moved == 4  # the product, the residual sum, the upsampling, the concat
    assert blocked.get_inputs()[0].shape[0] == 1  # the product's weight is one image's gate
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(blocked.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def test_the_graph_keeps_no_plain_product_and_no_reorder_pair_around_it(tmp_path):
    model = optimized_graph(write(squeeze_excitation_net(), tmp_path), tmp_path)
    before = [(node.op_type, node.domain) for node in model.graph.node]
    assert ("Mul", "") in before and ("Resize", "") in before  # onnxruntime left them plain
    assert keep_maps_blocked(model, this_cpu_block()) == 4
    after = [(node.op_type, node.domain) for node in model.graph.node]
    assert ("Mul", "") not in after and ("Resize", "") not in after and ("Upsample", BLOCKED_DOMAIN) in after
    reorders = sum(op in ("ReorderInput", "ReorderOutput") for op, _ in after)
    assert reorders < sum(op in ("ReorderInput", "ReorderOutput") for op, _ in before)
    # the one product became a depthwise blocked convolution whose weight is the gate
    (product,) = [
        node for node in model.graph.node if node.name.startswith("blocked_layout/") and node.op_type == "Conv"
    ]
    assert product.domain == BLOCKED_DOMAIN and [a.i for a in product.attribute if a.name == "group"] == [32]


def test_a_batch_runs_image_by_image_with_the_batched_maps(tmp_path):
    path = write(squeeze_excitation_net(), tmp_path)
    plain, blocked, _ = open_both(path)
    batch = np.random.default_rng(1).standard_normal((3, 32, 20, 28)).astype(np.float32)
    expected = plain.run(None, {"x": batch})[0][:, 0]
    np.testing.assert_array_equal(run_session(blocked, "x", "y", batch), expected)


def test_a_product_of_two_maps_stays_plain(tmp_path):
    path = write(squeeze_excitation_net(gate_product="map"), tmp_path)
    plain, blocked, moved = open_both(path)
    assert keep_maps_blocked(optimized_graph(path, tmp_path), this_cpu_block()) == moved == 0
    x = np.random.default_rng(2).standard_normal((2, 32, 16, 16)).astype(np.float32)  # a batch still runs whole
    np.testing.assert_array_equal(blocked.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])
    assert blocked.get_inputs()[0].shape[0] == "n"


def test_maps_of_part_blocks_stay_plain(tmp_path):
    """24 channels: not a whole number of blocks of 16 (or of 8 as 24 is, hence the block of 16 given here)."""
    model = optimized_graph(write(squeeze_excitation_net(channels=24), tmp_path), tmp_path)
    assert keep_maps_blocked(model, 16) == 0


def test_any_difference_on_the_probe_keeps_the_plain_session(tmp_path, monkeypatch):
    path = write(squeeze_excitation_net(), tmp_path)
    monkeypatch.setattr(blocked_layout, "probe_difference", lambda plain, blocked: 1e-7)
    _, session, moved = open_both(path)
    assert moved == 0 and session.get_inputs()[0].shape[0] == "n"


def test_a_graph_onnxruntime_refuses_keeps_the_plain_session(tmp_path, monkeypatch):
    path = write(squeeze_excitation_net(), tmp_path)

    def broken(model, block):
        model.graph.node[0].op_type = "NoSuchOperator"
        return 1

    monkeypatch.setattr(blocked_layout, "keep_maps_blocked", broken)
    _, session, moved = open_both(path)
    assert moved == 0
    x = np.zeros((2, 32, 8, 8), np.float32)
    assert session.run(None, {"x": x})[0].shape[0] == 2


def test_the_default_model_moves_and_keeps_its_maps(default_onnx):
    plain, blocked, moved = open_both(default_onnx)
    assert moved > 0
    rng = np.random.default_rng(4)
    for shape in [(1, 3, 96, 160), (1, 3, 32, 320), (1, 3, 224, 128)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(blocked.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def test_a_model_of_one_fixed_size_runs_blocked_too(default_onnx, tmp_path):
    # the probe was always 96x128, which such a file refuses: it never ran blocked
    model = onnx.load(default_onnx)
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, 320, 320)):
        dim.dim_value = size
    onnx.save(model, tmp_path / "fixed.onnx")
    plain, blocked, moved = open_both(tmp_path / "fixed.onnx")
    assert moved > 0
    x = np.random.default_rng(5).standard_normal((1, 3, 320, 320)).astype(np.float32)
    np.testing.assert_array_equal(blocked.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def test_the_protobuf_messages_write_back_every_field_they_do_not_declare(default_onnx):
    data = default_onnx.read_bytes()
    model = parse_model(data)
    assert onnx.load_from_string(model.SerializeToString()) == onnx.load_from_string(data)


def test_the_metadata_message_reads_what_onnx_reads(default_onnx):
    data = default_onnx.read_bytes()
    expected = {entry.key: entry.value for entry in onnx.load_from_string(data).metadata_props}
    assert model_metadata(data) == expected and "detector.model_name" in expected


def test_no_optimized_graph_to_edit_opens_the_model_as_always(tmp_path, monkeypatch):
    path = write(squeeze_excitation_net(), tmp_path)

    def no_protobuf(data):
        raise ImportError("No module named 'google.protobuf'")

    monkeypatch.setattr(blocked_layout, "parse_model", no_protobuf)
    plain, session, moved = open_both(path)
    assert moved == 0 and session.get_inputs()[0].shape[0] == "n"
    x = np.random.default_rng(5).standard_normal((1, 32, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def test_a_file_onnxruntime_cannot_load_is_still_reported_as_such(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(InvalidModelError, match="onnxruntime cannot load"):
        load_session(path, parse_device("cpu"))


def test_a_model_file_over_the_size_limit_opens_as_it_is(tmp_path, monkeypatch):
    path = write(squeeze_excitation_net(), tmp_path)
    monkeypatch.setattr(blocked_layout, "MAX_MODEL_BYTES", path.stat().st_size - 1)
    _, session, moved = open_both(path)
    assert moved == 0 and session.get_inputs()[0].shape[0] == "n"
