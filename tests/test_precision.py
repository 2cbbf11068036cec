"""Precision variants: `python -m tools.export --precision int8|fp16` from an exported fp32 model, loading
them with TextDetection(precision=…) / detect --precision, their boxes against fp32, and the errors."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from detector import TextDetection
from detector.cpu_features import cpu_flags, int8_sums_saturate, int8_without_vnni
from detector.errors import ExportError, InvalidParameterError, ModelNotFoundError
from detector.precision import METADATA_PRECISION_KEY, variant_path
from detector.settings import METADATA_SETTINGS_KEY
from tests.rendered import box_iou, polygon_bounds, write_rendered_pages
from tools.export.int8_rules import INT8_RULES
from tools.export.pipeline import main as export_main

REPO_ROOT = Path(__file__).resolve().parent.parent
# Tolerance against fp32 on the rendered pages: the same number of boxes, and each fp32 box has a
# variant box over it with IoU at least this (fp16: the maps agree to ~1e-3, boxes to a pixel;
# int8: the map moves by a few quantization steps, a box edge by a few pixels: on the receipt's 22-pixel lines
# PP-OCRv6_tiny_det's int8 boxes (4 calibration images) grow by 2-4 pixels a side where its fp32 boxes are 29-32
# pixels tall, IoU 0.81 on an AVX2-only CPU (AMD EPYC, no VNNI: onnxruntime's uint8 kernels there add pairs of
# products in saturating 16-bit sums) and 0.85 or more on AVX-512 VNNI; a broken rewrite or scale moves boxes
# far more, or changes their number).
MIN_BOX_IOU = {"int8": 0.75 if int8_sums_saturate(cpu_flags()) else 0.85}


# The rule `make export`'s auto keeps for this model on its 80 validation images (README: int8 0.55x fp32 there,
# "stem" 0.71x). The fixture names it: auto's choice on the 2 images a test can afford is a coin toss between
# rules, and "stem" moves a box of the rendered page to IoU 0.84 since affine_into_pointwise_conv (the
# record-level behaviour of auto is test_auto_rule_records_every_trial_and_keeps_one).
INT8_RULE_OF_DEFAULT_MODEL = "input"


def variant_export(fp32: Path, precision: str) -> list[str]:
    """tools.export's arguments for the default model's ``precision`` variant beside ``fp32``."""
    return ["--model", "PP-OCRv4_mobile_det", "--output", str(fp32), "--precision", precision]


@pytest.fixture(scope="module")
def model_dir(default_onnx, tmp_path_factory) -> Path:
    """A copy of the default model with its int8 and fp16 variants made the way `make export` makes them."""
    folder = tmp_path_factory.mktemp("variants") / "PP-OCRv4_mobile_det"
    folder.mkdir()
    shutil.copy(default_onnx, folder / "inference.onnx")
    for precision in ("int8", "fp16"):
        rule = ["--int8-float", INT8_RULE_OF_DEFAULT_MODEL] if precision == "int8" else []
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            code = export_main(
                [
                    *variant_export(folder / "inference.onnx", precision),
                    "--eval-images",
                    "2",
                    "--calibration-images",
                    "16",  # the default: with 4 or 8, "input" moved a box to IoU 0.83
                    *rule,
                ]
            )
        assert code == 0
        EXPORT_STDOUT[precision] = stdout.getvalue()
    return folder


EXPORT_STDOUT: dict[str, str] = {}  # what each variant's export printed on stdout (model_dir)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_the_export_prints_its_result_line_alone_on_stdout(model_dir, precision):
    # onnxruntime.quantization's print()s ("Collecting tensor data…", "Number of tensors : 306") were mixed in
    lines = EXPORT_STDOUT[precision].splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"exported PP-OCRv4_mobile_det {precision} -> "), lines


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return write_rendered_pages(tmp_path_factory.mktemp("pages"))


def metadata(path: Path) -> dict:
    return {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_variant_is_written_beside_fp32_with_its_record(model_dir, precision):
    path = model_dir / f"inference.{precision}.onnx"
    assert path.is_file()
    fp32_meta, meta = metadata(model_dir / "inference.onnx"), metadata(path)
    assert meta[METADATA_SETTINGS_KEY] == fp32_meta[METADATA_SETTINGS_KEY]  # the model's settings travel along
    record = json.loads(meta[METADATA_PRECISION_KEY])
    assert record["precision"] == precision
    assert record["accuracy"]["images"] == 2
    assert -1.0 <= record["accuracy"]["hmean_delta"] <= 1.0
    # the maps, compared pixel by pixel on the same images (the measure for untrained networks)
    assert 0.0 <= record["accuracy"]["map_flipped_share"] <= 1.0
    assert 0.0 <= record["accuracy"]["map_mean_abs_diff"] <= record["accuracy"]["map_max_abs_diff"] <= 1.0
    if precision == "fp16":
        assert record["accuracy"]["map_max_abs_diff"] < 0.05
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert set(record["float_nodes"])  # every rule leaves some nodes float (the stem at least)
        assert record["float_rule"] == INT8_RULE_OF_DEFAULT_MODEL
        # the Hmean and time measured with this CPU's int8 kernels: saturating sums or not
        flags = cpu_flags()
        assert record["accuracy"]["int8_sums_saturated"] is (None if flags is None else int8_sums_saturate(flags))
    else:
        assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    # float32 in and out either way: callers feed the same tensors
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_variant_boxes_stay_close_to_fp32(model_dir, pages, precision):
    fp32 = TextDetection(model_dir=model_dir, device="cpu")
    variant = TextDetection(model_dir=model_dir, device="cpu", precision=precision)
    assert variant.model_path == model_dir / f"inference.{precision}.onnx" and variant.precision == precision
    assert fp32.precision == "fp32" and variant.settings == fp32.settings
    if precision == "int8":
        assert_int8_boxes_close(fp32, variant, pages)
        return
    for name, (path, _) in pages.items():  # fp16: the parity tests' standard, every corner within 1 px
        (expected,), (got,) = fp32.predict(str(path)), variant.predict(str(path))
        assert len(got["dt_polys"]) == len(expected["dt_polys"]), name
        corner_shift = np.abs(got["dt_polys"].astype(int) - expected["dt_polys"].astype(int))
        assert corner_shift.max(initial=0) <= 1, (name, corner_shift.max())


def assert_int8_boxes_close(fp32: TextDetection, int8: TextDetection, pages) -> None:
    """The same number of boxes on every page, each fp32 box with an int8 box over it at MIN_BOX_IOU."""
    for name, (path, _) in pages.items():
        (expected,), (got,) = fp32.predict(str(path)), int8.predict(str(path))
        assert len(got["dt_polys"]) == len(expected["dt_polys"]), name
        for polygon in expected["dt_polys"]:
            best = max(box_iou(polygon_bounds(polygon), polygon_bounds(other)) for other in got["dt_polys"])
            assert best >= MIN_BOX_IOU["int8"], (name, best)


def test_a_variant_that_fails_its_scoring_leaves_the_previous_one(model_dir, tmp_path, monkeypatch, capsys):
    from tools.export import precision_variant

    folder = tmp_path / "PP-OCRv4_mobile_det"
    folder.mkdir()
    shutil.copy(model_dir / "inference.onnx", folder / "inference.onnx")
    shutil.copy(model_dir / "inference.fp16.onnx", folder / "inference.fp16.onnx")
    before = (folder / "inference.fp16.onnx").read_bytes()

    def scoring_fails(*args, **kwargs):
        raise ExportError("scoring failed")

    monkeypatch.setattr(precision_variant, "accuracy_delta", scoring_fails)
    code = export_main([*variant_export(folder / "inference.onnx", "fp16"), "--source", "x"])
    assert code == 1 and "scoring failed" in capsys.readouterr().err
    # the previous variant untouched, no unscored file and no partial folder left beside it
    assert (folder / "inference.fp16.onnx").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["inference.fp16.onnx", "inference.onnx"]


def test_flags_of_the_fp32_export_are_named_when_a_variant_reuses_the_file(model_dir, tmp_path, monkeypatch, capsys):
    from tools.export import precision_variant

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(model_dir / "inference.onnx", folder / "inference.onnx")
    monkeypatch.setattr(
        precision_variant, "export_variant", lambda *a, **k: {"accuracy": {"hmean": 1.0, "fp32_hmean": 1.0}}
    )
    args = variant_export(folder / "inference.onnx", "int8")
    assert export_main([*args, "--source", "elsewhere", "--channel-block", "8"]) == 0
    assert "--source, --channel-block apply to the fp32 export" in capsys.readouterr().err
    assert export_main(args) == 0 and "apply to the fp32 export" not in capsys.readouterr().err
    # the variants' flags where this export does not use them were taken without a word
    fp16 = variant_export(folder / "inference.onnx", "fp16")
    assert export_main([*fp16, "--calibration-images", "4", "--int8-float", "stem", "--eval-images", "4"]) == 0
    assert (
        "note: --calibration-images, --int8-float apply to int8 only: not used by this fp16" in capsys.readouterr().err
    )


STUCK_EXPORT = """
import sys, time
from pathlib import Path
from tools.export import precision_variant

