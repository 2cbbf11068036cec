"""shape_bucket: the default resize, then zero padding up to multiples of N, and the map cropped back.

Not exact: the models' squeeze-excitation blocks average over the whole (padded) feature map, so
boxes can move a few pixels anywhere in the image (README: Shape buckets). What these tests hold it
to: the same text lines, nearly the same boxes; nothing changes where no padding is added; results
never depend on batch_size; bad values are refused.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from detector import InvalidParameterError, TextDetection
from detector.preprocess import bucketed_size, check_shape_bucket, group_by_shape
from tests.conftest import REPO_ROOT
from tests.rendered import RENDERED_PAGES, box_iou, polygon_bounds, write_rendered_pages
from tools.dev.sample_image import render_text_image

pytestmark = pytest.mark.runtime

BUCKETS = (128, 320)


@pytest.mark.parametrize("value", [0, -32, 16, 100, 33, 320.0, True, "320", (320,)])
def test_bad_shape_buckets_are_refused(value):
    with pytest.raises(InvalidParameterError, match="shape_bucket"):
        check_shape_bucket(value)


def test_bucketed_size_rounds_each_side_up_on_its_own():
    assert check_shape_bucket(None) is None and check_shape_bucket(np.int64(64)) == 64
    assert bucketed_size(248, 960, 320) == (320, 960)
    assert bucketed_size(32, 352, 320) == (320, 640)
    assert bucketed_size(640, 96, 32) == (640, 96)
    assert bucketed_size(248, 960, None) == (248, 960)


def test_images_share_a_batch_only_when_their_padded_sizes_match():
    shapes = [(224, 640), (256, 608), (320, 672), (96, 96), (224, 640)]
    images = [np.zeros((h, w, 3), np.uint8) for h, w in shapes]
    assert group_by_shape(images) == [[0, 4], [1], [2], [3]]
    assert group_by_shape(images, 320) == [[0, 1, 4], [2], [3]]


def edge_image() -> np.ndarray:
    """Text cut by the bottom and right edges, as in a crop or a photo of part of a page."""
    image, _ = render_text_image(
        ["Edge text runs off the right side of this page", "and the bottom line is cut in half here"],
        width=900,
        font_size=40,
        line_gap=20,
        margin=20,
    )
    return image[: image.shape[0] - 45, :700].copy()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return write_rendered_pages(tmp_path_factory.mktemp("bucket_pages"))


@pytest.fixture(scope="module")
def plain(default_onnx):
    with TextDetection(model_dir=default_onnx.parent, device="cpu") as model:
        yield model


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucketed_boxes_find_the_same_lines(default_onnx, plain, pages, bucket):
    with TextDetection(model_dir=default_onnx.parent, device="cpu", shape_bucket=bucket) as model:
        assert model.shape_bucket == bucket
        for name, (path, truth) in pages.items():
            before, after = plain.predict(path)[0], model.predict(path)[0]
            assert len(after["dt_polys"]) == len(before["dt_polys"]) == len(truth), name
            for old, new in zip(before["dt_polys"], after["dt_polys"]):
                # the same line, nearly the same box (the map was cropped back to the image's own size)
                assert box_iou(polygon_bounds(old), polygon_bounds(new)) > 0.8, (name, old, new)
            for line in truth:
                assert max(box_iou(line, polygon_bounds(p)) for p in after["dt_polys"]) > 0.5, (name, line)


def test_text_at_the_edges_is_still_found(default_onnx, plain):
    image = edge_image()
    height, width = image.shape[:2]
    with TextDetection(model_dir=default_onnx.parent, device="cpu", shape_bucket=128) as model:
        polys = model.predict(image)[0]["dt_polys"]
    assert len(polys) and len(plain.predict(image)[0]["dt_polys"])
    assert polys[..., 0].max() <= width and polys[..., 1].max() <= height  # in the image, not the padding
    assert polys[..., 0].max() >= width - 8 and polys[..., 1].max() >= height - 8  # the cut lines reach the edges


def test_nothing_changes_where_nothing_is_padded(default_onnx, plain, pages):
    path = pages["receipt"][0]  # 420x260: resized to 416x256, already multiples of 32
    with TextDetection(model_dir=default_onnx.parent, device="cpu", shape_bucket=32) as model:
        before, after = plain.predict(path)[0], model.predict(path)[0]
    assert len(before["dt_polys"]) == len(RENDERED_PAGES["receipt"]["lines"])
    np.testing.assert_array_equal(before["dt_polys"], after["dt_polys"])
    assert before["dt_scores"] == after["dt_scores"]


def test_bucketed_results_do_not_depend_on_batch_size(default_onnx, pages):
    inputs = [path for path, _ in pages.values()] + [edge_image()]
    with TextDetection(model_dir=default_onnx.parent, device="cpu", shape_bucket=320) as model:
        one, many = model.predict(inputs, batch_size=1), model.predict(inputs, batch_size=4)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a["dt_polys"], b["dt_polys"])
        assert a["dt_scores"] == b["dt_scores"]


def test_shape_bucket_and_input_shape_are_refused_together(default_onnx):
    with pytest.raises(InvalidParameterError, match="input_shape or shape_bucket"):
        TextDetection(model_dir=default_onnx.parent, device="cpu", input_shape=(3, 320, 320), shape_bucket=320)
    with pytest.raises(InvalidParameterError, match="multiple of 32"):
        TextDetection(model_dir=default_onnx.parent, device="cpu", shape_bucket=100)


def test_the_cli_option(default_onnx, pages):
    def detect(*args):
        command = [sys.executable, "-m", "detector.cli", "-i", pages["page"][0], "--model", default_onnx, *args]
        return subprocess.run(list(map(str, command)), capture_output=True, text=True, cwd=REPO_ROOT, timeout=180)

    proc = detect("--shape_bucket", "320", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["res"]["dt_polys"]) == len(pages["page"][1])
    for args in (["--shape-bucket", "100"], ["--shape_bucket", "320", "--input_shape", "3", "320", "320"]):
        proc = detect(*args)
        assert proc.returncode == 2 and "shape_bucket" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_serve_and_batch_pass_it_through(default_onnx):
    pytest.importorskip("fastapi")
    from detector.serve.config import ServeConfig
    from detector.serve.inference import load_detector

    config = ServeConfig.from_json(ServeConfig(model_dir=str(default_onnx), device="cpu", shape_bucket=320).to_json())
    assert load_detector(config).shape_bucket == 320  # workers rebuild the config from this JSON
    pytest.importorskip("ray")
    from detector.batch_rows import ModelSpec

    assert (
        ModelSpec(model_dir=str(default_onnx), device="cpu", settings={"shape_bucket": 128}).load().shape_bucket == 128
    )
