"""`import detector` stays light: the optional extras (FastAPI, uvicorn, Ray, pyarrow, onnx) load only in
the subcommands that need them."""

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_import_detector_loads_no_service_or_cluster_framework():
    code = (
        "import sys, detector, detector.cli; heavy = {'fastapi', 'uvicorn', 'starlette', 'ray', 'pyarrow', 'onnx'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    # the subcommands' own modules stay light too: their help needs no framework
    code = (
        "import sys; from click.testing import CliRunner; from detector.cli import cli; "
        "outs = [CliRunner().invoke(cli, [name, '--help']).output for name in ('serve', 'batch', 'optimize')]; "
        "assert '--max-concurrency' in outs[0] and '--ray-address' in outs[1] and '--channel-block' in outs[2], outs; "
        "batch_help = ' '.join(outs[1].split()); "
        "assert '[default: 4; x>=1]' in batch_help and 'detector.' not in batch_help, batch_help; "
        "print(sorted({'fastapi', 'uvicorn', 'ray', 'pyarrow', 'onnx'} & set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
