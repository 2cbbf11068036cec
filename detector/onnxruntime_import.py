"""onnxruntime, imported on first use (never with the package), and what to say where it is missing or
cannot be imported."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DISTRIBUTION, DetectorError, pip_install


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


def require_onnxruntime() -> None:
    """A DetectorError naming the two install extras where neither onnxruntime package is installed: before
    a model is looked up or downloaded (which would then fail for a reason that is not the download's)."""
    if onnxruntime_module() is None:
        raise DetectorError(ONNXRUNTIME_MISSING)
