"""Same boxes as PaddleOCR: its own TextDetection (3.7.0, in .venv-paddle) on the same Paddle model."""

import json

import cv2
import numpy as np
import pytest

from detector import TextDetection
from tests.conftest import DEFAULT_MODEL_NAME, run_in_paddle_env
from tests.rendered import write_rendered_pages

pytestmark = pytest.mark.reference

# (PaddleOCR keyword -> value) sets to compare under: the model's defaults, and the other resize rule.
SETTINGS = {
    "defaults": {},
    "min_side": {"limit_type": "min", "limit_side_len": 736, "unclip_ratio": 2.0, "box_thresh": 0.5},
    "resize_long": {"limit_type": "resize_long", "limit_side_len": 640},  # PaddleX's third rule, up or down
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parity")
    paths = [path for path, _ in write_rendered_pages(folder).values()]
    page = cv2.imread(str(paths[0]))
    height, width = page.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 12, 1.0)
    rotated = folder / "rotated.png"
    cv2.imwrite(str(rotated), cv2.warpAffine(page, turn, (width, height), borderValue=(255, 255, 255)))
    photo = folder / "photo.jpg"  # JPEG, dark text on a textured background, large: shrunk to 960
    rng = np.random.default_rng(7)
    texture = rng.integers(150, 230, (1500, 2200, 3), dtype=np.uint8)
    texture[300:1300, 200:2000] = cv2.resize(page, (1800, 1000))
    cv2.imwrite(str(photo), texture, [cv2.IMWRITE_JPEG_QUALITY, 90])
    tiny = folder / "tiny.png"  # padded to 32x32 first
    cv2.imwrite(str(tiny), page[:20, :30])
    sideways = folder / "exif_rotated.jpg"  # stored sideways with an EXIF orientation tag
    from PIL import Image

    stored = Image.fromarray(page[:, :, ::-1]).transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(sideways, exif=exif, quality=92)
    pages = folder / "pages.tiff"  # PaddleX reads every page of a TIFF
    second = cv2.imread(str(paths[1]))
    Image.fromarray(page[:, :, ::-1]).save(pages, save_all=True, append_images=[Image.fromarray(second[:, :, ::-1])])
    return [*paths, rotated, photo, tiny, sideways, pages]


def paddleocr_results(paddle_python, source_dir, images, out, settings):
    args = [
        "tools.dev.paddle_reference",
        "--model-dir",
        str(source_dir),
        "--model-name",
        DEFAULT_MODEL_NAME,
        "--out",
        str(out),
    ]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    proc = run_in_paddle_env(paddle_python, *args, *map(str, images))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(item["input_path"], item["page_index"]): item for item in json.loads(out.read_text())}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_same_boxes_as_paddleocr(name, paddle_python, default_source_dir, default_onnx, images, tmp_path):
    settings = SETTINGS[name]
    reference = paddleocr_results(paddle_python, default_source_dir, images, tmp_path / "ref.json", settings)
    ours = TextDetection(model_dir=default_onnx, device="cpu", **settings).predict([str(p) for p in images])
    assert {(r["input_path"], r["page_index"]) for r in ours} == set(reference)
    assert len(ours) == len(reference) == len(images) + 1  # the TIFF has two pages
    compared = 0
    for result in ours:
        ref = reference[result["input_path"], result["page_index"]]
        ref_polys = np.asarray(ref["dt_polys"], dtype=np.int64).reshape(-1, 4, 2)
        got = result["dt_polys"].astype(np.int64)
        assert len(got) == len(ref_polys), f"{result['input_path']}: {len(got)} boxes, PaddleOCR {len(ref_polys)}"
        if len(got):
            assert np.abs(got - ref_polys).max() <= 1, f"{result['input_path']}: boxes differ by more than 1 px"
            # a corner 1 px off (OpenCV 5 here, 4.10 under PaddleOCR) moves a box's mean score a little
            np.testing.assert_allclose(result["dt_scores"], ref["dt_scores"], atol=1e-2)
        compared += len(got)
    assert compared >= 20  # the comparison covered real boxes, not just empty results
