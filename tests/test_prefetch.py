"""detector.prefetch: the read-ahead thread behind predict_iter keeps order, errors and early stops."""

import threading

import pytest

from detector.prefetch import prefetch


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
        for item in prefetch(produce()):
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
