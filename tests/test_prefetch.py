"""detector.prefetch: the folder workers and the read-ahead thread behind predict_iter and detect keep
order, errors and early stops."""

import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from detector.prefetch import (
    AHEAD_PER_WORKER,
    FOLDER_WORKERS,
    FOLDER_WORKERS_MAX_MODEL_BYTES,
    PREFETCH_DEPTH,
    READ_AHEAD_MIN_CORES,
    folder_workers,
    ordered_map,
    prefetch,
    read_ahead_depth,
    threads_within_cores,
)
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_come_out_in_order(depth):
    assert list(prefetch(iter(range(50)), depth)) == list(range(50))


def _two_then_an_error():
    yield 1
    yield 2
    raise ValueError("bad input 3")


@pytest.mark.parametrize(
    "consume",
    [
        lambda items: prefetch(items, 1),
        # costs reorder the start of the items drawn first; the error still comes in its place
        lambda items: ordered_map(lambda item: item, items, 2, cost=lambda item: item),
    ],
    ids=["prefetch", "ordered_map with costs"],
)
def test_an_error_is_raised_after_the_items_before_it(consume):
    got = []
    with pytest.raises(ValueError, match="bad input 3"):
        for item in consume(_two_then_an_error()):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer():
    produced = []

    def produce():
        for index in range(10_000):
            produced.append(index)
            yield index

    source = produce()
    stream = prefetch(source, 2)
    assert next(stream) == 0
    stream.close()  # not waited for (a garbage-collected close must not join): the producer ends by itself
    assert _ended_soon("detector-prefetch")
    assert len(produced) <= 5  # read ahead by the depth, not to the end
    assert source.gi_frame is None  # and closed what it read from (a PDF's page generator closes its document)


def _pngs(tmp_path, count):
    """count PNGs named 0.png, 1.png, ...: the rendered text pages in turn, every third one blank."""
    import cv2
    import numpy as np

    from tests.rendered import write_rendered_pages

    pages = sorted(path for path, _ in write_rendered_pages(tmp_path / "pages").values())
    paths = []
    for index in range(count):
        paths.append(tmp_path / f"{index}.png")
        if index % 3 == 2:
            cv2.imwrite(str(paths[-1]), np.full((64, 96, 3), 255, np.uint8))
        else:
            paths[-1].write_bytes(pages[index % len(pages)].read_bytes())
    return paths


@contextlib.contextmanager
def _served_folder(folder):
    """The folder's URL, served by a local HTTP server while the block runs."""
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_folder_runs_on_the_workers_session_with_the_serial_loops_boxes(monkeypatch, default_onnx, tmp_path):
    import numpy as np

    import detector.api as api
    from detector import TextDetection

    paths = [str(p) for p in _pngs(tmp_path, 5)]
    workers_used = []
    real_ordered_map = api.ordered_map
    monkeypatch.setattr(
        api,
        "ordered_map",
        lambda f, items, workers, **kw: workers_used.append(workers) or real_ordered_map(f, items, workers, **kw),
    )
    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2)
    assert (detector.folder_workers, detector._worker_threads) == (2, 1)
    single = detector.predict(paths[1])
    assert workers_used == [] and detector._worker_session is None  # one image: the full session, no second one
    # so do one image's bytes (a service's upload ran on a second session with half the threads)
    uploaded = detector.predict(Path(paths[1]).read_bytes())
    assert workers_used == [] and detector._worker_session is None
    assert np.array_equal(uploaded[0]["dt_polys"], single[0]["dt_polys"])
    # and one image's URL (it is fetched first: its bytes say whether it holds pages)
    from PIL import Image

    pages = [Image.open(path).convert("RGB") for path in paths[:2]]
    pages[0].save(tmp_path / "two.pdf", save_all=True, append_images=pages[1:])
    with _served_folder(Path(paths[1]).parent) as served:
        fetched = detector.predict(f"{served}/{Path(paths[1]).name}")
        assert workers_used == [] and detector._worker_session is None
        assert np.array_equal(fetched[0]["dt_polys"], single[0]["dt_polys"])
        with _served_folder(tmp_path) as pdf_served:  # a PDF's pages still go to the workers
            assert [r["page_index"] for r in detector.predict(f"{pdf_served}/two.pdf")] == [0, 1]
    assert workers_used == [2]
    workers_used.clear()
    several = detector.predict(paths)
    batched = detector.predict(paths, batch_size=2)
    assert workers_used == [2, 2] and detector._worker_session is not None
    serial = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2)
    serial.folder_workers = 1
    expected = serial.predict(paths)
    assert workers_used == [2, 2] and serial._worker_session is None
    for results in (several, batched):
        assert [r["input_path"] for r in results] == paths
        assert all(np.array_equal(a["dt_polys"], b["dt_polys"]) for a, b in zip(results, expected))
    assert sum(len(r["dt_polys"]) for r in expected) > 0  # the rendered pages have text
    assert np.array_equal(single[0]["dt_polys"], expected[1]["dt_polys"])
    assert detector.predict([]) == []
    detector.close()
    with pytest.raises(Exception, match="closed"):
        detector.predict(paths)