def stuck(fp32_path, precision, output, *args, **kwargs):
    output.write_bytes(b"unscored")
    print("working", flush=True)
    time.sleep(600)

precision_variant._make_scored_variant = stuck
precision_variant.export_variant(Path(sys.argv[1]), "int8")
"""


def test_the_work_folder_of_a_killed_export_is_removed_by_the_next(default_onnx, tmp_path, monkeypatch):
    """A SIGKILL mid-export left `.inference.int8.onnx.XXXX/` (and the unscored file in it) beside the output for
    good. The next export there removes it, but never the folder of an export still running."""
    import os
    import signal

    from tools.export import precision_variant
    from tools.export.partial_folders import partial_prefix

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(default_onnx, folder / "inference.onnx")
    killed = subprocess.Popen(
        [sys.executable, "-c", STUCK_EXPORT, str(folder / "inference.onnx")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert killed.stdout is not None and killed.stdout.readline() == "working\n"
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    (left,) = [entry for entry in folder.iterdir() if entry.is_dir()]
    assert left.name.startswith(".inference.int8.onnx.") and (left / "inference.int8.onnx").is_file()
    # folders of exports running now: this process's (alive), and one of another machine sharing the folder
    running = folder / (partial_prefix(folder / "inference.fp16.onnx") + "abcd1234")
    elsewhere = folder / f".inference.int8.onnx.partial-another-host-{killed.pid}.abcd1234"
    running.mkdir()
    elsewhere.mkdir()

    def scored(fp32_path, precision, output, *args, **kwargs):
        output.write_bytes(b"scored")
        return {}

    monkeypatch.setattr(precision_variant, "_make_scored_variant", scored)
    precision_variant.export_variant(folder / "inference.onnx", "int8")
    assert (folder / "inference.int8.onnx").read_bytes() == b"scored"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["inference.onnx", "inference.int8.onnx", running.name, elsewhere.name]
    )


class _StopHere(Exception):
    pass


@pytest.mark.parametrize("step", ["quantize_int8", "quantize_int8_auto", "convert_fp16"])
def test_a_variants_work_files_sit_beside_it_where_the_next_export_removes_them(tmp_path, monkeypatch, step):
    """The prepared model, int8 candidates and calibration files sat in $TMPDIR, where a SIGKILL left them for good;
    beside the output, under partial_prefix's name, a later export there removes them (remove_abandoned). The work
    itself is stopped where the folder is first used."""
    from tools.export import int8_choice, quantize
    from tools.export.partial_folders import partial_prefix

    output = tmp_path / "inference.int8.onnx"
    used: list[Path] = []

    def folded(fp32_path, folder):
        used.append(Path(folder))
        raise _StopHere

    def candidate(fp32_path, path, *args, **kwargs):
        used.append(path.parent)
        raise _StopHere

    monkeypatch.setattr(quantize, "_folded", folded)
    monkeypatch.setattr(int8_choice, "quantize_int8", candidate)
    monkeypatch.setattr(int8_choice, "calibration_tensors", lambda *args: [])
    fp32 = tmp_path / "inference.onnx"
    steps = {
        "quantize_int8": lambda: quantize.quantize_int8(fp32, output, tensors=[]),
        "quantize_int8_auto": lambda: int8_choice.quantize_int8_auto(fp32, output),
        "convert_fp16": lambda: quantize.convert_fp16(fp32, output),
    }
    with pytest.raises(_StopHere):
        steps[step]()
    (folder,) = used
    assert folder.parent == tmp_path and folder.name.startswith(partial_prefix(output))
    assert not folder.exists()  # removed on the way out, as before


def test_a_variant_that_cannot_be_written_is_said_before_any_work(model_dir, tmp_path, monkeypatch):
    """A read-only folder: a traceback from tempfile's mkdtemp, where the fp32 export says which file and why."""
    from detector.errors import OutputNotWritableError
    from tools.export import precision_variant

    monkeypatch.setattr(
        precision_variant, "_make_scored_variant", lambda *a, **k: pytest.fail("worked before the check")
    )
    (tmp_path / "a file").write_bytes(b"")
    output = tmp_path / "a file" / "inference.int8.onnx"  # its folder cannot be made, as a read-only one
    with pytest.raises(OutputNotWritableError, match="cannot write"):
        precision_variant.export_variant(model_dir / "inference.onnx", "int8", output=output)


