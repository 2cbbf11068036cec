"""The one home for detection settings: what a model's inference.yml means, and user overrides.

The export step turns a model's ``inference.yml`` into a :class:`DetectionSettings` with
:func:`settings_from_inference_config` and writes it into the ONNX metadata
(:data:`METADATA_SETTINGS_KEY`). The runtime reads it back with :func:`settings_from_metadata`, or,
for a file without it, reads the yml beside the file (or the catalog's record of a known model's
yml) through the same function (:func:`settings_for_model_file`), and lays user overrides on top with
:meth:`DetectionSettings.with_overrides`. The fallbacks below are the ones PaddleX's text-detection
predictor uses when a yml leaves a key out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypedDict

import numpy as np

from .errors import InvalidModelError, InvalidParameterError

# ONNX metadata_props keys written by tools/export and read by the runtime.
METADATA_MODEL_NAME_KEY = "detector.model_name"
METADATA_SETTINGS_KEY = "detector.settings"
METADATA_SOURCE_KEY = "detector.source"  # JSON: {"files": {name: sha256}, "origin": str}
METADATA_EXPORT_KEY = "detector.export"  # JSON: versions and verification figures
METADATA_INFERENCE_YML_KEY = "detector.inference_yml"  # the original yml text, for the record

# PaddleX 3.7 (_TEXT_DET_MAX_LIMIT_MODELS) resizes these models by their long side (limit_type "max",
# 960, or the yml's resize_long); all other DB models by their short side ("min", 736, or resize_long). A yml's
# own DetResizeForTest limit_side_len and limit_type are not read: PaddleX's build_resize takes them as named
# parameters and never uses them (its "TODO: align to PaddleOCR"), so PaddleOCR 3.7 ignores them too.
LONG_SIDE_MODELS = frozenset(
    {
        "PP-OCRv6_medium_det",
        "PP-OCRv6_small_det",
        "PP-OCRv6_tiny_det",
        "PP-OCRv5_server_det",
        "PP-OCRv5_mobile_det",
        "PP-OCRv4_server_det",
        "PP-OCRv4_mobile_det",
        "PP-OCRv3_server_det",
        "PP-OCRv3_mobile_det",
    }
)
SHORT_SIDE_LIMIT = (736, "min")  # (limit_side_len, limit_type) for the other models
LIMIT_TYPES = ("max", "min", "resize_long")  # PaddleX's DetResizeForTest types
SCORE_MODES = ("fast", "slow")
BOX_TYPES = ("quad", "poly")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetectionSettings:
    """Everything that decides which boxes come out, for one model.

    The defaults are PaddleX 3.7's for an inference.yml that does not say (the limit those of its
    long-side models; SHORT_SIDE_LIMIT for the others): a model's own settings come from its file."""

    limit_side_len: int = 960
    limit_type: str = "max"
    max_side_limit: int = 4000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 2.0
    max_candidates: int = 1000
    use_dilation: bool = False
    score_mode: str = "fast"
    box_type: str = "quad"

    def with_overrides(self, **overrides: Any) -> DetectionSettings:
        """A copy with every override that is not None applied, validated (the settings SettingOverrides names:
        mean, std and scale are the model's own, from its file)."""
        known = SettingOverrides.__annotations__
        unknown = set(overrides) - set(known)
        if unknown:
            raise InvalidParameterError(f"unknown setting(s): {', '.join(sorted(unknown))}; known: {', '.join(known)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return validate_settings(dataclasses.replace(self, **given)) if given else self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class SettingOverrides(TypedDict, total=False):
    """The settings ``predict`` may change for one call (keyword arguments; None keeps the detector's own)."""

    limit_side_len: Optional[int]
    limit_type: Optional[str]  # one of LIMIT_TYPES
    max_side_limit: Optional[int]
    thresh: Optional[float]
    box_thresh: Optional[float]
    unclip_ratio: Optional[float]
    max_candidates: Optional[int]
    use_dilation: Optional[bool]
    score_mode: Optional[str]  # one of SCORE_MODES
    box_type: Optional[str]  # one of BOX_TYPES


# A wrong value is quoted back in the error, cut to a few dozen characters: a service passes a client's
# 10-MB string or 200,000-item list straight through to its answer and its log otherwise.
_QUOTED = reprlib.Repr()
_QUOTED.maxstring = _QUOTED.maxother = 60
_QUOTED.maxlist = _QUOTED.maxtuple = _QUOTED.maxdict = 6


def quoted(value: Any) -> str:
    """repr(value), cut short where it is long (reprlib: "'abc...xyz'", "[1, 2, ...]")."""
    return _QUOTED.repr(value)


def true_or_false(name: str, value: Any) -> bool:
    """value if it is a boolean (numpy's too): "no" and "false" are strings, and would be True."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"{name} must be True or False, got {quoted(value)}")
    return bool(value)


# No side is this long: a larger limit_side_len is refused (with limit_type min its ratio to an image side
# overflowed to infinity); max_side_limit and max_candidates may be any size ("no cap")
MAX_SIDE_LEN = 2**31 - 1


# Settings PaddleX's TextDetection.predict reads as `value or default`: a 0 there is the model's default.
PADDLEX_ZERO_IS_DEFAULT = frozenset({"limit_side_len", "thresh", "box_thresh", "unclip_ratio"})


def coerced_number(name: str, value: Any, kind: type) -> Any:
    """value as a Python ``kind`` (int or float), or an InvalidParameterError naming ``name``: numpy's numbers
    taken, bools, non-finite and (for int) fractional values refused."""
    if isinstance(value, np.number) and not isinstance(value, np.complexfloating):
        value = value.item()  # numpy's numbers (a pandas column's np.int64, np.float32) as Python's
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameterError(f"{name} must be a number, got {quoted(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidParameterError(f"{name} must be a finite number, got {quoted(value)}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise InvalidParameterError(f"{name} must be a whole number, got {quoted(value)}")
    if name == "limit_side_len" and abs(value) > MAX_SIDE_LEN:  # its ratio to a side overflows float beyond
        raise InvalidParameterError(f"{name} must be at most {MAX_SIDE_LEN:,}, got a larger number")
    try:
        return kind(value)
    except OverflowError:  # float() of an integer of 309 digits or more
        raise InvalidParameterError(f"{name} must be a finite number, got one too large for a float") from None


def validate_settings(settings: DetectionSettings) -> DetectionSettings:
    """Return ``settings`` with numbers coerced, or raise InvalidParameterError naming the field."""

    def number(name: str, kind: type) -> Any:
        return coerced_number(name, getattr(settings, name), kind)

    def choice(name: str, allowed: tuple) -> str:
        value = getattr(settings, name)
        if value not in allowed:
            raise InvalidParameterError(f"{name} must be one of {', '.join(allowed)}, got {quoted(value)}")
        return value

    values = {
        "limit_side_len": number("limit_side_len", int),
        "max_side_limit": number("max_side_limit", int),
        "thresh": number("thresh", float),
        "box_thresh": number("box_thresh", float),
        "unclip_ratio": number("unclip_ratio", float),
        "max_candidates": number("max_candidates", int),
        "scale": number("scale", float),
        "limit_type": choice("limit_type", LIMIT_TYPES),
        "score_mode": choice("score_mode", SCORE_MODES),
        "box_type": choice("box_type", BOX_TYPES),
    }

    def refuse(name: str, rule: str) -> None:
        # PaddleX's predict reads `thresh or default` (limit_side_len, box_thresh, unclip_ratio too): its 0 means
        # the model's default, where a 0 here would be taken as given
        said = " (PaddleOCR's predict takes 0 as the model's default: leave it out, or pass None, for that)"
        hint = said if values[name] == 0 and name in PADDLEX_ZERO_IS_DEFAULT else ""
        raise InvalidParameterError(f"{name} must be {rule}, got {values[name]}{hint}")

    for name in ("thresh", "box_thresh"):  # 1: no pixel or no box passes, as in PaddleOCR
        if not 0.0 < values[name] <= 1.0:
            refuse(name, "greater than 0 and at most 1")
    for name in ("limit_side_len", "max_side_limit", "max_candidates"):
        if values[name] < 1:
            refuse(name, "at least 1")
    if values["unclip_ratio"] <= 0:
        refuse("unclip_ratio", "greater than 0")
    for name in ("mean", "std"):
        seq = getattr(settings, name)
        try:
            if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or len(seq) != 3:
                raise InvalidParameterError(name)
            values[name] = tuple(coerced_number(name, v, float) for v in seq)
        except InvalidParameterError:  # the one message for the whole triple, whichever value failed
            raise InvalidParameterError(f"{name} must be 3 finite numbers (B, G, R), got {quoted(seq)}") from None
    if any(v == 0 for v in values["std"]):
        raise InvalidParameterError(f"std must not contain 0, got {values['std']}")
    values["use_dilation"] = true_or_false("use_dilation", settings.use_dilation)
    return dataclasses.replace(settings, **values)


def _parse_scale(value: Any) -> float:
    # PaddleOCR writes the scale as the string "1./255." in its yml files.
    if isinstance(value, str):
        parts = value.split("/")
        try:
            if len(parts) == 2:
                return float(parts[0]) / float(parts[1])
            return float(value)
        except ValueError:
            raise InvalidParameterError(f"cannot read NormalizeImage scale {value!r}") from None
    return float(value)


def declared_model_name(config: Mapping[str, Any]) -> Optional[str]:
    """The model name a parsed inference.yml declares (Global.model_name), if any."""
    name = (config.get("Global") or {}).get("model_name")
    return str(name) if name else None


PADDLEX_FALLBACKS = DetectionSettings()


def settings_from_inference_config(config: Mapping[str, Any], model_name: Optional[str] = None) -> DetectionSettings:
    """Translate a parsed PaddleOCR/PaddleX ``inference.yml`` into settings, as PaddleX reads it."""
    name = model_name or declared_model_name(config) or ""
    ops = {}
    for op in (config.get("PreProcess") or {}).get("transform_ops") or []:  # `DetResizeForTest: null` -> {}
        if isinstance(op, Mapping):
            for key, args in op.items():
                ops[key] = args or {}
    resize = ops.get("DetResizeForTest", {})
    normalize = ops.get("NormalizeImage", {})
    post = config.get("PostProcess") or {}
    if post and post.get("name", "DBPostProcess") != "DBPostProcess":
        raise InvalidParameterError(
            f"PostProcess {post.get('name')!r} is not DBPostProcess: this is not a DB text detector"
        )
    fallback = PADDLEX_FALLBACKS
    side, side_type = (fallback.limit_side_len, fallback.limit_type) if name in LONG_SIDE_MODELS else SHORT_SIDE_LIMIT
    settings = DetectionSettings(
        limit_side_len=resize.get("resize_long", side),
        limit_type=side_type,
        mean=tuple(normalize.get("mean") or fallback.mean),
        std=tuple(normalize.get("std") or fallback.std),
        scale=_parse_scale(normalize["scale"]) if normalize.get("scale") is not None else fallback.scale,
        thresh=post.get("thresh", fallback.thresh),
        box_thresh=post.get("box_thresh", fallback.box_thresh),
        unclip_ratio=post.get("unclip_ratio", fallback.unclip_ratio),
        max_candidates=post.get("max_candidates", fallback.max_candidates),
        use_dilation=post.get("use_dilation", fallback.use_dilation),
        score_mode=post.get("score_mode", fallback.score_mode),
        box_type=post.get("box_type", fallback.box_type),
    )
    return validate_settings(settings)


def settings_from_metadata(metadata: Mapping[str, str], model_name: Optional[str] = None) -> DetectionSettings:
    """Settings stored in an ONNX file by tools/export; PaddleX's fallbacks for a file without them."""
    raw = metadata.get(METADATA_SETTINGS_KEY)
    if raw is None:
        return settings_from_inference_config({}, model_name=model_name)
    try:
        stored = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"not JSON: {exc}") from None
    if not isinstance(stored, dict):
        raise InvalidParameterError(f"not a JSON object: {quoted(stored)}")
    known = {f.name for f in dataclasses.fields(DetectionSettings)}
    return validate_settings(DetectionSettings(**{k: v for k, v in stored.items() if k in known}))


