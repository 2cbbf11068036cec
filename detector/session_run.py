"""Running a session: probability maps for a batch (IO binding on CUDA), memory handed back after large runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import numpy as np

from .cuda_provider import CUDA_PROVIDER
from .errors import InferenceError, InvalidModelError
from .onnxruntime_import import onnxruntime_module

if TYPE_CHECKING:
    import onnxruntime as ort

# detect serve: network inputs (per image) above this many pixels, 2048x2048, give their arena memory back
# after the run (arena_shrinking_run)
ARENA_SHRINK_ABOVE_PIXELS = 2048 * 2048


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