@pytest.mark.parametrize(
    ("given", "meant"),
    [("model.bin", "model.onnx"), ("model.ONNX", "model.onnx"), ("model", "model/inference.onnx"), (".onnx", None)],
)
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_an_output_not_ending_in_onnx_is_refused_before_any_work(
    tmp_path, monkeypatch, capsys, given, meant, precision
):
    """--output model.bin: the int8 variant went to model.int8.onnx, whose fp32 file is model.onnx to the runtime (and
    an fp32 export to model.bin removed model.onnx's variants as its own). Refused before any export or folder."""
    from tools.export import pipeline, precision_variant

    monkeypatch.setattr(pipeline, "export_model", lambda *a, **k: pytest.fail("exported before the check"))
    monkeypatch.setattr(
        precision_variant, "export_variant", lambda *a, **k: pytest.fail("made a variant before the check")
    )
    output = tmp_path / "new" / given
    assert export_main(["--model", "PP-OCRv6_tiny_det", "--output", str(output), "--precision", precision]) == 1
    err = capsys.readouterr().err
    assert f"export: error: --output {output} does not end in .onnx: the int8 / fp16 variants" in err
    assert (meant is None or f"e.g. {tmp_path / 'new' / meant}" in err) and not (tmp_path / "new").exists()


def test_a_variant_of_a_file_this_export_did_not_write_is_refused_before_any_work(tmp_path, monkeypatch):
    """PaddlePaddle's release copied in as inference.onnx: every rule was quantized before the scoring found no
    settings to carry (an audit: 12 s, then 'carries no detector.settings metadata'); the loader's hint led there."""
    from tests.test_model_sources import V6_TINY, wheel_source
    from tools.export import precision_variant

    release = tmp_path / "my release"  # the export's hint wrote the folder unquoted: pasted, the shell split it
    shutil.copytree(wheel_source(V6_TINY), release)
    monkeypatch.setattr(
        precision_variant, "_make_scored_variant", lambda *a, **k: pytest.fail("quantized before the check")
    )
    advice = "is not a file this package's export wrote (no detector.settings metadata: its settings would not reach "
    advice += f"the variant): import it first (`detect optimize '{release}' -o <folder>/inference.onnx`)"
    with pytest.raises(ExportError) as refused:
        precision_variant.export_variant(release / "inference.onnx", "int8")
    assert advice in str(refused.value) and str(refused.value).endswith("make the int8 variant beside that file")
    with pytest.raises(ModelNotFoundError) as missing:
        TextDetection(model_dir=release, precision="int8", device="cpu")
    assert advice in str(missing.value) and "beside that file with `python -m tools.export" in str(missing.value)