@pytest.mark.parametrize("workers", [2, 1])
def test_close_stops_a_folder_already_being_iterated(default_onnx, tmp_path, workers):
    from detector import TextDetection
    from detector.errors import DetectorError

    paths = _pngs(tmp_path, 8)
    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2)
    detector.folder_workers = workers  # on the folder workers, as on the serial loop
    stream = detector.predict_iter(paths)
    assert [next(stream)["input_path"], next(stream)["input_path"]] == [str(p) for p in paths[:2]]
    detector.close()
    with pytest.raises(DetectorError, match="closed"):
        list(stream)


def test_close_while_a_folder_opens_the_worker_session_leaves_none_open(default_onnx, monkeypatch):
    # close() landing while a folder predict opened the worker session: the session was stored after it,
    # so the closed detector kept a second onnxruntime session (weights and arena) until it died
    import detector.api as api
    from detector import TextDetection
    from detector.errors import DetectorError

    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2)
    real_load = api.load_session
    closer = threading.Thread(target=detector.close)

    def load_while_closed(*args, **kwargs):
        closer.start()  # close() from another thread while this one opens the session
        closer.join(timeout=0.5)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(api, "load_session", load_while_closed)
    detector._open_worker_session()
    closer.join()
    assert detector._worker_session is None and detector._session is None
    with pytest.raises(DetectorError, match="closed"):
        detector._open_worker_session()


