"""PaddleOCR 3.7's TextDetection surface, entry by entry: the README table as data, each entry called.

Every constructor keyword, predict keyword, module method, result attribute and `paddleocr
text_detection` flag PaddleOCR has is here, with what this package does with it: supported,
ignored (accepted, one warning with the reason, no effect on the boxes) or refused (a DetectorError
that says why). None may raise TypeError or AttributeError. The README lists the same entries.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from detector import DetectorError, IgnoredArgumentWarning, TextDetection, paddleocr_compat
from detector.cli import cli
from detector.paddleocr_compat import IGNORED_KEYWORDS
from tests.conftest import REPO_ROOT
from tests.rendered import write_rendered_pages

pytestmark = pytest.mark.runtime

SUPPORTED, IGNORED, REFUSED = "supported", "ignored", "refused"

# (kind, name as the README shows it, status, example): the example is what the test calls.
SURFACE = [
    # TextDetection(...) keywords: PaddleOCR's module constructor and its common arguments
    ("constructor", "model_name", SUPPORTED, {"model_name": "PP-OCRv4_mobile_det"}),
    ("constructor", "model_dir", SUPPORTED, {}),
    ("constructor", "device", SUPPORTED, {"device": "cpu"}),
    ("constructor", "device='npu' / 'xpu' / 'mlu' / 'dcu' / 'gcu'", REFUSED, {"device": "npu"}),
    ("constructor", "engine", IGNORED, {"engine": "paddle_static"}),
    ("constructor", "engine_config", IGNORED, {"engine_config": {"run_mode": "paddle"}}),
    ("constructor", "enable_hpi", IGNORED, {"enable_hpi": True}),
    ("constructor", "use_tensorrt", IGNORED, {"use_tensorrt": True}),
    ("constructor", "precision", SUPPORTED, {"precision": "fp32"}),
    ("constructor", "enable_mkldnn", IGNORED, {"enable_mkldnn": True}),
    ("constructor", "mkldnn_cache_capacity", IGNORED, {"mkldnn_cache_capacity": 10}),
    ("constructor", "cpu_threads", SUPPORTED, {"cpu_threads": 1}),
    ("constructor", "enable_cinn", IGNORED, {"enable_cinn": True}),
    ("constructor", "limit_side_len", SUPPORTED, {"limit_side_len": 640}),
    ("constructor", "limit_type", SUPPORTED, {"limit_type": "min", "limit_side_len": 320}),
    ("constructor", "thresh", SUPPORTED, {"thresh": 0.4}),
    ("constructor", "box_thresh", SUPPORTED, {"box_thresh": 0.7}),
    ("constructor", "unclip_ratio", SUPPORTED, {"unclip_ratio": 2.0}),
    ("constructor", "input_shape", SUPPORTED, {"input_shape": (3, 320, 640)}),
    # model.predict(input, ...) / predict_iter keywords
    ("predict", "input", SUPPORTED, {}),
    ("predict", "batch_size", SUPPORTED, {"batch_size": None}),
    ("predict", "limit_side_len", SUPPORTED, {"limit_side_len": 640}),
    ("predict", "limit_type", SUPPORTED, {"limit_type": "min", "limit_side_len": 320}),
    ("predict", "thresh", SUPPORTED, {"thresh": 0.4}),
    ("predict", "box_thresh", SUPPORTED, {"box_thresh": 0.7}),
    ("predict", "unclip_ratio", SUPPORTED, {"unclip_ratio": 2.0}),
    ("predict", "max_side_limit", SUPPORTED, {"max_side_limit": 800}),
    # TextDetection methods
    ("module", "predict()", SUPPORTED, None),
    ("module", "predict_iter()", SUPPORTED, None),
    ("module", "close()", SUPPORTED, None),
    ("module", "default_model_name", SUPPORTED, None),
    # the result of predict: a dict with PaddleX's result methods
    ("result", "res['input_path']", SUPPORTED, None),
    ("result", "res['page_index']", SUPPORTED, None),
    ("result", "res['dt_polys']", SUPPORTED, None),
    ("result", "res['dt_scores']", SUPPORTED, None),
    ("result", "res['input_img']", SUPPORTED, None),
    ("result", "res.print(json_format, indent, ensure_ascii)", SUPPORTED, None),
    ("result", "res.save_to_json(save_path, indent, ensure_ascii)", SUPPORTED, None),
    ("result", "res.save_to_img(save_path)", SUPPORTED, None),
    ("result", "res.save_all(save_path)", SUPPORTED, None),
    ("result", "res.json", SUPPORTED, None),
    ("result", "res.str", SUPPORTED, None),
    ("result", "res.img", SUPPORTED, None),
    # `paddleocr text_detection` flags, given to `detect`
    ("cli", "-i / --input", SUPPORTED, []),
    ("cli", "--save_path", SUPPORTED, ["--save_path", "{tmp}"]),
    ("cli", "--model_name", SUPPORTED, ["--model_name", "PP-OCRv4_mobile_det"]),
    ("cli", "--model_dir", SUPPORTED, []),
    ("cli", "--device", SUPPORTED, ["--device", "cpu"]),
    ("cli", "--limit_side_len", SUPPORTED, ["--limit_side_len", "640"]),
    ("cli", "--limit_type", SUPPORTED, ["--limit_type", "min", "--limit_side_len", "320"]),
    ("cli", "--thresh", SUPPORTED, ["--thresh", "0.4"]),
    ("cli", "--box_thresh", SUPPORTED, ["--box_thresh", "0.7"]),
    ("cli", "--unclip_ratio", SUPPORTED, ["--unclip_ratio", "2.0"]),
    ("cli", "--input_shape C H W", SUPPORTED, ["--input_shape", "3", "320", "640"]),
    ("cli", "--cpu_threads", SUPPORTED, ["--cpu_threads", "1"]),
    ("cli", "--engine", IGNORED, ["--engine", "paddle"]),
    ("cli", "--enable_hpi", IGNORED, ["--enable_hpi", "True"]),
    ("cli", "--use_tensorrt", IGNORED, ["--use_tensorrt", "True"]),
    ("cli", "--precision", SUPPORTED, ["--precision", "fp32"]),
    ("cli", "--enable_mkldnn", IGNORED, ["--enable_mkldnn", "False"]),
    ("cli", "--mkldnn_cache_capacity", IGNORED, ["--mkldnn_cache_capacity", "10"]),
    ("cli", "--enable_cinn", IGNORED, ["--enable_cinn", "True"]),
]


def entries(kind):
    return [pytest.param(name, status, example, id=name) for k, name, status, example in SURFACE if k == kind]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path, _truth = write_rendered_pages(tmp_path_factory.mktemp("surface"))["receipt"]
    return path


@pytest.fixture(scope="module")
def baseline(default_onnx, page):
    with TextDetection(model_dir=default_onnx.parent, device="cpu") as model:
        return model.predict(page)[0]


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    # the "once" is per process; each entry must show its own warning
    monkeypatch.setattr(paddleocr_compat, "_warned", set())


@pytest.fixture
def models_env(monkeypatch, default_onnx):
    monkeypatch.setenv("DETECTOR_MODELS", str(default_onnx.parent.parent))


def test_readme_table_lists_the_same_entries():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### PaddleOCR's TextDetection surface", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (constructor|predict|module|result|cli) \| `(.+?)` \| (\w+) \|", section, re.M)
    assert sorted(rows) == sorted((kind, name, status) for kind, name, status, _ in SURFACE)
    for name, reason in IGNORED_KEYWORDS.items():  # the README gives the same reason the warning does
        assert reason in section, name


@pytest.mark.parametrize("name,status,example", entries("constructor"))
def test_constructor_keyword(name, status, example, default_onnx, page, baseline, models_env):
    kwargs = {"device": "cpu", **example}
    if "model_name" not in kwargs:
        kwargs["model_dir"] = default_onnx.parent
    if status == REFUSED:
        with pytest.raises(DetectorError, match="device must be 'cpu', 'gpu' or 'gpu:N'"):
            TextDetection(**kwargs)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = TextDetection(**kwargs)
        result = model.predict(page)[0]
    ours = [w for w in caught if issubclass(w.category, IgnoredArgumentWarning)]
    if status == IGNORED:
        assert len(ours) == 1 and IGNORED_KEYWORDS[name] in str(ours[0].message) and f"{name}=" in str(ours[0].message)
        np.testing.assert_array_equal(result["dt_polys"], baseline["dt_polys"])  # ignored: changes nothing
    else:
        assert not ours
        assert len(result["dt_polys"]) > 0  # settings may split or merge lines, never lose the text
        setting = example and next(iter(example))
        if setting in ("limit_side_len", "limit_type", "thresh", "box_thresh", "unclip_ratio"):
            assert getattr(model.settings, setting) == example[setting]
        if setting == "input_shape":
            assert model.input_shape == (3, 320, 640)


def test_ignored_keywords_warn_once_per_process(default_onnx):
    with pytest.warns(IgnoredArgumentWarning):
        TextDetection(model_dir=default_onnx.parent, device="cpu", enable_mkldnn=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextDetection(model_dir=default_onnx.parent, device="cpu", enable_mkldnn=False).close()
        TextDetection(model_dir=default_onnx.parent, device="cpu", engine="onnxruntime").close()


def test_paddleocr_value_checks_are_kept(default_onnx):
    for kwargs in (
        {"engine": "tensorflow"},
        {"precision": "int4"},
        {"input_shape": (3, 300, 650)},
        {"input_shape": (1, 320, 320)},
        {"input_shape": "big"},
    ):
        with pytest.raises(DetectorError):
            TextDetection(model_dir=default_onnx.parent, device="cpu", **kwargs)


@pytest.mark.parametrize("name,status,example", entries("predict"))
def test_predict_keyword(name, status, example, default_onnx, page, baseline):
    with TextDetection(model_dir=default_onnx.parent, device="cpu") as model:
        results = model.predict(input=page, **example) if name == "input" else model.predict(page, **example)
    assert len(results) == 1 and len(results[0]["dt_polys"]) > 0


@pytest.mark.parametrize("name,status,example", entries("module"))
def test_module_method(name, status, example, default_onnx, page, baseline):
    model = TextDetection(model_dir=default_onnx.parent, device="cpu")
    if name == "predict()":
        assert isinstance(model.predict(page), list)
    elif name == "predict_iter()":
        assert len(list(model.predict_iter([page, page]))) == 2
    elif name == "default_model_name":  # the name used when model_name and model_dir are left out
        assert model.default_model_name == TextDetection.default_model_name == "PP-OCRv4_mobile_det"
    else:
        model.close()
        model.close()  # twice is harmless, as in PaddleOCR
        with pytest.raises(DetectorError, match="closed"):
            model.predict(page)
        with TextDetection(model_dir=default_onnx.parent, device="cpu") as scoped:
            assert len(scoped.predict(page)) == 1
        with pytest.raises(DetectorError, match="closed"):
            scoped.predict(page)


@pytest.mark.parametrize("name,status,example", entries("result"))
def test_result_member(name, status, example, baseline, page, tmp_path, capsys):
    res = baseline
    if name.startswith("res["):
        key = name[5:-2]
        value = res[key]
        expected = {"input_path": str(page), "page_index": None}
        if key in expected:
            assert value == expected[key]
        elif key == "input_img":
            assert value.shape == (*value.shape[:2], 3) and value.dtype == np.uint8
            assert res.get("input_img") is value and res.input_img is value and "input_img" in res
            assert "input_img" not in res.json["res"] and "input_img" not in res.str["res"]
            assert "input_img" not in res.to_str()
        else:
            assert len(value) == len(res["dt_polys"])
    elif name.startswith("res.print"):
        res.print(json_format=True, indent=2, ensure_ascii=True)
        assert json.loads(capsys.readouterr().out)["res"]["dt_scores"] == res["dt_scores"]
    elif name.startswith("res.save_to_json"):
        path = res.save_to_json(tmp_path, indent=2, ensure_ascii=True)
        assert path.name == "receipt_res.json" and json.loads(path.read_text())["dt_polys"] == res["dt_polys"].tolist()
    elif name.startswith("res.save_to_img"):
        assert res.save_to_img(tmp_path).name == "receipt_res.png"
    elif name.startswith("res.save_all"):
        res.save_all(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["receipt_res.json", "receipt_res.png"]
    elif name == "res.json":
        assert res.json == {"res": json.loads(json.dumps(res.json["res"]))}
    elif name == "res.str":
        assert set(res.str) == {"res"} and res.str["res"]["dt_polys"] is res["dt_polys"]
    elif name == "res.img":
        image = res.img["res"]
        assert image.shape == res.input_img.shape
        assert (image == [255, 0, 0]).all(axis=2).sum() > 100  # red boxes, in RGB order like PaddleOCR's
    else:
        raise AssertionError(f"no check for {name}")


@pytest.mark.parametrize("name,status,example", entries("cli"))
def test_cli_flag(name, status, example, default_onnx, page, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_MODELS", str(default_onnx.parent.parent))
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in example]
    if "--model_name" not in args:
        args += ["--model_dir", str(default_onnx.parent)]
    if "--device" not in args:
        args += ["--device", "cpu"]
    outcome = CliRunner().invoke(cli, ["-i", str(page), "--json", *args], prog_name="detect")
    assert outcome.exit_code == 0, outcome.output
    assert "dt_polys" in outcome.output
    warned = "detect: warning:" in outcome.output
    assert warned == (status == IGNORED), outcome.output
    if name == "--save_path":
        assert (tmp_path / "receipt_res.json").is_file() and (tmp_path / "receipt_res.png").is_file()