def test_missing_variant_says_how_to_make_it(default_onnx, tmp_path):
    folder = tmp_path / "OnlyFp32_det"
    folder.mkdir()
    shutil.copy(default_onnx, folder / "inference.onnx")
    with pytest.raises(ModelNotFoundError) as error:
        TextDetection(model_name="OnlyFp32_det", model_dir=folder, precision="int8")
    message = str(error.value)
    assert str(folder / "inference.int8.onnx") in message
    # the command writes the variant beside this file (make's form only fits the checkout's models/)
    assert (
        f"python -m tools.export --model OnlyFp32_det --output {folder / 'inference.onnx'} --precision int8" in message
    )
    assert "make export" not in message and "TensorRT" not in message
    # PaddleOCR's precision='fp16' (a TensorRT setting, fp32 on its CPU), as migrated code passes it
    with pytest.raises(
        ModelNotFoundError, match=r"inference\.fp16\.onnx does not exist \(PaddleOCR's precision='fp16' "
    ):
        TextDetection(model_name="OnlyFp32_det", model_dir=folder, precision="fp16")
    # a file given without a name: the hint names the model its metadata records
    shutil.copy(default_onnx, tmp_path / "mine.onnx")
    with pytest.raises(ModelNotFoundError, match=r"--model PP-OCRv4_mobile_det --output .*mine\.onnx --precision fp16"):
        TextDetection(model_dir=tmp_path / "mine.onnx", precision="fp16")
    (tmp_path / "unread.onnx").write_bytes(b"not a model")  # no metadata to read: a placeholder
    with pytest.raises(ModelNotFoundError, match=r"--model <its model name> --output .*unread\.onnx --precision fp16"):
        TextDetection(model_dir=tmp_path / "unread.onnx", precision="fp16")
    with pytest.raises(InvalidParameterError, match="precision must be one of fp32, fp16, int8"):
        TextDetection(model_dir=folder, precision="fp8")
    # fp32 always names the file itself, never a sibling
    assert TextDetection(model_dir=folder, precision="fp32", device="cpu").model_path == folder / "inference.onnx"


AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


@pytest.mark.parametrize(
    ("flags", "saturate"),
    [
        (AVX2, True),
        (AVX2 | {"avx512f", "avx512bw"}, True),  # AVX-512 before VNNI (Skylake-SP) adds pairs the same way
        (AVX2 | {"avx512f", "avx512_vnni"}, False),
        (AVX2 | {"avx_vnni"}, False),
        (AVX2 | {"amx_int8"}, False),
        (frozenset({"sse4_2"}), False),  # no AVX2: onnxruntime's SSE kernels widen to 16 bits first
        (None, False),  # flags not readable (not Linux, not x86): nothing said
    ],
)
def test_int8_on_a_cpu_without_vnni_is_named(flags, saturate):
    assert int8_sums_saturate(flags) is saturate
    note = int8_without_vnni(flags)
    assert (note is not None) is saturate
    if note:
        assert "fp32" in note and "VNNI" in note


@pytest.mark.parametrize("saturate", [True, False])
def test_an_int8_detector_warns_on_a_cpu_without_vnni(model_dir, monkeypatch, caplog, saturate):
    import detector.api

    monkeypatch.setattr(detector.api, "cpu_flags", lambda: AVX2 if saturate else AVX2 | {"avx512_vnni"})
    with caplog.at_level("WARNING", logger="detector"):
        TextDetection(model_dir=model_dir, device="cpu", precision="int8")
        TextDetection(model_dir=model_dir, device="cpu")  # fp32: nothing to say
    warned = [record.getMessage() for record in caplog.records if "VNNI" in record.getMessage()]
    assert len(warned) == (1 if saturate else 0)
    if saturate:
        assert warned[0].startswith(f"{model_dir / 'inference.int8.onnx'}: this CPU has no VNNI")


def test_the_export_scores_its_variant_without_the_detectors_cpu_warning(model_dir, monkeypatch, caplog):
    """The export says it once under its scores; the detector it scores with would name a temporary file."""
    import detector.api
    from tools.export.variant_scoring import accuracy_delta

    monkeypatch.setattr(detector.api, "cpu_flags", lambda: AVX2)
    with caplog.at_level("WARNING", logger="detector"):
        accuracy_delta(model_dir / "inference.onnx", model_dir / "inference.int8.onnx", 1)
        assert not [record for record in caplog.records if "VNNI" in record.getMessage()]
        TextDetection(model_dir=model_dir, device="cpu", precision="int8")  # the filter is gone after scoring
    assert [record for record in caplog.records if "VNNI" in record.getMessage()]


def test_variant_path_names_siblings():
    assert variant_path(Path("m/inference.onnx"), "int8") == Path("m/inference.int8.onnx")
    assert variant_path(Path("m/inference.fp16.onnx"), "int8") == Path("m/inference.int8.onnx")
    assert variant_path(Path("m/inference.int8.onnx"), "fp32") == Path("m/inference.onnx")


def test_detect_precision_option(model_dir, pages, tmp_path):
    image = str(pages["banner"][0])

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "detector", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
        )

    done = run(  # INT8 as TextDetection(precision="INT8") takes it
        "-i", image, "--model", str(model_dir / "inference.onnx"), "--precision", "INT8", "--device", "cpu", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["res"]["dt_polys"]) == 1
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(model_dir / "inference.onnx", lonely / "inference.onnx")
    done = run("-i", image, "--model_dir", str(lonely), "--precision", "fp16", "--device", "cpu")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--precision fp16" in done.stderr
    done = run("-i", image, "--precision", "fp8")
    assert done.returncode == 2 and "fp8" in done.stderr
    # given the int8 file itself, the command said makes fp16 beside the fp32 file (--output the int8 file: refused)
    shutil.copy(model_dir / "inference.int8.onnx", lonely / "inference.int8.onnx")
    done = run(
        "-i", image, "--model_dir", str(lonely / "inference.int8.onnx"), "--precision", "fp16", "--device", "cpu"
    )
    assert done.returncode == 2 and f"--output {lonely / 'inference.onnx'} --precision fp16" in done.stderr


def test_detect_eval_compare_precisions(model_dir, tmp_path):
    from tools.dev.labelled_set import render_labelled_set

    labels = render_labelled_set(tmp_path / "set", count=2, seed=4)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector",
            "eval",
            "--labels",
            str(labels),
            "--model",
            str(model_dir / "inference.onnx"),
            "--compare",
            "fp32",
            "int8",
            "--device",
            "cpu",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines[2:4]] == ["fp32", "int8"]
    assert lines[-1].startswith("int8 - fp32") and lines[-1].split()[-1].startswith("x")


