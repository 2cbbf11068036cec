"""The `detect` command, run as users run it: a subprocess, checking exit codes, stdout, stderr, files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.rendered import write_rendered_pages

pytestmark = pytest.mark.runtime  # no Paddle needed: make test-pythons runs these on every Python

DETECT = [sys.executable, "-m", "detector.cli"]


def detect(*args, env=None, timeout=180):
    return subprocess.run(
        [*DETECT, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return write_rendered_pages(tmp_path_factory.mktemp("cli_pages"))


@pytest.fixture(scope="module")
def model_path(default_onnx):
    return default_onnx


def test_detects_prints_and_saves(model_path, pages, tmp_path):
    path, truth = pages["page"]
    proc = detect("-i", path, "--model", model_path, "--save-path", tmp_path, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "'res'" in proc.stdout and "dt_polys" in proc.stdout
    data = json.loads((tmp_path / "page_res.json").read_text())
    assert len(data["dt_polys"]) == len(truth) and data["input_path"] == str(path)
    assert (tmp_path / "page_res.png").stat().st_size > 1000
    assert "Traceback" not in proc.stderr


def test_json_output_and_underscore_aliases(model_path, pages):
    path, truth = pages["receipt"]
    proc = detect(
        "-i",
        path,
        "--model_dir",
        model_path.parent,
        "--box_thresh",
        "0.6",
        "--unclip_ratio",
        "1.5",
        "--limit_side_len",
        "960",
        "--limit_type",
        "max",
        "--max_side_limit",
        "4000",
        "--batch_size",
        "2",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["res"]["dt_polys"]) == len(truth)


def test_model_name_is_resolved_through_the_models_folder(model_path, pages):
    env = dict(os.environ, DETECTOR_MODELS=str(model_path.parent.parent))
    proc = detect("-i", pages["banner"][0], "--model_name", "PP-OCRv4_mobile_det", "--json", env=env)
    assert proc.returncode == 0, proc.stderr


def test_a_model_file_and_a_model_name_run_the_file_as_that_model(model_path, pages, tmp_path):
    onnx = pytest.importorskip("onnx")
    bare = onnx.load(str(model_path))
    del bare.metadata_props[:]  # a file from another stack (RapidOCR's): no settings of its own
    onnx.save(bare, str(tmp_path / "det.onnx"))
    image = pages["banner"][0]
    named = detect("-i", image, "--model", "PP-OCRv4_mobile_det", "--device", "cpu", "--json")
    assert named.returncode == 0, named.stderr
    # the three spellings are one option: the file and the name given either way round are both used
    # (the last one given was kept and the other dropped: the named model ran, or 'no model_name was given')
    for args in (
        ("--model", tmp_path / "det.onnx", "--model_name", "PP-OCRv4_mobile_det"),
        ("--model_name", "PP-OCRv4_mobile_det", "--model", tmp_path / "det.onnx"),
    ):
        proc = detect("-i", image, *args, "--device", "cpu", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["res"]["dt_polys"] == json.loads(named.stdout)["res"]["dt_polys"]
    gone = detect("-i", image, "--model", tmp_path / "gone.onnx", "--model_name", "PP-OCRv4_mobile_det")
    assert gone.returncode == 2 and "gone.onnx" in gone.stderr, gone.stderr
    for first, second in (("PP-OCRv4_mobile_det", "PP-OCRv6_tiny_det"), ("a.onnx", "b.onnx")):
        proc = detect("-i", image, "--model", first, "--model-name", second)
        assert proc.returncode == 2 and f"({first}, {second}): give one" in proc.stderr, proc.stderr


def test_one_file_of_many_pages_gets_the_summary_line(model_path, pages, tmp_path):
    from PIL import Image

    page = Image.open(pages["banner"][0])
    page.save(tmp_path / "two.tif", save_all=True, append_images=[page])
    proc = detect("-i", tmp_path / "two.tif", "--model", model_path, "--device", "cpu")
    assert proc.returncode == 0 and proc.stderr.strip().splitlines()[-1] == "detect: 2 results, 0 errors", proc.stderr


def test_folder_run_streams_all_and_summarizes(model_path, pages, tmp_path):
    folder = pages["page"][0].parent
    proc = detect("-i", folder, "--model", model_path, "--save-path", tmp_path, "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("*_res.json"))) == len(pages)
    assert f"{len(pages)} results, 0 errors" in proc.stderr


def test_some_inputs_failing_gives_exit_1_and_keeps_the_rest(model_path, pages, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    proc = detect(
        "-i", pages["banner"][0], "-i", bad, "-i", tmp_path / "missing.jpg", "--model", model_path, "--save-path", out
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("detect: error:")]
    assert len(errors) == 2 and any("broken.png" in e for e in errors) and any("missing.jpg" in e for e in errors)
    assert (out / "banner_res.json").is_file()
    assert "1 result, 2 errors" in proc.stderr and "Traceback" not in proc.stderr


def test_an_error_for_a_file_named_with_control_characters_stays_one_line(model_path, tmp_path):
    bad = tmp_path / "two\nlines \x1b[2J.png"  # a newline and a terminal escape in the name
    bad.write_bytes(b"\x89PNG truncated")
    proc = detect("-i", bad, "--model", model_path)
    assert proc.returncode == 1
    (error,) = [line for line in proc.stderr.splitlines() if "png" in line]
    assert error.startswith("detect: error: ") and "two\\nlines \\x1b[2J.png" in error
    assert "\x1b" not in proc.stderr


def test_a_reader_closing_stdout_ends_the_run_as_sigpipe_would(model_path, pages):
    # `detect … | head`: the reader is gone before the first result; no message, exit 128 + SIGPIPE
    args = [sys.executable, "-m", "detector", "--model", str(model_path), "--json"]
    for path, _ in pages.values():
        args += ["-i", str(path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    proc.stdout.close()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 141, err.decode()
    assert "error" not in err.decode() and "Traceback" not in err.decode()
    # started with stdout closed (`>&-`): the same, where one input exited 0 with its result lost and two
    # were an internal error (sys.stdout is None)
    for inputs in (args[-2:], args[-4:]):
        closed = subprocess.run(
            [*args[:6], *inputs],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            timeout=180,
            preexec_fn=lambda: os.close(1),
        )
        assert closed.returncode == 141 and "Traceback" not in closed.stderr.decode(), closed.stderr.decode()


def test_a_result_stopped_between_its_two_files_leaves_no_json_without_its_image(model_path, pages, tmp_path):
    from detector import TextDetection

    (result,) = TextDetection(model_dir=model_path, device="cpu").predict(pages["banner"][0])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    result.save_to_json = interrupted  # Ctrl-C after the first file of the pair
    with pytest.raises(KeyboardInterrupt):
        result.save_all(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["banner_res.png"]  # a JSON there means both were saved


def test_a_folder_on_two_workers_prints_what_the_serial_loop_prints(model_path, pages, tmp_path):
    # --cpu_threads 2: two folder workers of one thread each; --cpu_threads 1: the serial loop
    folder = tmp_path / "in"
    folder.mkdir()
    for index, (path, _) in enumerate(sorted(pages.values())):
        (folder / f"{index}_{path.name}").write_bytes(path.read_bytes())
    (folder / "2_broken.png").write_bytes(b"\x89PNG truncated")
    runs = {
        threads: detect("-i", folder, "--model", model_path, "--json", "--cpu_threads", threads) for threads in (1, 2)
    }
    assert runs[1].returncode == runs[2].returncode == 1
    assert runs[2].stdout == runs[1].stdout
    printed, text = [], runs[2].stdout.strip()
    while text:
        result, end = json.JSONDecoder().raw_decode(text)
        printed.append(result["res"]["input_path"])
        text = text[end:].strip()
    assert printed == sorted(str(path) for path in folder.iterdir() if path.name != "2_broken.png")
    for run in runs.values():
        errors = [line for line in run.stderr.splitlines() if line.startswith("detect: error:")]
        assert len(errors) == 1 and "2_broken.png" in errors[0]
        assert f"{len(pages)} results, 1 error" in run.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--thresh", "1.5"],
        ["--box-thresh", "0"],
        ["--unclip-ratio", "-1"],
        ["--limit-type", "middle"],
        ["--batch-size", "0"],
        ["--device", "tpu"],
        ["--limit-side-len", "abc"],
        ["--no-such-option"],
    ],
)
def test_invalid_option_values_are_usage_errors(model_path, pages, args):
    proc = detect("-i", pages["banner"][0], "--model", model_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip()


def test_a_threshold_of_one_lets_nothing_through_as_in_paddleocr(model_path, pages):
    for option in ("--thresh", "--box-thresh"):
        proc = detect("-i", pages["banner"][0], "--model", model_path, option, "1")
        assert proc.returncode == 0, proc.stderr
        assert "'dt_polys': array([], dtype=int16), 'dt_scores': []" in proc.stdout


def test_a_result_is_never_written_over_an_input(model_path, pages, tmp_path):
    """--save_path in.png replaced the input with its drawing (exit 0); so did a folder's p_res.png beside
    p.png when the folder was its own --save_path."""
    import hashlib
    import shutil

    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("in.png", "p.png", "p_res.png"):
        shutil.copy(pages["banner"][0], folder / name)
    digest = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}
    proc = detect("-i", folder / "in.png", "--model", model_path, "--save-path", folder / "in.png")
    assert proc.returncode == 2 and "is the input itself" in proc.stderr
    proc = detect("-i", folder, "--model", model_path, "--save-path", folder)
    assert proc.returncode == 1 and "p.png: its result would be written over the input" in proc.stderr
    assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in digest} == digest
    assert (folder / "in_res.json").is_file()  # the others were saved


def test_save_formats_without_a_writer_are_refused_before_running_and_sun_raster_is_written(
    model_path, pages, tmp_path
):
    """--save_path out.svg ran the model, then failed (exit 1); a .ras input's drawing failed in Pillow."""
    import cv2

    proc = detect("-i", pages["banner"][0], "--model", model_path, "--save-path", tmp_path / "out.svg")
    assert proc.returncode == 2 and "no writer for .svg images here" in proc.stderr and proc.stdout == ""
    raster = tmp_path / "scan.ras"
    cv2.imwrite(str(raster), cv2.imread(str(pages["banner"][0])))
    proc = detect("-i", raster, "--model", model_path, "--save-path", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(tmp_path / "out" / "scan_res.ras")) is not None


