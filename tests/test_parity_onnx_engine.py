"""Same boxes as PaddleOCR's own onnxruntime engine on the same ONNX file, for every model in models/.

Covers the models without Paddle weights (PP-OCRv6, official ONNX files) and our rewritten graphs
of the others: PaddleOCR 3.7.0's TextDetection(engine="onnxruntime") reads the file with its
inference.yml (beside it, or the copy export stored in the file's metadata).
"""

import json
import shutil

import numpy as np
import pytest

from detector import TextDetection
from detector.settings import METADATA_INFERENCE_YML_KEY
from tests.conftest import REPO_ROOT, run_in_paddle_env
from tests.rendered import write_rendered_pages
from tools.dev.bench import scene_image

pytestmark = pytest.mark.reference

MODELS_DIR = REPO_ROOT / "models"


def exported_models():
    return sorted(p.parent for p in MODELS_DIR.glob("PP-OCR*/inference.onnx"))


def inference_yml(model_dir) -> str:
    beside = model_dir / "inference.yml"
    if beside.is_file():
        return beside.read_text()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_dir / "inference.onnx"), options, providers=["CPUExecutionProvider"])
    return session.get_modelmeta().custom_metadata_map.get(METADATA_INFERENCE_YML_KEY, "")


def catalog_yml(model_name: str) -> str:
    """An inference.yml for a known model whose release ships none: the entries the catalog records (name,
    resize, DBPostProcess) in the PreProcess every official PP-OCR detection yml holds (PaddleX needs its
    NormalizeImage; the runtime takes the same values as PaddleX's fallbacks)."""
    import yaml

    from detector.catalog import catalog_inference_config

    config = catalog_inference_config(model_name)
    if config is None:
        return ""
    resize = next(
        (op["DetResizeForTest"] for op in config["PreProcess"]["transform_ops"] if "DetResizeForTest" in op), None
    )
    normalize = {"mean": [0.485, 0.456, 0.406], "order": "hwc", "scale": "1./255.", "std": [0.229, 0.224, 0.225]}
    ops = [
        {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
        {"DetLabelEncode": None},
        {"DetResizeForTest": resize},
        {"NormalizeImage": normalize},
        {"ToCHWImage": None},
        {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
    ]
    return yaml.safe_dump({**dict(config), "PreProcess": {"transform_ops": ops}})


def test_every_model_make_test_builds_is_compared():
    """An empty models/ made the comparison below an empty parameter set: skipped, CI green."""
    names = {path.name for path in exported_models()}
    assert {"PP-OCRv4_mobile_det", "PP-OCRv5_mobile_det", "PP-OCRv6_small_det", "PP-OCRv6_tiny_det"} <= names


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("onnx_parity")
    paths = [path for path, _ in write_rendered_pages(folder).values()]
    scene = folder / "scene.jpg"  # a JPEG photo-like render, shrunk to the limit side
    cv2.imwrite(str(scene), scene_image(1600, 1000, 5), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return [*paths, scene]


@pytest.mark.parametrize("model_dir", exported_models(), ids=lambda p: p.name)
def test_same_boxes_as_paddleocr_onnxruntime_engine(model_dir, paddle_python, images, tmp_path):
    yml = inference_yml(model_dir) or catalog_yml(model_dir.name)  # PP-OCRv5_mobile_det's release has none
    if not yml:
        pytest.skip(f"{model_dir.name}: no inference.yml beside the file, in its metadata or in the catalog")
    reference_dir = tmp_path / model_dir.name
    reference_dir.mkdir()
    shutil.copyfile(model_dir / "inference.onnx", reference_dir / "inference.onnx")
    (reference_dir / "inference.yml").write_text(yml)
    out = tmp_path / "ref.json"
    proc = run_in_paddle_env(
        paddle_python,
        "tools.dev.paddle_reference",
        "--model-dir",
        str(reference_dir),
        "--model-name",
        model_dir.name,
        "--engine",
        "onnxruntime",
        "--out",
        str(out),
        *map(str, images),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = {item["input_path"]: item for item in json.loads(out.read_text())}
    ours = TextDetection(model_dir=model_dir, device="cpu").predict([str(p) for p in images])
    compared = 0
    for result in ours:
        ref = reference[result["input_path"]]
        ref_polys = np.asarray(ref["dt_polys"], dtype=np.int64).reshape(-1, 4, 2)
        got = result["dt_polys"].astype(np.int64)
        assert len(got) == len(ref_polys), f"{result['input_path']}: {len(got)} boxes, PaddleOCR {len(ref_polys)}"
        if len(got):
            assert np.abs(got - ref_polys).max() <= 1, f"{result['input_path']}: boxes differ by more than 1 px"
        compared += len(got)
    assert compared >= 10  # real boxes were compared