def test_int8_float_rules(default_onnx, tmp_path):
    from tools.export.int8_rules import head_nodes
    from tools.export.quantize import quantize_int8

    model = onnx.load(str(default_onnx))
    stem, inputs, early, head = (INT8_RULES[name].float_nodes(model) for name in ("stem", "input", "early", "head"))
    assert head == head_nodes(model) and set(head) < set(early)  # "head" leaves the backbone int8 too
    names = {node.name for node in model.graph.node}
    assert set(early) <= names and set(stem) <= names and set(inputs) <= names
    first_conv = next(node.name for node in model.graph.node if node.op_type == "Conv")
    assert first_conv in stem and first_conv in early and first_conv in inputs  # the first convolution stays float
    assert not set(head) & set(stem)  # "stem" quantizes the head
    # "input" floats the layers before stride 4 (fewer than "stem"'s) and the sigmoid making the map
    (final_sigmoid,) = [node.name for node in model.graph.node if node.op_type == "Sigmoid"]  # the head's
    assert final_sigmoid in inputs and final_sigmoid not in stem
    assert set(inputs) - {final_sigmoid} < set(stem)
    # "input" floats through the convolution that brings the map to stride 4; the first one int8 reads it
    from tools.export.int8_rules import PROBE_SIDE, conv_stride, convolution_strides

    strides = convolution_strides(model)
    convs = {node.name: node for node in model.graph.node if strides.get(node.name, PROBE_SIDE) < PROBE_SIDE}
    first_at_4 = next(name for name in convs if strides[name] == 4)
    first_int8 = next(name for name in convs if name not in inputs)
    assert conv_stride(convs[first_at_4]) == 2 and first_at_4 in inputs
    assert strides[first_int8] == 4 and conv_stride(convs[first_int8]) == 1
    with pytest.raises(ExportError, match="int8 float rule must be one of stem, input, early, head"):
        quantize_int8(default_onnx, tmp_path / "x.onnx", float_rule="backbone", tensors=[])


def assert_upsampled_sums_in_uint8(graph, record):
    """The DB neck's three top-down sums with a 2x upsample and the head's concatenation of upsampled
    maps are channels-last expansions whose every step reads a quantized tensor (a DequantizeLinear's
    output, to be fused, or a uint8 one); no Resize is left, and no Shape reads a float map."""
    assert record["uint8_forms"]["upsampled_sum_as_expand"] == 3
    assert record["uint8_forms"]["upsampled_concat_as_expand"] == 1
    assert record["tidied"]["shapes_read_uint8"] > 0 and record["tidied"]["movements_in_uint8"] > 0
    assert not [node for node in graph.node if node.op_type == "Resize"]
    producers = {output: node for node in graph.node for output in node.output}
    made = [node for node in graph.node if node.name.startswith(("upsampled_sum_as", "upsampled_concat_as"))]
    moving = [node for node in made if node.op_type in ("Transpose", "Unsqueeze", "Expand", "Reshape", "Add", "Concat")]
    assert len(moving) == 3 * 7 + 3 * 4 + 1 + 1 + 1  # 3 sums; 3 upsampled parts, one not, the Concat and back
    quantized = ("DequantizeLinear", "QuantizeLinear", "Transpose", "Unsqueeze", "Expand", "Reshape")
    assert all(producers[name].op_type in quantized for node in moving for name in node.input[:1])
    shapes = [node for node in graph.node if node.op_type == "Shape"]
    assert shapes and all(producers[node.input[0]].op_type != "DequantizeLinear" for node in shapes)


def assert_gated_products_in_uint8(graph, record, products):
    """Every squeeze-excitation product is a channels-last product of uint8 tensors: a Mul reading two
    DequantizeLinears, of the map's uint8 Transpose and of the gate's uint8 Expand."""
    assert record["uint8_forms"]["gated_product_expanded"] == products
    producers = {output: node for node in graph.node for output in node.output}
    made = [node for node in graph.node if node.op_type == "Mul" and node.name.startswith("gated_product_expanded")]
    assert len(made) == products
    for mul in made:
        sources = [producers[name] for name in mul.input]
        assert [node.op_type for node in sources] == ["DequantizeLinear"] * 2
        assert sorted(producers[node.input[0]].op_type for node in sources) == ["Expand", "Transpose"]


def assert_map_interleaved_in_uint8(graph):
    """The map's DepthToSpace became data movements on uint8 (each reading a QuantizeLinear's output or
    another movement's) before the map's float Sigmoid, which makes the graph's output from a
    DequantizeLinear."""
    producers = {output: node for node in graph.node for output in node.output}
    assert not [node for node in graph.node if node.op_type == "DepthToSpace"]
    made = [node for node in graph.node if node.name.startswith("map_interleaved_channels_last")]
    moving = [node for node in made if node.op_type in ("Transpose", "Reshape")]
    assert len(moving) == 4
    assert all(producers[node.input[0]].op_type in ("QuantizeLinear", "Transpose", "Reshape") for node in moving)
    sigmoid = producers[graph.output[0].name]
    assert sigmoid.op_type == "Sigmoid" and producers[sigmoid.input[0]].op_type == "DequantizeLinear"


