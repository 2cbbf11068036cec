"""Session settings: CPU options and the CUDA provider's options, checked without a GPU."""

from pathlib import Path

import pytest

from detector import TextDetection, cuda_provider
from detector import session as session_module
from detector.cuda_provider import cuda_provider_options
from detector.onnxruntime_import import onnxruntime_module
from detector.serve.config import ServeConfig
from detector.session import Device, load_session, session_options
from detector.session_run import ARENA_SHRINK_ABOVE_PIXELS

SPIN = "session.intra_op.allow_spinning"
STOP = "session.force_spinning_stop"


def test_cpu_threads_spin_within_a_run_and_stop_after_it():
    options = session_options(3)
    assert options.intra_op_num_threads == 3
    assert (options.get_session_config_entry(SPIN), options.get_session_config_entry(STOP)) == ("1", "1")
    assert session_options().intra_op_num_threads == 0  # onnxruntime's own choice


def test_threads_on_shared_cores_sleep_between_sections():
    options = session_options(2, spinning=False)
    assert options.get_session_config_entry(SPIN) == "0"
    with pytest.raises(RuntimeError):  # not set at all: nothing spins that would need stopping
        options.get_session_config_entry(STOP)


@pytest.mark.parametrize("spinning", [True, False])
def test_text_detection_opens_both_sessions_with_its_spinning(default_onnx, spinning):
    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_spinning=spinning, cpu_threads=2)
    sessions = [detector._open_session(), detector._open_worker_session()]
    assert [s.get_session_options().get_session_config_entry(SPIN) for s in sessions] == [str(int(spinning))] * 2


@pytest.mark.parametrize(
    ("workers", "max_concurrency", "cpu_threads", "cores", "shared"),
    [
        (1, 1, None, 2, False),  # the defaults: one inference at a time on every core
        (2, 1, None, 2, True),  # two processes, each on every core
        (1, 2, None, 4, True),  # two inferences at once, each on every core
        (2, 1, 1, 2, False),  # two processes, one thread each, two cores
        (4, 2, 1, 8, False),
        (4, 2, 1, 6, True),
        (1, 1, None, None, False),  # os.cpu_count() unknown
        (1, 1, 10, 2, False),  # PaddleOCR's cpu_threads=10 on 2 cores: TextDetection runs 2 threads
        (2, 1, 10, 2, True),
    ],
)
def test_serve_turns_spinning_off_where_its_inferences_outnumber_the_cores(
    workers, max_concurrency, cpu_threads, cores, shared
):
    config = ServeConfig(max_concurrency=max_concurrency, cpu_threads=cpu_threads)
    assert config.cores_are_shared(workers, cores) is shared


@pytest.mark.parametrize("index", [0, 3])
def test_cuda_options_suit_dynamic_shapes(index):
    options = cuda_provider_options(index)
    assert options["device_id"] == str(index)
    # no exhaustive benchmark of conv algorithms for every new image size
    assert options["cudnn_conv_algo_search"] in ("HEURISTIC", "DEFAULT")
    # TF32 moved box corners by up to 7 px against the CPU on an H100; plain float32 moved none
    assert options["use_tf32"] == "0"
    assert all(isinstance(value, str) for value in options.values())


def test_pip_cuda_libraries_are_preloaded_only_where_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(onnxruntime_module(), "preload_dlls", lambda **kwargs: calls.append(kwargs), raising=False)
    monkeypatch.setattr(cuda_provider.importlib.util, "find_spec", lambda name: None)
    cuda_provider.preload_pip_cuda_libraries.cache_clear()
    assert cuda_provider.preload_pip_cuda_libraries() is False and calls == []
    monkeypatch.setattr(cuda_provider.importlib.util, "find_spec", lambda name: object())
    cuda_provider.preload_pip_cuda_libraries.cache_clear()
    assert cuda_provider.preload_pip_cuda_libraries() is True
    assert calls == [{"cuda": True, "cudnn": True, "msvc": False}]
    cuda_provider.preload_pip_cuda_libraries.cache_clear()


