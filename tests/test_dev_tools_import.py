"""Every developer tool in tools/dev imports: a renamed or removed name it uses fails here, not when
someone next runs the tool (tools.dev.model_table imported bench.py's BENCH_SIZES after it was gone)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import tools.dev
from tests.conftest import REPO_ROOT

MODULES = sorted(info.name for info in pkgutil.iter_modules(tools.dev.__path__) if not info.name.startswith("_"))


def test_there_are_tools_to_check():
    assert {"bench", "model_table", "precision_bench"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_dev_tool_imports(name):
    try:
        importlib.import_module(f"tools.dev.{name}")
    except ModuleNotFoundError as exc:
        # a third-party package of another environment (paddle in .venv-paddle): not this tool's bug
        if exc.name and not exc.name.startswith(("tools", "detector")):
            pytest.skip(f"tools.dev.{name} needs {exc.name}, not installed here")
        raise


@pytest.mark.parametrize("name", MODULES)
def test_dev_tool_help_prints_usage(name):
    # `--help` is never taken for a model name or a file name
    proc = subprocess.run(
        [sys.executable, "-m", f"tools.dev.{name}", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    if "ModuleNotFoundError: No module named 'paddle'" in proc.stderr:
        pytest.skip(f"tools.dev.{name} runs in the Paddle environment")
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stdout + proc.stderr
