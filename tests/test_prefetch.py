"""detector.prefetch: the read-ahead thread behind predict_iter keeps order, errors and early stops."""

import threading

import pytest

from detector.prefetch import PREFETCH_DEPTH, READ_AHEAD_MIN_CORES, prefetch, read_ahead_depth


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_come_out_in_order(depth):
    assert list(prefetch(iter(range(50)), depth)) == list(range(50))


def test_an_error_is_raised_after_the_items_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("bad input 3")

    got = []
    with pytest.raises(ValueError, match="bad input 3"):
        for item in prefetch(produce(), 1):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer():
    produced = []

    def produce():
        for index in range(10_000):
            produced.append(index)
            yield index

    stream = prefetch(produce(), 2)
    assert next(stream) == 0
    stream.close()
    assert not any(t.name == "detector-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 5  # read ahead by the depth, not to the end


def test_predict_reads_ahead_only_when_there_is_something_to_overlap(monkeypatch, default_onnx, tmp_path):
    import cv2
    import numpy as np

    import detector.api as api
    from detector import TextDetection

    depths = []
    real_prefetch = api.prefetch
    monkeypatch.setattr(api, "prefetch", lambda items, depth: depths.append(depth) or real_prefetch(items, depth))
    image = np.full((64, 96, 3), 255, np.uint8)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.png")
        cv2.imwrite(str(paths[-1]), image)
    detector = TextDetection(model_dir=default_onnx, device="cpu")
    monkeypatch.setattr("detector.prefetch.os.cpu_count", lambda: 8)  # a core to spare for reading
    single = detector.predict(str(paths[0]))
    several = detector.predict([str(p) for p in paths])
    monkeypatch.setattr("detector.prefetch.os.cpu_count", lambda: 2)  # onnxruntime's two threads use both
    serial = detector.predict([str(p) for p in paths])
    assert depths == [0, PREFETCH_DEPTH, 0]
    assert [r["dt_polys"].tolist() for r in serial] == [r["dt_polys"].tolist() for r in several]
    assert [r["input_path"] for r in several] == [str(p) for p in paths]
    assert np.array_equal(single[0]["dt_polys"], several[0]["dt_polys"])
    assert detector.predict([]) == []


def test_read_ahead_only_with_a_core_to_spare():
    assert read_ahead_depth(READ_AHEAD_MIN_CORES - 1) == 0
    assert read_ahead_depth(READ_AHEAD_MIN_CORES) == PREFETCH_DEPTH
    assert read_ahead_depth(64) == PREFETCH_DEPTH
    assert read_ahead_depth(0) == 0  # os.cpu_count() may be unknown