def test_missing_input_option_is_a_usage_error():
    proc = detect()
    assert proc.returncode == 2 and "-i" in proc.stderr
    # `detect image.png` (inputs are -i options, as in PaddleOCR's CLI): said how, for detect and detect batch
    proc = detect("image.png")
    assert proc.returncode == 2 and "Give each input with -i: detect -i image.png" in proc.stderr
    proc = detect("batch", "-o", "out")
    assert proc.returncode == 2 and "Give each input with -i: detect batch -i image.png" in proc.stderr


def test_version_and_python_m():
    from detector import __version__

    proc = detect("--version")
    assert proc.returncode == 0 and proc.stdout == f"detect {__version__}\n"
    # python -m detector runs the command; importing detector.__main__ (a tool walking the package) does not
    module = subprocess.run(
        [sys.executable, "-m", "detector", "--version"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert module.returncode == 0 and module.stdout == proc.stdout
    imported = subprocess.run(
        [sys.executable, "-c", "import detector.__main__; print('imported')"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert imported.returncode == 0 and imported.stdout == "imported\n", imported.stderr


def test_unknown_model_is_one_clear_line(pages, tmp_path):
    env = dict(os.environ, DETECTOR_MODELS=str(tmp_path))
    proc = detect("-i", pages["banner"][0], "--model", "PP-OCRv9_det", env=env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "make export MODEL=PP-OCRv9_det" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_tracebacks(pages, tmp_path):
    env = dict(os.environ, DETECTOR_MODELS=str(tmp_path))
    proc = detect("-i", pages["banner"][0], "--model", "PP-OCRv9_det", "--debug", env=env)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_installed_entry_point_runs(model_path, pages):
    script = Path(sys.executable).with_name("detect")
    if not script.exists():
        pytest.skip("detect script not installed in this environment")
    proc = subprocess.run(
        [str(script), "-i", str(pages["banner"][0]), "--model", str(model_path), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["res"]["input_path"].endswith("banner.png")


def test_recursive_glob_and_pdf_inputs(model_path, pages, tmp_path):
    import cv2
    from PIL import Image

    image = cv2.imread(str(pages["banner"][0]))
    (tmp_path / "in" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "top.png"), image)
    cv2.imwrite(str(tmp_path / "in" / "sub" / "deep.png"), image)
    frame = Image.fromarray(image[:, :, ::-1])
    frame.save(tmp_path / "in" / "sub" / "doc.pdf", save_all=True, append_images=[frame])
    out = tmp_path / "out"
    flat = detect("-i", tmp_path / "in", "-R", "--model", model_path, "--save-path", out / "flat")
    assert flat.returncode == 0 and sorted(p.name for p in (out / "flat").glob("*.json")) == ["top_res.json"]
    # subfolders by default, as PaddleOCR reads a folder
    deep = detect("-i", tmp_path / "in", "--model", model_path, "--save-path", out / "deep", "--pdf-dpi", "72")
    assert deep.returncode == 0, deep.stderr
    assert sorted(p.name for p in (out / "deep").glob("*.json")) == [
        "deep_res.json",
        "doc_0_res.json",
        "doc_1_res.json",
        "top_res.json",
    ]
    globbed = detect("-i", str(tmp_path / "in" / "**" / "*.png"), "--model", model_path, "--json")
    assert globbed.returncode == 0 and globbed.stdout.count('"input_path"') == 2


def test_too_large_inputs_fail_alone(model_path, pages):
    proc = detect("-i", pages["banner"][0], "--model", model_path, "--max-pixels", "1000")
    assert proc.returncode == 1 and "--max-pixels" in proc.stderr and "Traceback" not in proc.stderr
    usage = detect("-i", pages["banner"][0], "--model", model_path, "--max-pixels", "0")
    assert usage.returncode == 2


def test_list_models_shows_known_names_and_what_is_exported(model_path, tmp_path):
    import shutil

    (tmp_path / "MyCustom_det").mkdir()
    shutil.copy(model_path, tmp_path / "MyCustom_det" / "inference.onnx")
    env = dict(os.environ, DETECTOR_MODELS=str(tmp_path))
    proc = detect("--list-models", env=env)
    assert proc.returncode == 0, proc.stderr
    for name in (
        "PP-OCRv4_server_det",
        "PP-OCRv4_mobile_det",
        "PP-OCRv3_server_det",
        "PP-OCRv3_mobile_det",
        "PP-OCRv5_server_det",
        "PP-OCRv5_mobile_det",
        "MyCustom_det",
    ):
        assert name in proc.stdout
    assert str(tmp_path / "MyCustom_det" / "inference.onnx") in proc.stdout
    assert "not exported (make export MODEL=PP-OCRv4_server_det)" in proc.stdout


def test_urls_through_the_cli(model_path, pages, tmp_path):
    import http.server
    import threading

    body = pages["banner"][0].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] not in ("/banner.png", "/scan"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        proc = detect(
            "-i", f"{base}/banner.png", "-i", f"{base}/gone.png", "--model", model_path, "--save-path", tmp_path
        )
        # saved under the URL path's file name, without its query (a "?" is no file name on Windows)
        queried = detect("-i", f"{base}/scan?id=3#top", "--model", model_path, "--save-path", tmp_path / "q")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert proc.returncode == 1
    assert (tmp_path / "banner_res.json").is_file()
    assert queried.returncode == 0 and sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "scan_res.json",
        "scan_res.png",
    ]
    # the message names the input: it is not prefixed with it again ('x: x answered …')
    assert f"detect: error: {base}/gone.png answered HTTP 404" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_image_files_fail_alone_and_bad_models_are_usage_errors(model_path, pages, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("plain text")
    proc = detect("-i", notes, "-i", pages["banner"][0], "--model", model_path)
    assert proc.returncode == 1 and "notes.txt is not an image" in proc.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    proc = detect("-i", pages["banner"][0], "--model", junk)
    assert proc.returncode == 2 and "onnxruntime cannot load" in proc.stderr and "Traceback" not in proc.stderr


def test_unusable_gpu_is_a_usage_error(model_path, pages):
    from detector.cuda_provider import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("a usable GPU is present")
    proc = detect("-i", pages["banner"][0], "--model", model_path, "--device", "gpu:0")
    assert proc.returncode == 2
    assert "device gpu:0 is not usable" in proc.stderr and "--device cpu" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no onnxruntime library-load spam


def test_help_reads_detect_options_and_lists_subcommands(monkeypatch):
    from click.testing import CliRunner

    from detector import cli as cli_module

    for args in (["--help"], ["-h"], ["predict", "--help"], ["text_detection", "--help"]):
        out = CliRunner().invoke(cli_module.cli, args, prog_name="detect").output
        assert out.startswith("Usage: detect [OPTIONS]\n") and "Usage: detect predict" not in out, out
    monkeypatch.setitem(cli_module.SUBCOMMANDS, "eval", "detector.cli:cli")
    out = " ".join(CliRunner().invoke(cli_module.cli, ["--help"], prog_name="detect").output.split())
    subcommands = out.split("Subcommands: ", 1)[1]
    assert "detect eval" in subcommands and "`detect predict` and PaddleOCR's `detect text_detection` are" in out
    bad = CliRunner().invoke(cli_module.cli, ["--thresh", "5", "-i", "x.png"], prog_name="detect")
    assert bad.exit_code == 2 and ("Try 'detect -h'" in bad.output or "Try 'detect --help'" in bad.output)


def test_a_setting_of_0_is_refused_saying_what_paddleocrs_0_meant():
    from click.testing import CliRunner

    from detector import cli as cli_module

    for command in (["-i", "x.png"], ["eval", "--labels", "x.txt"]):
        for option in ("--thresh", "--box_thresh", "--unclip-ratio", "--limit_side_len"):
            done = CliRunner().invoke(cli_module.cli, [*command, option, "0"], prog_name="detect")
            assert done.exit_code == 2 and "PaddleOCR takes 0 as the model's default" in done.output, done.output
    other = CliRunner().invoke(cli_module.cli, ["-i", "x.png", "--thresh", "2"], prog_name="detect")
    assert other.exit_code == 2 and "0<x<=1" in other.output and "PaddleOCR" not in other.output


def test_paddleocrs_subcommand_name_runs_detection(model_path, pages):
    """`paddleocr text_detection -i x.png` with `paddleocr` replaced by `detect` is `detect -i x.png`."""
    image = pages["banner"][0]
    plain = detect("-i", image, "--model", model_path, "--device", "cpu", "--json")
    migrated = detect("text_detection", "-i", image, "--model", model_path, "--device", "cpu", "--json")
    assert plain.returncode == migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["res"]["dt_polys"] == json.loads(plain.stdout)["res"]["dt_polys"]


def test_python_dash_m_detector_runs_the_cli(model_path, pages):
    proc = subprocess.run(
        [sys.executable, "-m", "detector", "-i", str(pages["banner"][0]), "--model", str(model_path), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["res"]["input_path"].endswith("banner.png")
    usage = subprocess.run([sys.executable, "-m", "detector", "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and usage.stdout.startswith("Usage: detect [OPTIONS]")


def run_in_process(*args):
    """detect in this process (click's CliRunner): for tests that run it many times."""
    from click.testing import CliRunner

    from detector.cli import cli as detect_cli

    return CliRunner().invoke(detect_cli, [str(arg) for arg in args], prog_name="detect")


def test_a_model_name_is_never_read_as_a_path(model_path, pages, tmp_path, monkeypatch):
    # A Paddle model folder in the working directory carrying the model's name must not be tried.
    (tmp_path / "PP-OCRv4_mobile_det").mkdir()
    (tmp_path / "PP-OCRv4_mobile_det" / "inference.pdmodel").write_bytes(b"paddle")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "inference.onnx").write_bytes(model_path.read_bytes())
    monkeypatch.setenv("DETECTOR_MODELS", str(model_path.parent.parent))
    monkeypatch.chdir(tmp_path)
    banner = pages["banner"][0]
    by_name = run_in_process("-i", banner, "--model_name", "PP-OCRv4_mobile_det", "--device", "cpu", "--json")
    assert by_name.exit_code == 0, by_name.output
    by_file = run_in_process("-i", banner, "--model", "local/inference.onnx", "--device", "cpu", "--json")
    assert by_file.exit_code == 0, by_file.output  # ends in .onnx: the file
    folder = run_in_process("-i", banner, "--model", tmp_path / "local", "--device", "cpu")
    assert folder.exit_code == 2 and "pass it as model_dir" in folder.output and "Traceback" not in folder.output


def test_save_path_naming_a_file(model_path, pages, tmp_path):
    banner = pages["banner"][0]
    common = ["--model", model_path, "--device", "cpu"]
    for _ in range(2):  # the second run overwrites, as PaddleOCR's save_to_json does
        proc = run_in_process("-i", banner, *common, "--save_path", tmp_path / "out.json")
        assert proc.exit_code == 0, proc.output
    assert json.loads((tmp_path / "out.json").read_text())["input_path"] == str(banner)
    proc = run_in_process("-i", banner, *common, "--save_path", tmp_path / "boxes.jpg")
    assert proc.exit_code == 0 and (tmp_path / "boxes.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.jpg", "out.json"]
    # several inputs, a folder of several images, or several pages into one file: refused, nothing written
    from PIL import Image

    frame = Image.open(banner).convert("RGB")
    frame.save(tmp_path / "two.pdf", save_all=True, append_images=[frame])
    for inputs in (["-i", banner, "-i", banner], ["-i", banner.parent], ["-i", tmp_path / "two.pdf"]):
        proc = run_in_process(*inputs, *common, "--save_path", tmp_path / "many.json")
        assert proc.exit_code == 2 and "names one file" in proc.output and "Traceback" not in proc.output
        assert not (tmp_path / "many.json").exists()
    # a folder path that exists as a file is a usage error, not "File exists" half-way
    proc = run_in_process("-i", banner, *common, "--save_path", tmp_path / "two.pdf")
    assert proc.exit_code == 2 and "is a file" in proc.output
    # a folder named like a file (or a path with a trailing separator) is a folder: results go inside
    (tmp_path / "folder.json").mkdir()
    for folder in (tmp_path / "folder.json", f"{tmp_path / 'new.json'}/"):
        proc = run_in_process("-i", banner, *common, "--save_path", folder)
        assert proc.exit_code == 0, proc.output
        assert sorted(p.name for p in Path(folder).iterdir()) == ["banner_res.json", "banner_res.png"]


def test_package_warnings_read_like_the_command_s_own(model_path, pages):
    proc = detect("-i", pages["banner"][0], "--model", model_path, "--device", "cpu", "--max-side-limit", "100")
    assert proc.returncode == 0, proc.stderr
    # the warning names the image it is about (a folder's file, a PDF's page)
    assert f"detect: warning: {pages['banner'][0]}: resized image" in proc.stderr, proc.stderr
    assert "exceeds max_side_limit 100" in proc.stderr


def test_missing_onnxruntime_is_one_line_naming_the_extras(pages, tmp_path):
    program = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from detector.cli import main\n"
        f"main(['-i', {str(pages['banner'][0])!r}])"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 2
    assert (
        proc.stderr.count("\n") == 1 and "ppocr-det-onnx[cpu]" in proc.stderr and "ppocr-det-onnx[gpu]" in proc.stderr
    )
    # a pip install without either extra: the same line before any model is looked up or downloaded (a
    # download was fetched, then refused as "unreadable", on every run)
    program = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import detector.hub; detector.hub.IN_CHECKOUT = False\n"
        "from detector.cli import main\n"
        f"main(['-i', {str(pages['banner'][0])!r}, '--model', 'PP-OCRv6_tiny_det'])"
    )
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "DETECTOR_MODELS": str(tmp_path / "none"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: a download would fail with another message
    }
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "ppocr-det-onnx[cpu]" in proc.stderr, proc.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "command, module, extra",
    [("batch", "detector.distributed", "ray"), ("serve", "detector.serve.app", "serve")],
)
def test_a_subcommand_without_its_extra_says_which_to_install(command, module, extra, monkeypatch, tmp_path):
    import importlib

    parent, _, name = module.rpartition(".")
    monkeypatch.delattr(importlib.import_module(parent), name, raising=False)  # imported by an earlier test
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ModuleNotFoundError
    args = [command, "--model", tmp_path / "none.onnx"] + (
        ["-i", tmp_path, "-o", tmp_path / "out"] if command == "batch" else []
    )
    result = run_in_process(*args)
    assert result.exit_code == 2, result.output
    # the module named is the first one missing: ours here, a third-party one where the extra is not installed
    assert f"`detect {command}` needs the [{extra}] extra (" in result.output and " is missing)" in result.output
    assert f"pip install 'ppocr-det-onnx[{extra}]'" in result.output


def test_results_of_inputs_sharing_a_name_are_not_replaced_silently(model_path, pages, tmp_path):
    import shutil

    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        shutil.copy(pages["banner"][0], tmp_path / "in" / folder / "scan.png")
    out = tmp_path / "out"
    proc = run_in_process("-i", tmp_path / "in", "--model", model_path, "--device", "cpu", "--save_path", out)
    assert proc.exit_code == 1, proc.output  # PaddleOCR replaces the first (and a warning left exit 0): data lost
    assert sorted(p.name for p in out.iterdir()) == ["scan_res.json", "scan_res.png"]  # PaddleOCR's names
    first = json.loads((out / "scan_res.json").read_text())
    assert first["input_path"].endswith(os.path.join("a", "scan.png"))  # the first result stays
    (refused,) = [line for line in proc.output.splitlines() if line.startswith("detect: error:")]
    assert refused.startswith(f"detect: error: {tmp_path / 'in' / 'b' / 'scan.png'}: its result would replace ")
    assert "(the same name): not saved" in refused and "detect: 1 result, 1 error" in proc.output


def test_a_file_name_that_is_not_utf8_is_saved_and_printed_as_valid_json(model_path, pages, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    undecodable = os.fsdecode(b"scan\xff\xfe")  # bytes no encoding names: Python reads them as surrogates
    shutil.copy(pages["banner"][0], folder / f"{undecodable}.png")
    shutil.copy(pages["banner"][0], folder / "zz.png")  # after it: the run goes on
    proc = subprocess.run(
        [*DETECT, "-i", str(folder), "--model", str(model_path), "--save-path", str(tmp_path / "out"), "--json"],
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    first, second = proc.stdout.decode("utf-8").replace("}\n{", "}\n\n{").split("\n\n")  # valid UTF-8 throughout
    assert os.fsencode(json.loads(first)["res"]["input_path"]).endswith(b"scan\xff\xfe.png")
    assert json.loads(second)["res"]["input_path"].endswith("zz.png")
    saved = json.loads((tmp_path / "out" / f"{undecodable}_res.json").read_bytes().decode("utf-8"))
    assert saved["input_path"] == json.loads(first)["res"]["input_path"]
    assert (tmp_path / "out" / f"{undecodable}_res.png").is_file()


@pytest.mark.parametrize(
    ("signal_name", "code", "said"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")]
)
def test_a_signal_stops_a_folder_run_with_its_code_and_leaves_no_temp_files(
    model_path, pages, tmp_path, signal_name, code, said
):
    import signal
    import time

    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(400):
        shutil.copy(pages["banner"][0], folder / f"page{index:03d}.png")
    out = tmp_path / "out"
    run = subprocess.Popen(
        [*DETECT, "-i", str(folder), "--model", str(model_path), "--save-path", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        start_new_session=True,  # its own process group, signalled as a terminal signals the foreground job
    )
    while not (out.is_dir() and any(out.glob("*_res.json"))):
        time.sleep(0.01)
    os.killpg(run.pid, getattr(signal, signal_name))
    stderr = run.communicate(timeout=60)[1].decode()
    # Ctrl-C: not click's "Aborted!" and exit 1; SIGTERM: not Python's default death, which left temp files
    assert run.returncode == code and stderr.rstrip().endswith(f"detect: {said}"), stderr
    assert "Traceback" not in stderr and not list(out.glob(".*.tmp"))
    assert 0 < len(list(out.glob("*_res.json"))) < 400


def test_inputs_a_shell_expanded_without_their_own_i_get_a_hint(pages):
    proc = detect("-i", pages["banner"][0], pages["receipt"][0])  # what `detect -i *.png` becomes
    assert proc.returncode == 2 and "give each input its own -i, or quote a glob pattern" in proc.stderr


def test_a_name_stdout_cannot_encode_is_escaped_not_fatal(model_path, pages, tmp_path):
    # a redirected stdout on Windows is cp1252: a Chinese file name raised UnicodeEncodeError and stopped the run
    import json
    import os
    import shutil

    shutil.copy(pages["banner"][0], tmp_path / "收据.png")
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    proc = subprocess.run(
        [*DETECT, "-i", str(tmp_path / "收据.png"), "--model", str(model_path), "--json"],
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    # the escapes are JSON's own: a reader gets the name back
    assert json.loads(proc.stdout.decode("cp1252"))["res"]["input_path"] == str(tmp_path / "收据.png")


@pytest.mark.parametrize(
    ("argv", "said"), [(["-i", "a.png"], "detect"), (["eval", "--labels", "l.txt"], "detect eval")]
)
def test_a_signal_s_line_names_the_subcommand(monkeypatch, capsys, argv, said):
    # `detect eval` stopped by Ctrl-C said "detect: interrupted", where its errors say "detect eval: error:"
    import detector.cli as cli_module
    from detector.errors import Terminated

    for raised, code, word in ((KeyboardInterrupt(), 130, "interrupted"), (Terminated(), 143, "terminated")):

        def stopped(*args, raised=raised, **kwargs):
            raise raised

        monkeypatch.setattr(cli_module.cli, "main", stopped)
        with pytest.raises(SystemExit) as exit_info:
            cli_module.main(argv)
        assert exit_info.value.code == code and capsys.readouterr().err == f"{said}: {word}\n"


@pytest.mark.parametrize(
    ("stop", "code", "said"), [("KeyboardInterrupt", 130, "interrupted"), ("Terminated", 143, "terminated")]
)
def test_a_signal_while_onnxruntime_is_imported_ends_as_the_signal(
    capsys, model_path, onnxruntime_import_stopped_by, stop, code, said
):
    # a SIGTERM 0.4 s into detect read "onnxruntime is installed but cannot be imported", exit 2
    import detector.cli as cli_module
    from detector.errors import Terminated

    onnxruntime_import_stopped_by({"KeyboardInterrupt": KeyboardInterrupt, "Terminated": Terminated}[stop])
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main(["-i", "never-read.png", "--model", str(model_path), "--device", "cpu"])
    # (click starts a new line before a Ctrl-C's, as anywhere in detect: the terminal's ^C stands on the old one)
    assert (exit_info.value.code, capsys.readouterr().err.lstrip("\n")) == (code, f"detect: {said}\n")


@pytest.mark.parametrize(("name", "code", "said"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_while_python_shuts_down_after_the_run_ends_as_the_signal(monkeypatch, capsys, name, code, said):
    # after main, Python's shutdown (threads joined, the model freed) took 1-11 ms, where the handler's exception
    # was printed as "Exception ignored in: <module 'threading'>" with a traceback, exit 0. The handler in place
    # once the program's main has run is called here as the signal would call it, its os._exit faked.
    import signal

    import detector.cli as cli_module

    class Exited(Exception):
        pass

    def exit_now(code):
        raise Exited(code)

    def ended_by(signum):
        try:
            signal.getsignal(signum)(signum, None)
        except Exited as exited:
            return exited.args[0]
        except BaseException as raised:  # the old handlers' Terminated / KeyboardInterrupt, not pytest's to see
            return type(raised).__name__

    signum = getattr(signal, name)
    handlers = {each: signal.getsignal(each) for each in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setattr(sys, "argv", ["detect", "--help"])  # main() with no argv: the program's own run
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran pytest
        with pytest.raises(SystemExit):
            cli_module.main()
        capsys.readouterr()
        assert (ended_by(signum), capsys.readouterr().err) == (code, f"detect: {said}\n")
    finally:
        for each, handler in handlers.items():
            signal.signal(each, handler)


def test_a_signal_s_handler_is_left_as_it_is_where_main_runs_inside_another_program(monkeypatch):
    # a test, a script calling main(argv): its process goes on, so its Ctrl-C raises as before
    import signal

    import detector.cli as cli_module

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        cli_module.main(["--help"])
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.skipif(os.name != "posix", reason="a pseudo-terminal for stderr")
def test_one_pdf_shows_a_progress_bar_naming_the_page_it_has_reached(model_path, pages, tmp_path):
    """One PDF of many pages is minutes of work: stderr on a terminal gets the bar (it had none: one input)."""
    import pty

    import cv2
    from PIL import Image

    frame = Image.fromarray(cv2.imread(str(pages["banner"][0]))[:, :, ::-1])
    name = "a-scanned-book-with-a-long-name-" + "x" * 40 + ".pdf"
    frame.save(tmp_path / name, save_all=True, append_images=[frame, frame])
    terminal, its_end = pty.openpty()
    run = subprocess.Popen(
        [*DETECT, "-i", str(tmp_path / name), "--model", str(model_path), "--pdf-dpi", "72"],
        stdout=subprocess.DEVNULL,  # results go to a file: stderr shows the progress
        stderr=its_end,
        cwd=REPO_ROOT,
    )
    os.close(its_end)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the other end closed (Linux)
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert run.wait(timeout=180) == 0
    text = shown.decode()
    assert "detecting" in text and "100%" in text
    # each page as it is done, the name cut to its end so that the line does not wrap
    assert [f"...{'x' * 25}.pdf page {index}" in text for index in range(3)] == [True] * 3
    assert "a-scanned-book" not in text
    assert "detect: 3 results, 0 errors" in text
    # a URL's name there is shown without its secrets, as error lines show it
    from detector.detect_io import short_name

    assert short_name("https://x.example/scans/book.pdf?X-Amz-Signature=0ddba11") == "book.pdf?X-Amz-Signature=..."


def test_a_folder_that_cannot_be_read_is_an_error_line_and_the_rest_still_runs(
    model_path, pages, tmp_path, monkeypatch
):
    """An unreadable subfolder was skipped without a word (its images missing, exit 0); a subfolder removed
    while the walk ran, or one that could be listed but not searched, ended the whole run (no result at all)."""
    import os as os_module

    import cv2

    banner = cv2.imread(str(pages["banner"][0]))
    for name in ("in/a.png", "in/locked/b.png", "in/gone/c.png", "top/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), banner)
    real_scandir = os_module.scandir

    def scandir(path):  # as an unprivileged user meets them (the tests run as root, whom modes do not stop)
        if str(path).endswith("locked") or str(path).endswith("top"):
            raise PermissionError(13, "Permission denied", str(path))
        if str(path).endswith("gone"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)

    monkeypatch.setattr("detector.folder_walk.os.scandir", scandir)
    run = run_in_process("-i", tmp_path / "in", "-i", tmp_path / "top", "--model", model_path, "--device", "cpu")
    assert run.exit_code == 1, run.output
    said = [line for line in run.output.splitlines() if line.startswith("detect: error: ")]
    assert said == [  # the folder given is refused as the inputs are listed; the subfolder in its turn
        f"detect: error: {tmp_path / 'top'}: the folder cannot be read (Permission denied)",
        f"detect: error: {tmp_path / 'in' / 'locked'}: cannot be read (Permission denied)",
    ]
    assert run.output.count("'input_path':") == 1 and "a.png" in run.output  # the readable image ran
    assert "detect: 1 result, 2 errors" in run.output


@pytest.mark.parametrize("save_into", ["the input folder", "a folder inside it"])
def test_a_rerun_saving_into_the_input_folder_does_not_read_its_earlier_results(model_path, pages, tmp_path, save_into):
    """A batch job retried: its earlier drawings were read as inputs (a_res_res.png) and the real inputs
    refused ('its result would be written over the input a_res.png'), exit 1, one more level per rerun."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(pages["banner"][0], folder / "a.png")
    save = folder if save_into == "the input folder" else folder / "out"
    args = ("-i", folder, "--save-path", save, "--model", model_path, "--device", "cpu")
    first = run_in_process(*args)
    assert first.exit_code == 0, first.output
    again = run_in_process(*args)
    assert again.exit_code == 0, again.output
    assert "1 file in --save_path" in again.output and "left out" in again.output
    assert sorted(p.name for p in save.iterdir() if p.name.startswith("a_")) == ["a_res.json", "a_res.png"]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_json_to_a_stdout_that_is_not_utf8_stays_json(model_path, pages, tmp_path, encoding):
    """Windows' redirected stdout is cp1252: the stream's own escapes (\\U0001f600, \\xNN) are no JSON (jq failed)."""
    import shutil

    name = tmp_path / "scan_é中😀.png"
    shutil.copy(pages["banner"][0], name)
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    proc = subprocess.run(
        [*DETECT, "-i", str(name), "--model", str(model_path), "--device", "cpu", "--json"],
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.decode(encoding))["res"]["input_path"] == str(name)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_stderr_that_cannot_be_written_does_not_stop_the_run(model_path, pages, tmp_path):
    """stderr on a full disk: the progress label's failed write ended a folder run that had saved nothing."""
    import shutil

    for name in ("a.png", "b.png"):
        shutil.copy(pages["banner"][0], tmp_path / name)
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [*DETECT, "-i", str(tmp_path), "--save-path", str(tmp_path / "out"), "--model", str(model_path)],
            stdout=subprocess.DEVNULL,
            stderr=full,
            cwd=REPO_ROOT,
            timeout=180,
        )
    assert proc.returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_res.json",
        "a_res.png",
        "b_res.json",
        "b_res.png",
    ]


def test_a_page_that_cannot_be_saved_is_named_with_its_page(model_path, pages, tmp_path):
    """Both pages' lines read the same (the file only), so the page that failed could not be told."""
    from PIL import Image

    page = Image.open(pages["banner"][0]).convert("RGB")
    tiff = tmp_path / "book.tif"
    page.save(tiff, save_all=True, append_images=[page])
    (tmp_path / "a file").write_bytes(b"")
    run = run_in_process("-i", tiff, "--save-path", tmp_path / "a file" / "out", "--model", model_path)
    assert run.exit_code == 1, run.output
    failed = [line.split(": ")[2] for line in run.output.splitlines() if line.startswith("detect: error:")]
    assert failed == [f"{tiff} page 0", f"{tiff} page 1"], run.output


def test_a_result_is_printed_once_its_files_are_written(model_path, pages, tmp_path, monkeypatch):
    """A run stopped while a result was being saved printed it all the same: stdout listed one result more
    than was saved (SIGTERM; a KeyboardInterrupt in the second save stands in for it here)."""
    import shutil

    from detector.result import DetectionResult

    for name in ("a.png", "b.png"):
        shutil.copy(pages["banner"][0], tmp_path / name)
    real_save_all = DetectionResult.save_all
    saved = []

    def save_all(self, save_path):
        if saved:
            raise KeyboardInterrupt
        saved.append(self["input_path"])
        return real_save_all(self, save_path)

    monkeypatch.setattr(DetectionResult, "save_all", save_all)
    run = run_in_process("-i", tmp_path / "a.png", "-i", tmp_path / "b.png", "--save-path", tmp_path / "out", "--json")
    assert run.output.count('"input_path"') == 1 and "a.png" in run.output and "b.png" not in run.output


def test_the_same_file_named_twice_is_no_name_clash_and_a_named_input_in_save_path_is_read(model_path, pages, tmp_path):
    import shutil

    (tmp_path / "in").mkdir()
    shutil.copy(pages["banner"][0], tmp_path / "in" / "a.png")
    model = ("--model", model_path, "--device", "cpu")
    twice = run_in_process(
        "-i", tmp_path / "in" / "a.png", "-i", f"{tmp_path}/in/./a.png", "--save-path", tmp_path / "o", *model
    )
    assert twice.exit_code == 0, twice.output  # it was 'would replace … saved for in/a.png', exit 1
    # a drawing of an earlier run named as an input is read: only walks and globs leave such files out
    earlier = tmp_path / "o" / "a_res.png"
    named = run_in_process("-i", earlier, "--save-path", tmp_path / "o", "--json", *model)
    assert named.exit_code == 0 and '"input_path"' in named.output and "left out" not in named.output, named.output
    # so is one whose name holds a glob's characters: it was taken for a pattern and left out, nothing run, exit 0
    shutil.copy(earlier, tmp_path / "o" / "scan[1]_res.png")
    shutil.copy(earlier.with_suffix(".json"), tmp_path / "o" / "scan[1]_res.json")
    bracketed_name = tmp_path / "o" / "scan[1]_res.png"
    bracketed = run_in_process("-i", bracketed_name, "--save-path", tmp_path / "o", "--json", *model)
    assert bracketed.exit_code == 0 and '"input_path"' in bracketed.output, bracketed.output
    assert "left out" not in bracketed.output


def test_a_stderr_whose_write_returns_nothing_is_no_internal_error(model_path, pages, monkeypatch, capsys):
    """Many file-like objects' write returns None: int(None) made a working run an internal error."""
    from detector import cli as cli_module

    class Quiet:  # a text stream of the caller's, whose write returns None
        encoding = "utf-8"

        def __init__(self):
            self.written = []

        def write(self, text):
            if not isinstance(text, str):
                raise TypeError("a text stream")
            self.written.append(text)

        def flush(self):
            pass

    quiet = Quiet()
    monkeypatch.setattr(sys, "stderr", quiet)
    with pytest.raises(SystemExit) as done:
        cli_module.main(["-i", str(pages["banner"][0]), "-i", str(pages["page"][0]), "--model", str(model_path)])
    assert done.value.code == 0 and sys.stderr is quiet  # given back as it was
    assert any("2 results, 0 errors" in text for text in quiet.written)