def test_stem_rule_turns_hard_swish_into_uint8_products(default_onnx, pages, tmp_path):
    from tools.export.quantize import calibration_tensors, quantize_int8

    folder = tmp_path / "PP-OCRv4_mobile_det"
    folder.mkdir()
    shutil.copy(default_onnx, folder / "inference.onnx")
    tensors = calibration_tensors(default_onnx, 4, seed=5)
    record = quantize_int8(default_onnx, folder / "inference.int8.onnx", 4, float_rule="stem", tensors=tensors)
    assert record["hard_swish_gates"] > 0 and "Mul" in record["op_types"] and "percentile" in record["method"]
    graph = onnx.load(str(folder / "inference.int8.onnx")).graph
    ops = Counter(node.op_type for node in graph.node)
    # past the stem, hard-swish is an Add and a Mul between QuantizeLinear / DequantizeLinear: only the
    # stem's and the squeeze-excitation gates' HardSigmoids are left
    assert 0 < ops["HardSigmoid"] + ops["HardSwish"] < 34 - record["hard_swish_gates"] + 1
    assert_upsampled_sums_in_uint8(graph, record)
    assert_gated_products_in_uint8(graph, record, 10)  # 2 in the backbone, 8 in the neck
    assert_map_interleaved_in_uint8(graph)
    # PPLCNetV3's learnable affines after the uint8 hard-swish products became those products' quantization
    assert record["tidied"]["affines_into_quantization"] > 0
    fp32 = TextDetection(model_dir=folder, device="cpu")
    assert_int8_boxes_close(fp32, TextDetection(model_dir=folder, device="cpu", precision="int8"), pages)


def test_input_rule_runs_ppocrv6_gelu_and_pools_in_uint8(tmp_path, pages):
    """PP-OCRv6_tiny_det's real weights: its 13 GELUs become sigmoid products and its 5 spatial means
    pools, all quantized; the boxes stay close to fp32's."""
    from tests.test_parity_onnx import imported_model
    from tools.export.quantize import calibration_tensors, quantize_int8

    fp32_path = imported_model("PP-OCRv6_tiny_det")
    folder = tmp_path / "PP-OCRv6_tiny_det"
    folder.mkdir()
    shutil.copy(fp32_path, folder / "inference.onnx")
    tensors = calibration_tensors(fp32_path, 4, seed=5)
    record = quantize_int8(fp32_path, folder / "inference.int8.onnx", 4, float_rule="input", tensors=tensors)
    assert record["uint8_forms"] == {
        "hard_swish_as_clipped_product": 0,
        "gelu_as_sigmoid_product": 13,
        "spatial_mean_as_global_pool": 5,
        "upsampled_sum_as_expand": 3,
        "upsampled_concat_as_expand": 1,
        "gated_product_expanded": 13,
        "map_interleaved_channels_last": 1,
    }
    graph = onnx.load(str(folder / "inference.int8.onnx")).graph
    assert_upsampled_sums_in_uint8(graph, record)
    assert_gated_products_in_uint8(graph, record, 13)
    assert_map_interleaved_in_uint8(graph)
    assert record["tidied"]["affines_into_quantization"] == 0  # no learnable affine in PP-OCRv6
    ops = Counter(node.op_type for node in graph.node)
    assert ops["Erf"] == ops["ReduceMean"] == 0
    producers = {output: node for node in graph.node for output in node.output}
    quantized = [node for node in graph.node if node.op_type in ("Sigmoid", "GlobalAveragePool")]
    # every gate sigmoid and pool reads a DequantizeLinear and feeds a QuantizeLinear: onnxruntime runs them
    # in uint8 (QLinearSigmoid, QLinearGlobalAveragePool); only the map's own sigmoid stays float
    readers = {name: [n for n in graph.node if name in n.input] for node in quantized for name in node.output}
    in_uint8 = [
        node
        for node in quantized
        if producers[node.input[0]].op_type == "DequantizeLinear"
        and readers[node.output[0]]
        and all(reader.op_type == "QuantizeLinear" for reader in readers[node.output[0]])
    ]
    assert len(in_uint8) == len(quantized) - 1 and ops["Sigmoid"] == 14
    fp32 = TextDetection(model_dir=folder, device="cpu")
    assert_int8_boxes_close(fp32, TextDetection(model_dir=folder, device="cpu", precision="int8"), pages)


def test_auto_rule_records_every_trial_and_keeps_one(default_onnx, tmp_path):
    """auto (the default rule) makes the variant by each rule, validates them, keeps one and says so."""
    from tools.export.int8_choice import quantize_int8_auto

    rules = ["input", "early"]
    record = quantize_int8_auto(
        default_onnx, tmp_path / "inference.int8.onnx", calibration_images=4, validation_images=2, rules=rules
    )
    assert (tmp_path / "inference.int8.onnx").is_file() and not list(tmp_path.glob("*.onnx.*"))
    choice = record["rule_choice"]
    assert record["float_rule"] == choice["chosen"] and choice["chosen"] in rules
    assert [trial["rule"] for trial in choice["trials"]] == rules
    assert all(trial["time_ratio_cpu"] > 0 for trial in choice["trials"])


