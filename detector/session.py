"""Session stage: pick a device, open an onnxruntime session on a model file, run it (the file found: model_lookup)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import io
import json
import logging
import os
import platform
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .blocked_layout import open_cpu_session
from .errors import (
    DISTRIBUTION,
    DetectorError,
    DeviceUnavailableError,
    InferenceError,
    InvalidModelError,
    InvalidParameterError,
    pip_install,
)
from .process_lock import ProcessLock
from .settings import METADATA_EXPORT_KEY

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)


def onnxruntime_module() -> Any:
    """onnxruntime, imported on first use; None where neither extra is installed (require_onnxruntime says
    which to install). Not imported with the package: a process that has imported onnxruntime (1.31, 1.32)
    and then forks has children that hang in onnxruntime's clean-up when they exit, so a pre-fork server
    (gunicorn --preload) whose master imports this package and makes the detector in each worker is safe."""
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        if exc.name == "onnxruntime":
            return None
        raise DetectorError(_onnxruntime_broken(exc)) from None
    except Exception as exc:  # ImportError, AttributeError: e.g. an onnxruntime built for another numpy
        # Ctrl-C or SIGTERM while its C extension initialises: pybind11 turns the handler's exception into
        # ImportError("initialization failed") caused by it, which is the signal, not a broken install
        seen, link = set(), exc.__cause__ or exc.__context__
        while link is not None and id(link) not in seen:
            if not isinstance(link, Exception):  # KeyboardInterrupt, errors.Terminated
                raise link from None
            seen.add(id(link))
            link = link.__cause__ or link.__context__
        raise DetectorError(_onnxruntime_broken(exc)) from None
    return onnxruntime


def _onnxruntime_broken(error: Exception) -> str:
    reason = (str(error).strip().splitlines() or [""])[0]
    return (
        f"onnxruntime is installed but cannot be imported ({type(error).__name__}: {reason}): reinstall it, "
        f"or install a version built for numpy {np.__version__} (numpy 2 needs onnxruntime 1.19 or later)"
    )


ONNXRUNTIME_MISSING = (
    f"onnxruntime is not installed: {pip_install('cpu')} (the onnxruntime package) or "
    f"'{DISTRIBUTION}[gpu]' (onnxruntime-gpu, for CUDA)"
)

# onnxruntime's CPU convolutions run channels in blocks (its NCHWc layout) on x86-64 only: 16 with AVX-512F,
# else 8 (its MLAS library's default there). The export pads channel counts to the block of the CPU it runs on
# (detector/optimize) and records it; elsewhere (ARM: Apple silicon, Graviton) there is no block to fill.
CHANNEL_BLOCK = 16  # AVX-512's block, and the block where an x86-64 CPU's features cannot be read
AVX2_CHANNEL_BLOCK = 8
CHANNEL_BLOCKS = (AVX2_CHANNEL_BLOCK, CHANNEL_BLOCK)
NO_CHANNEL_BLOCK = 1  # a CPU where onnxruntime has no blocked layout: nothing padded, nothing moved
EXPORT_CHANNEL_BLOCKS = (NO_CHANNEL_BLOCK, *CHANNEL_BLOCKS)  # what a file can be made for (--channel-block)
BLOCKED_LAYOUT_MACHINES = frozenset({"x86_64", "amd64"})  # platform.machine(), lower-cased
CPUINFO = Path("/proc/cpuinfo")
# onnxruntime's x86-64 int8 convolutions multiply uint8 activations by int8 weights with a dot-product
# instruction that sums in 32 bits where the CPU has one (these /proc/cpuinfo flags); without it (AVX2, AVX-512
# before VNNI) with VPMADDUBSW, which adds each pair of products into a saturating 16-bit sum (255 * 127 * 2 is
# above 32767). Measured on an AVX2-only AMD EPYC, 2026-12-07 (README, "Evaluation and precision variants"):
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
INT8_WITHOUT_VNNI_MEASURED = "0.82-0.96x fp32's session.run time and lost up to 0.013 Hmean (up to 0.008 with VNNI)"
# detect serve: network inputs (per image) above this many pixels, 2048x2048, give their arena memory back
# after the run (arena_shrinking_run)
ARENA_SHRINK_ABOVE_PIXELS = 2048 * 2048

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
_DEVICE_PATTERN = re.compile(r"^(cpu|gpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "gpu"
    index: int = 0


def parse_device(device: Optional[str]) -> Optional[Device]:
    """'cpu' | 'gpu' | 'gpu:N' (also 'cuda[:N]') -> Device; None means "GPU if usable, else CPU"."""
    if device is None:
        return None
    match = _DEVICE_PATTERN.match(str(device).strip().lower())
    if not match:
        raise InvalidParameterError(
            f"device must be 'cpu', 'gpu' or 'gpu:N', got {device!r}: onnxruntime here runs on the CPU or CUDA only"
        )
    kind = "cpu" if match.group(1) == "cpu" else "gpu"
    if kind == "cpu" and match.group(2) is not None:
        raise InvalidParameterError(f"device 'cpu' takes no index, got {device!r}")
    return Device(kind, int(match.group(2) or 0))


# contextlib.redirect_stdout swaps sys.stdout for the whole process and puts back what it found: two threads
# capturing at once (two GPU detectors made together) could each put back the other's buffer, leaving sys.stdout
# a StringIO for good. One capture at a time (what other threads print meanwhile still lands in it).
_STDOUT_CAPTURE_LOCK = ProcessLock()


@contextlib.contextmanager
def _stdout_captured() -> Iterator[io.StringIO]:
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
        with _stdout_captured() as printed:
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


# How onnxruntime's intra-op worker threads wait between the parallel sections of a run.
# SPIN_WITHIN_RUN, the default: they spin while a run lasts (no wake-up between two operators) and
# stop when it returns, so an idle detector burns no CPU. Against sleeping, on the 2-core machine
# with this process alone (2026-12-02, best of 9, five sizes from 32x128 to 672x960, summed):
# session.run 0.86x (PP-OCRv4_mobile_det), 0.87x (PP-OCRv6_small_det), 0.84x (PP-OCRv6_tiny_det),
# and no CPU in the 200 ms after a run, where onnxruntime's default (spinning, no stop) burned 30-40 ms.
# SLEEP_BETWEEN_SECTIONS: for processes that share their cores with other busy ones (several service
# workers each running on every core): three such processes on 2 cores ran 1.4x the images per
# second with sleeping threads (21.8-22.8 against 15.4-16.0 runs/s, PP-OCRv6_small_det).
SPIN_WITHIN_RUN = {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}
SLEEP_BETWEEN_SECTIONS = {"session.intra_op.allow_spinning": "0"}


def session_options(threads: Optional[int] = None, spinning: bool = True) -> ort.SessionOptions:
    """onnxruntime session options for a detector (outputs do not depend on them); ``spinning``
    chooses SPIN_WITHIN_RUN, else SLEEP_BETWEEN_SECTIONS."""
    options = onnxruntime_module().SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    for key, value in (SPIN_WITHIN_RUN if spinning else SLEEP_BETWEEN_SECTIONS).items():
        options.add_session_config_entry(key, value)
    return options


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


def require_onnxruntime() -> None:
    """A DetectorError naming the two install extras where neither onnxruntime package is installed: before
    a model is looked up or downloaded (which would then fail for a reason that is not the download's)."""
    if onnxruntime_module() is None:
        raise DetectorError(ONNXRUNTIME_MISSING)


def load_session(
    model_path: Path,
    device: Optional[Device],
    threads: Optional[int] = None,
    spinning: bool = True,
    blocked_layout: bool = True,
) -> tuple[ort.InferenceSession, str]:
    """Open the model on the device; returns the session and the device it really runs on ('cpu', 'gpu:N').

    ``blocked_layout``: on the CPU, more of onnxruntime's optimized graph kept in its blocked channel layout,
    the same maps bit for bit (detector/blocked_layout.py; the plain session wherever that cannot be had).
    """
    require_onnxruntime()
    options = session_options(threads, spinning)
    want_gpu = device is None or device.kind == "gpu"
    if want_gpu:
        index = device.index if device else 0
        reason = cuda_unavailable_reason()
        cuda_loaded = reason is None
        if reason is None:
            session, reason = _cuda_session(model_path, options, index)
            if session is not None and reason is None:
                return session, f"gpu:{index}"
            if device is not None and session is None:
                # onnxruntime raised: a file no provider can open fails on the CPU too, with the model's own
                # error (InvalidModelError); one the CPU opens leaves the GPU to blame
                _open(model_path, options, [CPU_PROVIDER])
        if device is not None:
            raise DeviceUnavailableError(
                f"device {device.kind}:{device.index} is not usable: {reason}. "
                f"Run on the CPU instead: device='cpu' (API) or --device cpu (detect)"
            )
    session = _cpu_session(model_path, options, threads, spinning, blocked_layout)
    if want_gpu:  # device=None, on the CPU: said once the model has opened there (a broken file is its own error)
        # the CUDA provider's library loaded (a GPU driver is there) and still no CUDA session: worth a warning.
        # Where CUDA is simply absent (onnxruntime-gpu on a machine without one, the plain onnxruntime build),
        # the CPU is what "GPU if usable" means, and a warning on every run would be noise
        logger.log(
            logging.WARNING if cuda_loaded else logging.DEBUG,
            "running on the CPU, not the GPU: %s. device='cpu' (API) or --device cpu (detect) runs there without "
            "trying the GPU",
            reason,
        )
    return session, "cpu"


def _cpu_session(
    model_path: Path, options: ort.SessionOptions, threads: Optional[int], spinning: bool, blocked_layout: bool
) -> ort.InferenceSession:
    """The session on the CPU, in the blocked layout where asked and to be had (see load_session)."""
    block = this_cpu_block()
    if not blocked_layout or block == NO_CHANNEL_BLOCK:  # nothing to keep blocked where there is no block
        return _open(model_path, options, [CPU_PROVIDER])
    session, _ = open_cpu_session(
        model_path,
        lambda: session_options(threads, spinning),
        block,
        lambda model, options: _open(model_path, options, [CPU_PROVIDER], model),
    )
    return session


def _cuda_session(
    model_path: Path, options: ort.SessionOptions, index: int
) -> tuple[Optional[ort.InferenceSession], Optional[str]]:
    """The session opened for GPU ``index`` and, where it does not run there, why: then the session is
    onnxruntime's own fallback to the CPU, or None where onnxruntime raised instead.

    onnxruntime falls back by itself where the CUDA provider fails to start with a ValueError or RuntimeError
    (a device index past the last GPU, a driver without a visible device), printing why to stdout: kept for the
    reason. What fails later, in the session's initialization on the GPU (no cuDNN handle, GPU memory out:
    its Fail or RuntimeException), it raises: a failure of the device, not of the file (load_session tells)."""
    try:
        with _stdout_captured() as printed:
            session = _open(model_path, options, [(CUDA_PROVIDER, cuda_provider_options(index)), CPU_PROVIDER])
    except InvalidModelError as exc:
        return None, f"onnxruntime could not open the model on GPU {index} ({_flattened(_onnxruntime_message(exc))})"
    if session.get_providers()[0] == CUDA_PROVIDER:
        return session, None
    said = [line.strip() for line in printed.getvalue().splitlines() if line.strip().startswith("EP Error")]
    return session, f"onnxruntime could not create the CUDA provider on GPU {index}" + (
        f" ({_flattened(said[0])})" if said else ""
    )


def _onnxruntime_message(error: InvalidModelError) -> str:
    """onnxruntime's own message behind an InvalidModelError from _open (raised from None: its context)."""
    return str(error.__context__ or error)


def _flattened(text: str) -> str:
    return " ".join(text.split())


# onnxruntime's exception classes that say a file's bytes are no model (a truncated, overwritten or empty
# file: "Protobuf parsing failed", "No graph was found"). Its others (FAIL "std::bad_alloc" when memory runs
# out, a thread it cannot start, a CUDA failure) say nothing about the file.
DAMAGED_MODEL_ERRORS = frozenset({"InvalidProtobuf", "InvalidGraph", "InvalidArgument"})


def _open(
    model_path: Path, options: ort.SessionOptions, providers: list[Any], model: Union[str, bytes, None] = None
) -> ort.InferenceSession:
    """A session on model_path (or on ``model``, its path or serialized bytes, made from it)."""
    source = str(model_path) if model is None else model
    try:
        if isinstance(source, str) and not _utf8_encodable(source):
            source = Path(source).read_bytes()  # onnxruntime takes paths as UTF-8 text only (a TypeError else)
        return onnxruntime_module().InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise InvalidModelError(
            f"onnxruntime cannot load {model_path}: {exc}", file_damaged=type(exc).__name__ in DAMAGED_MODEL_ERRORS
        ) from None


def _utf8_encodable(text: str) -> bool:
    """False for a path holding bytes that are not UTF-8 (os.fsdecode's \\udcXX escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def out_of_memory(error: BaseException) -> bool:
    """Whether an error is memory running out (Python's, or onnxruntime's std::bad_alloc in its message)."""
    return isinstance(error, MemoryError) or "bad_alloc" in str(error)


def check_detector_signature(session: ort.InferenceSession, model_path: Path) -> tuple[str, str]:
    """Input and output names, after checking the model takes NCHW images and returns (N,1,H,W) maps."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise InvalidModelError(f"{model_path} has {len(inputs)} inputs; a DB text detector has one image input")
    # an input declaring no shape at all (onnxruntime gives []) is taken as images of any size: running it says
    in_shape, out_shape = inputs[0].shape or ["N", 3, "H", "W"], outputs[0].shape
    if len(in_shape) == 4 and in_shape[3] == 3 and in_shape[1] != 3:
        raise InvalidModelError(
            f"{model_path} takes channel-last input of shape {in_shape}; a PaddleOCR DB text detector "
            f"takes (N, 3, H, W) images"
        )
    if len(in_shape) != 4 or (isinstance(in_shape[1], int) and in_shape[1] != 3):
        raise InvalidModelError(
            f"{model_path} takes input of shape {in_shape}; a DB text detector takes (N, 3, H, W) images"
        )
    if inputs[0].type != "tensor(float)":
        raise InvalidModelError(
            f"{model_path} takes {inputs[0].type} input; this detector feeds float32 images, as PaddleOCR does"
            + (
                " (a float16 model for it keeps float32 inputs and outputs: onnxconverter-common's keep_io_types=True, "
                "as the export's fp16 variant does)"
                if inputs[0].type == "tensor(float16)"
                else ""
            )
        )
    if isinstance(in_shape[2], int) != isinstance(in_shape[3], int):
        raise InvalidModelError(
            f"{model_path} takes input of shape {in_shape}: one side fixed, the other free; a DB text detector "
            f"takes images of any size, or of one fixed size (input_shape)"
        )
    if len(out_shape) != 4 or (isinstance(out_shape[1], int) and out_shape[1] != 1):
        raise InvalidModelError(
            f"{model_path} returns shape {out_shape}"
            + (f" as the first of its {len(outputs)} outputs" if len(outputs) > 1 else "")
            + "; a DB text detector returns a (N, 1, H, W) probability map"
            + (" (its first output)" if len(outputs) > 1 else "")
        )
    return inputs[0].name, outputs[0].name


def fixed_input_size(session: ort.InferenceSession) -> Optional[tuple[int, int]]:
    """(H, W) where the model takes images of that size only (an export with a fixed shape), else None."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:  # no shape declared
        return None
    height, width = shape[2:]
    fixed = all(isinstance(side, int) and side > 0 for side in (height, width))
    return (height, width) if fixed else None


def model_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def uses_io_binding(providers: Sequence[str]) -> bool:
    """Whether a session with these providers (the one in use first) runs through IO binding.

    On CUDA, IO binding took 16.1 ms per 960x960 image against session.run's 18.5 ms on an H100
    (tools/dev/gpu_bench.py, input and output bound on the GPU); this host-bound form
    (input and output in CPU memory, as the DB postprocess needs) was not timed on a GPU. On the CPU
    there is nothing to copy: plain session.run.
    """
    return bool(providers) and providers[0] == CUDA_PROVIDER


def run_session(
    session: ort.InferenceSession,
    input_name: str,
    output_name: str,
    batch: np.ndarray,
    io_binding: bool = False,
    shrink_arena_above: Optional[int] = None,
) -> np.ndarray:
    """Probability maps (N, H, W) for a NCHW float32 batch; through IO binding if ``io_binding``
    (see :func:`uses_io_binding`), with the same maps either way. A batch whose images have more than
    ``shrink_arena_above`` pixels hands its arena memory back after the run (:func:`arena_shrinking_run`)."""
    if len(batch) > 1 and takes_one_image(session):
        return np.concatenate(
            [
                run_session(session, input_name, output_name, batch[index : index + 1], io_binding, shrink_arena_above)
                for index in range(len(batch))
            ]
        )
    large = shrink_arena_above is not None and batch.shape[2] * batch.shape[3] > shrink_arena_above
    run_options = arena_shrinking_run(session) if large else None
    try:
        if io_binding:
            binding = session.io_binding()  # one per call: a session is shared by threads, a binding is not
            binding.bind_cpu_input(input_name, np.ascontiguousarray(batch))
            binding.bind_output(output_name, "cpu")
            session.run_with_iobinding(binding, run_options)
            maps = binding.copy_outputs_to_cpu()[0]
        else:
            (maps,) = session.run([output_name], {input_name: batch}, run_options)
    except Exception as exc:  # onnxruntime's own untyped errors: out of memory, a shape the graph refuses
        raise InferenceError(f"onnxruntime failed on a {tuple(batch.shape)} input batch: {exc}") from exc
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise InvalidModelError(f"the model returned shape {maps.shape}; expected (N, 1, H, W)")
    return maps[:, 0]


def arena_shrinking_run(session: ort.InferenceSession) -> ort.RunOptions:
    """RunOptions that hand the memory arenas' free chunks back at the end of the run.

    onnxruntime's arena keeps what its largest run needed for the life of the session: one 4000-pixel page
    (a request's limit_side_len=4000, limit_type=min) left PP-OCRv4_mobile_det's process at 1.66 GB resident
    for good, 0.23 GB with this. The price is the next such run's: it allocates and faults its memory again,
    ~1.5x as long (0.79 -> 1.18 s, best of 5, a process each). So the service asks for it (a client's page
    that size is an outlier to survive, not a workload), and the library only where asked."""
    options = onnxruntime_module().RunOptions()
    arenas = ["cpu:0"] + [f"gpu:{device}" for device in _cuda_devices(session)]
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", ";".join(arenas))
    return options


def _cuda_devices(session: ort.InferenceSession) -> list[str]:
    """The CUDA device ids a session runs on (none on the CPU)."""
    providers = session.get_providers()
    if CUDA_PROVIDER not in providers:
        return []
    return [str(session.get_provider_options().get(CUDA_PROVIDER, {}).get("device_id", "0"))]


def takes_one_image(session: ort.InferenceSession) -> bool:
    """Whether the session's input holds one image per run (a blocked-layout graph, or a file made so)."""
    shape = session.get_inputs()[0].shape
    return bool(shape) and shape[0] == 1


def nchwc_block(flags: Collection[str]) -> int:
    """onnxruntime's channel block on an x86-64 CPU with these flags (as /proc/cpuinfo lists them): 16 where
    it has AVX-512F, else 8. Padding to 16 on an AVX2 CPU pads channel counts it already blocks (24 to 32):
    PP-OCRv6_small_det ran 0.91-0.95x as long padded to 8 there (AMD EPYC Zen 3, 2026-12-02)."""
    return CHANNEL_BLOCK if "avx512f" in flags else AVX2_CHANNEL_BLOCK


def numpy_cpu_flags() -> Optional[frozenset]:
    """The CPU's features as numpy's dispatcher found them (any OS: macOS and Windows have no /proc/cpuinfo),
    lower-cased as /proc/cpuinfo spells them ("avx2", "avx512f"); None where numpy does not say."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return frozenset(name.lower() for name, present in features.items() if present)
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> Optional[frozenset]:
    """The first CPU's flags as /proc/cpuinfo lists them on x86 Linux; None where there are none to read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return None if flags is None else frozenset(flags)


def int8_sums_saturate(flags: Optional[Collection[str]]) -> bool:
    """Whether onnxruntime's int8 convolutions add pairs of products in saturating 16-bit sums on an x86-64 CPU
    with these flags (as /proc/cpuinfo lists them): AVX2 or AVX-512 without a VNNI dot product. False where the
    flags are unknown (None) or not an x86 CPU's. (A kernel older than the CPU may not list avx_vnni: such an
    AVX2 CPU with AVX-VNNI is then taken for one without.)"""
    return flags is not None and "avx2" in flags and INT8_DOT_PRODUCT_FLAGS.isdisjoint(flags)


def int8_without_vnni(flags: Optional[Collection[str]]) -> Optional[str]:
    """What to tell the user who runs an int8 variant on a CPU whose int8 sums saturate; None elsewhere."""
    if not int8_sums_saturate(flags):
        return None
    return (
        "this CPU has no VNNI int8 dot product (avx512_vnni, avx_vnni or amx_int8), so onnxruntime's int8 "
        "convolutions add pairs of products in saturating 16-bit sums here: on an AVX2-only AMD EPYC the int8 "
        f"variants took {INT8_WITHOUT_VNNI_MEASURED}; the fp32 model is likely the better choice on this CPU"
    )


def this_cpu_block(cpuinfo: Path = CPUINFO, machine: Optional[str] = None) -> int:
    """onnxruntime's channel block on the CPU this runs on: NO_CHANNEL_BLOCK off x86-64 (no blocked layout
    there: padding only adds work, 1.08-1.12x on PP-OCRv6_small_det with the layout turned off), else from its flags
    (/proc/cpuinfo, or numpy's where there is none), 16 where they cannot be read."""
    if (machine if machine is not None else platform.machine()).lower() not in BLOCKED_LAYOUT_MACHINES:
        return NO_CHANNEL_BLOCK
    flags = cpu_flags(cpuinfo)
    if flags is None:
        flags = numpy_cpu_flags()
    return CHANNEL_BLOCK if flags is None else nchwc_block(flags)


def block_made_for(metadata: Mapping[str, str]) -> Optional[int]:
    """The channel block a file was made for (its export record's channel_block: its convolutions padded
    to it, or, for 8, wide pointwise ones left out of the blocked layout), if any."""
    try:
        record = json.loads(metadata.get(METADATA_EXPORT_KEY) or "{}")
    except ValueError:
        return None
    block = record.get("channel_block") if isinstance(record, dict) else None
    return block if isinstance(block, int) else None


def made_for_another_cpu(metadata: Mapping[str, str], cpu_block: int) -> Optional[str]:
    """What to tell the user when a file was made for another channel block than this CPU's
    (exported on an AVX2-only CPU and run on AVX-512, or the other way round); None when they match."""
    block = block_made_for(metadata)
    if block is None or block == cpu_block:
        return None
    made_for = (
        "CPUs without onnxruntime's blocked channel layout (exported on ARM)"
        if block == NO_CHANNEL_BLOCK
        else f"CPUs that block convolution channels by {block} (exported on "
        + ("an AVX2-only CPU)" if block == AVX2_CHANNEL_BLOCK else "a CPU with AVX-512)")
    )
    here = (
        "onnxruntime has no blocked layout on this CPU"
        if cpu_block == NO_CHANNEL_BLOCK
        else f"onnxruntime blocks them by {cpu_block} on this CPU"
    )
    return (
        f"it was made for {made_for} and {here}: the same boxes, more slowly than a file made for this CPU "
        f"(`detect optimize <the ONNX source> -o FILE` here, or `--channel-block {cpu_block}` at export)"
    )
