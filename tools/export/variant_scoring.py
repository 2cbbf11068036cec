"""How far a precision variant is from its fp32 model: both scored on one rendered labelled set (detect eval's
metric), their probability maps compared on the same network inputs; the rendered sets and network inputs that
calibration and the `auto` choice use too.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from detector.cpu_features import INT8_WITHOUT_VNNI_MEASURED

EVALUATION_SEED = 1


def network_inputs(images: Sequence[np.ndarray], settings) -> list[np.ndarray]:
    """Each image resized and normalized with the model's settings, as a (1, 3, H, W) network input."""
    from detector.preprocess import normalize_image, resize_for_detection

    tensors = []
    for image in images:
        resized, _ = resize_for_detection(image, settings.limit_side_len, settings.limit_type, settings.max_side_limit)
        tensors.append(normalize_image(resized, settings.mean, settings.std, settings.scale)[np.newaxis])
    return tensors


def rendered_labelled_images(count: int, seed: int) -> tuple[list, list[np.ndarray]]:
    """A rendered labelled set (tools/dev/labelled_set.py): its labelled images and their decoded pixels,
    read once; the files are gone afterwards."""
    from detector.evaluation.evaluate import load_labelled_images
    from detector.evaluation.labels import read_labels
    from tools.dev.labelled_set import render_labelled_set

    with tempfile.TemporaryDirectory() as folder:
        labelled = read_labels(render_labelled_set(Path(folder), count, seed))
        return labelled, load_labelled_images(labelled)


def map_agreement(fp32_path: Path, variant: Path, tensors: Sequence[np.ndarray], thresh: float) -> dict[str, float]:
    """How far the variant's probability maps are from fp32's on the same network inputs: the mean and
    largest |difference|, and the share of pixels whose side of ``thresh`` (the DB binarization) flips.
    The measure for a network without trained weights (the rebuilt PP-OCRv4_server_det), where Hmean
    says nothing."""
    from detector.session import load_session, parse_device

    fp32, _ = load_session(fp32_path, parse_device("cpu"))
    other, _ = load_session(variant, parse_device("cpu"))
    name = fp32.get_inputs()[0].name
    total = flipped = 0
    sum_abs, largest = 0.0, 0.0
    for tensor in tensors:
        expected = fp32.run(None, {name: tensor})[0].astype(np.float64)
        got = other.run(None, {name: tensor})[0].astype(np.float64)
        difference = np.abs(got - expected)
        sum_abs += float(difference.sum())
        largest = max(largest, float(difference.max(initial=0.0)))
        flipped += int(np.count_nonzero((got > thresh) != (expected > thresh)))
        total += difference.size
    return {
        "map_mean_abs_diff": round(sum_abs / total, 5) if total else 0.0,
        "map_max_abs_diff": round(largest, 5),
        "map_flipped_share": round(flipped / total, 5) if total else 0.0,
    }


@contextlib.contextmanager
def _without_the_int8_cpu_warning() -> Iterator[None]:
    """The detector's warning about int8 on a CPU without VNNI held back while the export scores its variant: the
    export says it once, under its scores, and the file that warning would name is a temporary one."""
    api_logger = logging.getLogger("detector.api")

    def other_records(record: logging.LogRecord) -> bool:
        return INT8_WITHOUT_VNNI_MEASURED not in record.getMessage()

    api_logger.addFilter(other_records)
    try:
        yield
    finally:
        api_logger.removeFilter(other_records)


def accuracy_delta(fp32_path: Path, variant: Path, images: int, seed: int = EVALUATION_SEED) -> dict[str, object]:
    """Precision/recall/Hmean of fp32 and the variant on one rendered labelled set (CPU), and how far
    the variant's probability maps are from fp32's on those images (map_agreement)."""
    from detector import TextDetection
    from detector.evaluation.evaluate import evaluate

    fp32_detector = TextDetection(model_dir=fp32_path, device="cpu")
    labelled, decoded = rendered_labelled_images(images, seed)
    with _without_the_int8_cpu_warning():
        variant_detector = TextDetection(model_dir=variant, device="cpu")
    detectors = {"fp32": fp32_detector, "variant": variant_detector}
    rows = evaluate(detectors, labelled, decoded)
    # the same decoded images, as network inputs: rendered and read once for both measures
    settings = fp32_detector.settings
    maps = map_agreement(fp32_path, variant, network_inputs(decoded, settings), settings.thresh)
    fp32, other = rows
    return {
        "eval_set": f"tools/dev/labelled_set.py --count {images} --seed {seed}",
        "images": images,
        "fp32_hmean": round(fp32.score.hmean, 5),
        "hmean": round(other.score.hmean, 5),
        "hmean_delta": round(other.score.hmean - fp32.score.hmean, 5),
        "precision_delta": round(other.score.precision - fp32.score.precision, 5),
        "recall_delta": round(other.score.recall - fp32.score.recall, 5),
        "time_ratio_cpu": round(other.seconds / fp32.seconds, 3) if fp32.seconds else None,
        **maps,
    }