INFERENCE_YML = "inference.yml"  # PaddleX's name for a model's config, beside its weights


def read_inference_yml(path: Path) -> tuple[dict, str]:
    """The parsed inference.yml and its text (PyYAML: the ymls use anchors and flow lists)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())  # YAML's reasons span lines (mark, snippet): one line here
        raise InvalidModelError(f"cannot read {path}: {reason}") from None
    if not isinstance(config, dict):
        raise InvalidModelError(
            f"{path} is not an inference config (expected a mapping with Global/PreProcess/PostProcess)"
        )
    return config, text


def settings_for_model_file(
    metadata: Mapping[str, str], model_path: Path, model_name: Optional[str]
) -> tuple[str, DetectionSettings, str]:
    """(model name, settings, where they came from) for an ONNX file, from the first of:

    its ``detector.*`` metadata (files written by tools/export); the ``inference.yml`` beside it
    (PaddlePaddle's official ONNX folders), which also names the model; the catalog's record of the
    official yml for a known ``model_name``. Anything else is an InvalidModelError: never another
    model's settings, silently.
    """
    from .catalog import KNOWN_MODELS, catalog_inference_config

    if METADATA_SETTINGS_KEY in metadata:
        # The recorded name is the network's (a fine-tuned export keeps its base model's name, and is found
        # by the name of its folder): a model_name that differs is not a contradiction here.
        name = metadata.get(METADATA_MODEL_NAME_KEY) or model_name or ""
        try:
            return name, settings_from_metadata(metadata, name), f"{model_path} metadata"
        except InvalidParameterError as exc:  # a file written or edited elsewhere: not the caller's setting
            raise InvalidModelError(f"{model_path}: its {METADATA_SETTINGS_KEY} metadata: {exc}") from None
    yml = Path(model_path).parent / INFERENCE_YML
    if yml.is_file():
        config, _ = read_inference_yml(yml)
        declared = declared_model_name(config)
        if declared and model_name and declared != model_name:  # PaddleX refuses this mismatch too
            raise InvalidModelError(
                f"model_name is {model_name!r} but {yml} names the model {declared!r}: "
                f"pass model_name={declared!r}, or leave it out"
            )
        name = declared or model_name or ""
        try:
            return name, settings_from_inference_config(config, name), str(yml)
        except InvalidParameterError as exc:
            raise InvalidModelError(f"{yml}: {exc}") from None
    catalog_config = catalog_inference_config(model_name)
    if catalog_config is not None:
        return (
            str(model_name),
            settings_from_inference_config(catalog_config, model_name),
            f"catalog entry {model_name}",
        )
    if model_name in KNOWN_MODELS:
        missing = f"no {INFERENCE_YML} beside it, and the thresholds of {model_name} are not recorded here"
    else:
        missing = (
            f"no {INFERENCE_YML} beside it, and {model_name!r} is not a known model name"
            if model_name
            else f"no {INFERENCE_YML} beside it, and no model_name was given"
        )
    raise InvalidModelError(
        f"{model_path} carries no {METADATA_SETTINGS_KEY} metadata, {missing}: put the model's "
        f"{INFERENCE_YML} beside the .onnx file (PaddlePaddle's releases ship one), or pass the model_name "
        f"it was trained as (detect: --model FILE.onnx --model_name NAME; known: "
        f"{', '.join(n for n in KNOWN_MODELS if catalog_inference_config(n))})"
    )
