"""Every input kind a service meets, and every refusal, through the API (files made by the tests)."""

import base64
import contextlib
import gc
import http.server
import io
import os
import pickle
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
from PIL import Image

from detector import (
    ImageTooLargeError,
    InputNotFoundError,
    SourceUnavailableError,
    TextDetection,
    UnreadableImageError,
    UnsupportedInputError,
)
from detector.image_pixels import decode_image_bytes, pil_to_bgr
from detector.inputs import iter_images
from detector.load_options import DEFAULT_LOAD_OPTIONS, LoadOptions
from detector.result import write_atomically
from tests.rendered import write_rendered_pages

pytestmark = pytest.mark.runtime  # no Paddle needed: make test-pythons runs these on every Python


@pytest.fixture(scope="module")
def model(default_onnx):
    return TextDetection(model_dir=default_onnx, device="cpu")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return write_rendered_pages(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def banner(pages):
    path, truth = pages["banner"]
    return path, cv2.imread(str(path)), len(truth)


def count(results):
    return [len(r["dt_polys"]) for r in results]


# ---------------------------------------------------------------- paths, folders, globs


def test_glob_patterns_and_recursive_folders(model, banner, tmp_path):
    _path, image, lines = banner
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "deep").mkdir()
    cv2.imwrite(str(tmp_path / "one.png"), image)
    cv2.imwrite(str(tmp_path / "a" / "two.jpg"), image)
    cv2.imwrite(str(tmp_path / "a" / "deep" / "three.png"), image)
    cv2.imwrite(str(tmp_path / "a-b.ppm"), image)  # sorts before "a/…" as a string, after it as path parts
    (tmp_path / "notes.txt").write_text("not an image")
    # a folder is read with its subfolders, in PaddleX's order (os.walk's paths sorted as strings)
    deep = model.predict(tmp_path)
    assert [r["input_path"] for r in deep] == [
        str(tmp_path / name) for name in ("a-b.ppm", "a/deep/three.png", "a/two.jpg", "one.png")
    ]
    flat = model.predict(tmp_path, recursive=False)
    assert [r["input_path"] for r in flat] == [str(tmp_path / "a-b.ppm"), str(tmp_path / "one.png")]
    with pytest.raises(InputNotFoundError, match="empty path"):  # not the working directory
        model.predict("")
    assert count(model.predict(str(tmp_path / "**" / "*.png"))) == [lines, lines]
    with pytest.raises(InputNotFoundError, match="matches no image"):
        model.predict(str(tmp_path / "*.gif"))


def test_input_path_is_the_path_as_given(model, banner, tmp_path, monkeypatch):
    # as PaddleOCR reports it: a file's string untouched, a folder's files joined to the folder as given
    # (os.walk's way), so a caller finds each result under the path it passed
    _path, image, _ = banner
    (tmp_path / "scans" / "deep").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "scans" / "one.png"), image)
    cv2.imwrite(str(tmp_path / "scans" / "deep" / "two.png"), image)
    monkeypatch.chdir(tmp_path)
    for given in ("./scans/one.png", "scans//one.png", "scans/deep/../one.png"):
        assert [r["input_path"] for r in model.predict(given)] == [given]
    for folder in ("./scans", "scans/", "./scans/"):
        expected = [os.path.join(folder, "deep", "two.png"), os.path.join(folder, "one.png")]
        assert [r["input_path"] for r in model.predict(folder)] == expected
    assert [r["input_path"] for r in model.predict([Path("./scans/one.png")])] == ["scans/one.png"]  # str(Path)


def test_a_recursive_glob_does_not_follow_symlinked_folders_round_a_loop(banner, tmp_path):
    from detector.inputs import expand_inputs

    _path, image, _lines = banner
    (tmp_path / "scans" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "scans" / "a.png"), image)
    cv2.imwrite(str(tmp_path / "scans" / "sub" / "b.png"), image)
    (tmp_path / "scans" / "sub" / "up").symlink_to("..")  # a loop: glob.glob found each file ~40 times
    (tmp_path / "scans" / "self").symlink_to(".")  # two loops: glob.glob never ended

    def names(pattern: str) -> list[str]:
        return [str(Path(source.value).relative_to(tmp_path)) for source in expand_inputs(str(tmp_path / pattern))]

    assert names("scans/**/*.png") == ["scans/a.png", "scans/sub/b.png"]
    assert names("scans/**") == ["scans/a.png", "scans/sub/b.png"]  # every file below
    assert names("sc*") == ["scans/a.png", "scans/sub/b.png"]  # a folder matched is read as a folder
    assert names("scans/su*") == ["scans/sub/b.png"]


def test_a_missing_path_in_a_list_fails_the_call_before_any_image_is_read(model, banner, tmp_path):
    """Kept as it is (README): PaddleOCR's predict gives no results either (a list), its predict_iter yields the
    ones before the missing file first; both raise FileNotFoundError, which InputNotFoundError is."""
    path, _image, _lines = banner
    inputs = [path, tmp_path / "missing.png", path]
    with pytest.raises(FileNotFoundError, match=r"missing\.png' does not exist") as refused:
        model.predict(inputs)
    assert isinstance(refused.value, InputNotFoundError)
    results = model.predict_iter(inputs)
    with pytest.raises(InputNotFoundError, match=r"missing\.png"):
        next(results)  # the first call: no image before it was read or detected


# ---------------------------------------------------------------- in-memory kinds


def test_bytes_pil_and_arrays_agree_with_the_file(model, banner):
    path, image, lines = banner
    expected = model.predict(path)[0]["dt_polys"]
    rgb = Image.fromarray(image[:, :, ::-1])
    for item in (
        path.read_bytes(),
        bytearray(path.read_bytes()),
        rgb,
        rgb.convert("RGBA"),
        image,
        cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
    ):
        (result,) = model.predict(item)
        np.testing.assert_array_equal(result["dt_polys"], expected)
    assert count(model.predict(rgb.convert("L"))) == [lines]
    sixteen = image.astype(np.uint16) * 257
    np.testing.assert_array_equal(model.predict(sixteen)[0]["dt_polys"], expected)
    assert count(model.predict(Image.fromarray(sixteen[:, :, 0]))) == [lines]  # PIL mode I;16
    for floats in (image / 255.0, image.astype(np.float32)):  # [0, 1], and PaddleOCR's 0-255 for floats
        np.testing.assert_array_equal(model.predict(floats)[0]["dt_polys"], expected)
    # uint16 holding 0-255 values is read as it is, as PaddleOCR reads it (scaled, it was black); either byte order
    for eight_bit_values in (image.astype(np.uint16), image.astype(">u2"), sixteen.astype(">u2")):
        np.testing.assert_array_equal(model.predict(eight_bit_values)[0]["dt_polys"], expected)
    # signed integers (left by arithmetic on an image) by the same rule; PaddleOCR reads int16 as it is
    for signed in (image.astype(np.int16), image.astype(np.int64), sixteen.astype(np.int32), sixteen.astype(np.uint32)):
        np.testing.assert_array_equal(model.predict(signed)[0]["dt_polys"], expected)
    with pytest.raises(UnsupportedInputError, match=r"within 0-255 .*got -1 to 255"):
        model.predict(image.astype(np.int16) - (image == 0))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    for scale in (1.0, 255.0):  # PIL mode F, by the float arrays' rule
        as_float = Image.fromarray((gray / scale).astype(np.float32))
        assert as_float.mode == "F" and count(model.predict(as_float)) == [lines]
    with pytest.raises(UnsupportedInputError, match="mode 'La'"):
        model.predict(Image.new("La", (64, 32)))


