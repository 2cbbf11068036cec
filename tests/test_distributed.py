"""`detect batch` / detector.distributed on a local Ray instance (num_cpus=2, started once for the module).

Rows must equal TextDetection.predict for the same files; a broken file is one row with `error`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from PIL import Image

from detector import DetectorError, InputNotFoundError, TextDetection
from detector.errors import InvalidParameterError, Terminated
from detector.result import to_jsonable
from tests.conftest import REPO_ROOT
from tests.rendered import write_rendered_pages

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (make test installs it)")
distributed = pytest.importorskip("detector.distributed")
batch_inputs = pytest.importorskip("detector.batch_inputs")
batch_output = pytest.importorskip("detector.batch_output")
batch_rows = pytest.importorskip("detector.batch_rows")
ray_session = pytest.importorskip("detector.ray_session")

BROKEN = "broken.png"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        object_store_memory=ray_session.LOCAL_OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch_in")
    pages = write_rendered_pages(folder)
    first, second = (Image.fromarray(cv2.imread(str(pages[name][0]))[:, :, ::-1]) for name in ("receipt", "banner"))
    first.save(folder / "two_pages.tiff", save_all=True, append_images=[second], compression="tiff_lzw")
    (folder / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n but the rest is missing")
    (folder / "notes.txt").write_text("not an image: not listed")
    return folder


def data_disk(disk, monkeypatch):
    """A data disk's mount point holding a subfolder 'locked' (with an image) and fsck's 'lost+found', which
    os.scandir does not list, as for a user (the tests run as root, whom modes do not stop); nor any other
    folder named so."""
    for folder in ("locked", "lost+found"):
        (disk / folder).mkdir(parents=True)
    cv2.imwrite(str(disk / "locked" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    real_scandir, real_ismount = os.scandir, os.path.ismount

    def scandir(path):
        if os.path.basename(os.fspath(path)) in ("locked", "lost+found"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr("detector.folder_walk.os.scandir", scandir)
    monkeypatch.setattr(
        "detector.folder_walk.os.path.ismount", lambda path: os.path.abspath(path) == str(disk) or real_ismount(path)
    )
    return disk


def expected_rows(folder, model_path, **settings):
    library = TextDetection(model_dir=model_path, device="cpu", **settings)
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".png", ".tiff") and path.name != BROKEN:
            for result in library.predict(path):
                rows.append(
                    {
                        "path": str(path.resolve()),
                        "page_index": result["page_index"],
                        "dt_polys": to_jsonable(result["dt_polys"]),
                        "dt_scores": to_jsonable(result["dt_scores"]),
                        "error": None,
                        "warnings": [],
                    }
                )
    return rows


def sort_rows(rows):
    return sorted(rows, key=lambda row: (row["path"], -1 if row["page_index"] is None else row["page_index"]))


def split_broken(rows):
    broken = [row for row in rows if row["path"].endswith(BROKEN)]
    return sort_rows([row for row in rows if not row["path"].endswith(BROKEN)]), broken


def test_parquet_rows_equal_the_library_and_a_broken_file_is_one_error_row(
    local_ray, folder, default_onnx, tmp_path, monkeypatch
):
    spec = batch_rows.ModelSpec(model_dir=str(default_onnx), device="cpu")
    reported = []  # (files done, files in all) as the actors finish files: a terminal showed none
    # a data disk with a subfolder this user cannot read (a row with why) and its lost+found (left out): the run
    # was refused for either
    disk = data_disk(tmp_path / "disk", monkeypatch)
    summary = distributed.run_batch(
        [str(folder), str(disk)],
        str(tmp_path / "out"),
        fmt="parquet",
        spec=spec,
        concurrency=2,
        files_per_batch=2,
        on_progress=lambda done, total: reported.append((done, total)),
    )
    assert reported[0] == (0, 7) and reported[-1] == (7, 7) and reported == sorted(reported), reported
    rows, broken = split_broken(batch_output.read_rows(str(tmp_path / "out"), "parquet").to_pylist())
    (locked,) = [row for row in rows if row["path"].startswith(str(disk))]
    assert (locked["path"], locked["page_index"], locked["error"]) == (
        str(disk / "locked"),
        None,
        f"{disk / 'locked'}: cannot be read (Permission denied)",
    )
    rows.remove(locked)
    assert rows == expected_rows(folder, default_onnx)
    assert len(broken) == 1 and BROKEN in broken[0]["error"] and broken[0]["dt_polys"] == []
    assert [row["page_index"] for row in rows if row["path"].endswith(".tiff")] == [0, 1]
    assert summary.files == 7 and summary.rows == len(rows) + 2 and summary.errors == 2


def test_cli_jsonl_with_settings_on_an_existing_cluster(local_ray, folder, default_onnx, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector.cli",
            "batch",
            "-i",
            str(folder / "*.png"),
            "-o",
            str(out),
            "--format",
            "jsonl",
            "--ray-address",
            local_ray,
            "--model",
            str(default_onnx),
            "--device",
            "cpu",
            "--box-thresh",
            "0.7",
            "--unclip-ratio",
            "1.2",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # 1: some file failed (the broken one), like `detect`
    assert "5 files, 5 rows, 1 with an error" in proc.stderr and "Traceback" not in proc.stderr
    # Ray Data's progress off (on a terminal it said 'tqdm is not installed', here it logged blocks of progress
    # lines), and so is the command's own bar where stderr is no terminal
    for line in ("Progress will be logged", "Running Dataset", "Progress bars disabled", "tqdm", "detecting"):
        assert line not in proc.stderr, proc.stderr
    # which file failed, and why: the count alone said neither (the rows did)
    (named,) = [line for line in proc.stderr.splitlines() if line.startswith("detect batch: error: ")]
    assert named.startswith(f"detect batch: error: {folder / BROKEN} is not an image ")  # its path once
    assert "more rows" not in proc.stderr
    assert {path.suffix for path in out.iterdir() if path.name != "_SUCCESS.json"} == {".jsonl"}
    rows, broken = split_broken(batch_output.read_rows(str(out), "jsonl").to_pylist())
    expected = [
        row
        for row in expected_rows(folder, default_onnx, box_thresh=0.7, unclip_ratio=1.2)
        if row["path"].endswith(".png")
    ]
    assert rows == expected and len(broken) == 1


def test_usage_errors_are_one_line_without_starting_ray(folder, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.parquet").write_bytes(b"")
    cores = os.cpu_count() or 1
    for args, words in (
        ((str(tmp_path / "missing"), str(tmp_path / "o")), "does not exist"),
        ((str(folder), str(tmp_path / "full")), "not an empty folder"),
        ((str(folder), (tmp_path / "full").as_uri()), "not an empty folder"),  # a URI too: Ray would append
        ((str(folder), str(tmp_path / "o"), "--cpus-per-actor", str(cores + 1)), f"this machine's {cores} CPUs"),
        ((str(folder), str(tmp_path / "o"), "--precision", "fp16"), "no fp16 variant"),  # checked before Ray
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "detector.cli", "batch", "-i", args[0], "-o", args[1], *args[2:]],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
        )
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("detect batch: error:"), proc.stderr  # named like eval's and optimize's


def test_an_address_without_a_cluster_is_the_user_s_error(monkeypatch):
    def no_cluster(**_):
        raise ConnectionError("Could not find any running Ray instance")

    monkeypatch.setattr(ray_session.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_session.ray, "init", no_cluster)
    with pytest.raises(DetectorError, match="cannot join the Ray cluster at 'auto': Could not find"):
        ray_session.connect("auto")


def test_an_error_row_names_the_page_whose_detection_failed(folder, default_onnx, monkeypatch):
    detector = TextDetection(model_dir=default_onnx, device="cpu")
    detect_loaded = detector.detect_loaded
    for failing_page in (0, 1):

        def fail_on_one_page(images, failing_page=failing_page, **kwargs):
            if images[0].page_index == failing_page:
                raise DetectorError("the network failed")
            return detect_loaded(images, **kwargs)

        monkeypatch.setattr(detector, "detect_loaded", fail_on_one_page)
        rows = batch_rows.detect_file(detector, str(folder / "two_pages.tiff"))
        assert [(row["page_index"], row["error"]) for row in rows] == [(page, None) for page in range(failing_page)] + [
            (failing_page, "the network failed")
        ]
    # a file that cannot be read at all is not a page
    (row,) = batch_rows.detect_file(detector, str(folder / BROKEN))
    assert row["page_index"] is None and row["error"]
    # nor one gone since it was listed: a row, where Ray's own reader ended the whole job
    (row,) = batch_rows.detect_file(detector, str(folder / "gone.png"))
    assert row["page_index"] is None and "does not exist" in row["error"]


def test_a_row_holds_the_warnings_of_its_image(folder, default_onnx, tmp_path):
    """A JPEG cut short is decoded as far as it goes with a warning, which an actor logged to no one: its row
    read as a page without text."""
    data = cv2.imencode(".jpg", cv2.imread(str(folder / "receipt.png")))[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    detector = TextDetection(model_dir=default_onnx, device="cpu")
    (row,) = batch_rows.detect_file(detector, str(tmp_path / "cut.jpg"))
    assert row["error"] is None and len(row["warnings"]) == 1 and "is a damaged JPEG" in row["warnings"][0]
    (row,) = batch_rows.detect_file(detector, str(folder / "receipt.png"))
    assert row["warnings"] == []  # each row its own: none carried over
    (row,) = batch_rows.detect_file(detector, str(folder / BROKEN))
    assert row["error"] and row["warnings"] == []


def test_a_uri_that_cannot_be_listed_is_the_user_s_error(local_ray, tmp_path):
    missing = (tmp_path / "not_there").as_uri()
    with pytest.raises(InputNotFoundError, match="not_there does not exist"):
        distributed.run_batch([missing], str(tmp_path / "out1"))
    with pytest.raises(DetectorError, match="cannot list the input nosuch://a/b"):
        distributed.run_batch(["nosuch://a/b"], str(tmp_path / "out2"))


def test_files_are_listed_and_named_as_detect_reads_them(local_ray, folder, default_onnx, tmp_path, monkeypatch):
    # links as named (they were resolved to their targets), a name that is not UTF-8 (it stopped the job),
    # a named file without an image suffix beside a URI (a URI dropped it), -R for URIs (ignored), a PDF known
    # by its suffix though bytes come before %PDF (an error row), a relative output (fine on a cluster)
    page = folder / "receipt.png"
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    shutil.copy(page, inputs / "a.png")
    shutil.copy(page, inputs / "sub" / "deep.png")
    (inputs / "link.png").symlink_to(inputs / "a.png")
    (tmp_path / "local").mkdir()
    shutil.copy(page, os.fsdecode(os.fsencode(str(tmp_path / "local")) + b"/bad\xff.png"))
    shutil.copy(page, tmp_path / "scan_without_suffix")
    pdf = io.BytesIO()
    Image.open(page).convert("RGB").save(pdf, format="PDF")
    (tmp_path / "preamble.pdf").write_bytes(b"JUNK-PREAMBLE\n" + pdf.getvalue())
    monkeypatch.chdir(tmp_path)
    distributed.run_batch(
        [inputs.as_uri(), str(tmp_path / "scan_without_suffix"), "preamble.pdf", "local"],
        "relative_out",
        fmt="jsonl",
        spec=batch_rows.ModelSpec(model_dir=str(default_onnx)),
        recursive=False,
    )
    rows = batch_output.read_rows(str(tmp_path / "relative_out"), "jsonl").to_pylist()
    assert all(row["error"] is None for row in rows), rows
    prefix = inputs.as_uri()
    assert sorted(row["path"] for row in rows) == sorted(
        [
            f"{prefix}/a.png",
            str(tmp_path / "local" / "bad\\udcff.png"),
            f"{prefix}/link.png",
            str(tmp_path / "preamble.pdf"),
            str(tmp_path / "scan_without_suffix"),
        ]
    )


def test_gpus_the_local_instance_does_not_have_are_refused_not_waited_for(local_ray, folder, default_onnx, tmp_path):
    # --device cpu --num-gpus-per-actor 1 on a machine without a GPU waited for an actor slot for ever
    if ray.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("this machine has a GPU")
    spec = batch_rows.ModelSpec(model_dir=str(default_onnx), device="cpu")
    with pytest.raises(DetectorError, match="num_gpus_per_actor 1 is more than this machine's 0 GPUs"):
        distributed.run_batch([str(folder / "receipt.png")], str(tmp_path / "out"), spec=spec, num_gpus_per_actor=1)


class _Loaded(Exception):
    """Raised by a faked ModelSpec.load: run_batch stops there, before Ray starts."""


@pytest.mark.parametrize(
    ("device", "num_gpus_per_actor", "opened_on"),
    [(None, 0, "cpu"), (None, 0.5, "gpu"), ("gpu", 0, "gpu"), ("cpu", 1, "cpu"), ("gpu:1", 2, "gpu:1")],
)
def test_each_actor_opens_the_model_on_its_own_device(tmp_path, monkeypatch, device, num_gpus_per_actor, opened_on):
    # device=None opened CUDA in every CPU actor: Ray leaves an actor that asks for no GPU every GPU (GPU 0 for all)
    loaded = []

    def load(spec):
        loaded.append(spec)
        raise _Loaded

    monkeypatch.setattr(batch_rows.ModelSpec, "load", load)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    spec = batch_rows.ModelSpec(device=device)
    with pytest.raises(_Loaded):
        distributed.run_batch([str(image)], str(tmp_path / "out"), spec=spec, num_gpus_per_actor=num_gpus_per_actor)
    assert loaded[0].device == opened_on


@pytest.mark.parametrize(("device", "num_gpus_per_actor"), [("gpu:1", 1), ("cuda:1", 0.5), ("gpu:2", 2)])
def test_a_gpu_the_actors_do_not_see_is_refused_before_anything_starts(tmp_path, device, num_gpus_per_actor):
    # an actor sees only the GPUs Ray assigned it, from index 0: gpu:1 failed in every actor
    spec = batch_rows.ModelSpec(device=device)
    with pytest.raises(InvalidParameterError, match=r"use --device gpu \(device='gpu'\), and Ray picks"):
        distributed.run_batch(
            [str(tmp_path / "none")], str(tmp_path / "out"), spec=spec, num_gpus_per_actor=num_gpus_per_actor
        )
    assert not (tmp_path / "out").exists()


def test_a_model_actors_cannot_load_on_a_cluster_is_the_library_s_refusal(local_ray, folder, default_onnx, tmp_path):
    # with --ray-address the model is first loaded by the actors: their refusal was an ActorDiedError traceback
    spec = batch_rows.ModelSpec(model_dir=str(default_onnx), precision="fp16", device="cpu")
    with pytest.raises(DetectorError, match=r"^the actors could not load the model: no fp16 variant: "):
        distributed.run_batch([str(folder / "receipt.png")], str(tmp_path / "out"), spec=spec, ray_address=local_ray)


def test_a_failure_on_ray_is_said_once_without_ray_s_tracebacks(local_ray, folder, default_onnx, tmp_path):
    """Ray Data logged the actors' failure with Ray's tracebacks, ~100 lines holding the library's message,
    before the command's own line said it again."""
    command = [sys.executable, "-m", "detector.cli", "batch", "-i", str(folder / "receipt.png"), "-o", str(tmp_path)]
    model = ["--model", str(default_onnx), "--precision", "fp16", "--device", "cpu"]
    proc = subprocess.run(
        [*command, "--ray-address", local_ray, *model],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("no fp16 variant") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("detect batch: error: the actors could not load the model:")


def test_an_output_that_cannot_be_written_midway_is_one_line_saying_so(
    local_ray, folder, default_onnx, tmp_path, monkeypatch, capsys
):
    """Writers that failed (a full disk, the output folder removed or made read-only) ended the run with
    'detect: error: ray::Write() (pid=…)' and the writer's remote traceback (~60 lines, after Ray Data's ~200),
    nothing saying what the output held."""
    from detector import cli

    out = tmp_path / "out"
    on_write_start = batch_output.JsonLinesDatasink.on_write_start

    def folder_replaced_by_a_file(self, *args, **kwargs):  # after Ray checked it, before any writer runs
        on_write_start(self, *args, **kwargs)
        if out.is_dir():  # Ray calls it more than once
            out.rmdir()
            out.write_text("not a folder")

    monkeypatch.setattr(batch_output.JsonLinesDatasink, "on_write_start", folder_replaced_by_a_file)
    model = ["--model", str(default_onnx), "--device", "cpu", "--format", "jsonl"]
    with pytest.raises(SystemExit) as ended:
        cli.main(["batch", "-i", str(folder / "receipt.png"), "-o", str(out), "--ray-address", local_ray, *model])
    said = capsys.readouterr().err
    assert ended.value.code == 1, said  # the run failed, as detect's failed writes: not a usage error
    assert said.splitlines() == [
        f"detect batch: error: cannot write the rows into {out}: Not a directory; the output folder holds a "
        f"partial run (no _SUCCESS.json): choose a new one to run again"
    ]
    assert ray.data.DataContext.get_current().enable_progress_bars  # Ray Data's progress, off for the run, put back


def test_a_cluster_address_nobody_answers_at_fails_at_once(folder, tmp_path):
    # ray.init retried such an address for ~7 minutes, printing Ray's own connection warnings, before failing
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nobody listens there
    command = [sys.executable, "-m", "detector.cli", "batch", "-i", str(folder / "receipt.png")]
    proc = subprocess.run(
        [*command, "-o", str(tmp_path / "out"), "--ray-address", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot join the Ray cluster at '127.0.0.1:{port}': nothing answers there" in proc.stderr
    assert "Traceback" not in proc.stderr and "Failed to connect" not in proc.stderr
    assert ray_session.unreachable_cluster("auto") is None and ray_session.unreachable_cluster("ray://x") is None


def test_uri_listings_read_every_file_under_its_own_name(tmp_path):
    """'c%20d.jpg' read the bytes of 'c d.jpg' (pyarrow decodes a URI's %XX), and a space, '#', '?' or 'ü'
    failed or cut the name short (a file named 'a' read in place of 'a#b.jpg')."""
    names = ["c d", "c%20d", "a#b", "a", "q?x", "q", "ünï"]
    for name in names:
        (tmp_path / f"{name}.jpg").write_text(name)
    listed = batch_inputs.list_uri(tmp_path.as_uri(), recursive=True)
    assert len(listed) == len(names)
    assert sorted(batch_rows.file_source(uri).value.decode() for uri in listed) == sorted(names)


def test_a_uri_listing_takes_the_names_a_folder_walk_takes(tmp_path):
    """A listed URI's file names pass the walk's name test (folder_walk.has_image_suffix, PaddleX's): '.png' and
    'png' were left out by splitext, where `detect` and `detect batch` on the same folder given as a path read them."""
    for name in [".png", "png", "a.PNG", "png.txt"]:
        (tmp_path / name).write_bytes(b"")
    listed = batch_inputs.list_uri(tmp_path.as_uri(), recursive=True)
    assert sorted(uri.rsplit("/", 1)[-1] for uri in listed) == sorted([".png", "png", "a.PNG"])


def test_a_file_whose_name_is_not_utf8_and_cannot_be_read_is_one_error_row(tmp_path, default_onnx):
    """Its error message names it: the lone surrogates failed the whole block in Arrow (the job ended)."""
    import pyarrow as pa

    broken = os.fsdecode(os.fsencode(str(tmp_path)) + b"/br\xffoken.png")
    with open(os.fsencode(broken), "wb") as handle:
        handle.write(b"garbage")
    rows = batch_rows.detect_file(TextDetection(model_dir=default_onnx, device="cpu"), broken)
    table = pa.Table.from_pydict(
        {k: [row[k] for row in rows] for k in batch_rows.ROW_SCHEMA.names}, batch_rows.ROW_SCHEMA
    )
    (error,) = table.column("error").to_pylist()
    assert "br\\udcffoken.png is not an image" in error  # as the path column writes it


def test_an_output_folder_that_cannot_be_written_is_refused_before_ray_starts(tmp_path, monkeypatch):
    import errno

    empty = tmp_path / "out"
    empty.mkdir()

    def read_only(*args, **kwargs):  # what a read-only mount gives (root writes through permission bits)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(batch_output.tempfile, "TemporaryFile", read_only)
    with pytest.raises(InvalidParameterError, match="cannot be written: Read-only file system"):
        batch_output.check_output(str(empty))


def test_rows_read_in_the_other_format_or_of_an_unfinished_run_are_refused(tmp_path):
    (tmp_path / "part-0.parquet").write_bytes(b"")
    with pytest.raises(InvalidParameterError, match="holds parquet files, not jsonl"):
        batch_output.read_rows(str(tmp_path), "jsonl")
    # rows without the completion record: a run interrupted or failed (they read as a whole run before)
    (tmp_path / "part-0.parquet").unlink()
    row = {"path": "a.png", "page_index": None, "dt_polys": [], "dt_scores": [], "error": None}
    (tmp_path / "part-0.jsonl").write_text(json.dumps(row) + "\n")
    unfinished = r"holds no _SUCCESS\.json: the run that wrote it did not finish"
    with pytest.raises(InvalidParameterError, match=unfinished):
        batch_output.read_rows(str(tmp_path), "jsonl")
    assert len(batch_output.read_rows(str(tmp_path), "jsonl", allow_partial=True)) == 1


def test_a_local_run_starts_its_own_instance_where_ray_address_names_a_cluster(folder, tmp_path):
    """RAY_ADDRESS is set under `ray job submit`; without --ray-address the run is local, as documented (ray.init
    with num_cpus joined that cluster and failed: 'num_cpus and num_gpus must not be provided')."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "detector.cli", "batch", "-i", str(folder / "receipt.png")]
    proc = subprocess.run(
        [*command, "-o", str(tmp_path / "out"), "--format", "jsonl"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert len(batch_output.read_rows(str(tmp_path / "out"), "jsonl")) == 1
    record = json.loads((tmp_path / "out" / "_SUCCESS.json").read_text())  # a finished run says so, last
    assert (record["files"], record["rows"], record["errors"], record["format"]) == (1, 1, 0, "jsonl")
    # and which model wrote the rows: it recorded only the options given (none here, so no name at all)
    model = record["model"]
    assert (model["model_name"], model["precision"]) == ("PP-OCRv4_mobile_det", "fp32")
    assert os.path.isabs(model["model_path"]) and os.path.isfile(model["model_path"])


@pytest.mark.parametrize("stop", [KeyboardInterrupt, Terminated])
def test_a_run_stopped_before_it_made_its_output_says_nothing_was_written(folder, tmp_path, monkeypatch, capsys, stop):
    """Stopped while it listed the inputs (minutes, for a large tree), before it made the output folder, a run
    said 'the output folder holds a partial run (no _SUCCESS.json)' of a folder that was never made."""
    from detector import cli

    def stopped_while_listing(inputs, output, **kwargs):
        raise stop

    monkeypatch.setattr(distributed, "run_batch", stopped_while_listing)
    with pytest.raises(SystemExit) as ended:
        cli.main(["batch", "-i", str(folder), "-o", str(tmp_path / "out")])
    said = "interrupted" if stop is KeyboardInterrupt else "terminated"
    assert capsys.readouterr().err.strip() == f"detect batch: {said}; nothing was written"  # after click's newline
    assert ended.value.code == 128 + (signal.SIGINT if stop is KeyboardInterrupt else signal.SIGTERM)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("written", [False, True])
def test_a_run_stopped_before_writing_says_nothing_was_written_and_leaves_no_folder(
    folder, tmp_path, monkeypatch, capsys, written
):
    """Ctrl-C while the model loaded or Ray started said 'the output folder holds a partial run' of an empty
    folder it had made, and left that folder behind; so did a model refused after the folder was made."""
    from detector import cli

    out = tmp_path / "out"

    def stopped_early(inputs, output, **kwargs):
        os.makedirs(output)
        if written:
            (out / "part-0.parquet").write_bytes(b"rows")
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "run_batch", stopped_early)
    with pytest.raises(SystemExit) as ended:
        cli.main(["batch", "-i", str(folder), "-o", str(out)])
    said = capsys.readouterr().err
    assert ended.value.code == 130
    if written:
        assert "interrupted; the output folder holds a partial run" in said and out.is_dir()
    else:
        assert "detect batch: interrupted; nothing was written" in said and not out.exists()

    def refused(inputs, output, **kwargs):
        os.makedirs(output)
        raise DetectorError("no such model")

    monkeypatch.setattr(distributed, "run_batch", refused)
    shutil.rmtree(out, ignore_errors=True)
    with pytest.raises(SystemExit) as ended:
        cli.main(["batch", "-i", str(folder), "-o", str(out)])
    assert ended.value.code == 2 and "no such model" in capsys.readouterr().err and not out.exists()


# A `detect batch` whose ray.init sends it a signal right after starting the raylet: the moment Ray starts its
# processes, when Ray's own SIGTERM handler was in place
SIGNAL_WHILE_RAY_STARTS = """
import os, signal, sys
import ray._private.services as services
from detector.cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the test runner ignores
start_raylet = services.start_raylet
def start_raylet_then_signal(*args, **kwargs):
    started = start_raylet(*args, **kwargs)
    os.kill(os.getpid(), int(os.environ["SIGNAL_TO_SEND"]))
    return started
services.start_raylet = start_raylet_then_signal
main(sys.argv[1:])
"""


def running_in_session(session: int) -> list[str]:
    """The processes of a session (zombies left out) as 'pid command' lines."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state, _parent, _group, sid = stat.read().rsplit(")", 1)[1].split()[:4]
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:  # ended meanwhile
            continue
        if int(sid) == session and state != "Z":
            found.append(f"{pid} {command}")
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(("signum", "said"), [(signal.SIGTERM, "terminated"), (signal.SIGINT, "interrupted")])
def test_a_signal_while_ray_starts_is_one_line_and_leaves_no_ray_process(folder, tmp_path, signum, said):
    """ray.init put its own SIGTERM handler in place while it started Ray's processes: a SIGTERM then ended the
    run with exit 15 and no line, left the output folder it had made, and two Ray agents running for ~70 s
    (Ray 2.60); a Ctrl-C there left the agents too."""
    out = tmp_path / "out"
    with batch_in_a_session_of_its_own(SIGNAL_WHILE_RAY_STARTS, signum, folder / "receipt.png", out) as proc:
        _, said_on_stderr = proc.communicate(timeout=300)
        assert proc.returncode == 128 + signum, said_on_stderr
        assert said_on_stderr.rstrip().splitlines()[-1] == f"detect batch: {said}; nothing was written"
        assert "Traceback" not in said_on_stderr and not out.exists()
        assert_none_left_running(proc.pid)


@contextlib.contextmanager
def batch_in_a_session_of_its_own(script: str, signum: int, image, out) -> Iterator[subprocess.Popen]:
    """`detect batch -i image -o out` run by ``script``, which sends itself ``signum`` (SIGNAL_TO_SEND), in a session
    of its own: Ray's processes are of that session, found by assert_none_left_running, and killed at the end
    whatever happens."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "batch", "-i", str(image), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**env, "SIGNAL_TO_SEND": str(int(signum))},
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def assert_none_left_running(session: int) -> None:
    left = running_in_session(session)
    for _ in range(40):  # Ray's shutdown stops its processes with SIGTERM: each ends a moment later
        if not left:
            break
        time.sleep(0.5)
        left = running_in_session(session)
    assert left == []


# A `detect batch` whose first ray.shutdown (or Ray's exit hook's) sends it a signal: a run done, Ray stopping
SIGNAL_WHILE_RAY_STOPS = """
import os, signal, sys
import ray._private.worker as worker
from detector.cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)
disconnect = worker.disconnect
def disconnect_after_a_signal(*args, **kwargs):
    worker.disconnect = disconnect
    os.kill(os.getpid(), int(os.environ["SIGNAL_TO_SEND"]))
    return disconnect(*args, **kwargs)
worker.disconnect = disconnect_after_a_signal
main(sys.argv[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_ray_stops_after_the_run_is_no_traceback_and_leaves_no_ray_process(folder, tmp_path, signum):
    """Ray stopped in its exit hook, ~2 s after the summary line: a signal then (the command had not returned)
    printed 'Exception ignored in atexit callback' and a traceback, and left Ray's agents and actors running."""
    out = tmp_path / "out"
    with batch_in_a_session_of_its_own(SIGNAL_WHILE_RAY_STOPS, signum, folder / "receipt.png", out) as proc:
        _, said = proc.communicate(timeout=300)
        assert proc.returncode == 0, said  # the run was whole: _SUCCESS.json written, its summary said
        assert said.rstrip().splitlines()[-1].startswith("detect batch: 1 files, 1 rows, 0 with an error")
        assert "Traceback" not in said and (out / "_SUCCESS.json").is_file()
        assert_none_left_running(proc.pid)


def test_the_summary_names_the_first_failed_rows_by_path_and_page():
    import pyarrow as pa

    from detector.batch_command import failed_rows_said

    rows = [
        {"path": "/in/b.pdf", "page_index": 1, "error": "page too large"},
        {"path": "/in/ok.png", "page_index": None, "error": None},
        {"path": "/in/b.pdf", "page_index": 0, "error": "a\nsecond line"},
        {"path": "/in/a.png", "page_index": None, "error": "not an image"},
    ]
    schema = pa.schema([batch_rows.ROW_SCHEMA.field(name) for name in ("path", "page_index", "error")])
    table = pa.Table.from_pylist(rows, schema=schema)
    assert distributed.first_errors(table) == (
        ("/in/a.png", None, "not an image"),
        ("/in/b.pdf", 0, "a\nsecond line"),
        ("/in/b.pdf", 1, "page too large"),
    )
    assert distributed.first_errors(table, count=2) == distributed.first_errors(table)[:2]
    summary = distributed.BatchSummary(
        files=3, rows=4, errors=3, seconds=1.0, output="out", first_errors=distributed.first_errors(table, count=2)
    )
    assert failed_rows_said(summary) == [
        "detect batch: error: /in/a.png: not an image",
        "detect batch: error: /in/b.pdf page 0: a\\nsecond line",  # as detect names a page ("(page 0)" before)
        "detect batch: … and 1 more rows with an error: their `error` column in out",
    ]
    # a file name holding a terminal escape moves no cursor: shown as detect's error lines show it
    escaped = distributed.BatchSummary(1, 1, 1, 1.0, "out", first_errors=(("/in/\x1b[2Ja.png", None, "bad"),))
    assert failed_rows_said(escaped) == ["detect batch: error: /in/\\x1b[2Ja.png: bad"]


def test_a_failed_row_s_line_names_its_path_once_as_detect_s_lines_do():
    # "detect batch: error: /in/x.png: /in/x.png is not an image …": the error names the file already
    from detector.batch_command import failed_rows_said

    failed = (
        ("/in/a", None, "/in/ab.png is no input of this row"),  # another name that starts the same: kept
        ("/in/b.pdf", 2, "/in/b.pdf page 2 cannot be rendered: bad"),
        ("/in/c.png", None, "/in/c.png is not an image OpenCV can decode"),
        ("/in/d.png", None, "/in/d.png: cannot be read (Permission denied)"),
    )
    assert failed_rows_said(distributed.BatchSummary(4, 4, 4, 1.0, "out", first_errors=failed)) == [
        "detect batch: error: /in/a: /in/ab.png is no input of this row",
        "detect batch: error: /in/b.pdf page 2 cannot be rendered: bad",
        "detect batch: error: /in/c.png is not an image OpenCV can decode",
        "detect batch: error: /in/d.png: cannot be read (Permission denied)",
    ]


def test_each_file_an_actor_finishes_is_counted(monkeypatch):
    """The count `detect batch`'s progress shows: one per file, whatever its rows (a PDF's pages, an error), and
    per folder the walk could not read."""
    import types

    import pyarrow as pa

    added = []
    files_done = types.SimpleNamespace(add=types.SimpleNamespace(remote=added.append))  # the actor's handle
    monkeypatch.setattr(batch_rows.ModelSpec, "load", lambda spec: None)
    monkeypatch.setattr(batch_rows, "detect_file", lambda detector, path: [])
    detect = batch_rows.DetectFiles(batch_rows.ModelSpec(), files_done)
    listed = {batch_rows.SOURCE_COLUMN: [b"/in/a.png", b"/in/b", b"/in/c.png"], batch_rows.UNREADABLE_COLUMN: [None]}
    listed[batch_rows.UNREADABLE_COLUMN] += ["/in/b: cannot be read (Permission denied)", None]
    rows = detect(pa.table(listed)).to_pylist()
    assert added == [1, 1, 1]
    # a folder the walk could not read: its row says why, not read by the actor
    assert rows == [
        {
            "path": "/in/b",
            "page_index": None,
            "dt_polys": [],
            "dt_scores": [],
            "error": "/in/b: cannot be read (Permission denied)",
            "warnings": [],
        }
    ]


def test_batch_progress_is_a_bar_on_a_terminal_and_nothing_elsewhere(monkeypatch):
    from detector.progress import progress_of_counts

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for on_terminal in (True, False):
        stderr = Terminal() if on_terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        with progress_of_counts("detecting", show=on_terminal) as shown:
            report = shown.report
            report(0, 3)
            drawn_at_none_done = stderr.getvalue()
            report(2, 3)
            report(3, 3)
            finished = stderr.getvalue()
            report(3, 3)  # the run's last report, after the thread's: nothing more
        assert stderr.getvalue() == finished
        if on_terminal:
            assert drawn_at_none_done == ""  # drawn from the first file done: Ray's lines before stay whole
            assert re.findall(r"(\d)/3", finished) == ["0", "2", "3"] and finished.endswith("\n"), finished
        else:
            assert finished == ""


def test_ray_s_line_of_a_run_failing_midway_starts_below_the_bar_on_a_terminal(monkeypatch, tmp_path):
    """A run failing midway on a terminal: Ray Data's 'Dataset … execution failed' was printed on the bar's line
    ('detecting [####----] 1/3  ⚠️ Dataset … execution failed'), the command's error under it."""
    import logging

    from detector import cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def fails_midway(*args, on_progress, **kwargs):
        on_progress(1, 3)
        logging.getLogger("ray.data").info("Dataset d execution failed")  # Ray's, to its terminal handler
        on_progress(2, 3)  # a count after it: the bar drawn again below
        raise DetectorError("the actors could not load the model: bad")

    monkeypatch.setattr(distributed, "run_batch", fails_midway)
    monkeypatch.setattr(sys, "stderr", Terminal())
    for handler in logging.getLogger("ray.data").handlers:  # Ray's terminal handler keeps the stderr of its start
        if type(handler).__module__.startswith("ray.") and isinstance(handler, logging.StreamHandler):
            monkeypatch.setattr(handler, "stream", sys.stderr)
    with pytest.raises(SystemExit):
        cli.main(["batch", "-i", str(tmp_path), "-o", str(tmp_path / "out")])
    lines = sys.stderr.getvalue().split("\n")
    ray_s = [number for number, line in enumerate(lines) if "execution failed" in line]
    assert len(ray_s) == 1 and "detecting" not in lines[ray_s[0]], lines  # on a line of its own
    assert "2/3" in lines[ray_s[0] + 1], lines  # the bar drawn again below it
    assert lines[-2:] == ["detect batch: error: the actors could not load the model: bad", ""], lines


def test_a_subfolder_that_cannot_be_read_is_an_error_of_its_own_in_detect_and_batch_but_a_disk_s_lost_found_none(
    tmp_path, monkeypatch
):
    """`detect` on a folder says a subfolder it cannot read in an error line and runs the rest (exit 1); `detect
    batch` refused the whole run before it started, also for the root-only lost+found at a data disk's mount point
    (every job on a data disk). Now a row with the error; lost+found at a mount point is left out by both, as
    PaddleX's os.walk leaves it, but not given by name, nor a folder of that name elsewhere."""
    from detector.inputs import expand_inputs

    disk = data_disk(tmp_path / "disk", monkeypatch)
    (disk / "sub" / "lost+found").mkdir(parents=True)
    cv2.imwrite(str(disk / "b.png"), np.zeros((8, 8, 3), np.uint8))
    why = "{}: cannot be read (Permission denied)".format
    assert [(source.kind, source.name) for source in expand_inputs(str(disk))] == [
        ("file", str(disk / "b.png")),
        ("unreadable", str(disk / "locked")),
        ("unreadable", str(disk / "sub" / "lost+found")),
    ]
    assert batch_inputs.resolve_inputs([str(disk)]) == [
        (str(disk / "b.png"), None),
        (str(disk / "locked"), why(disk / "locked")),
        (str(disk / "sub" / "lost+found"), why(disk / "sub" / "lost+found")),
    ]
    with pytest.raises(InputNotFoundError, match=r"lost\+found: the folder cannot be read \(Permission denied\)"):
        batch_inputs.resolve_inputs([str(disk / "lost+found")])


def test_an_unreadable_subfolder_of_a_relative_input_is_named_once_in_its_failed_row_s_line(tmp_path, monkeypatch):
    # the row's path is absolute, its error kept the walk's relative name: "/cwd/disk/locked: disk/locked: …"
    from detector.batch_command import failed_rows_said

    disk = data_disk(tmp_path / "disk", monkeypatch)
    monkeypatch.chdir(tmp_path)
    locked = (str(disk / "locked"), f"{disk / 'locked'}: cannot be read (Permission denied)")
    assert batch_inputs.resolve_inputs(["disk"]) == [locked]
    summary = distributed.BatchSummary(1, 1, 1, 1.0, "out", first_errors=((locked[0], None, locked[1]),))
    assert failed_rows_said(summary) == [f"detect batch: error: {locked[1]}"]


def test_a_pattern_s_matched_folders_are_taken_as_the_walk_takes_the_folders_it_finds(tmp_path, monkeypatch):
    """`disk/*` matched the disk's lost+found and read it as a folder given by name: an error line in `detect`
    (exit 1) and a row in `detect batch`, where a walk of the disk leaves it out; and a matched folder gone
    before it was listed (a spool's) was an error, where the walk's finds, gone meanwhile, held nothing."""
    from detector.inputs import expand_inputs

    disk = data_disk(tmp_path / "disk", monkeypatch)
    (disk / "gone").mkdir()
    cv2.imwrite(str(disk / "b.png"), np.zeros((8, 8, 3), np.uint8))
    locked_scandir = os.scandir

    def scandir(path):
        if os.path.basename(os.fspath(path)) == "gone":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", os.fspath(path))
        return locked_scandir(path)

    monkeypatch.setattr("detector.folder_walk.os.scandir", scandir)
    walked = [("file", str(disk / "b.png")), ("unreadable", str(disk / "locked"))]
    assert [(source.kind, source.name) for source in expand_inputs(str(disk))] == walked
    assert [(source.kind, source.name) for source in expand_inputs(str(disk / "*"))] == walked
    assert batch_inputs.resolve_inputs([str(disk / "*")]) == [
        (str(disk / "b.png"), None),
        (str(disk / "locked"), f"{disk / 'locked'}: cannot be read (Permission denied)"),
    ]
