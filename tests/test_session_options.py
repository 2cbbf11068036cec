"""Session settings: CPU options and the CUDA provider's options, checked without a GPU."""

from pathlib import Path

import pytest

from detector import session as session_module
from detector.session import Device, cuda_provider_options, load_session, session_options


def test_cpu_threads_sleep_instead_of_spinning():
    options = session_options(3)
    assert options.intra_op_num_threads == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options().intra_op_num_threads == 0  # onnxruntime's own choice


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
    monkeypatch.setattr(session_module.ort, "preload_dlls", lambda **kwargs: calls.append(kwargs), raising=False)
    monkeypatch.setattr(session_module.importlib.util, "find_spec", lambda name: None)
    session_module.preload_pip_cuda_libraries.cache_clear()
    assert session_module.preload_pip_cuda_libraries() is False and calls == []
    monkeypatch.setattr(session_module.importlib.util, "find_spec", lambda name: object())
    session_module.preload_pip_cuda_libraries.cache_clear()
    assert session_module.preload_pip_cuda_libraries() is True
    assert calls == [{"cuda": True, "cudnn": True, "msvc": False}]
    session_module.preload_pip_cuda_libraries.cache_clear()


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