def test_a_result_keeps_its_image_when_the_caller_reuses_its_array(model, banner, tmp_path):
    # input_img was the caller's array (or a view of it): a video loop writing the next frame into its buffer
    # changed every result kept, and what save_to_img drew on
    _path, image, lines = banner
    frame = image.copy()
    buffer = np.vstack([image, image])  # a frame read into part of a larger buffer: a view, C-contiguous
    (whole,) = model.predict(frame)
    (part,) = model.predict(buffer[: image.shape[0]])
    drawn_before = whole.img["res"].copy()
    frame[:] = 0
    buffer[:] = 0
    for result in (whole, part):
        assert np.array_equal(result.input_img, image) and len(result["dt_polys"]) == lines
    assert np.array_equal(whole.img["res"], drawn_before)
    saved = cv2.imread(str(whole.save_to_img(tmp_path / "frame.png")))
    assert np.array_equal(saved, drawn_before[:, :, ::-1])


def test_unsupported_types(model):
    for bad in (42, 3.5, None, {"path": "x"}, [["nested.png"]], np.zeros((5, 5, 2), np.uint8), np.zeros(0)):
        with pytest.raises(UnsupportedInputError):
            model.predict(bad)


# ---------------------------------------------------------------- odd but valid images


def test_odd_but_valid_images(model, banner, tmp_path):
    _path, image, lines = banner
    odd = {
        "one_pixel.png": np.full((1, 1, 3), 128, np.uint8),
        "blank.png": np.full((600, 800, 3), 255, np.uint8),
        "strip.png": np.full((60, 12000, 3), 255, np.uint8),
        "gray.png": cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
    }
    cv2.putText(odd["strip.png"], "a very long strip of text " * 20, (10, 45), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 0, 3)
    for name, array in odd.items():
        cv2.imwrite(str(tmp_path / name), array)
    cv2.imwrite(str(tmp_path / "deep16.png"), image.astype(np.uint16) * 257)
    rgba = np.dstack([image[:, :, ::-1], np.full(image.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(image[:, :, ::-1]).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    results = {r["input_path"].rsplit("/", 1)[-1]: r for r in model.predict(tmp_path)}
    assert sorted(results) == sorted([*list(odd), "deep16.png", "rgba.png", "cmyk.jpg"])
    assert len(results["one_pixel.png"]["dt_polys"]) == 0 and len(results["blank.png"]["dt_polys"]) == 0
    assert len(results["strip.png"]["dt_polys"]) >= 1
    for name in ("gray.png", "deep16.png", "rgba.png", "cmyk.jpg"):
        assert len(results[name]["dt_polys"]) == lines, name
    strip = results["strip.png"]["dt_polys"]
    assert strip[:, :, 0].max() <= 12000 and strip[:, :, 1].max() <= 60


def test_float_arrays_with_infinities_convert_without_overflow():
    from detector.image_pixels import to_bgr_uint8

    # -inf became float's lowest by nan_to_num, then overflowed when scaled ("overflow encountered in multiply")
    for values, expected in (([-np.inf, 0.5, np.nan, 1.0], [0, 128, 0, 255]), ([-np.inf, 3.0, np.inf], [0, 3, 255])):
        for dtype in (np.float32, np.float16):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                converted = to_bgr_uint8(np.array([values], dtype))
            assert converted[0, :, 0].tolist() == expected, dtype


def test_exif_orientation_is_applied(model, banner, tmp_path):
    _path, image, lines = banner
    upright = Image.fromarray(image[:, :, ::-1])
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    (result,) = model.predict(tmp_path / "phone.jpg")
    assert result.input_img.shape[:2] == image.shape[:2]  # displayed (upright) size
    assert len(result["dt_polys"]) == lines
    polys = result["dt_polys"].astype(int)
    assert np.ptp(polys[0][:, 0]) > 3 * np.ptp(polys[0][:, 1])  # a horizontal line, not a vertical one


# ---------------------------------------------------------------- PDF


def make_pdf(path, images):
    frames = [Image.fromarray(img[:, :, ::-1]) for img in images]
    frames[0].save(path, save_all=True, append_images=frames[1:], resolution=72.0)


def test_pdf_gives_one_result_per_page(model, pages, tmp_path):
    images = [cv2.imread(str(pages[name][0])) for name in ("banner", "receipt", "page")]
    pdf = tmp_path / "scan.pdf"
    make_pdf(pdf, images)
    results = model.predict(pdf)
    assert [r["page_index"] for r in results] == [0, 1, 2]
    assert all(r["input_path"] == str(pdf) for r in results)
    assert count(results) == [len(pages[name][1]) for name in ("banner", "receipt", "page")]
    # rendered at 144 dpi, a 72-dpi page image comes back twice as large
    assert results[0].input_img.shape[:2] == (images[0].shape[0] * 2, images[0].shape[1] * 2)
    low = TextDetection(model_dir=model.model_path, device="cpu", pdf_dpi=72).predict(pdf.read_bytes())
    assert low[0].input_img.shape[:2] == images[0].shape[:2] and count(low) == count(results)
    names = [r.save_to_json(tmp_path / "out").name for r in results]
    assert names == ["scan_0_res.json", "scan_1_res.json", "scan_2_res.json"]


def test_pdf_and_tiff_files_are_read_page_by_page_not_whole(model, pages, tmp_path, monkeypatch):
    # PaddleX opens both by path; read whole first, a 1.2 GB TIFF took 1.5 GB before its first page
    images = [cv2.imread(str(pages[name][0])) for name in ("banner", "receipt")]
    make_pdf(tmp_path / "scan.pdf", images)
    frames = [Image.fromarray(img[:, :, ::-1]) for img in images]
    frames[0].save(tmp_path / "fax.tif", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    expected = {name: model.predict((tmp_path / name).read_bytes()) for name in ("scan.pdf", "fax.tif")}

    def read_whole(*args, **kwargs):
        raise AssertionError("a page file was read whole")

    monkeypatch.setattr("detector.inputs.read_file_bytes", read_whole)
    for name, from_bytes in expected.items():
        from_file = model.predict(str(tmp_path / name))
        assert [r["page_index"] for r in from_file] == [0, 1]
        assert all(np.array_equal(a["dt_polys"], b["dt_polys"]) for a, b in zip(from_file, from_bytes))
        assert all(np.array_equal(a.input_img, b.input_img) for a, b in zip(from_file, from_bytes))


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="file names there are Unicode")
def test_a_pdf_whose_name_is_not_utf8_is_read(model, pages, tmp_path):
    # read by path, pypdfium2 4.x encoded the name as UTF-8: 'surrogates not allowed' for a Latin-1 name
    images = [cv2.imread(str(pages[name][0])) for name in ("banner", "receipt")]
    make_pdf(tmp_path / "plain.pdf", images)
    pdf = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.pdf"))
    (tmp_path / "plain.pdf").rename(pdf)
    assert [r["page_index"] for r in model.predict(str(pdf))] == [0, 1]


def pdf_with_a_filled_form_field() -> bytes:
    """One page: a line of page text and a filled text field whose appearance stream draws its value."""
    value = b"BT /Helv 18 Tf 2 8 Td (Invoice 48213) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] /DR << /Font << /Helv 5 0 R >> >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 420 220] /Contents 6 0 R /Annots [4 0 R] "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Type /Annot /Subtype /Widget /FT /Tx /T (number) /V (Invoice 48213) /Rect [20 20 400 50] "
        b"/DA (/Helv 18 Tf 0 g) /F 4 /P 3 0 R /AP << /N 7 0 R >> >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length 47 >>\nstream\nBT /F1 18 Tf 20 150 Td (Static page text) Tj ET\nendstream",
        b"<< /Length %d /Type /XObject /Subtype /Form /BBox [0 0 380 30] /Resources << /Font << /Helv 5 0 R >> >> >>"
        b"\nstream\n%s\nendstream" % (len(value), value),
    ]
    out, offsets = b"%PDF-1.7\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def test_pdf_form_fields_are_rendered_as_paddlex_renders_them(model):
    pdfium = pytest.importorskip("pypdfium2")
    data = pdf_with_a_filled_form_field()

    def rendered(with_forms):
        document = pdfium.PdfDocument(data)
        if with_forms:
            document.init_forms()  # what PaddleX's PDF reader does before rendering
        page = document[0]
        pixels = page.render(scale=2.0).to_numpy()
        page.close()
        document.close()
        return pixels

    (result,) = model.predict(data)
    assert np.array_equal(result.input_img, rendered(True)[:, :, :3])  # pdfium gives BGR(x) here
    assert not np.array_equal(rendered(True), rendered(False))  # the field's value is drawn only with forms
    assert len(result["dt_polys"]) == 2  # the page's line and the field's


def test_mixed_inputs_on_folder_workers_come_back_as_the_serial_loop_gives_them(model, pages, tmp_path):
    # two workers (cpu_threads=2): files go to the workers in groups, the PDF is read here page by page
    images = [cv2.imread(str(pages[name][0])) for name in ("banner", "receipt", "page")]
    pdf = tmp_path / "scan.pdf"
    make_pdf(pdf, images)
    inputs = [str(pages["page"][0]), str(pdf), pages["receipt"][0].read_bytes(), images[0], str(pages["banner"][0])]
    workers = TextDetection(model_dir=model.model_path, device="cpu", cpu_threads=2)
    serial = TextDetection(model_dir=model.model_path, device="cpu", cpu_threads=2)
    serial.folder_workers = 1
    assert workers.folder_workers == 2
    for batch_size in (1, 2):
        got, expected = workers.predict(inputs, batch_size=batch_size), serial.predict(inputs, batch_size=batch_size)
        assert [(r["input_path"], r["page_index"]) for r in got] == [
            (r["input_path"], r["page_index"]) for r in expected
        ]
        assert len(got) == 7 and all(np.array_equal(a["dt_polys"], b["dt_polys"]) for a, b in zip(got, expected))
        assert (
            count(got)
            == [len(pages[name][1]) for name in ("page", "banner", "receipt", "page", "receipt")]
            + [len(pages["banner"][1])] * 2
        )


# ---------------------------------------------------------------- TIFF (PaddleX reads every page)


def test_multipage_tiff_gives_one_result_per_page(model, pages, tmp_path):
    names = ("banner", "receipt", "page")
    images = [cv2.imread(str(pages[name][0])) for name in names]
    tiff = tmp_path / "fax.tiff"
    frames = [Image.fromarray(img[:, :, ::-1]) for img in images]
    frames[0].save(tiff, save_all=True, append_images=frames[1:], compression="tiff_lzw")
    results = model.predict(tiff)
    assert [r["page_index"] for r in results] == [0, 1, 2]
    assert all(r["input_path"] == str(tiff) for r in results)
    assert count(results) == [len(pages[name][1]) for name in names]
    for result, image in zip(results, images):
        np.testing.assert_array_equal(result.input_img, image)  # lossless: the very pixels
    assert [r.save_to_json(tmp_path / "out").name for r in results] == [
        "fax_0_res.json",
        "fax_1_res.json",
        "fax_2_res.json",
    ]
    # bytes are recognised by their header; one page is page 0, as PaddleX numbers a single-page .tif
    single = io.BytesIO()
    frames[0].save(single, format="TIFF")
    assert [(r["page_index"], len(r["dt_polys"])) for r in model.predict(single.getvalue())] == [
        (0, len(pages["banner"][1]))
    ]


def test_tiff_pages_in_other_modes(tmp_path):
    gray16 = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21
    bilevel = Image.fromarray((np.indices((40, 30)).sum(axis=0) % 2 * 255).astype(np.uint8)).convert("1")
    path = tmp_path / "modes.tif"
    Image.fromarray(gray16).save(path, save_all=True, append_images=[bilevel])
    first, second = list(iter_images(path))
    np.testing.assert_array_equal(first.image[:, :, 0], (gray16 >> 8).astype(np.uint8))  # 16-bit scaled as OpenCV does
    assert second.image.shape == (40, 30, 3) and set(np.unique(second.image)) == {0, 255}
    # a 16-bit page holding 0-255 values is read as it is, as PaddleX's convert("RGB") reads it (scaled: black)
    eight_bit_values = (np.arange(64 * 48) % 256).reshape(48, 64).astype(np.uint16)
    for order in ("<u2", ">u2"):
        Image.fromarray(eight_bit_values.astype(order)).save(path)
        (page,) = list(iter_images(path))
        np.testing.assert_array_equal(page.image[:, :, 0], eight_bit_values.astype(np.uint8))


def test_32_bit_integer_images_keep_8_bit_values_and_scale_16_bit_ones(tmp_path):
    eight = (np.arange(48 * 64) % 256).reshape(48, 64).astype(np.int32)
    sixteen = eight * 257
    path = tmp_path / "int32.tif"
    Image.fromarray(eight).save(path)  # mode "I": PaddleX's Pillow conversion keeps 0-255 as they are
    (loaded,) = list(iter_images(path))
    np.testing.assert_array_equal(loaded.image[:, :, 0], eight.astype(np.uint8))
    np.testing.assert_array_equal(pil_to_bgr(Image.fromarray(eight))[:, :, 2], eight.astype(np.uint8))
    np.testing.assert_array_equal(pil_to_bgr(Image.fromarray(sixteen))[:, :, 1], (sixteen >> 8).astype(np.uint8))


@pytest.mark.parametrize("suffix", [".hdr", ".pam"])
def test_the_pixel_budget_holds_for_formats_only_opencv_reads(suffix):
    # Pillow cannot tell these formats' size; their headers are read here, before OpenCV decodes
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    data = cv2.imencode(suffix, image.astype(np.float32) / 255 if suffix == ".hdr" else image)[1].tobytes()
    with pytest.raises(ImageTooLargeError):
        list(iter_images(data, LoadOptions(max_pixels=50 * 30 - 1)))
    (loaded,) = iter_images(data, LoadOptions(max_pixels=50 * 30))
    assert loaded.image.shape == (30, 50, 3)


def test_broken_or_huge_tiff_is_refused(model, banner, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 60)
    with pytest.raises(UnreadableImageError, match=r"bad\.tif"):
        model.predict(bad)
    _path, image, _ = banner
    big = tmp_path / "big.tif"
    small = Image.fromarray(image[:40, :40, ::-1])
    small.save(big, save_all=True, append_images=[Image.fromarray(image[:, :, ::-1])])
    limit = 40 * 40 + 1
    with pytest.raises(ImageTooLargeError, match="page 1"):
        list(iter_images(big, LoadOptions(max_pixels=limit)))


def test_a_multipage_tiff_cut_short_is_unreadable_wherever_it_is_cut(banner, tmp_path):
    _path, image, _ = banner
    whole = tmp_path / "whole.tif"
    first = Image.fromarray(image[:, :, ::-1])
    first.save(whole, save_all=True, append_images=[first.rotate(180), first], compression="tiff_lzw")
    data = whole.read_bytes()
    # Pillow writes the page directories last: a cut anywhere before them loses every page
    for cut in (120, 200, 500, 1000, 2000, 3000, len(data) // 2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's warnings about the cut file stay inside the reader
            with pytest.raises(UnreadableImageError, match="not a readable TIFF"):
                list(iter_images(data[:cut], DEFAULT_LOAD_OPTIONS))


def test_broken_pdf_is_unreadable(model, tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not really a pdf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(UnreadableImageError, match=r"bad\.pdf"):
            model.predict(bad)
        gc.collect()
    # read from the file since today: its stream was left open when pdfium refused it (an unclosed-file warning)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_pdf_of_no_pages_is_said_to_have_none(model, tmp_path):
    """pypdfium2 refuses a PDF of no pages with pdfium's last error code, which no successful load resets: it read
    'Failed to load document (PDFium: Success)' in a fresh process and 'Data format error' after a damaged PDF."""
    pdfium = pytest.importorskip("pypdfium2")
    empty = tmp_path / "empty.pdf"
    pdfium.PdfDocument.new().save(empty)  # pdfium's own writer: a catalog, and a page tree of none
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(b"%PDF-1.4 this is not really a pdf")
    said = r"empty\.pdf is a PDF of no pages .*nothing to detect text in$"
    for source in (empty, empty.read_bytes()):
        with pytest.raises(UnreadableImageError, match=said if source == empty else r"^<bytes> is a PDF of no pages"):
            model.predict(source)
    with pytest.raises(UnreadableImageError, match="not a readable PDF"):
        model.predict(damaged)  # pdfium's last error is now 'Data format error'
    with pytest.raises(UnreadableImageError, match=said):
        model.predict(empty)


def test_a_password_protected_pdf_is_said_to_be_one(model, tmp_path, monkeypatch):
    """pdfium's own words were 'Failed to load document (PDFium: Incorrect password error).' (it tries the empty
    password, which opens a file only encrypted against editing); the file stands in for one with a password."""
    pdfium_raw = pytest.importorskip("pypdfium2.raw")

    locked = tmp_path / "locked.pdf"
    make_pdf(locked, [np.full((40, 60, 3), 255, np.uint8)])
    monkeypatch.setattr(pdfium_raw, "FPDF_LoadDocument", lambda *args: None)
    monkeypatch.setattr(pdfium_raw, "FPDF_GetLastError", lambda: pdfium_raw.FPDF_ERR_PASSWORD)
    with pytest.raises(UnreadableImageError, match=r"locked\.pdf is a password-protected PDF: render its pages"):
        model.predict(locked)


def test_a_pdf_refused_for_having_no_pages_leaves_no_document_open(model, tmp_path, monkeypatch):
    """pypdfium2's PdfDocument refuses a PDF of no pages without closing the document pdfium opened for it (4.6 KiB
    held for good each time). Every pdfium document opened is counted, by pypdfium2 or by the reader, till closed."""
    import ctypes

    pdfium = pytest.importorskip("pypdfium2")
    import pypdfium2.raw
    import pypdfium2_raw

    opened: set[int] = set()

    def counted(load):
        def loaded(*args):
            document = load(*args)
            if document:
                opened.add(ctypes.cast(document, ctypes.c_void_p).value)
            return document

        return loaded

    def closed(close):
        return lambda document: (opened.discard(ctypes.cast(document, ctypes.c_void_p).value), close(document))[1]

    for bindings in (pypdfium2_raw, pypdfium2.raw):  # pypdfium2 calls the first, pypdfium2.raw copies its names
        for name in ("FPDF_LoadDocument", "FPDF_LoadMemDocument64", "FPDF_LoadCustomDocument"):
            monkeypatch.setattr(bindings, name, counted(getattr(bindings, name)))
        monkeypatch.setattr(bindings, "FPDF_CloseDocument", closed(bindings.FPDF_CloseDocument))
    empty = tmp_path / "empty.pdf"
    pdfium.PdfDocument.new().save(empty)
    assert not opened  # the writer's document is closed: the count sees pypdfium2's own opens and closes
    for source in (empty, empty.read_bytes()):
        with pytest.raises(UnreadableImageError, match="is a PDF of no pages"):
            model.predict(source)
        assert not opened
    make_pdf(tmp_path / "one.pdf", [np.full((40, 60, 3), 255, np.uint8)])
    assert [result["page_index"] for result in model.predict(tmp_path / "one.pdf")] == [0] and not opened


# ---------------------------------------------------------------- refusals


def test_corrupt_truncated_and_empty_files(model, banner, tmp_path):
    path, _, _ = banner
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(path.read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("hello")
    for name in ("empty.png", "truncated.png", "text.jpg"):
        with pytest.raises(UnreadableImageError, match=name):
            model.predict(tmp_path / name)
    with pytest.raises(InputNotFoundError):
        model.predict(tmp_path / "nope.png")


def test_decompression_bombs_are_refused_before_decoding(model, banner, tmp_path):
    path, image, _ = banner
    small = TextDetection(model_dir=model.model_path, device="cpu", max_pixels=1000)
    with pytest.raises(ImageTooLargeError, match="max-pixels"):
        small.predict(path)
    # a PNG whose header claims 100000 x 100000 pixels, with almost no data behind it
    header = io.BytesIO()
    Image.new("L", (1, 1)).save(header, "PNG")
    data = bytearray(header.getvalue())
    data[16:24] = (100000).to_bytes(4, "big") * 2  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the chunk valid
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bytes(data))
    with pytest.raises(ImageTooLargeError):
        model.predict(bomb)
    pdf = tmp_path / "big.pdf"
    make_pdf(pdf, [image])
    with pytest.raises(ImageTooLargeError, match="page 0"):
        small.predict(pdf)


def test_a_pdf_page_above_max_pixels_is_rendered_smaller_as_paddlex_renders_it(tmp_path, caplog):
    import logging
    import math

    from detector.pages import PDF_MIN_RENDER_SCALE, pdf_render_pixels

    pdf = tmp_path / "page.pdf"
    Image.new("RGB", (1000, 1400), "white").save(pdf, resolution=120)  # one 600 x 840 pt page
    caplog.set_level(logging.WARNING, logger="detector.inputs")
    (full,) = iter_images(pdf, LoadOptions())  # 144 dpi: 1200 x 1680 = 2,016,000 pixels
    assert full.image.shape[:2] == (1680, 1200) and not caplog.records
    # PaddleX 3.7 renders this page at scale 1.4083333331675805 (1183 x 845) and 0.49404761903495975
    # (415 x 297) for these limits (get_pdf_render_scale_within_pixel_limit, checked by hand)
    for limit, shape in ((1_000_000, (1183, 845)), (123_457, (415, 297))):
        (page,) = iter_images(pdf, LoadOptions(max_pixels=limit))
        assert page.image.shape[:2] == shape and shape[0] * shape[1] <= limit
        assert f"rendered at {shape[0] / 840 * 72:.1f} dpi, not 144" in caplog.text
    smallest = pdf_render_pixels(600, 840, PDF_MIN_RENDER_SCALE)
    assert smallest == math.ceil(60.0) * math.ceil(84.0)
    with pytest.raises(ImageTooLargeError, match=r"page 0 is 600x840 pt: 5,040 pixels even at 7.2 dpi"):
        list(iter_images(pdf, LoadOptions(max_pixels=smallest - 1)))


def test_load_options_are_validated():
    with pytest.raises(Exception, match="max_pixels"):
        LoadOptions(max_pixels=0)
    with pytest.raises(Exception, match="pdf_dpi"):
        LoadOptions(pdf_dpi=0)


def test_folders_stream_instead_of_loading_everything(banner, tmp_path):
    _path, image, _ = banner
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
    stream = iter_images(tmp_path)
    first = next(stream)
    (tmp_path / "4.png").write_bytes(b"garbage")  # still unread: the stream has not reached it
    assert first.input_path.endswith("0.png")
    with pytest.raises(UnreadableImageError):
        list(stream)


# ---------------------------------------------------------------- URLs


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    trickled = 0  # bytes /trickle.png has sent

    def do_GET(self):
        if self.path in ("/trickle.png", "/short.png"):
            return self._send_part()
        if self.path == "/private.png":  # basic authentication, user "ann", password "p@ss word"
            granted = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"ann:p@ss word").decode()
            self.path = "/banner.png" if granted else "/unauthorized"
        if self.path == "/redirect-to-private":
            self.send_response(302)
            self.send_header("Location", "/private.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path.startswith("/redirect-to/"):  # /redirect-to/<scheme>: a 302 to that scheme's URL
            scheme = self.path.rsplit("/", 1)[1]
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"{scheme}://127.0.0.1:{port}/banner.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        route = self.path.split("?", 1)[0]  # a query (a presigned URL's) names the same file
        status, content_type, body, delay = self.routes.get(route, (404, "text/plain", b"missing", 0))
        if delay:
            time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # the client may hang up on purpose (size cap, timeout): what those tests check
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def _send_part(self):
        """/trickle.png: one byte every 0.2 s of 5,000 (each wait well within any timeout, the whole 1,000 s);
        /short.png: 100 of the 5,000 bytes it announces, then the connection closes."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "5000")
        self.end_headers()
        if self.path == "/short.png":
            self.wfile.write(b"0" * 100)
            self.close_connection = True
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(5000):
                self.wfile.write(b"0")
                self.wfile.flush()
                type(self).trickled += 1
                time.sleep(0.2)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(banner, tmp_path_factory):
    path, image, _ = banner
    pdf = tmp_path_factory.mktemp("pdf") / "doc.pdf"
    make_pdf(pdf, [image, image])
    _Handler.routes = {
        "/banner.png": (200, "image/png", path.read_bytes(), 0),
        "/doc.pdf": (200, "application/pdf", pdf.read_bytes(), 0),
        # S3's type for an object uploaded without one, and a PDF with bytes before its header (a BOM), as PaddleX
        # reads them (it goes by the URL's suffix): refused by type, and read as an image, before
        "/s3.png": (200, "binary/octet-stream", path.read_bytes(), 0),
        "/download.pdf": (200, "application/force-download", b"\xef\xbb\xbf\r\n" + pdf.read_bytes(), 0),
        "/page.html": (200, "text/html", b"<html></html>", 0),
        "/broken.png": (200, "image/png", b"\x89PNG garbage", 0),
        "/huge.png": (200, "image/png", b"0" * 5000, 0),
        "/slow.png": (200, "image/png", path.read_bytes(), 3),
        "/unauthorized": (401, "text/plain", b"who are you", 0),
        "/overloaded.png": (503, "text/plain", b"try later", 0),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_urls(model, server, banner):
    _, _, lines = banner
    (result,) = model.predict(f"{server}/banner.png")
    assert result["input_path"] == f"{server}/banner.png" and len(result["dt_polys"]) == lines
    assert [r["page_index"] for r in model.predict(f"{server}/doc.pdf")] == [0, 1]
    assert len(model.predict(f"{server}/s3.png")[0]["dt_polys"]) == lines
    assert [r["page_index"] for r in model.predict(f"{server}/download.pdf")] == [0, 1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # the error response's socket is closed, not collected
        with pytest.raises(InputNotFoundError, match="HTTP 404"):
            model.predict(f"{server}/missing.png")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    with pytest.raises(UnsupportedInputError, match="text/html"):
        model.predict(f"{server}/page.html")
    with pytest.raises(UnreadableImageError):
        model.predict(f"{server}/broken.png")
    capped = TextDetection(model_dir=model.model_path, device="cpu", url_timeout=1)
    with pytest.raises(SourceUnavailableError, match="timeout 1 s") as refused:
        capped.predict(f"{server}/slow.png")
    assert refused.value.timed_out
    # url_timeout bounds the whole fetch: a server sending a byte now and then (each within the socket's
    # timeout) is left once url_timeout has passed, not when its body ends 1,000 s later
    with pytest.raises(SourceUnavailableError, match=r"did not arrive in time.*timeout 1 s") as refused:
        capped.predict(f"{server}/trickle.png")
    assert _Handler.trickled < 50 and refused.value.timed_out
    # the server's failures (worth trying again later; a service answers 502 / 504) against the client's (4xx)
    with pytest.raises(
        SourceUnavailableError, match="sent 100 of its 5,000 bytes, then closed the connection"
    ) as refused:
        model.predict(f"{server}/short.png")
    assert not refused.value.timed_out
    with pytest.raises(SourceUnavailableError, match="HTTP 503"):
        model.predict(f"{server}/overloaded.png")
    with pytest.raises(InputNotFoundError, match="HTTP 404") as refused:
        model.predict(f"{server}/missing.png")
    assert not isinstance(refused.value, SourceUnavailableError)
    capped.load_options = LoadOptions(url_max_bytes=1000)
    with pytest.raises(ImageTooLargeError, match="1,000-byte limit for URL inputs"):
        capped.predict(f"{server}/huge.png")
    with pytest.raises(SourceUnavailableError, match="cannot fetch") as refused:
        model.predict("http://127.0.0.1:9/nothing-listens-here.png")
    assert not refused.value.timed_out and pickle.loads(pickle.dumps(refused.value)).args == refused.value.args
    # redirects: to http(s) followed; to ftp:// not (urllib's own opener spoke FTP to any host and port a URL
    # named, and sent its reply back in the error)
    (followed,) = model.predict(f"{server}/redirect-to/http")
    assert len(followed["dt_polys"]) == lines
    with pytest.raises(InputNotFoundError, match=r"a redirect to ftp:// is not followed \(http and https only\)"):
        model.predict(f"{server}/redirect-to/ftp")


def test_url_credentials_are_sent_as_basic_authentication_and_no_message_shows_secrets(model, server, banner):
    """user:password@ in a URL was looked up as part of the host name ("Name or service not known"), and a
    presigned URL's signature came back in every error message, which a service logs."""
    _, _, lines = banner
    host = server.split("://", 1)[1]
    (result,) = model.predict(f"http://ann:p%40ss%20word@{host}/private.png")
    assert len(result["dt_polys"]) == lines
    with pytest.raises(InputNotFoundError, match="HTTP 401") as refused:
        model.predict(f"http://ann:wrong-secret@{host}/private.png")
    assert "wrong-secret" not in str(refused.value) and f"http://{host}/private.png" in str(refused.value)
    # the credentials go to the URL named, not to where it redirects
    with pytest.raises(InputNotFoundError, match="HTTP 401"):
        model.predict(f"http://ann:p%40ss%20word@{host}/redirect-to-private")
    signed = f"{server}/missing.png?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=0ddba11&flag"
    with pytest.raises(InputNotFoundError) as refused:
        model.predict(signed)
    assert f"{server}/missing.png?X-Amz-Credential=...&X-Amz-Signature=...&flag answered HTTP 404" in str(refused.value)
    assert "AKIAEXAMPLE" not in str(refused.value) and "0ddba11" not in str(refused.value)
    with pytest.raises(UnreadableImageError) as refused:
        model.predict(f"{server}/broken.png?token=hunter2")
    assert "hunter2" not in str(refused.value) and "broken.png?token=..." in str(refused.value)
    # and as `detect` names a source on its error line
    from detector.inputs import Source

    url = f"http://ann:p%40ss@{host}/a.png?sig=0ddba11#top"
    assert Source("url", url, url).describe() == f"http://{host}/a.png?sig=..."


# ---------------------------------------------------------------- reliability


def test_eight_threads_share_one_instance(model, pages):
    inputs = [p for p, _ in pages.values()] * 4
    serial = [model.predict(p)[0] for p in inputs]
    outcomes = [None] * len(inputs)

    def worker(offset):
        for index in range(offset, len(inputs), 8):
            outcomes[index] = model.predict(inputs[index])[0]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(outcomes, serial):
        np.testing.assert_array_equal(got["dt_polys"], want["dt_polys"])
        assert got["dt_scores"] == want["dt_scores"]


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x_res.json"
    write_atomically(target, b'{"old": true}')

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("detector.result.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, b'{"new": ' + b"1" * 100000)
    assert target.read_bytes() == b'{"old": true}'
    assert [p.name for p in target.parent.iterdir()] == ["x_res.json"]


def test_a_long_legal_name_is_written_and_an_error_names_the_target(tmp_path):
    longest = tmp_path / ("n" * 246 + "_res.json")  # 255 bytes: the longest name most filesystems take
    write_atomically(longest, b"{}")
    assert longest.read_bytes() == b"{}" and [p.name for p in tmp_path.iterdir()] == [longest.name]
    (tmp_path / "a_file").write_bytes(b"")
    with pytest.raises(OSError, match=r"cannot write .*a_file/x_res\.json"):
        write_atomically(tmp_path / "a_file" / "x_res.json", b"{}")


def test_folder_workers_get_plain_files_in_groups_and_page_files_alone():
    from detector.inputs import Source, group_sources, is_page_file, may_hold_pages

    def file(name):
        return Source("file", Path(name), name)

    names = ["a.png", "b.jpg", "c.pdf", "d.png", "e.TIF", "f.tiff", "g.png", "h.png", "i.png"]
    groups = [(paged, [source.name for source in group]) for paged, group in group_sources(list(map(file, names)), 2)]
    assert groups == [
        (False, ["a.png", "b.jpg"]),
        (True, ["c.pdf"]),
        (False, ["d.png"]),
        (True, ["e.TIF"]),
        (True, ["f.tiff"]),
        (False, ["g.png", "h.png"]),
        (False, ["i.png"]),
    ]
    assert [name for _, group in group_sources(list(map(file, names)), 1) for name in (s.name for s in group)] == names
    assert list(group_sources([], 3)) == []
    # a URL may hold pages, but nothing says so before it is fetched: a worker reads it whole
    url = Source("url", "http://example.com/x", "x")
    assert may_hold_pages(url) and not is_page_file(url)
    assert is_page_file(file("scan.pdf")) and not is_page_file(file("scan.png"))
    # bytes say so by their first bytes
    assert may_hold_pages(Source("bytes", b"%PDF-1.7\n...")) and may_hold_pages(Source("bytes", b"II*\x00..."))
    assert not may_hold_pages(Source("bytes", b"\x89PNG\r\n\x1a\n...")) and not may_hold_pages(Source("bytes", b""))


def test_reading_images_in_threads_leaves_the_warning_filters_as_they_were():
    # Pillow reads every non-JPEG/PNG header: nothing around that may leave a filter behind when threads
    # (folder workers, a service's requests) do it at once
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from detector.image_pixels import decode_image_bytes

    _ok, bmp = cv2.imencode(".bmp", np.full((8, 8, 3), 200, np.uint8))
    data = bmp.tobytes()
    before = list(warnings.filters)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: decode_image_bytes(data, "x.bmp", LoadOptions()), range(4000)))
    assert warnings.filters == before


def test_reading_files_through_pillow_leaves_the_process_s_warnings_alone(model, banner, tmp_path):
    """Reading a WebP, BMP, TIFF or EXIF-rotated JPEG entered warnings.catch_warnings, whose every use resets
    the once-only registries of the whole process: a service's "default" warnings came back on each request
    that read such a file (PaddleOCR shows them once)."""
    page = Image.fromarray(banner[1][:, :, ::-1])
    page.save(tmp_path / "page.webp", lossless=True)
    page.save(tmp_path / "page.bmp")
    page.save(tmp_path / "pages.tif", save_all=True, append_images=[page])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated
    page.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", exif=exif)

    def service_code():
        warnings.warn("option X is deprecated", UserWarning, stacklevel=1)

    for name in ("page.webp", "page.bmp", "pages.tif", "phone.jpg"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            for _ in range(3):
                service_code()
                assert model.predict(str(tmp_path / name))
        assert [str(w.message) for w in caught] == ["option X is deprecated"], name


def test_an_accepted_image_above_pillow_s_warning_limit_gets_no_warning(default_onnx, banner, tmp_path, monkeypatch):
    """Pillow warns above its MAX_IMAGE_PIXELS and refuses above twice it: a budget between the two left its
    limit as it was, and the warning (no longer silenced) reached the caller for an image it accepts. Pillow's
    limit and its default stand lowered here for a 200-million-pixel budget."""
    import detector.image_pixels

    Image.fromarray(banner[1][:, :, ::-1]).save(tmp_path / "page.webp", lossless=True)
    pixels = banner[1].shape[0] * banner[1].shape[1]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels - 1)
    monkeypatch.setattr(detector.image_pixels, "DEFAULT_LOAD_OPTIONS", LoadOptions(max_pixels=pixels - 1))
    roomy = TextDetection(model_dir=default_onnx, device="cpu", max_pixels=pixels + 100)  # within twice the limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(roomy.predict(str(tmp_path / "page.webp"))) == 1
    assert [str(w.message) for w in caught] == []
    limit_after = Image.MAX_IMAGE_PIXELS
    assert limit_after == pixels - 1  # put back


def test_a_pil_image_that_cannot_be_read_is_an_unreadable_image(model, banner, tmp_path):
    # a service handing on an upload it has closed, or a file cut short: AssertionError (IndexError under
    # python -O) or OSError came out of numpy and Pillow, past a service's `except DetectorError`
    with Image.open(banner[0]) as closed:
        pass
    with pytest.raises(UnreadableImageError, match=r"the PIL image cannot be read: \S"):  # a reason, in any Pillow
        model.predict(closed)
    data = Path(banner[0]).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with Image.open(tmp_path / "cut.png") as cut, pytest.raises(UnreadableImageError, match="cannot be read"):
        model.predict(cut)


def test_a_pixel_budget_above_pillow_s_own_limit_reads_what_it_allows(default_onnx, banner, tmp_path, monkeypatch):
    # Pillow refuses above twice its MAX_IMAGE_PIXELS (178,956,970 pixels) whatever max_pixels said: a 13500x13500
    # scan with max_pixels=300_000_000 was 'a decompression bomb'. Pillow's limit lowered here stands in for it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    page = Image.fromarray(banner[1][:, :, ::-1])
    page.convert("1").save(tmp_path / "bilevel.png")  # a PNG the fast decoders leave to Pillow's header reader
    page.save(tmp_path / "pages.tif", save_all=True, append_images=[page])
    roomy = TextDetection(model_dir=default_onnx, device="cpu", max_pixels=200_000_000)
    assert len(roomy.predict(str(tmp_path / "bilevel.png"))) == 1
    assert [r["page_index"] for r in roomy.predict(str(tmp_path / "pages.tif"))] == [0, 1]
    assert Image.MAX_IMAGE_PIXELS == 1000  # put back
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):  # within the default budget: Pillow's
        TextDetection(model_dir=default_onnx, device="cpu").predict(str(tmp_path / "pages.tif"))


def test_the_pixel_budget_holds_for_a_format_whose_header_is_not_read_first():
    # PFM: neither Pillow nor the OpenCV-only header reader tells its size before decoding
    ok, encoded = cv2.imencode(".pfm", np.zeros((40, 50, 3), np.float32))
    assert ok
    assert decode_image_bytes(encoded.tobytes(), "x.pfm", LoadOptions()).shape == (40, 50, 3)
    with pytest.raises(ImageTooLargeError, match="50x40 = 2,000 pixels, above the limit of 1,999"):
        decode_image_bytes(encoded.tobytes(), "x.pfm", LoadOptions(max_pixels=1999))


def test_a_tiff_of_many_pages_gives_its_first_page_without_walking_them_all(monkeypatch):
    # Pillow's n_frames reads every page's directory first (time in proportion to the square of their
    # number): a service could not stop such a file before its first page
    from PIL import TiffImagePlugin

    page = Image.new("L", (8, 8), 128)
    encoded = io.BytesIO()
    page.save(encoded, format="TIFF", save_all=True, append_images=[page] * 2999)
    directories_read = []
    original = TiffImagePlugin.TiffImageFile._seek

    def counting(self, frame):
        directories_read.append(frame)
        return original(self, frame)

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek", counting)
    pages = iter_images(encoded.getvalue(), DEFAULT_LOAD_OPTIONS)
    first = next(pages)
    assert first.page_index == 0 and max(directories_read, default=0) < 3
    assert sum(1 for _ in pages) == 2999  # and then every page, in order


def png_with_a_damaged_text_chunk(width: int, height: int) -> bytes:
    """A valid white PNG but for its tEXt chunk's checksum: Pillow refuses it, OpenCV's libpng warns and decodes."""
    import struct
    import zlib

    def chunk(kind, body, damaged=False):
        crc = zlib.crc32(kind + body) ^ (0xDEADBEEF if damaged else 0)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)

    rows = zlib.compress((b"\x00" + b"\xff" * (width * 3)) * height, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", b"Comment\x00hello", damaged=True)
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )


def test_a_png_pillow_refuses_is_held_to_the_pixel_budget_before_decoding(monkeypatch):
    data = png_with_a_damaged_text_chunk(300, 200)
    assert decode_image_bytes(data, "x.png", LoadOptions()).shape == (200, 300, 3)  # OpenCV reads it

    def no_decoding(*args):
        raise AssertionError("decoded before its size was checked")

    monkeypatch.setattr("detector.decode.cv2.imdecode", no_decoding)
    with pytest.raises(ImageTooLargeError, match="300x200 = 60,000 pixels, above the limit of 59,999"):
        decode_image_bytes(data, "x.png", LoadOptions(max_pixels=59_999))


def bmp_rle8(width: int, height: int, info_header_size: int) -> bytes:
    """An 8-bit RLE BMP whose pixels are one end-of-bitmap code: any declared size in about a kilobyte."""
    import struct

    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    pixels = b"\x00\x01"
    info = struct.pack("<IiiHHIIiiII", info_header_size, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    info += b"\x00" * (info_header_size - len(info))
    offset = 14 + info_header_size + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


@pytest.mark.parametrize("info_header_size", [40, 48, 64])
def test_a_bmp_whose_header_pillow_does_not_know_is_held_to_the_budget_before_decoding(monkeypatch, info_header_size):
    """OpenCV takes BMP info headers of any size from 12 on, Pillow only its known ones: a 1 KB upload with a
    48-byte header declaring 32000x32000 was decoded to 6 GB before its size was checked."""
    small = bmp_rle8(300, 200, info_header_size)
    assert decode_image_bytes(small, "x.bmp", LoadOptions()).shape == (200, 300, 3)  # OpenCV reads it

    def no_decoding(*args):
        raise AssertionError("decoded before its size was checked")

    monkeypatch.setattr("detector.decode.cv2.imdecode", no_decoding)
    with pytest.raises(ImageTooLargeError, match=r"1,024,000,000 pixels|1024000000 pixels"):
        decode_image_bytes(bmp_rle8(32000, 32000, info_header_size), "bomb.bmp", LoadOptions())


def tiff_in_one_tile(width: int, height: int, tile: int) -> bytes:
    """A little-endian 8-bit gray TIFF whose page is stored as one deflated tile of tile x tile."""
    import struct

    compressor = zlib.compressobj(9)
    raw = b"".join(compressor.compress(bytes(tile)) for _ in range(tile)) + compressor.flush()
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
               (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(raw))]  # fmt: skip
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 324 else value
        ifd += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
    return ifd + struct.pack("<I", 0) + raw


def test_a_tiff_tile_larger_than_the_budget_is_refused_before_it_is_decoded():
    """libtiff allocates a whole tile: a 100x100 page in one 40000x40000 tile (1.5 MB) took 1.6 GB."""
    from detector.pages import decode_tiff_pages

    budget = LoadOptions(max_pixels=1_000_000)
    (page,) = decode_tiff_pages(tiff_in_one_tile(100, 100, 256), "tiled.tif", budget)  # a usual tile: read
    assert page.shape == (100, 100, 3)
    with pytest.raises(ImageTooLargeError, match="page 0's tile is 4096x4096 = 16,777,216 pixels"):
        list(decode_tiff_pages(tiff_in_one_tile(100, 100, 4096), "bomb.tif", budget))


def test_a_pdf_counting_pages_it_does_not_hold_fails_at_the_missing_page():
    # pdfium believes a damaged /Count: the page it cannot load is an unreadable input, not an internal error
    single = io.BytesIO()
    Image.new("RGB", (50, 40), "white").save(single, format="PDF")
    lying = single.getvalue().replace(b"/Count 1", b"/Count 3")
    pages = iter_images(lying, DEFAULT_LOAD_OPTIONS)
    assert next(pages).page_index == 0
    with pytest.raises(UnreadableImageError, match="page 1 cannot be loaded"):
        next(pages)


def test_a_folder_walk_takes_the_names_paddlexs_suffix_test_takes(tmp_path):
    """PaddleX reads a walked file whose text after the last dot, in any case, is an image or PDF suffix: `.png`
    too, which pathlib gives no suffix (it was skipped), and `png`, all of which is that text."""
    from detector.folder_walk import list_folder_images

    taken = [".png", "png", "a.PNG", "..jpg", "b.tar.pdf"]
    for name in [*taken, "a.png.", "png.txt", ".hidden", "README"]:
        (tmp_path / name).write_bytes(b"")
    files, unreadable = list_folder_images(tmp_path)
    assert sorted(path.name for path in files) == sorted(taken) and not unreadable


def test_a_glob_takes_the_names_a_folder_walk_takes(tmp_path):
    """A pattern's matched files pass the walk's name test (folder_walk.has_image_suffix): `png` and `.png`
    were dropped by pathlib's suffix where the folder's walk reads them."""
    from detector.inputs import expand_inputs

    for name in [".png", "png", "a.PNG", "png.txt"]:
        (tmp_path / name).write_bytes(b"")
    matched = {Path(source.value).name for source in expand_inputs([str(tmp_path / "*"), str(tmp_path / ".*")])}
    assert matched == {".png", "png", "a.PNG"}


def folder_b_refused(monkeypatch) -> None:
    """os.scandir refuses any folder named b, as it does an unprivileged user (the tests run as root, whom
    modes do not stop)."""
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("/b"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("detector.folder_walk.os.scandir", scandir)


def test_a_folder_walk_keeps_its_place_for_a_subfolder_it_cannot_read(tmp_path, monkeypatch):
    """predict_iter gives the images before it, then raises there (the tests run as root, whom modes do not
    stop: os.scandir is made to refuse as it does an unprivileged user)."""
    from detector.inputs import expand_inputs, load_source

    for name in ("a.png", "b/x.png", "c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 255, np.uint8))
    folder_b_refused(monkeypatch)
    sources = expand_inputs(str(tmp_path))
    assert [(s.kind, Path(s.name).name) for s in sources] == [("file", "a.png"), ("unreadable", "b"), ("file", "c.png")]
    with pytest.raises(InputNotFoundError, match=r"/b: cannot be read \(Permission denied\)"):
        list(load_source(sources[1]))


def test_a_ray_batch_lists_a_subfolder_it_cannot_read_with_why(tmp_path, monkeypatch):
    """As `detect` gives it an error line: a row with that error, the files around it run (it refused the whole
    batch before Ray started)."""
    pytest.importorskip("ray", reason="the [ray] extra is not installed (make test installs it)")
    from detector.batch_inputs import resolve_inputs

    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8, 3), 255, np.uint8))
    folder_b_refused(monkeypatch)
    assert resolve_inputs([str(tmp_path)]) == [
        (str(tmp_path / "a.png"), None),
        (str(tmp_path / "b"), f"{tmp_path / 'b'}: cannot be read (Permission denied)"),
    ]


def test_a_folder_walk_skips_what_is_no_file_as_pathlib_did_and_names_entries_as_given(tmp_path, monkeypatch):
    """The walk that replaced rglob: a link looping to itself, or leading through a file, is no image (it was
    reported as a folder that cannot be read, exit 1); '..png' is an image name (rglob found it); an entry that
    cannot be read is named from the folder as given, as the files are."""
    from detector.inputs import expand_inputs

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "..png"):
        cv2.imwrite(str(folder / name), np.full((8, 8, 3), 255, np.uint8))
    (folder / "notes.txt").symlink_to("notes.txt")  # a loop, named as no image
    (folder / "loop.png").symlink_to("loop.png")  # a loop, named as an image
    (folder / "through.png").symlink_to(folder / "a.png" / "x.png")  # through a file: ENOTDIR
    (folder / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    folder_b_refused(monkeypatch)
    sources = expand_inputs("./imgs/")
    assert [(s.kind, s.name) for s in sources] == [
        ("file", "./imgs/..png"),
        ("file", "./imgs/a.png"),
        ("unreadable", "./imgs/b"),
    ]
