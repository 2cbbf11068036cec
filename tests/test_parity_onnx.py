"""Same boxes as PaddleOCR 3.7's own onnxruntime engine, on PaddlePaddle's real PP-OCRv6 ONNX folders.

PaddleOCR runs `TextDetection(model_name=…, model_dir=<inference.onnx + inference.yml>, engine="onnxruntime")`
in .venv-paddle; we run the same folder through `model_dir=<folder>` and the file `make models` imported
into models/<MODEL>/inference.onnx. Same box count, every corner within 1 px.
"""

import json

import numpy as np
import pytest

from detector import TextDetection
from tests.conftest import REPO_ROOT, _missing, run_in_paddle_env
from tests.test_model_sources import V6_SMALL, V6_TINY, wheel_source
from tests.test_parity import images  # noqa: F401 (the rendered images, a module fixture)

pytestmark = pytest.mark.reference


def paddleocr_onnxruntime_results(paddle_python, folder, model_name, image_paths, out):
    proc = run_in_paddle_env(
        paddle_python,
        "tools.dev.paddle_reference",
        "--engine",
        "onnxruntime",
        "--model-dir",
        str(folder),
        "--model-name",
        model_name,
        "--out",
        str(out),
        *map(str, image_paths),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(item["input_path"], item["page_index"]): item for item in json.loads(out.read_text())}


def imported_model(name):
    path = REPO_ROOT / "models" / name / "inference.onnx"
    if not path.is_file():
        _missing(f"{path} is missing: run `make models`")
    return path


@pytest.mark.parametrize("name", [V6_SMALL, V6_TINY])
def test_same_boxes_as_paddleocr_onnxruntime(name, paddle_python, images, tmp_path):  # noqa: F811
    folder = wheel_source(name)
    reference = paddleocr_onnxruntime_results(paddle_python, folder, name, images, tmp_path / "ref.json")
    assert len(reference) == len(images) + 1  # the TIFF has two pages
    for model_dir in (folder, imported_model(name)):
        ours = TextDetection(model_dir=model_dir, device="cpu").predict([str(p) for p in images])
        assert {(r["input_path"], r["page_index"]) for r in ours} == set(reference)
        compared = 0
        for result in ours:
            ref = reference[result["input_path"], result["page_index"]]
            ref_polys = np.asarray(ref["dt_polys"], dtype=np.int64).reshape(-1, 4, 2)
            got = result["dt_polys"].astype(np.int64)
            where = f"{model_dir}: {result['input_path']}"
            assert len(got) == len(ref_polys), f"{where}: {len(got)} boxes, PaddleOCR {len(ref_polys)}"
            if len(got):
                assert np.abs(got - ref_polys).max() <= 1, f"{where}: boxes differ by more than 1 px"
                np.testing.assert_allclose(result["dt_scores"], ref["dt_scores"], atol=1e-2)
            compared += len(got)
        assert compared >= 20  # real boxes were compared, not just empty results
