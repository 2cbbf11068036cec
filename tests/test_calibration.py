"""int8 calibration one image at a time (tools/export/calibration.py): onnxruntime's ranges to the bit, without
onnxruntime's calibrator holding every image's maps (~215 MB an image on PP-OCRv6_tiny_det, 3.6 GB at the default
16 images)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_parity_onnx import imported_model
from tools.export import calibration, quantize
from tools.export.int8_rules import INT8_RULES

pytest.importorskip("onnxruntime.quantization.calibrate", reason="needs onnxruntime's quantization tools")
if not calibration.calibration_cache_supported():  # quantize.py then lets onnxruntime calibrate, as before
    pytest.skip("this onnxruntime's quantize_static reads no calibration cache", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_tensors():
    """Three rendered calibration images of PP-OCRv6_tiny_det, cropped as the histogram calibrators take them."""
    fp32 = imported_model("PP-OCRv6_tiny_det")
    return fp32, quantize._common_shape(quantize.calibration_tensors(fp32, 3, seed=5))


def onnxruntime_ranges(model_path, op_types, method, tensors, folder):
    """What quantize_static's calibrator computes: every image collected at once, then binned."""
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(
        model_path, op_types, augmented_model_path=str(folder / "augmented.onnx"), calibrate_method=method
    )
    calibrator.collect_data(quantize._TensorReader(calibrator.infer_session.get_inputs()[0].name, tensors))
    return calibrator.compute_data()


@pytest.mark.parametrize("method", ["Percentile", "Entropy"])
def test_streamed_histogram_ranges_are_onnxruntimes(tiny_tensors, tmp_path, method):
    from onnxruntime.quantization import CalibrationMethod

    fp32, tensors = tiny_tensors
    op_types = list(INT8_RULES["input"].op_types)
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    ours = calibration.histogram_ranges(fp32, op_types, CalibrationMethod[method], tensors, tmp_path / "ours")
    theirs = onnxruntime_ranges(fp32, op_types, CalibrationMethod[method], tensors, tmp_path / "theirs")
    assert list(ours.keys()) == list(theirs.keys()) and len(ours.keys()) > 100
    for name in theirs:
        mine, expected = ours[name], theirs[name]
        for field in ("lowest", "highest", "hist", "bins"):
            got, want = np.asarray(getattr(mine, field)), np.asarray(getattr(expected, field))
            assert got.dtype == want.dtype and np.array_equal(got, want), (name, field)


def test_percentile_int8_file_is_the_same_without_onnxruntimes_calibrator(tiny_tensors, tmp_path, monkeypatch):
    """The "input" rule (percentile) quantized with the streamed ranges: the same bytes as with onnxruntime's own
    calibrator, which is not used (it holds every image's maps until the last)."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater

    fp32, tensors = tiny_tensors

    def held_in_memory(*args, **kwargs):
        raise AssertionError("onnxruntime's calibrator collected the images")

    with monkeypatch.context() as patched:
        patched.setattr(HistogramCalibrater, "collect_data", held_in_memory)
        quantize.quantize_int8(fp32, tmp_path / "streamed.onnx", 3, float_rule="input", tensors=tensors)
    monkeypatch.setattr(quantize, "calibration_cache_supported", lambda: False)  # onnxruntime's calibration, as before
    quantize.quantize_int8(fp32, tmp_path / "in_memory.onnx", 3, float_rule="input", tensors=tensors)
    assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "in_memory.onnx").read_bytes()
