"""onnxruntime's CUDA provider: whether it can load here (CUDA and cuDNN from pip, its library), and what a
session asks of it."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import io
import os
from collections.abc import Iterator
from typing import Optional

from .onnxruntime_import import onnxruntime_module
from .process_lock import ProcessLock

CUDA_PROVIDER = "CUDAExecutionProvider"


# contextlib.redirect_stdout swaps sys.stdout for the whole process and puts back what it found: two threads
# capturing at once (two GPU detectors made together) could each put back the other's buffer, leaving sys.stdout
# a StringIO for good. One capture at a time (what other threads print meanwhile still lands in it).
_STDOUT_CAPTURE_LOCK = ProcessLock()


@contextlib.contextmanager
def stdout_captured() -> Iterator[io.StringIO]:
    """What onnxruntime prints to stdout within the block, kept from stdout."""
    printed = io.StringIO()
    with _STDOUT_CAPTURE_LOCK, contextlib.redirect_stdout(printed):
        yield printed


@functools.cache
def preload_pip_cuda_libraries() -> bool:
    """Load CUDA and cuDNN from their pip packages (nvidia-*), where installed, so that onnxruntime-gpu
    finds them without LD_LIBRARY_PATH; a no-op (False) where they are not, or onnxruntime is too old."""
    runtime = onnxruntime_module()
    if not hasattr(runtime, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return False
    try:
        # onnxruntime prints what it cannot load to stdout ("Failed to load libcublasLt.so.13 …", where the
        # pip packages are another CUDA's: torch's CUDA 12 beside a CUDA 13 build), which `detect --json` and
        # a service's stdout must not carry; the provider load below says what is missing
        with stdout_captured() as printed:
            runtime.preload_dlls(cuda=True, cudnn=True, msvc=False)
    except Exception:
        return False
    return "Failed to load" not in printed.getvalue()


# onnxruntime-gpu's CUDA provider library, in its capi folder
CUDA_PROVIDER_LIBRARY = {"posix": "libonnxruntime_providers_cuda.so", "nt": "onnxruntime_providers_cuda.dll"}
# (os.name: "posix" on Linux and macOS, where onnxruntime-gpu has no wheel; "nt" on Windows)


def cuda_unavailable_reason() -> Optional[str]:
    """Why onnxruntime's CUDA provider cannot load here, or None if it can.

    Loading the provider library ourselves first keeps onnxruntime from printing its library-load
    errors on machines without CUDA.
    """
    runtime = onnxruntime_module()
    if CUDA_PROVIDER not in runtime.get_available_providers():
        return f"this onnxruntime build ({runtime.__version__}) has no CUDA provider; install onnxruntime-gpu"
    preload_pip_cuda_libraries()
    windows = os.name == "nt"
    library = os.path.join(os.path.dirname(runtime.__file__), "capi", CUDA_PROVIDER_LIBRARY[os.name])
    if os.path.isfile(library):
        try:
            # WinDLL on Windows, as onnxruntime itself loads it (the name exists there only)
            loader = ctypes.WinDLL if windows else ctypes.CDLL  # type: ignore[attr-defined,unused-ignore]
            loader(library)
        except OSError as exc:
            needs = f"onnxruntime {runtime.__version__} needs a matching CUDA and cuDNN"
            return f"the CUDA provider cannot load ({exc}); {needs}"
    return None


def cuda_provider_options(device_index: int) -> dict[str, str]:
    """CUDA provider options suited to a detector's input, whose height and width change per image.

    cuDNN's default EXHAUSTIVE search benchmarks every convolution algorithm again for each new
    input shape (seconds per new image size); HEURISTIC asks cuDNN's heuristics once per shape, with
    no benchmarking. The arena grows by what each shape asks, not by doubling, so a run of large
    pages does not reserve twice their memory.
    """
    return {
        "device_id": str(device_index),
        "cudnn_conv_algo_search": "HEURISTIC",
        # TF32 matrix units round float32 inputs to 10 mantissa bits: maps moved enough to shift box
        # corners by up to 7 px on an H100. Plain float32 keeps the CPU's boxes.
        "use_tf32": "0",
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
    }