def test_a_gpu_session_is_opened_with_those_options(monkeypatch):
    opened = []

    class FakeSession:
        def __init__(self, providers):
            self.providers = providers

        def get_providers(self):
            return [name if isinstance(name, str) else name[0] for name in self.providers]

    monkeypatch.setattr(session_module, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(
        session_module, "_open", lambda path, options, providers: opened.append(providers) or FakeSession(providers)
    )
    _, device = load_session(Path("model.onnx"), Device("gpu", 1))
    assert device == "gpu:1"
    (cuda, cuda_options), cpu = opened[0]
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert cuda_options == cuda_provider_options(1)


ARENA_SCRIPT = """
import sys, numpy as np
from detector import TextDetection
detector = TextDetection(model_dir=sys.argv[1], device="cpu")
detector.shrink_arena_above = int(sys.argv[2]) if sys.argv[2] != "none" else None
page = np.full((3000, 4000, 3), 235, np.uint8)
page[::60, :] = 20
detector.predict(page, limit_side_len=4000, limit_type="min")
print([int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmRSS")][0])
"""


def test_a_large_input_hands_its_arena_memory_back_where_asked(default_onnx):
    # onnxruntime's arena keeps what its largest run needed; the service asks large runs to give it back
    import subprocess
    import sys

    from detector.serve.inference import load_detector

    def resident_mb(shrink_above):
        args = [sys.executable, "-c", ARENA_SCRIPT, str(default_onnx), shrink_above]
        return int(subprocess.run(args, capture_output=True, text=True, check=True, timeout=300).stdout)

    kept, handed_back = resident_mb("none"), resident_mb(str(2048 * 2048))
    assert handed_back < kept - 500, (kept, handed_back)  # 1.66 GB against 0.23 GB when measured
    assert resident_mb(str(4000 * 4000)) > handed_back + 500  # a 4000x3008 input is below that: kept
    assert load_detector(ServeConfig(model_dir=default_onnx)).shrink_arena_above == ARENA_SHRINK_ABOVE_PIXELS


def test_on_windows_the_cuda_provider_dll_is_tried_before_onnxruntime_is_asked(monkeypatch, tmp_path):
    # onnxruntime prints its own errors (or, older, an "EP Error" banner on stdout) when it cannot load the
    # provider: the check loads onnxruntime_providers_cuda.dll first, as it does the .so on Linux
    import types

    (tmp_path / "capi").mkdir()
    (tmp_path / "capi" / "onnxruntime_providers_cuda.dll").write_bytes(b"not a DLL")
    fake = types.SimpleNamespace(
        __version__="1.31.1",
        __file__=str(tmp_path / "__init__.py"),
        get_available_providers=lambda: [cuda_provider.CUDA_PROVIDER],
    )
    tried = []

    def windll(path):
        tried.append(path)
        raise OSError("[WinError 126] The specified module could not be found")

    monkeypatch.setattr(cuda_provider, "onnxruntime_module", lambda: fake)
    monkeypatch.setattr(cuda_provider, "preload_pip_cuda_libraries", lambda: False)
    monkeypatch.setattr(cuda_provider.os, "name", "nt")
    monkeypatch.setattr(cuda_provider.ctypes, "WinDLL", windll, raising=False)
    reason = cuda_provider.cuda_unavailable_reason()
    assert tried == [str(tmp_path / "capi" / "onnxruntime_providers_cuda.dll")]
    assert reason is not None and "WinError 126" in reason and "needs a matching CUDA and cuDNN" in reason


@pytest.mark.parametrize(
    ("platform", "machine", "package"),
    [
        ("linux", "x86_64", "onnxruntime-gpu"),
        ("win32", "AMD64", "onnxruntime-gpu"),
        ("darwin", "arm64", "onnxruntime"),  # Apple silicon: no onnxruntime-gpu wheel
        ("darwin", "x86_64", "onnxruntime"),
        ("linux", "aarch64", "onnxruntime"),  # Graviton
        ("win32", "ARM64", "onnxruntime"),
    ],
)
def test_the_gpu_extra_installs_a_package_that_exists_on_each_platform(platform, machine, package):
    # onnxruntime-gpu is published for Linux x86-64 and Windows x64 only; elsewhere [gpu] is the CPU build
    import tomllib
    from packaging.requirements import Requirement

    from tests.conftest import REPO_ROOT

    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    environment = {"sys_platform": platform, "platform_machine": machine}
    chosen = [req.name for req in map(Requirement, extra) if req.marker is None or req.marker.evaluate(environment)]
    assert chosen == [package]