def test_a_pdf_page_stream_closed_by_the_garbage_collector_under_the_pdfium_lock_does_not_hang(default_onnx, tmp_path):
    # the collector runs wherever Python allocates, pypdfium2's calls under that lock included; the
    # dropped page generator's close took the same lock again: that thread (and every later PDF) hung
    script = f"""
import gc
import numpy as np
from PIL import Image
import detector.pages as page_readers
from detector import TextDetection
pages = [Image.fromarray(np.full((120, 160, 3), 255, np.uint8)) for _ in range(30)]  # more than read ahead
pages[0].save({str(tmp_path / "pages.pdf")!r}, save_all=True, append_images=pages[1:])
detector = TextDetection(model_dir={str(default_onnx)!r}, device="cpu")
stream = detector.predict_iter({str(tmp_path / "pages.pdf")!r})
next(stream)
cycle = [stream]
cycle.append(cycle)
del stream, cycle
with page_readers._PDFIUM_LOCK:
    gc.collect()
print("collected")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "collected\n", proc.stderr


def test_a_bad_file_in_a_folder_is_raised_after_the_results_before_it(default_onnx, tmp_path):
    from detector import TextDetection
    from detector.errors import DetectorError

    paths = _pngs(tmp_path, 4)
    paths[2].write_bytes(b"not an image")
    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2)
    got = []
    with pytest.raises(DetectorError, match=r"2\.png"):
        for result in detector.predict_iter([str(p) for p in paths]):
            got.append(result["input_path"])
    assert got == [str(p) for p in paths[:2]]


def test_one_thread_or_a_gpu_runs_images_one_by_one_with_read_ahead_where_a_core_is_spare(
    monkeypatch, default_onnx, tmp_path
):
    import detector.api as api
    from detector import TextDetection

    depths = []
    real_prefetch = api.prefetch
    monkeypatch.setattr(api, "prefetch", lambda items, depth: depths.append(depth) or real_prefetch(items, depth))
    paths = [str(p) for p in _pngs(tmp_path, 3)]
    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=1)
    assert detector.folder_workers == 1
    monkeypatch.setattr("detector.prefetch.usable_cores", lambda: 8)  # a core to spare for reading
    detector.predict(paths[0])
    detector.predict(paths)
    monkeypatch.setattr("detector.prefetch.usable_cores", lambda: 2)
    detector.predict(paths)
    assert depths == [0, PREFETCH_DEPTH, 0]
    assert detector._worker_session is None


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs CPU affinity and 2 cores"
)
def test_the_cores_counted_are_the_ones_the_process_may_use():
    # under taskset or a container's cpuset, os.cpu_count() counts the whole machine: two workers on one
    # allowed core took 1.6x the time of one
    program = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from detector.prefetch import folder_workers, read_ahead_depth, usable_cores\n"
        "print(usable_cores(), folder_workers(), read_ahead_depth())"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "(1,", "1)", "0"]


def test_results_yielded_are_not_kept_by_the_workers():
    import weakref

    class Result:
        pass

    alive = set()

    def make(index):
        result = Result()
        alive.add(index)
        weakref.finalize(result, alive.discard, index)
        return result

    most = 0
    for _ in ordered_map(make, range(100), 2):
        most = max(most, len(alive))  # the one just yielded is dropped at the next step
    # the first window's results stayed alive to the end (held by the futures of the first draw)
    assert most <= 2 * AHEAD_PER_WORKER + 2, most


def test_items_drawn_with_their_images_are_few_ahead():
    # a PDF's pages are rendered as they are drawn: 8 chunks of batch_size pages sat rendered ahead (a 64-page
    # batch: 2.4 GB against 1.3 GB serially); items read by their worker still go up to the whole window
    drawn = []
    most_ahead = {True: 0, False: 0}

    def items(with_images):
        for index in range(40):
            drawn.append(index)
            yield with_images

    for with_images in (True, False):
        drawn.clear()
        for done, _ in enumerate(ordered_map(lambda item: item, items(with_images), 2, holds_images=bool)):
            most_ahead[with_images] = max(most_ahead[with_images], len(drawn) - done)
    assert most_ahead == {True: 3, False: 2 * AHEAD_PER_WORKER}, most_ahead


def test_the_threads_are_shared_between_the_folder_workers():
    assert FOLDER_WORKERS == 2
    assert folder_workers(cores=2) == (2, 1)
    assert folder_workers(cores=16) == (2, 8)
    assert folder_workers(cores=3) == (2, 1)
    assert folder_workers(cores=1) == (1, 1)
    assert folder_workers(cores=0) == (1, 1)  # os.cpu_count() may be unknown
    assert folder_workers(threads=1, cores=16) == (1, 1)  # cpu_threads bounds them all
    assert folder_workers(threads=6, cores=2) == (2, 3)
    large = FOLDER_WORKERS_MAX_MODEL_BYTES + 1  # a large network keeps every thread on one image
    assert folder_workers(cores=2, model_bytes=large) == (1, 2)
    assert folder_workers(cores=2, model_bytes=FOLDER_WORKERS_MAX_MODEL_BYTES) == (2, 1)


def test_cpu_threads_beyond_the_cores_run_as_many_threads_as_cores(monkeypatch, default_onnx):
    """PaddleOCR's default cpu_threads=10, passed on as it was on 2 cores: 5x slower (threads spinning, each
    waiting for a core)."""
    from detector import TextDetection

    assert threads_within_cores(10, cores=2) == 2 and threads_within_cores(2, cores=16) == 2
    monkeypatch.setattr("detector.prefetch.usable_cores", lambda: 2)
    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=10)
    assert detector._session.get_session_options().intra_op_num_threads == 2
    assert (detector.folder_workers, detector._worker_threads) == (2, 1)


def test_a_large_model_runs_folders_serially(monkeypatch, default_onnx):
    from detector import TextDetection

    assert TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2).folder_workers == 2
    monkeypatch.setattr("detector.prefetch.FOLDER_WORKERS_MAX_MODEL_BYTES", default_onnx.stat().st_size - 1)
    assert TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2).folder_workers == 1


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ordered_map_keeps_input_order(workers):
    def slow_square(value):
        time.sleep(0.001 * (value % 4))  # later items often finish first
        return value * value

    assert list(ordered_map(slow_square, range(40), workers)) == [v * v for v in range(40)]


@pytest.mark.parametrize("where", ["function", "items"])
def test_ordered_map_raises_in_place_after_the_results_before_it(where):
    def items():
        for value in range(10):
            if where == "items" and value == 4:
                raise ValueError("bad item 4")
            yield value

    def function(value):
        if where == "function" and value == 4:
            raise ValueError("bad item 4")
        return value

    got = []
    with pytest.raises(ValueError, match="bad item 4"):
        for value in ordered_map(function, items(), 2):
            got.append(value)
    assert got == [0, 1, 2, 3]


def test_ordered_map_draws_a_bounded_window_and_stops_when_closed():
    drawn = []

    def items():
        for value in range(10_000):
            drawn.append(value)
            yield value

    source = items()
    stream = ordered_map(lambda v: v, source, 2)
    assert next(stream) == 0
    assert len(drawn) <= 2 * AHEAD_PER_WORKER
    stream.close()
    assert len(drawn) <= 2 * AHEAD_PER_WORKER
    assert _ended_soon("detector-worker") and source.gi_frame is None


def _ended_soon(prefix: str, within_s: float = 10.0) -> bool:
    """Whether every thread named prefix… ends within within_s (they finish their item, then stop)."""
    deadline = time.monotonic() + within_s
    while any(t.name.startswith(prefix) and t.is_alive() for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_dropped_stream_the_garbage_collector_closes_in_its_own_worker_joins_nothing():
    # a stream left in a reference cycle (a caller keeping an exception raised in its loop) is closed by the
    # collector in whatever thread allocates: here one of its own workers, which joined itself ("cannot join
    # current thread"); in a thread starting up inside threading's own locks, the join hung the process
    raised = []
    collect = threading.Event()

    def function(value):
        if collect.is_set():
            gc.collect()
        time.sleep(0.005)
        return value

    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: raised.append(unraisable.exc_value)
    gc.disable()
    try:
        stream = ordered_map(function, iter(range(200)), 2)
        assert next(stream) == 0
        cycle: list = [stream]
        cycle.append(cycle)
        collect.set()
        del stream, cycle
        assert _ended_soon("detector-worker")
    finally:
        gc.enable()
        sys.unraisablehook = hook
    assert raised == []


def test_read_ahead_only_with_a_core_to_spare():
    assert read_ahead_depth(READ_AHEAD_MIN_CORES - 1) == 0
    assert read_ahead_depth(READ_AHEAD_MIN_CORES) == PREFETCH_DEPTH
    assert read_ahead_depth(64) == PREFETCH_DEPTH
    assert read_ahead_depth(0) == 0  # os.cpu_count() may be unknown


def test_the_items_drawn_first_start_dearest_first_and_come_out_in_order():
    started = []
    lock = threading.Lock()

    def run(item):
        with lock:
            started.append(item)
        time.sleep(0.01)
        return item * 10

    costs = {0: 1, 1: 5, 2: None, 3: 9, 4: 3}
    items = [0, 1, 2, 3, 4, *range(5, 5 + 2 * AHEAD_PER_WORKER)]  # more than the first draw holds
    got = list(ordered_map(run, items, 2, cost=lambda item: costs.get(item, 0)))
    assert got == [item * 10 for item in items]
    first_draw = 2 * AHEAD_PER_WORKER
    # unknown cost first, then 9, 5, 3, 1, then the zeros in their order; later items as they come
    assert started[:first_draw] == [2, 3, 1, 4, 0, *range(5, first_draw)]
    assert sorted(started) == items


def test_stored_bytes_sums_files_and_buffers_and_knows_nothing_else(tmp_path):
    from detector.inputs import Source, stored_bytes

    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 300)
    assert stored_bytes([Source("file", str(path)), Source("bytes", b"y" * 20)]) == 320
    assert stored_bytes([Source("file", str(tmp_path / "missing.png"))]) is None
    assert stored_bytes([Source("file", str(path)), Source("url", "http://127.0.0.1:9/a.png")]) is None
    assert stored_bytes([]) == 0


def test_a_model_file_replaced_after_loading_is_not_what_the_folder_workers_run(
    default_onnx, tmp_path, monkeypatch, caplog
):
    """The worker session was opened from the path on the first folder: a file replaced since (a deploy, a cache
    clean-up) ran the folders while single images ran the old model, without a word; a file removed failed them."""
    import shutil

    from detector import TextDetection
    from tests.test_model_sources import V6_TINY, wheel_source

    monkeypatch.setattr("detector.prefetch.usable_cores", lambda: 2)
    model_file = tmp_path / "inference.onnx"
    shutil.copy(default_onnx, model_file)
    detector = TextDetection(model_dir=model_file, device="cpu", cpu_threads=2)
    assert detector.folder_workers == 2
    images = [str(path) for path in _pngs(tmp_path, 2)]
    single = [detector.predict(image)[0] for image in images]
    replacement = tmp_path / "new.onnx"
    shutil.copy(wheel_source(V6_TINY) / "inference.onnx", replacement)
    os.replace(replacement, model_file)
    folder = detector.predict(images)
    assert [r["dt_polys"].tolist() for r in folder] == [r["dt_polys"].tolist() for r in single]
    assert "changed on disk since this TextDetection opened it" in caplog.text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: POSIX only")
def test_a_forked_child_is_not_stopped_by_a_lock_held_at_the_fork(default_onnx, tmp_path, monkeypatch):
    """Another thread opening the worker session at the fork held its lock, and the child's first folder hung."""
    import signal

    from detector import TextDetection

    monkeypatch.setattr("detector.prefetch.usable_cores", lambda: 2)
    detector = TextDetection(model_dir=default_onnx, device="cpu", cpu_threads=2)
    images = [str(path) for path in _pngs(tmp_path, 2)]
    with detector._worker_session_lock:  # as that other thread held it
        pid = os.fork()
        if pid == 0:  # the child: a folder predict, or SIGALRM's default action ends it after 20 s
            signal.alarm(20)
            try:
                code = 0 if len(detector.predict(images)) == 2 else 3
            except BaseException:
                code = 4
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
