"""Session stage: pick a device, open an onnxruntime session on a model file and check what it takes and returns
(the file found: model_lookup; onnxruntime imported: onnxruntime_import; the CUDA provider: cuda_provider;
the CPU's channel block: cpu_features; running it: session_run)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .blocked_layout import open_cpu_session
from .cpu_features import NO_CHANNEL_BLOCK, this_cpu_block
from .cuda_provider import CUDA_PROVIDER, cuda_provider_options, cuda_unavailable_reason, stdout_captured
from .errors import DeviceUnavailableError, InvalidModelError, InvalidParameterError
from .onnxruntime_import import onnxruntime_module, require_onnxruntime

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)


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
        with stdout_captured() as printed:
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
