"""The Makefile's lifecycle, on a scratch folder holding it and stand-ins for what it builds (`make -n`
prints what would run; nothing is built). What a developer meets over weeks: venvs rebuilt after a
pyproject.toml change, a deleted cache, odd variable values, a clone in a path with spaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

DEFAULT_MODEL = "models/PP-OCRv4_mobile_det/inference.onnx"
DEFAULT_SOURCE = ".cache/sources/PP-OCRv4_mobile_det/inference.pdiparams"
ONNX_MODELS = [
    f"{folder}/{name}/inference.onnx"
    for name in ("PP-OCRv6_small_det", "PP-OCRv6_tiny_det", "PP-OCRv5_mobile_det")
    for folder in ("models", ".cache/sources")
]


def built_checkout(folder: Path) -> Path:
    """A folder as a checkout stands after `make test`: the Makefile, and every file it makes, older to newer."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "Makefile", folder / "Makefile")
    stamp = time.time() - 1000
    for relative in ["pyproject.toml", ".venv/.installed", ".venv-paddle/.installed", DEFAULT_SOURCE, DEFAULT_MODEL]:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (stamp, stamp))
        stamp += 10
    for relative in ONNX_MODELS:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(b"")
        os.utime(folder / relative, (stamp, stamp))
    return folder


# the outer `make test`'s flags (jobserver, -n, -k) are not this make's
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


def make(folder: Path, *args: str, dry_run: bool = True) -> subprocess.CompletedProcess:
    command = ["make", *(["-n"] if dry_run else []), *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=60, env=CLEAN_ENV)


def test_a_venv_rebuilt_later_does_not_export_or_import_the_models_again(tmp_path):
    """pyproject.toml changed: the venvs are rebuilt, and the default model was exported again with the
    default flags (over a CHANNEL_BLOCK=8 export; its int8 variant removed), the ONNX models re-imported
    on every `make` from then on."""
    checkout = built_checkout(tmp_path / "p")
    later = time.time()
    for venv in (".venv/.installed", ".venv-paddle/.installed"):
        os.utime(checkout / venv, (later, later))
    run = make(checkout, "demo", "models")
    assert run.returncode == 0, run.stderr
    assert "tools.export" not in run.stdout, run.stdout
    # a model that is missing is made, as before
    (checkout / DEFAULT_MODEL).unlink()
    assert "tools.export --model PP-OCRv4_mobile_det" in make(checkout, "models").stdout


def test_a_deleted_cache_of_the_default_models_paddle_folder_is_fetched_again(tmp_path):
    checkout = built_checkout(tmp_path / "p")
    (checkout / DEFAULT_SOURCE).unlink()  # rm -rf .cache: the parity tests, eval and bench need it
    for target in ("models", "test", "eval"):
        assert "tools.export.default_model" in make(checkout, target).stdout, target


@pytest.mark.parametrize(
    "variables, said",
    [
        (["PRECISION=int4"], "PRECISION must be fp32, int8 or fp16, got 'int4'"),
        (["SOURCE=/no/such/folder"], "SOURCE '/no/such/folder' does not exist"),
        (["SOURCE=/no/such models"], "SOURCE '/no/such models' does not exist"),  # not read as two words
    ],
)
def test_export_values_it_would_refuse_are_refused_before_any_venv_is_built(tmp_path, variables, said):
    checkout = tmp_path / "fresh"
    checkout.mkdir()
    shutil.copy(REPO_ROOT / "Makefile", checkout / "Makefile")
    (checkout / "pyproject.toml").write_bytes(b"")
    run = make(checkout, "export", *variables)
    assert run.returncode != 0 and said in run.stderr
    assert "venv" not in run.stdout  # nothing was to be built first


def test_a_clone_in_a_path_with_spaces_runs_its_tests(tmp_path):
    checkout = built_checkout(tmp_path / "with space" / "p")
    run = make(checkout, "test")
    assert run.returncode == 0, run.stderr
    assert f"DETECTOR_PADDLE_PYTHON='{checkout}/.venv-paddle/bin/python'" in run.stdout


def test_values_holding_a_quote_reach_the_tools_as_one_word(tmp_path):
    """A ' in MODEL or SOURCE (~/John's models/x.tar) broke the shell line: 'Unterminated quoted string'."""
    checkout = built_checkout(tmp_path / "p")
    source = tmp_path / "John's models"  # a space too: an existing SOURCE must not read as two missing words
    source.mkdir()
    run = make(checkout, "export", "MODEL=it's_det", f"SOURCE={source}")
    assert run.returncode == 0, run.stderr
    (line,) = [line for line in run.stdout.splitlines() if "-m tools.export" in line]
    import shlex

    words = shlex.split(line)
    assert words[words.index("--model") + 1] == "it's_det" and words[words.index("--source") + 1] == str(source)


def test_a_python_older_than_3_9_is_said_before_the_venv_is_removed(tmp_path):
    checkout = built_checkout(tmp_path / "p")
    old_python = tmp_path / "python3.8"
    old_python.write_text("#!/bin/sh\nexit 1\n")  # sys.version_info < (3, 9): the check exits 1
    old_python.chmod(0o755)
    os.utime(checkout / "pyproject.toml")  # newer than .venv/.installed: a rebuild is due
    run = make(checkout, f"PYTHON={old_python}", "install", dry_run=False)
    assert run.returncode != 0 and "is older than Python 3.9" in run.stderr
    assert (checkout / ".venv" / ".installed").exists()  # the venv there was left alone


@pytest.mark.parametrize(
    "variables, venv",
    [
        (["MODEL=PP-OCRv6_tiny_det"], ".venv"),  # its ONNX release: no Paddle (README's model table)
        (["MODEL=PP-OCRv5_mobile_det", "PRECISION=int8"], ".venv"),
        (["MODEL=PP-OCRv4_mobile_det"], ".venv-paddle"),
        (["MODEL=PP-OCRv6_tiny_det", "SOURCE=.cache/sources/PP-OCRv4_mobile_det"], ".venv-paddle"),  # a Paddle folder
    ],
)
def test_export_runs_in_the_venv_its_source_needs(tmp_path, variables, venv):
    checkout = built_checkout(tmp_path / "p")
    run = make(checkout, "export", *variables)
    assert run.returncode == 0, run.stderr
    (line,) = [line for line in run.stdout.splitlines() if "-m tools.export" in line]
    assert line.startswith(f"{venv}/bin/python -m tools.export"), line


def test_pyenvs_newest_release_of_a_python_is_taken_by_version_not_by_text(tmp_path):
    # pyenv holding 3.12.9 and 3.12.10: the text sort took 3.12.9
    checkout = built_checkout(tmp_path / "p")
    root = tmp_path / "pyenv"
    for release in ("3.12.9", "3.12.10", "3.12.2"):
        python = root / "versions" / release / "bin" / "python3.12"
        python.parent.mkdir(parents=True)
        python.write_text("#!/bin/sh\nexit 0\n")
        python.chmod(0o755)
    run = make(
        checkout,
        f"PYENV_ROOT={root}",
        "--eval",
        "show-python: ; @echo $(call python_for,3.12)",
        "show-python",
        dry_run=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(root / "versions" / "3.12.10" / "bin" / "python3.12")
