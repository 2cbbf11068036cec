"""What a downloaded release file must be before it is kept: a model onnxruntime reads, or the model's own
inference.yml, whole."""

from __future__ import annotations

from .errors import ModelNotFoundError
from .hub import MODEL_FILENAME, manual_download_hint
from .settings import declared_model_name, settings_from_inference_config


def first_line(exc: Exception) -> str:
    """An exception's reason in one line (yaml's and onnxruntime's span several), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_release_file(filename: str, data: bytes, url: str, model_name: str) -> None:
    """Refuse a downloaded file that is not what its name says: a model cut short without a Content-Length,
    or a 200 page of HTML, would otherwise sit in the cache and fail every later run; so would a yml cut
    short that still parses (it must name this model and hold a DB postprocess, read as the runtime reads it)."""
    if filename == MODEL_FILENAME:
        # imported as the runtime imports it, outside the try: a Ctrl-C or SIGTERM while onnxruntime initialises
        # comes back as an ImportError caused by it, which onnxruntime_module raises as the signal (no file's fault)
        from .onnxruntime_import import onnxruntime_module, require_onnxruntime

        require_onnxruntime()
        onnxruntime = onnxruntime_module()
    try:
        if filename == MODEL_FILENAME:
            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
            onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        else:
            check_release_yml(data, model_name)
    except Exception as exc:  # onnxruntime and yaml raise their own kinds; the reason goes in the message
        reason = first_line(exc)
        raise ModelNotFoundError(
            f"{url} did not give a readable {filename} ({len(data):,} bytes: {reason}); nothing kept. "
            f"Try again, or: " + manual_download_hint(model_name)
        ) from None


def check_release_yml(data: bytes, model_name: str) -> None:
    """Raise (any exception, its message the reason) unless data is a release's inference.yml for model_name:
    a mapping naming the model, with the PreProcess and PostProcess the runtime reads its settings from."""
    import yaml

    if not data.endswith(b"\n"):  # the releases' ymls end with a line break; one cut in a value may parse
        raise ValueError("it does not end with a line break: cut short")  # (scale: 1./255. read as 1.)
    config = yaml.safe_load(data.decode("utf-8"))
    if not isinstance(config, dict):
        raise ValueError("not a mapping")
    if declared_model_name(config) != model_name:
        raise ValueError(f"it names the model {declared_model_name(config)!r}")
    for section in ("PreProcess", "PostProcess"):
        if not isinstance(config.get(section), dict):
            raise ValueError(f"no {section} section")
    settings_from_inference_config(config, model_name)
