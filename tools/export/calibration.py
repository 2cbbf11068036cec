"""Histogram calibration (percentile, entropy) one image at a time, with onnxruntime's ranges to the bit.

onnxruntime's HistogramCalibrater keeps every calibrated tensor of every calibration image until the last,
then bins them all at once: memory grows by the network's maps per image (~215 MB an image for
PP-OCRv6_tiny_det at 480x480) with no bound, and running out of it is a traceback from numpy. Its
CalibMaxIntermediateOutputs bounds only the MinMax calibrator; its strided collection (CalibStridedMinMax)
merges each chunk's histogram into bins the first chunk drew, so the ranges move.

What it bins depends only on the values and on the histogram's outer edges (the smallest and largest |value|
over every image for percentile, the largest |value| for entropy), so two passes over the images give the
same counts with one image's maps held at a time: the first finds those edges, the second bins each image
between them (np.histogram with the same bins and range is elementwise: the sums are the one-shot counts) and
adds. The thresholds are then onnxruntime's own (HistogramCollector.compute_collection_result), handed to
quantize_static as its calibration cache (onnxruntime's calibration_cache_path; where it has none,
calibration_cache_supported is False and quantize.py lets onnxruntime calibrate in memory, as before).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np


def calibration_cache_supported() -> bool:
    """Whether this onnxruntime's quantize_static reads a calibration cache (save_tensors_data came with it)."""
    from onnxruntime.quantization import calibrate

    return hasattr(calibrate, "save_tensors_data")


@dataclass
class _Extremes:
    """One tensor's smallest and largest value, and |value|, over the images seen so far."""

    low: Any
    high: Any
    abs_low: Any
    abs_high: Any

    def widened(self, other: _Extremes) -> _Extremes:
        return _Extremes(
            min(self.low, other.low),
            max(self.high, other.high),
            min(self.abs_low, other.abs_low),
            max(self.abs_high, other.abs_high),
        )


def _extremes(values: np.ndarray) -> _Extremes:
    flat = values.ravel()
    magnitudes = np.absolute(flat)
    return _Extremes(np.nanmin(flat), np.nanmax(flat), magnitudes.min(), magnitudes.max())


def _binned(values: np.ndarray, extremes: _Extremes, bins: int, absolute: bool) -> tuple:
    """The part of HistogramCollector's histogram entry this image adds, between the edges of every image:
    on |value| (percentile, symmetric) from the smallest to the largest |value|; on the values (entropy)
    from -t to t, t the largest |value| (HistogramCollector.collect_absolute_value / collect_value)."""
    flat = values.ravel()
    if absolute:
        outer: Any = (extremes.abs_low, extremes.abs_high)  # float32 scalars, as np.histogram's own min() and max()
        counts, edges = np.histogram(np.absolute(flat), bins=bins, range=outer)
        return counts, edges.astype(flat.dtype)
    threshold = np.array(max(abs(extremes.low), abs(extremes.high)), dtype=flat.dtype)
    symmetric: Any = (-threshold, threshold)
    counts, edges = np.histogram(flat, bins, range=symmetric)
    return counts, edges, threshold


def histogram_ranges(
    model_path: Path, op_types: Sequence[str], method: Any, tensors: Sequence[np.ndarray], folder: Path
) -> Any:
    """onnxruntime's TensorsData for ``method`` (CalibrationMethod.Percentile or .Entropy) over ``tensors``, as its
    HistogramCalibrater computes it for quantize_static, with one image's tensors in memory at a time."""
    from onnxruntime.quantization.calibrate import HistogramCollector, create_calibrator

    calibrator: Any = create_calibrator(
        Path(model_path), list(op_types), augmented_model_path=str(folder / "augmented.onnx"), calibrate_method=method
    )
    session = calibrator.infer_session
    input_name = session.get_inputs()[0].name
    names = [output.name for output in session.get_outputs()]
    calibrated = [(index, name) for index, name in enumerate(names) if name in calibrator.tensors_to_calibrate]
    absolute = calibrator.method == "percentile" and calibrator.symmetric  # else collect_value's histogram

    extremes: dict[str, _Extremes] = {}
    for tensor in tensors:  # first pass: the outer edges, over every image
        outputs = session.run(None, {input_name: tensor})
        for index, name in calibrated:
            seen = _extremes(outputs[index])
            extremes[name] = extremes[name].widened(seen) if name in extremes else seen
        del outputs
    histograms: dict[str, Optional[tuple]] = dict.fromkeys(extremes)
    for tensor in tensors:  # second pass: each image binned between them, the counts added
        outputs = session.run(None, {input_name: tensor})
        for index, name in calibrated:
            part = _binned(outputs[index], extremes[name], calibrator.num_bins, absolute)
            previous = histograms[name]
            histograms[name] = part if previous is None else (previous[0] + part[0], *part[1:])
        del outputs
    collector = HistogramCollector(
        method=calibrator.method,
        symmetric=calibrator.symmetric,
        num_bins=calibrator.num_bins,
        num_quantized_bins=calibrator.num_quantized_bins,
        percentile=calibrator.percentile,
        scenario=calibrator.scenario,
    )
    for name, histogram in histograms.items():  # the entry collect_* would have made from every image at once
        assert histogram is not None
        counts, edges, *threshold = histogram
        collector.histogram_dict[name] = (counts, edges, extremes[name].low, extremes[name].high, *threshold)
    calibrator.collector = collector
    return calibrator.compute_data()


def write_histogram_cache(
    model_path: Path, op_types: Sequence[str], method: Any, tensors: Sequence[np.ndarray], folder: Path
) -> Path:
    """histogram_ranges written where quantize_static's calibration_cache_path reads it; its path."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    cache = folder / "calibration.json"
    save_tensors_data(histogram_ranges(model_path, op_types, method, tensors, folder), cache)
    return cache