def test_auto_validates_on_its_own_count_apart_from_eval_images(default_onnx, tmp_path, monkeypatch, capsys):
    """--eval-images set auto's validation count too (README: 80 validation images, --eval-images for the recorded
    delta): `--eval-images 2` chose the rule on 2 images. Each has its own count; the work itself is stubbed."""
    from tools.export import int8_choice, precision_variant
    from tools.export.int8_choice import RuleTrial

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(default_onnx, folder / "inference.onnx")
    counts: dict[str, int] = {}

    def quantized(fp32_path, output, calibration_images=16, float_rule="early", seed=7, tensors=None):
        shutil.copy(fp32_path, output)
        return {"float_rule": float_rule}

    def validated(fp32_path, candidates, images, seed):
        counts["validation"] = images
        return [RuleTrial(rule, 0.0, 0.5) for rule in candidates]

    def scored(fp32_path, variant, images):
        counts["accuracy"] = images
        keys = ("fp32_hmean", "hmean", "hmean_delta", "map_mean_abs_diff", "map_max_abs_diff", "map_flipped_share")
        return {"images": images, "time_ratio_cpu": 0.5, **dict.fromkeys(keys, 0.0)}

    monkeypatch.setattr(int8_choice, "calibration_tensors", lambda *a: [])
    monkeypatch.setattr(int8_choice, "quantize_int8", quantized)
    monkeypatch.setattr(int8_choice, "validate_rules", validated)
    monkeypatch.setattr(precision_variant, "quantize_int8", quantized)
    monkeypatch.setattr(precision_variant, "accuracy_delta", scored)
    args = variant_export(folder / "inference.onnx", "int8")
    assert export_main([*args, "--eval-images", "2"]) == 0
    assert counts == {"validation": 80, "accuracy": 2}  # README's 80 validation images
    assert export_main([*args, "--validation-images", "3"]) == 0
    assert counts == {"validation": 3, "accuracy": precision_variant.DEFAULT_EVALUATION_IMAGES}
    record = json.loads(metadata(folder / "inference.int8.onnx")[METADATA_PRECISION_KEY])
    assert record["rule_choice"]["validation_set"].endswith("--count 3 --seed 3") and record["accuracy"]["images"] == 80
    counts.clear()  # a named rule validates nothing: the flag is said to be unused
    assert export_main([*args, "--int8-float", "early", "--validation-images", "3"]) == 0 and "validation" not in counts
    assert "note: --validation-images apply to --int8-float auto only: not used by this int8" in capsys.readouterr().err


def test_choose_rule_keeps_the_fastest_accurate_one():
    from tools.export.int8_choice import RuleTrial, choose_rule

    trials = [RuleTrial("stem", -0.004, 0.70), RuleTrial("early", 0.003, 0.90), RuleTrial("head", -0.03, 0.60)]
    assert choose_rule(trials, tolerance=0.005) == (trials[0], True)  # head is faster but loses 0.03
    assert choose_rule(trials, tolerance=0.05) == (trials[2], True)
    assert choose_rule(trials, tolerance=0.001) == (trials[1], True)  # gaining Hmean is no loss
    # every rule loses too much: the most accurate, flagged
    stem, early = RuleTrial("stem", -0.02, 0.7), RuleTrial("early", -0.015, 0.9)
    assert choose_rule([stem, early], tolerance=0.01) == (early, False)


def test_map_agreement_of_a_model_with_itself_is_perfect(default_onnx):
    from tools.export.variant_scoring import map_agreement

    tensors = [np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)]
    agreement = map_agreement(default_onnx, default_onnx, tensors, thresh=0.3)
    assert agreement == {"map_mean_abs_diff": 0.0, "map_max_abs_diff": 0.0, "map_flipped_share": 0.0}


def test_a_variant_alone_in_a_models_folder_is_found_by_name(model_dir, tmp_path, monkeypatch):
    # a deployment folder holding only the int8 file: found there, before any other folder's variant or
    # a download (releases are fp32)
    deploy = tmp_path / "deploy" / "PP-OCRv4_mobile_det"
    deploy.mkdir(parents=True)
    shutil.copy(model_dir / "inference.int8.onnx", deploy / "inference.int8.onnx")
    monkeypatch.setenv("DETECTOR_MODELS", str(deploy.parent))
    model = TextDetection(model_name="PP-OCRv4_mobile_det", precision="int8", device="cpu")
    assert model.model_path == deploy / "inference.int8.onnx" and model.precision == "int8"
    # the same folder given as model_dir (it was "neither an .onnx file nor a folder holding inference.onnx")
    given = TextDetection(model_dir=deploy, precision="int8", device="cpu")
    assert given.model_path == deploy / "inference.int8.onnx"
    with pytest.raises(ModelNotFoundError) as caught:  # fp32 asked: not there, and what is (it said "neither …")
        TextDetection(model_dir=deploy, device="cpu")
    assert str(caught.value) == (
        f"model_dir {str(deploy)!r} holds inference.int8.onnx, no inference.onnx: pass precision='int8' "
        f"(detect --precision int8) to load it"
    )
    with pytest.raises(
        ModelNotFoundError, match=r"holds inference\.int8\.onnx, no inference\.fp16\.onnx or inference\.onnx"
    ):
        TextDetection(model_dir=deploy, precision="fp16", device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"no fp16 variant of 'Nowhere_det' here.*downloads are fp32 only"):
        TextDetection(model_name="Nowhere_det", precision="fp16", device="cpu")


