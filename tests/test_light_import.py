"""`import detector` stays light: the optional extras (FastAPI, uvicorn, Ray, pyarrow, onnx) load only in
the subcommands that need them."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_import_detector_loads_no_service_or_cluster_framework():
    code = (
        "import sys, detector, detector.cli; "
        "heavy = {'fastapi', 'uvicorn', 'starlette', 'ray', 'pyarrow', 'onnx', 'onnxruntime'}; "
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


FORK_AND_EXIT = """
import os, sys, time
import detector
from detector import TextDetection
pid = os.fork()
if pid == 0:
    import numpy
    TextDetection(model_dir=sys.argv[1], device="cpu").predict(numpy.zeros((64, 64, 3), "uint8"))
    sys.exit(0)  # through Python's own shutdown, as a gunicorn worker leaves
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("exited", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    print("hung")
"""


def test_a_worker_forked_after_import_detector_exits(default_onnx):
    # onnxruntime 1.31/1.32 imported before a fork makes the child hang in its clean-up at exit (a pre-fork
    # server's workers never finish recycling): `import detector` leaves onnxruntime unimported, so a
    # master that imports the package and makes the detector in each worker is safe
    proc = subprocess.run(
        [sys.executable, "-c", FORK_AND_EXIT, str(default_onnx)], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "exited 0", proc.stdout + proc.stderr


INHERITED_ACROSS_FORK = """
import os, sys, numpy
from detector import TextDetection, result
detector = TextDetection(model_dir=sys.argv[1], device="cpu")
detector.predict(numpy.zeros((64, 64, 3), "uint8"))  # no warning in the process that made it
parent_next = [next(result._unnamed_numbers) for _ in range(3)][-1] + 1
reader, writer = os.pipe()
pid = os.fork()
if pid == 0:
    detector.predict(numpy.zeros((64, 64, 3), "uint8"))
    detector.predict(numpy.zeros((64, 64, 3), "uint8"))  # warned once
    os.write(writer, str(next(result._unnamed_numbers)).encode())
    sys.stderr.flush()
    os._exit(0)  # as multiprocessing's workers leave: not through onnxruntime's clean-up
os.waitpid(pid, 0)
print(parent_next, os.read(reader, 32).decode())
"""


def test_a_detector_used_across_a_fork_warns_once_and_results_get_names_of_their_own(default_onnx):
    proc = subprocess.run(
        [sys.executable, "-c", INHERITED_ACROSS_FORK, str(default_onnx)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("was made in process") == 1 and "before a fork" in proc.stderr, proc.stderr
    parent_next, child_next = proc.stdout.split()
    assert parent_next != child_next  # the child drew its own start (1 in 9,000 that it draws the same)


LOCK_HELD_AT_FORK = """
import os, threading
from detector import image_pixels, pages
held, release = threading.Event(), threading.Event()
def hold():
    with pages._PDFIUM_LOCK, image_pixels._PILLOW_LIMIT_LOCK:
        held.set()
        release.wait()
threading.Thread(target=hold).start()
held.wait()
pid = os.fork()
if pid == 0:
    import signal
    signal.alarm(5)  # a lock still held: the child ends by SIGALRM, not exit 0
    # taken by the main thread, as a new thread may get the dead holder's ident and pass a reentrant lock
    with pages._PDFIUM_LOCK, image_pixels._PILLOW_LIMIT_LOCK:
        os._exit(0)
_, status = os.waitpid(pid, 0)
release.set()
print(os.waitstatus_to_exitcode(status))
"""


def test_a_lock_held_by_another_thread_at_a_fork_is_free_in_the_child():
    # the child has no copy of the thread that held it: an inherited lock would stay held for good
    proc = subprocess.run([sys.executable, "-c", LOCK_HELD_AT_FORK], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "0", proc.stdout + proc.stderr


def test_an_onnxruntime_that_cannot_be_imported_is_not_called_missing(tmp_path, default_onnx):
    # an onnxruntime built for numpy 1 under numpy 2 ("numpy.core.multiarray failed to import") was reported
    # as "onnxruntime is not installed: pip install …"
    fake = tmp_path / "onnxruntime"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('numpy.core.multiarray failed to import')\n")
    script = (
        "import sys; from detector import TextDetection, DetectorError\n"
        f"try:\n    TextDetection(model_dir={str(default_onnx)!r}, device='cpu')\n"
        "except DetectorError as exc:\n    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    broken = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "onnxruntime is installed but cannot be imported (ImportError: numpy.core.multiarray" in broken.stdout
    assert "not installed" not in broken.stdout
    (fake / "__init__.py").write_text("raise ModuleNotFoundError('No module named onnxruntime', name='onnxruntime')\n")
    missing = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert missing.stdout.startswith("onnxruntime is not installed: pip install"), missing
