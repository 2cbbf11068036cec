"""The public API's annotations serve a user who type-checks: tests/typed_usage.py passes `mypy --strict`,
and the mistakes marked in it are flagged (a wrong input, a misspelt or mistyped setting)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("mypy", reason="mypy is in the [lint] extra (make test installs it)")
USAGE = REPO_ROOT / "tests" / "typed_usage.py"


def test_typed_usage_passes_strict_mypy_and_its_mistakes_are_flagged(tmp_path):
    # as for an installed package: the user's code is checked against detector's annotations, not detector's
    # own code (make lint checks that, to the project's settings)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\npython_version = 3.10\n\n[mypy-detector.*]\nignore_errors = True\n")
    command = [
        *(sys.executable, "-m", "mypy", "--config-file", str(config), "--no-error-summary"),
        *("--cache-dir", str(tmp_path / "cache"), str(USAGE.relative_to(REPO_ROOT))),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    flagged = {int(line.split(":")[1]) for line in proc.stdout.splitlines() if ": error:" in line}
    marked = {number for number, line in enumerate(USAGE.read_text().splitlines(), 1) if "# mistake:" in line}
    assert len(marked) == 3 and flagged == marked, proc.stdout + proc.stderr