def test_a_variant_is_taken_only_beside_the_fp32_file_the_name_finds(model_dir, tmp_path, monkeypatch):
    """DETECTOR_MODELS holds the user's own fp32 export under a name the checkout also has: precision='int8'
    took the checkout's int8 file, another network, without a word. The variant must sit beside the fp32
    file the name finds; missing there, it is the error that says how to make it."""
    own = tmp_path / "own" / "PP-OCRv6_tiny_det"
    own.mkdir(parents=True)
    shutil.copy(model_dir / "inference.onnx", own / "inference.onnx")  # some other network under that name
    monkeypatch.setenv("DETECTOR_MODELS", str(own.parent))
    cached = tmp_path / "xdg" / "detector" / "models" / "PP-OCRv6_tiny_det"  # a later folder's variant
    cached.mkdir(parents=True)
    shutil.copy(model_dir / "inference.int8.onnx", cached / "inference.int8.onnx")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert TextDetection(model_name="PP-OCRv6_tiny_det", device="cpu").model_path == own / "inference.onnx"
    with pytest.raises(ModelNotFoundError, match="no int8 variant"):
        TextDetection(model_name="PP-OCRv6_tiny_det", precision="int8", device="cpu")


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_variant_records_the_fp32_file_it_was_made_from_and_refuses_another(model_dir, tmp_path, precision):
    """An fp32 file swapped in by a copy (a fine-tuned model, another network) beside the variants made from the
    old one: precision= loaded the old weights without a word. The record holds the fp32 file's sha256."""
    from detector.errors import InvalidModelError
    from detector.optimize.model_file import sha256_of
    from detector.precision import MADE_FROM_SHA256_FIELD

    record = json.loads(metadata(model_dir / f"inference.{precision}.onnx")[METADATA_PRECISION_KEY])
    assert record[MADE_FROM_SHA256_FIELD] == sha256_of(model_dir / "inference.onnx")
    folder = tmp_path / "PP-OCRv4_mobile_det"
    shutil.copytree(model_dir, folder)
    assert TextDetection(model_dir=folder, precision=precision, device="cpu").precision == precision
    shutil.copy(REPO_ROOT / "models" / "PP-OCRv6_tiny_det" / "inference.onnx", folder / "inference.onnx")
    with pytest.raises(InvalidModelError) as caught:
        TextDetection(model_dir=folder, precision=precision, device="cpu")
    message = str(caught.value)
    assert f"inference.{precision}.onnx was made from another fp32 file than the inference.onnx beside it" in message
    assert f"--precision {precision}" in message and f"or remove inference.{precision}.onnx" in message
    # the variant file named directly is the same variant
    with pytest.raises(InvalidModelError, match="made from another fp32 file"):
        TextDetection(model_dir=folder / f"inference.{precision}.onnx", device="cpu")
    # fp32 itself loads, and a variant alone (no fp32 file beside it) loads: nothing says otherwise
    assert TextDetection(model_dir=folder, device="cpu").precision == "fp32"
    (folder / "inference.onnx").unlink()
    assert TextDetection(model_dir=folder, precision=precision, device="cpu").precision == precision


def test_stale_variants_go_by_the_fp32_file_they_record(model_dir, tmp_path):
    """A new fp32 file keeps the variants made from its bytes and removes the others; variants recording nothing
    go by whether the new file has the replaced file's bytes (as before the record)."""
    from detector.optimize.model_file import remove_stale_variants, sha256_of

    fp32 = tmp_path / "inference.onnx"
    int8, fp16 = tmp_path / "inference.int8.onnx", tmp_path / "inference.fp16.onnx"
    # a deployment folder holding the variants alone; the matching fp32 file exported into it: both kept (they
    # were removed as "made from the file just replaced", where no file was replaced)
    shutil.copy(model_dir / "inference.int8.onnx", int8)
    shutil.copy(model_dir / "inference.fp16.onnx", fp16)
    shutil.copy(model_dir / "inference.onnx", fp32)
    assert remove_stale_variants(fp32, None) == [] and int8.is_file() and fp16.is_file()
    # another fp32 file written over it: both removed, whatever the replaced file was
    replaced = sha256_of(fp32)
    shutil.copy(REPO_ROOT / "models" / "PP-OCRv6_tiny_det" / "inference.onnx", fp32)
    assert remove_stale_variants(fp32, replaced) == [("fp16", fp16), ("int8", int8)]
    # an fp32 file with the replaced bytes keeps a variant recording another file: it was stale already
    shutil.copy(model_dir / "inference.int8.onnx", int8)
    assert remove_stale_variants(fp32, sha256_of(fp32)) == [("int8", int8)]
    # a variant recording nothing (older exports, or no model at all) goes by the replaced file's bytes
    int8.write_bytes(b"x")
    assert remove_stale_variants(fp32, sha256_of(fp32)) == [] and int8.is_file()
    assert remove_stale_variants(fp32, None) == [("int8", int8)]


def test_the_commands_a_hint_gives_are_words_a_shell_takes_as_they_are(default_onnx, tmp_path, monkeypatch):
    """A folder or model name with a space (~/My Models, 'my det') split where the hint was pasted unquoted."""
    import re
    import shlex

    from detector import hub

    folder = tmp_path / "My Models" / "my det"
    folder.mkdir(parents=True)
    shutil.copy(default_onnx, folder / "inference.onnx")
    with pytest.raises(ModelNotFoundError) as error:
        TextDetection(model_name="my det", model_dir=folder, precision="int8")
    command = re.search(r"`(python -m tools\.export [^`]*)`", str(error.value)).group(1)
    assert shlex.split(command)[3:] == [
        "--model",
        "my det",
        "--output",
        str(folder / "inference.onnx"),
        "--precision",
        "int8",
    ]
    paddle = tmp_path / "Paddle Models" / "fine tuned"
    paddle.mkdir(parents=True)
    (paddle / "inference.json").write_text("{}")
    (paddle / "inference.pdiparams").write_bytes(b"\0" * 16)
    (paddle / "inference.yml").write_text("Global:\n  model_name: my det\n")
    monkeypatch.setattr(hub, "IN_CHECKOUT", True)
    with pytest.raises(ModelNotFoundError) as error:
        TextDetection(model_dir=paddle, device="cpu")
    commands = re.findall(r"`([^`]*)`", str(error.value))
    tool = shlex.split(commands[0].split("&& ", 1)[1])
    assert tool[tool.index("--model") + 1] == "my det" and tool[tool.index("--source") + 1] == str(paddle)
    assert tool[tool.index("--output") + 1] == str(paddle / "inference.onnx")
    assert shlex.split(commands[1]) == ["make", "export", "MODEL=my det", f"SOURCE={paddle}"]
