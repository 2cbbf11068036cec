"""Long runs keep memory flat: 500 predictions after warm-up, RSS measured from /proc."""

import gc
import sys
from pathlib import Path

import pytest

from detector import TextDetection
from tools.dev.sample_image import render_text_image

PREDICTIONS = 500
# Allowed growth after warm-up: allocator noise, not a leak (a leaked 320x320 image per call is 150 MB).
MAX_GROWTH_MB = 30


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memory_is_flat_over_500_predictions(default_onnx, tmp_path, capsys):
    model = TextDetection(model_dir=default_onnx, device="cpu")
    images = [
        render_text_image([f"soak test line {i}", "second line"], width=w, height=h, font_size=20)[0]
        for i, (w, h) in enumerate([(320, 320), (300, 200), (256, 352)])
    ]
    for image in images * 10:  # warm-up: one arena size per input shape
        model.predict(image)
    gc.collect()
    before = rss_mb()
    found = 0
    for index in range(PREDICTIONS):
        (result,) = model.predict(images[index % len(images)])
        found += len(result["dt_polys"])
        if index % 100 == 0:
            result.save_to_json(tmp_path)
    gc.collect()
    growth = rss_mb() - before
    with capsys.disabled():
        print(f"\nsoak: {PREDICTIONS} predictions, RSS {before:.0f} MB -> {before + growth:.0f} MB ({growth:+.1f} MB)")
    assert found >= PREDICTIONS * 2
    assert growth < MAX_GROWTH_MB
