"""Precision variants of an exported fp32 model: int8 (static QDQ, for CPUs) and fp16 (for GPUs).

    python -m tools.export --model NAME --precision int8|fp16

- int8: onnxruntime.quantization, QDQ format, int8 weights per output channel, uint8 activations
  (U8S8: what the x86 int8 kernels take natively; int8 activations made the same model 1.1-1.5x
  slower than fp32 here, uint8 0.8x), calibrated on rendered images that are not the evaluation set
  (another seed; percentile and entropy histograms binned one image at a time, calibration.py). What is
  quantized and what stays float is one of int8_rules.INT8_RULES; by default
  (AUTO_RULE) tools/export/int8_choice.py makes the variant by each and keeps the fastest that stays
  accurate on rendered validation images (measured, see the README).
- fp16: onnxconverter-common's float16 conversion with float32 inputs and outputs (keep_io_types),
  after BatchNormalization is folded into the convolutions.

After quantization, qdq_tidy.py's exact clean-ups run, then qdq_requantize.py folds the scalar affines
left in uint8 into the quantization before them (within one uint8 step).

precision_variant.py writes the variant beside the fp32 file, scored (variant_scoring.py) and recorded.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from detector.errors import ExportError
from detector.optimize.model_file import save_model
from detector.optimize.rewrites.gate_expand import GATE_EXPAND_REWRITE, rewrite_gated_products
from detector.optimize.rewrites.gelu_sigmoid import GELU_SIGMOID_REWRITE, rewrite_gelus_as_sigmoid_products
from detector.optimize.rewrites.hard_swish_gate import HARD_SWISH_GATE_REWRITE, rewrite_hard_swish_gates
from detector.optimize.rewrites.map_interleave import (
    MAP_INTERLEAVE_REWRITE,
    rewrite_map_interleaves,
)
from detector.optimize.rewrites.mean_pool import MEAN_POOL_REWRITE, rewrite_spatial_means
from detector.optimize.rewrites.neck_upsample import (
    UPSAMPLE_CONCAT_REWRITE,
    UPSAMPLE_SUM_REWRITE,
    ChannelsLastNodes,
    rewrite_neck_upsamples,
)
from tools.export import progress
from tools.export.calibration import calibration_cache_supported, write_histogram_cache
from tools.export.int8_rules import CALIBRATION_METHODS, INT8_RULES, MOVEMENT_OP_TYPES
from tools.export.partial_folders import work_folder
from tools.export.qdq_requantize import AFFINE_REQUANTIZED, affines_into_quantization
from tools.export.qdq_tidy import tidy_quantized
from tools.export.variant_scoring import network_inputs, rendered_labelled_images

CALIBRATION_SEED = 7  # the evaluation sets use other seeds (variant_scoring.EVALUATION_SEED, make eval's)
DEFAULT_CALIBRATION_IMAGES = 16

CALIBRATION_CROP = 480  # histogram calibrators need one shape: centre crops of this size (the smallest side rendered)


def _common_shape(tensors: Sequence[np.ndarray], side: int = CALIBRATION_CROP) -> list[np.ndarray]:
    """Centre crops of side x side (images smaller than that are padded with zeros, the mean colour)."""
    cropped = []
    for tensor in tensors:
        _, _, height, width = tensor.shape
        top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
        crop = tensor[:, :, top : top + side, left : left + side]
        pad = ((0, 0), (0, 0), (0, side - crop.shape[2]), (0, side - crop.shape[3]))
        cropped.append(np.pad(crop, pad))
    return cropped


def calibration_tensors(fp32_path: Path, count: int, seed: int) -> list[np.ndarray]:
    """Network inputs (1, 3, H, W) of rendered images, preprocessed with the model's own settings."""
    from detector import TextDetection

    settings = TextDetection(model_dir=fp32_path, device="cpu").settings
    _, images = rendered_labelled_images(count, seed)
    return network_inputs(images, settings)


class _TensorReader:
    """onnxruntime.quantization's CalibrationDataReader over a list of input tensors."""

    def __init__(self, input_name: str, tensors: Sequence[np.ndarray]):
        self._items: Iterator[dict[str, np.ndarray]] = iter([{input_name: t} for t in tensors])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._items, None)


