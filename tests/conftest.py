"""Shared fixtures: paths of the checkout, the default model, and the Paddle reference environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_NAME = "PP-OCRv4_mobile_det"
DEFAULT_ONNX = REPO_ROOT / "models" / DEFAULT_MODEL_NAME / "inference.onnx"
# Where tools/export keeps the fetched Paddle source of the default model.
DEFAULT_SOURCE_DIR = REPO_ROOT / ".cache" / "sources" / DEFAULT_MODEL_NAME

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session", autouse=True)
def no_network_downloads(tmp_path_factory):
    """Tests never download models from the real hub, nor read the user's model cache: downloads off
    (a test that needs them turns them on against its own loopback server) and an empty cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETECTOR_NO_DOWNLOAD", "1")
        patch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing answers
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def _missing(reason: str):
    # `make test` sets DETECTOR_REQUIRE_REFERENCE=1: there a missing prerequisite is a failure, not a skip.
    if os.environ.get("DETECTOR_REQUIRE_REFERENCE") == "1":
        pytest.fail(reason + " (required by DETECTOR_REQUIRE_REFERENCE=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def default_onnx() -> Path:
    if not DEFAULT_ONNX.is_file():
        _missing(f"{DEFAULT_ONNX} is missing: run `make models`")
    return DEFAULT_ONNX


@pytest.fixture(scope="session")
def default_source_dir() -> Path:
    if not (DEFAULT_SOURCE_DIR / "inference.pdiparams").is_file():
        _missing(f"{DEFAULT_SOURCE_DIR} is missing: run `make models`")
    return DEFAULT_SOURCE_DIR


@pytest.fixture(scope="session")
def paddle_python() -> str:
    """The python of the Paddle environment (.venv-paddle): export and PaddleOCR reference runs."""
    python = os.environ.get("DETECTOR_PADDLE_PYTHON")
    if not python or not Path(python).is_file():
        _missing("DETECTOR_PADDLE_PYTHON does not name the Paddle environment's python: run `make test`")
    return python


def run_in_paddle_env(paddle_python: str, *args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m <args>` in the Paddle environment from the repo root, capturing text output."""
    return subprocess.run(
        [paddle_python, "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture
def rendered_pages(tmp_path) -> list[Path]:
    """Two of the rendered pages (tests/rendered.py), written as PNG into this test's folder."""
    from tests.rendered import write_rendered_pages

    return [path for path, _ in write_rendered_pages(tmp_path / "pages").values()][:2]


@pytest.fixture
def onnxruntime_import_stopped_by(monkeypatch):
    """``stopped_by(exception_type)``: from then on `import onnxruntime` fails as a signal arriving while its C
    extension initialises makes it fail, pybind11's ImportError("initialization failed") caused by the handler's
    exception (a SIGTERM 0.4 s into detect), without a race. An importer standing in for that extension."""
    import importlib.machinery

    def stopped_by(stopping: type[BaseException]) -> None:
        class StoppedWhileInitialising:
            def find_spec(self, name, path=None, target=None):
                return importlib.machinery.ModuleSpec(name, self) if name == "onnxruntime" else None

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                try:
                    raise stopping()
                except BaseException as signal_exception:
                    raise ImportError("initialization failed") from signal_exception

        monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
        monkeypatch.setattr(sys, "meta_path", [StoppedWhileInitialising(), *sys.meta_path])

    return stopped_by
