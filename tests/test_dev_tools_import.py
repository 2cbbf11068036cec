"""Every developer tool in tools/dev imports: a renamed or removed name it uses fails here, not when
someone next runs the tool (tools.dev.model_table imported bench.py's BENCH_SIZES after it was gone)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import tools.dev

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
