"""tools/dev/run_bench.py: session.run of ONNX files side by side (Paddle Inference left out here: it
needs the Paddle environment, and its predictor is the one tools.export verifies with)."""

from __future__ import annotations

import argparse

import pytest

from tools.dev.run_bench import main, parse_sizes


def test_sizes_parse_and_bad_ones_are_refused():
    assert parse_sizes("672x960, 32x128") == ((672, 960), (32, 128))
    for text in ("672x961", "0x32", "672", "axb"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text.strip())):
            parse_sizes(text)


def test_two_files_get_a_row_per_size_and_their_ratio(default_onnx, capsys):
    assert (
        main(["--onnx", str(default_onnx), "--onnx", str(default_onnx), "--rounds", "2", "--sizes", "32x32,64x96"]) == 0
    )
    out = capsys.readouterr().out
    assert f"  A: {default_onnx}" in out and f"  B: {default_onnx}" in out
    rows = [line.split(" | ") for line in out.splitlines() if " | " in line]
    assert [row[0] for row in rows] == ["size", "32x32", "64x96", "summed"]
    assert all(float(value) > 0 for row in rows[1:] for value in row[1:])
    assert "  B / A: " in out and "Paddle" not in out.split("rounds")[-1]


def test_a_missing_file_is_one_error(tmp_path, capsys):
    assert main(["--onnx", str(tmp_path / "missing.onnx")]) == 1
    assert capsys.readouterr().err == f"run_bench: error: {tmp_path / 'missing.onnx'} does not exist\n"
