"""Where the CUDA attempt fails, and what then: checked without a GPU, onnxruntime's session faked for CUDA."""

import itertools
import sys
import threading
from pathlib import Path

import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

from detector import DeviceUnavailableError, InvalidModelError
from detector import session as session_module
from detector.cuda_provider import CUDA_PROVIDER
from detector.onnxruntime_import import onnxruntime_module
from detector.session import Device, load_session

# What onnxruntime-gpu raises where the CUDA provider starts but the session's initialization on the GPU fails:
# not a ValueError or RuntimeError, so its own fallback to the CPU does not catch it
CUDNN_HANDLE = Fail(
    "[ONNXRuntimeError] : 1 : FAIL : CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR ; GPU=0 ; expr=cudnnCreate(&handle);"
)
GPU_MEMORY_OUT = RuntimeException(
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: CUBLAS failure 3: "
    "CUBLAS_STATUS_ALLOC_FAILED ; GPU=0"
)


@pytest.fixture
def cuda_fails_at_initialization(monkeypatch):
    """CUDA usable as far as can be seen before a session; a session asking for it raises the given error, one
    on the CPU is onnxruntime's own."""

    def failing(error):
        real = onnxruntime_module().InferenceSession

        def inference_session(source, sess_options=None, providers=()):
            if any((provider if isinstance(provider, str) else provider[0]) == CUDA_PROVIDER for provider in providers):
                raise error
            return real(source, sess_options=sess_options, providers=providers)

        monkeypatch.setattr(session_module, "cuda_unavailable_reason", lambda: None)
        monkeypatch.setattr(onnxruntime_module(), "InferenceSession", inference_session)

    return failing


@pytest.mark.parametrize("error", [CUDNN_HANDLE, GPU_MEMORY_OUT], ids=["cudnn", "memory"])
def test_a_gpu_failing_at_session_initialization_leaves_the_automatic_device_on_the_cpu(
    default_onnx, cuda_fails_at_initialization, error
):
    # it was InvalidModelError("onnxruntime cannot load …"): the model blamed, and no CPU fallback
    cuda_fails_at_initialization(error)
    session, device = load_session(default_onnx, None, blocked_layout=False)
    assert device == "cpu" and session.get_providers() == ["CPUExecutionProvider"]


def test_an_explicit_gpu_failing_at_session_initialization_is_the_device_s_error(
    default_onnx, cuda_fails_at_initialization
):
    cuda_fails_at_initialization(CUDNN_HANDLE)
    with pytest.raises(DeviceUnavailableError, match=r"GPU 0 \(\[ONNXRuntimeError\] : 1 : FAIL : CUDNN failure 4") as e:
        load_session(default_onnx, Device("gpu", 0))
    assert "device='cpu'" in str(e.value)


@pytest.mark.parametrize("device", [None, Device("gpu", 0)], ids=["automatic", "gpu"])
def test_a_broken_file_is_still_the_model_s_error(tmp_path, cuda_fails_at_initialization, device):
    broken = tmp_path / "inference.onnx"
    broken.write_bytes(b"not a protobuf at all")
    cuda_fails_at_initialization(CUDNN_HANDLE)
    with pytest.raises(InvalidModelError, match="onnxruntime cannot load") as e:
        load_session(broken, device, blocked_layout=False)
    assert e.value.file_damaged and "CUDNN" not in str(e.value)  # what the CPU said of the file


class _CudaSession:
    def get_providers(self):
        return [CUDA_PROVIDER, "CPUExecutionProvider"]


def test_gpu_sessions_opened_by_two_threads_at_once_leave_stdout_as_it_was(monkeypatch):
    # stdout is captured while the CUDA session is made (onnxruntime prints its fallback there); two captures
    # overlapping put back each other's buffer: the first made ends first and the second restores its StringIO
    second_arrived, first_made = threading.Event(), threading.Event()
    calls = itertools.count()

    def inference_session(source, sess_options=None, providers=()):
        if next(calls) == 0:
            second_arrived.wait(2)  # in vain where captures take turns
        else:
            second_arrived.set()
            first_made.wait(5)
        return _CudaSession()

    def make_one():
        devices.append(load_session(Path("model.onnx"), None)[1])
        first_made.set()

    monkeypatch.setattr(session_module, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(onnxruntime_module(), "InferenceSession", inference_session)
    stdout, devices = sys.stdout, []
    threads = [threading.Thread(target=make_one) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        left = sys.stdout
    finally:
        sys.stdout = stdout
    assert devices == ["gpu:0", "gpu:0"]
    assert left is stdout, left


def _said(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == "detector.session" and r.levelname == level]


def test_a_gpu_there_that_cuda_cannot_use_is_a_warning_where_the_device_was_automatic(
    default_onnx, cuda_fails_at_initialization, caplog
):
    # the reason was computed and dropped: a GPU machine ran on the CPU without a word
    cuda_fails_at_initialization(CUDNN_HANDLE)
    with caplog.at_level("DEBUG", logger="detector"):
        _, device = load_session(default_onnx, None, blocked_layout=False)
    (warning,) = _said(caplog, "WARNING")
    assert device == "cpu" and "running on the CPU, not the GPU" in warning and "CUDNN failure 4" in warning
    assert "--device cpu" in warning


def test_the_provider_s_own_fallback_to_the_cpu_is_a_warning_too(default_onnx, monkeypatch, caplog):
    real = onnxruntime_module().InferenceSession

    def falling_back(source, sess_options=None, providers=()):  # as onnxruntime does on a ValueError/RuntimeError
        print("EP Error CUDA failure 100: no CUDA-capable device is detected when using [...]")
        return real(source, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(session_module, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(onnxruntime_module(), "InferenceSession", falling_back)
    with caplog.at_level("DEBUG", logger="detector"):
        assert load_session(default_onnx, None, blocked_layout=False)[1] == "cpu"
    (warning,) = _said(caplog, "WARNING")
    assert "no CUDA-capable device is detected" in warning


def test_cuda_simply_absent_stays_quiet(default_onnx, monkeypatch, caplog):
    # onnxruntime-gpu on a machine without CUDA, the common CPU-only install: no warning on every run
    absent = "the CUDA provider cannot load (libcuda.so.1: cannot open shared object file: No such file or directory)"
    monkeypatch.setattr(session_module, "cuda_unavailable_reason", lambda: absent)
    with caplog.at_level("DEBUG", logger="detector"):
        assert load_session(default_onnx, None, blocked_layout=False)[1] == "cpu"
    assert _said(caplog, "WARNING") == []
    (debug,) = [message for message in _said(caplog, "DEBUG") if "not the GPU" in message]
    assert "libcuda.so.1" in debug