def quantize_int8(
    fp32_path: Path,
    output: Path,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    method: Optional[str] = None,
    float_nodes: Optional[Sequence[str]] = None,
    float_rule: str = "early",
    op_types: Optional[Sequence[str]] = None,
    seed: int = CALIBRATION_SEED,
    activations: str = "uint8",
    tensors: Optional[Sequence[np.ndarray]] = None,
) -> dict[str, object]:
    """Write a static QDQ int8 model made by one INT8_RULES rule (method, float_nodes and op_types
    override the rule's); returns what was done (for the metadata record)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if float_rule not in INT8_RULES:
        raise ExportError(f"int8 float rule must be one of {', '.join(INT8_RULES)}, got {float_rule!r}")
    rule = INT8_RULES[float_rule]
    method = method or rule.method
    op_types = tuple(op_types or rule.op_types)
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    tensors = list(tensors) if tensors is not None else calibration_tensors(fp32_path, calibration_images, seed)
    if method != "minmax":
        tensors = _common_shape(tensors)
    with work_folder(output) as folder:  # beside output: a killed export's next run removes it, $TMPDIR's stayed
        model = _folded(fp32_path, folder)
        excluded = list(rule.float_nodes(model) if float_nodes is None else float_nodes)
        forms = uint8_forms(model, rule.uint8_forms, skip=excluded)
        not_quantized = excluded
        if forms.moving:  # the rewrites' data movements are quantized, no other Transpose/Concat/...
            op_types += MOVEMENT_OP_TYPES
            moving = set(forms.moving)
            others = [node.name for node in model.graph.node if node.op_type in MOVEMENT_OP_TYPES]
            not_quantized = excluded + [name for name in others if name not in moving] + forms.shapes
        prepared = Path(folder) / "prepared.onnx"
        onnx.save(model, str(prepared))
        overrides = {
            gate: [{"rmin": np.array(low, np.float32), "rmax": np.array(high, np.float32)}]
            for gate, (low, high) in forms.gate_ranges.items()
        }
        quantized = Path(folder) / "int8.onnx"
        calibrate_method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method]
        with quiet_onnxruntime_tools():
            calibration = _calibration_arguments(
                prepared, model.graph.input[0].name, op_types, calibrate_method, tensors, Path(folder)
            )
            quantize_static(
                str(prepared),
                str(quantized),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types),
                nodes_to_exclude=not_quantized,
                calibrate_method=calibrate_method,
                extra_options={
                    "ActivationSymmetric": False,
                    "WeightSymmetric": True,
                    **({"TensorQuantOverrides": overrides} if overrides else {}),
                },
                **calibration,
            )
        result = onnx.load(str(quantized))
        tidied = tidy_quantized(result)
        tidied[AFFINE_REQUANTIZED] = affines_into_quantization(result)
    save_model(_with_metadata_of(result, fp32_path), output)
    return {
        "method": f"onnxruntime.quantization static QDQ, per-channel int8 weights, {activations} activations, {method} "
        f"calibration",
        "calibration_images": calibration_images,
        "calibration_seed": seed,
        "float_rule": float_rule if float_nodes is None else "given",
        "float_nodes": excluded,
        "op_types": list(op_types),
        "hard_swish_gates": len(forms.gate_ranges),
        "uint8_forms": forms.made,
        "tidied": tidied,
    }


def _calibration_arguments(
    prepared: Path, input_name: str, op_types: Sequence[str], method, tensors: Sequence[np.ndarray], folder: Path
) -> dict[str, object]:
    """quantize_static's calibration arguments. Histograms (percentile, entropy) are binned one image at a time
    (calibration.py: onnxruntime's ranges to the bit, handed over as its calibration cache), where onnxruntime's
    calibrator holds every image's maps until the last (~215 MB an image on PP-OCRv6_tiny_det); where onnxruntime
    reads no cache yet, it calibrates as before. MinMax keeps only each image's ReduceMin / ReduceMax: onnxruntime
    calibrates. (Its CalibMaxIntermediateOutputs would bound that, but onnxruntime 1.31 drops the images it clears
    without merging their ranges: only the last partial batch counts, and none when the count divides evenly.)"""
    from onnxruntime.quantization import CalibrationMethod

    if method != CalibrationMethod.MinMax and calibration_cache_supported():
        cache = write_histogram_cache(prepared, op_types, method, tensors, folder)
        return {"calibration_data_reader": None, "calibration_cache_path": str(cache)}
    return {"calibration_data_reader": _TensorReader(input_name, tensors)}


@dataclass
class Uint8Forms(ChannelsLastNodes):
    """What uint8_forms did: the hard-swish gates' ranges the quantizer must be told, how many of each
    rewrite were made, and the channels-last forms' nodes (moving: to quantize; shapes: to leave alone)."""

    gate_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    made: dict[str, int] = field(default_factory=dict)


def uint8_forms(model, names: Collection[str], skip: Collection[str]) -> Uint8Forms:
    """Apply the int8-only rewrites named (in place; not to the nodes in skip, which stay float): hard-swish
    as a clipped product, GELU as a sigmoid product, spatial means as global pools, the neck's upsampled
    sums and concatenations as channels-last expansions, squeeze-excitation products by the expanded gate,
    the probability map's interleave channels last before its sigmoid."""
    forms = Uint8Forms()
    if HARD_SWISH_GATE_REWRITE in names:
        forms.gate_ranges = rewrite_hard_swish_gates(model, skip=skip)
        forms.made[HARD_SWISH_GATE_REWRITE] = len(forms.gate_ranges)
    if GELU_SIGMOID_REWRITE in names:
        forms.made[GELU_SIGMOID_REWRITE] = rewrite_gelus_as_sigmoid_products(model, skip=skip)
    if MEAN_POOL_REWRITE in names:
        forms.made[MEAN_POOL_REWRITE] = rewrite_spatial_means(model, skip=skip)
    sums, concats = UPSAMPLE_SUM_REWRITE in names, UPSAMPLE_CONCAT_REWRITE in names
    if sums or concats:
        upsamples = rewrite_neck_upsamples(model, skip=skip, sums=sums, concats=concats)
        forms.made.update({UPSAMPLE_SUM_REWRITE: upsamples.sums} if sums else {})
        forms.made.update({UPSAMPLE_CONCAT_REWRITE: upsamples.concats} if concats else {})
        forms.extend(upsamples)
    if GATE_EXPAND_REWRITE in names:
        gated = rewrite_gated_products(model, skip=skip)
        forms.made[GATE_EXPAND_REWRITE] = gated.products
        forms.extend(gated)
    if MAP_INTERLEAVE_REWRITE in names:
        interleaves = rewrite_map_interleaves(model, skip=skip)
        forms.made[MAP_INTERLEAVE_REWRITE] = interleaves.maps
        forms.extend(interleaves)
    return forms


def _folded(fp32_path: Path, folder: str):
    """The model after onnxruntime's basic graph optimizations: constants become initializers and
    BatchNormalization folds into the convolution before it. The int8 quantizer needs the weights as
    initializers; float16 needs the folding, since a BatchNormalization of PP-OCRv4_mobile_det's head
    holds variances up to 1e8, beyond float16 (65504), and the convolution feeding it outputs values
    near that range too."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(folder) / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    taken = {node.name for node in model.graph.node}
    for index, node in enumerate(model.graph.node):  # the quantizer leaves nodes float by name
        if not node.name:
            name = f"{node.op_type}.unnamed_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def _with_metadata_of(model, fp32_path: Path):
    """model carrying the fp32 file's metadata (settings, source, export record)."""
    import onnx

    source = onnx.load(str(fp32_path), load_external_data=False)
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    return model


@contextlib.contextmanager
def quiet_onnxruntime_tools() -> Iterator[None]:
    """onnxruntime.quantization's print() lines ("Collecting tensor data…") off the export's stdout, where the
    result line goes, and onnxruntime's graph warnings (unused initializers) off its stderr."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings


def convert_fp16(fp32_path: Path, output: Path) -> dict[str, object]:
    """Write a float16 model with float32 inputs and outputs."""
    from onnxconverter_common import float16

    with work_folder(output) as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(_folded(fp32_path, folder), keep_io_types=True)
    # onnxconverter-common warns per weight tensor and sign, "the float32 number X will be truncated to B": weights
    # nearer zero than its 1e-7 raised to it, or beyond its 1e4 (not float16's 65504) clamped to it
    bounds = [
        abs(float(str(warning.message).rsplit(" ", 1)[1]))
        for warning in caught
        if "will be truncated to" in str(warning.message)
    ]
    small, large = [b for b in bounds if b < 1], [b for b in bounds if b >= 1]
    for what, moved in (("nearer zero than", small), ("beyond", large)):
        if moved:
            progress(
                f"      weights {what} ±{moved[0]:g} moved to it ({len(moved)} tensors and signs; onnxconverter-common)"
            )
    save_model(_with_metadata_of(converted, fp32_path), output)
    return {
        "method": "onnxruntime basic graph optimizations (BatchNormalization folded into Conv), then "
        "onnxconverter-common float16 with float32 inputs and outputs (keep_io_types)"
    }
