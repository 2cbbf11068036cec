"""The fast decoders give exactly OpenCV's IMREAD_COLOR pixels (what PaddleOCR reads), and are really used.

Every file is encoded here, with OpenCV, Pillow or by hand (interlaced PNG, odd chunks). For each one
the test states whether the fast path must be taken; where it is, the fast decoder's own output must
equal cv2.imdecode's, so the proof cannot pass by falling back; where it is not, the result must still
equal OpenCV's (EXIF rotation, CMYK, palette, 16-bit, transparency, corrupt data...).
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Optional

import cv2
import numpy as np
import pytest
from PIL import Image

from detector import decode
from detector.decode import (
    JPEG_DECODER,
    PNG_DECODER,
    PNG_PROBE_ROWS,
    choose_fast_decoder,
    decode_bgr,
    decode_fast,
    decode_png_numpy,
)
from detector.errors import UnreadableImageError
from detector.image_pixels import decode_image_bytes
from detector.load_options import DEFAULT_LOAD_OPTIONS

pytestmark = pytest.mark.runtime  # no Paddle, no model: make test-pythons runs it against every OpenCV we allow

SIZES = [(1, 1), (17, 9), (33, 65), (131, 97)]  # (width, height): partial MCUs and odd rows


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """BGR content with edges, gradients and noise, so every DCT coefficient and chroma sample matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=2).astype(np.int16)
    image += rng.integers(-40, 40, image.shape, dtype=np.int16)
    image[height // 3 : height // 2, width // 4 : width // 2] = (20, 200, 240)
    return np.clip(image, 0, 255).astype(np.uint8)


def opencv(data: bytes) -> Optional[np.ndarray]:
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)


def cv_encode(extension: str, image: np.ndarray, params: Optional[list] = None) -> bytes:
    ok, buffer = cv2.imencode(extension, image, params or [])
    assert ok
    return buffer.tobytes()


def pil_encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def rgb_pil(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(picture(width, height, seed)[:, :, ::-1].copy())


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# ----------------------------------------------------------------------------- JPEG cases


def jpeg_cases() -> list:
    """(name, bytes, fast decoder expected or None)."""
    cases = []
    sampling = {
        "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
        "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    }
    for width, height in SIZES:
        image = picture(width, height, width)
        for quality in (30, 90):
            for name, factor in sampling.items():
                for progressive in (0, 1):
                    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor]
                    params += [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive]
                    label = f"cv2 {width}x{height} q{quality} {name}{' progressive' if progressive else ''}"
                    cases.append((label, cv_encode(".jpg", image, params), JPEG_DECODER))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        cases.append(
            (f"cv2 gray {width}x{height}", cv_encode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 75]), JPEG_DECODER)
        )
    image = picture(131, 97, 5)
    cases.append(("cv2 q100", cv_encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 100]), JPEG_DECODER))
    cases.append(("cv2 restart markers", cv_encode(".jpg", image, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]), JPEG_DECODER))
    cases.append(("cv2 optimized Huffman", cv_encode(".jpg", image, [cv2.IMWRITE_JPEG_OPTIMIZE, 1]), JPEG_DECODER))
    # sampling layouts outside the proven set go to OpenCV
    for name in ("411", "440"):
        factor = getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{name}")
        cases.append((f"cv2 {name}", cv_encode(".jpg", image, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor]), None))
    # Pillow: its own marker layout (JFIF, optional EXIF, Adobe for CMYK)
    for subsampling, name in ((0, "444"), (1, "422"), (2, "420")):
        for progressive in (False, True):
            data = pil_encode(rgb_pil(33, 65, 7), "JPEG", quality=85, subsampling=subsampling, progressive=progressive)
            cases.append((f"Pillow {name}{' progressive' if progressive else ''}", data, JPEG_DECODER))
    cases.append(("Pillow gray", pil_encode(rgb_pil(33, 65).convert("L"), "JPEG", quality=60), JPEG_DECODER))
    cases.append(
        ("Pillow EXIF orientation 1", pil_encode(rgb_pil(33, 65), "JPEG", exif=exif_with_orientation(1)), JPEG_DECODER)
    )
    for orientation in (3, 6, 8):  # OpenCV rotates these: the fallback keeps its pixels
        data = pil_encode(rgb_pil(33, 65), "JPEG", exif=exif_with_orientation(orientation))
        cases.append((f"Pillow EXIF orientation {orientation}", data, None))
    cases.append(("Pillow CMYK", pil_encode(rgb_pil(33, 65).convert("CMYK"), "JPEG", quality=90), None))
    full = cv_encode(".jpg", picture(131, 97, 9), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cases.append(("truncated", full[: len(full) * 2 // 3], JPEG_DECODER))  # simplejpeg refuses, OpenCV decides
    return cases


# ----------------------------------------------------------------------------- PNG cases


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def insert_chunk_after_ihdr(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]  # signature (8) + IHDR (25)


def interlaced_png(pixels: np.ndarray, color_type: int) -> bytes:
    """An Adam7-interlaced 8-bit PNG (OpenCV and Pillow write none), every scanline with filter 0."""
    height, width = pixels.shape[:2]
    raw = bytearray()
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            for row in sub:
                raw += b"\x00" + row.tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 1)
    return (
        decode.PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(bytes(raw), 6))
        + png_chunk(b"IEND", b"")
    )


def filtered_png(pixels: np.ndarray, color_type: int, filters: list, stream: Optional[bytes] = None) -> bytes:
    """A non-interlaced 8-bit PNG whose row y is filtered with filters[y] (0 None, 1 Sub, 2 Up, 3 Average,
    4 Paeth; OpenCV writes Sub, Pillow mostly Sub and Up); stream replaces the zlib data if given."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).astype(np.int32)
    step = rows.shape[1] // width  # bytes per pixel
    raw = bytearray()
    for y, kind in enumerate(filters):
        row, prior = rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        left = np.concatenate([np.zeros(step, np.int32), row[:-step]])
        upper_left = np.concatenate([np.zeros(step, np.int32), prior[:-step]])
        if kind == 3:
            predicted = (left + prior) // 2
        elif kind == 4:
            estimate = left + prior - upper_left
            to_left, to_up, to_corner = (np.abs(estimate - value) for value in (left, prior, upper_left))
            predicted = np.where(
                (to_left <= to_up) & (to_left <= to_corner), left, np.where(to_up <= to_corner, prior, upper_left)
            )
        else:
            predicted = [np.zeros_like(row), left, prior][kind]
        raw += bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    data = zlib.compress(bytes(raw), 6) if stream is None else stream(bytes(raw))
    return decode.PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def filter_runs(height: int, seed: int) -> list:
    """Rows filtered None, Sub or Up in runs of random length (one row long too)."""
    rng = np.random.default_rng(seed)
    filters: list = []
    while len(filters) < height:
        filters += [int(rng.integers(0, 3))] * int(rng.integers(1, 6))
    return filters[:height]


def png_cases() -> list:
    cases = []
    for width, height in SIZES:
        image = picture(width, height, width + 1)
        for level in (0, 9):
            params = [cv2.IMWRITE_PNG_COMPRESSION, level]
            cases.append((f"cv2 BGR {width}x{height} level {level}", cv_encode(".png", image, params), PNG_DECODER))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        cases.append((f"cv2 gray {width}x{height}", cv_encode(".png", gray), PNG_DECODER))
        alpha = np.dstack([image, (np.arange(width * height) % 256).reshape(height, width).astype(np.uint8)])
        cases.append((f"cv2 BGRA {width}x{height} (alpha dropped)", cv_encode(".png", alpha), PNG_DECODER))
        cases.append((f"cv2 16-bit {width}x{height}", cv_encode(".png", image.astype(np.uint16) * 257 + 3), None))
        rgb = image[:, :, ::-1].copy()
        cases.append((f"interlaced RGB {width}x{height}", interlaced_png(rgb, 2), PNG_DECODER))
        rgba = np.dstack([rgb, np.full((height, width), 77, np.uint8)])
        cases.append((f"interlaced RGBA {width}x{height}", interlaced_png(rgba, 6), PNG_DECODER))
        cases.append((f"interlaced gray {width}x{height}", interlaced_png(gray, 0), PNG_DECODER))
        for name, pixels, color_type in (("RGB", rgb, 2), ("RGBA", rgba, 6), ("gray", gray, 0)):
            mixed = filtered_png(pixels, color_type, filter_runs(height, width))
            cases.append((f"None/Sub/Up rows {name} {width}x{height}", mixed, PNG_DECODER))
    source = rgb_pil(33, 65, 3)
    cases.append(("Pillow RGB", pil_encode(source, "PNG"), PNG_DECODER))
    cases.append(("Pillow RGBA", pil_encode(source.convert("RGBA"), "PNG"), PNG_DECODER))
    cases.append(("Pillow gray", pil_encode(source.convert("L"), "PNG"), PNG_DECODER))
    cases.append(("Pillow text chunk", pil_encode(source, "PNG", pnginfo=_text_info("Comment", "hello")), PNG_DECODER))
    cases.append(("Pillow palette", pil_encode(source.convert("P"), "PNG"), None))
    cases.append(("Pillow 1-bit", pil_encode(source.convert("1"), "PNG"), None))
    cases.append(("Pillow gray+alpha", pil_encode(source.convert("LA"), "PNG"), None))
    cases.append(("Pillow RGB with tRNS", pil_encode(source, "PNG", transparency=(10, 20, 30)), None))
    cases.append(("Pillow eXIf orientation 6", pil_encode(source, "PNG", exif=exif_with_orientation(6)), None))
    raw_profile = _text_info("Raw profile type exif", "\nexif\n      8\n4d4d002a00000008\n")
    cases.append(("ImageMagick raw EXIF profile", pil_encode(source, "PNG", pnginfo=raw_profile), None))
    base = cv_encode(".png", picture(131, 97, 11))
    gamma = png_chunk(b"gAMA", struct.pack(">I", 45455))  # OpenCV does not apply gamma: neither may we
    cases.append(("gAMA chunk", insert_chunk_after_ihdr(base, gamma), PNG_DECODER))
    cases.append(
        ("suggested palette in RGB", insert_chunk_after_ihdr(base, png_chunk(b"PLTE", bytes(range(48)))), None)
    )
    bad_crc = bytearray(base)
    bad_crc[len(base) - 16] ^= 0xFF  # the CRC of the last IDAT: libpng rejects it, libspng is told to ignore CRCs
    cases.append(("bad IDAT CRC", bytes(bad_crc), None))
    cases.append(("truncated", base[: len(base) // 2], None))
    wide = 1_000_001  # above libpng's default width limit: OpenCV fails, libspng would not
    header = struct.pack(">IIBBBBB", wide, 1, 8, 0, 0, 0, 0)
    too_wide = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(bytes(wide + 1))) + png_chunk(b"IEND", b"")
    cases.append(("wider than libpng allows", decode.PNG_SIGNATURE + too_wide, None))
    return cases


def _text_info(key: str, value: str) -> object:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


CASES = jpeg_cases() + png_cases()


@pytest.mark.parametrize(("name", "data", "expected"), CASES, ids=[case[0] for case in CASES])
def test_pixels_equal_opencv_and_the_fast_path_is_taken_where_expected(name, data, expected):
    reference = opencv(data)
    choice = choose_fast_decoder(data)
    assert (choice.decoder if choice else None) == expected, name
    if expected is not None and name != "truncated":
        fast = decode_fast(data, expected)  # the fast decoder alone: no fallback can hide a difference
        assert fast is not None, f"{expected} refused {name}"
        assert reference is not None and fast.dtype == np.uint8 and fast.flags.c_contiguous
        assert fast.shape == reference.shape and np.array_equal(fast, reference), name
        assert (choice.width, choice.height) == (reference.shape[1], reference.shape[0])
    result = decode_bgr(data, choice)
    if reference is None or (name == "truncated" and expected == JPEG_DECODER):  # cut short: see below
        assert result is None, name
    else:
        assert result is not None and np.array_equal(result, reference), name


def test_fast_path_covers_most_cases():
    # guards the parametrized proof: most files really go through the fast decoders
    fast = [name for name, _, expected in CASES if expected is not None]
    assert len(fast) > 0.7 * len(CASES)
    assert {expected for _, _, expected in CASES} == {JPEG_DECODER, PNG_DECODER, None}


def test_opencv_size_limits_set_by_environment_leave_decoding_to_opencv(monkeypatch):
    data = cv_encode(".png", picture(33, 65))
    assert choose_fast_decoder(data) is not None
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "100")
    assert choose_fast_decoder(data) is None


def test_a_jpeg_cut_short_is_left_to_the_damaged_path_not_to_opencv():
    # OpenCV 4.10 leaves the rows such a file does not reach as its allocation held them: other pixels on
    # every call (seen as a flaky parity test on the 4.10 floor); OpenCV 4.8 black, OpenCV 5 refuses it
    full = cv_encode(".jpg", picture(131, 97, 9), [cv2.IMWRITE_JPEG_QUALITY, 90])
    for damaged in (full[: len(full) * 2 // 3], full[:-2]):  # cut short; its end marker lost
        choice = choose_fast_decoder(damaged)
        assert decode_fast(damaged, JPEG_DECODER) is None and decode_bgr(damaged, choice) is None
        first, second = (decode_image_bytes(damaged, "scan.jpg", DEFAULT_LOAD_OPTIONS) for _ in range(2))
        assert np.array_equal(first, second)
    # a JPEG whose damage is elsewhere (its end marker there) is still OpenCV's to decode, as PaddleOCR's
    corrupt = full[:-2] + b"\x00\x11\x22" + full[-2:]  # libjpeg: "3 extraneous bytes before marker 0xd9"
    choice = choose_fast_decoder(corrupt)
    assert choice is not None and decode_fast(corrupt, JPEG_DECODER) is None
    reference = opencv(corrupt)
    assert reference is not None and np.array_equal(decode_bgr(corrupt, choice), reference)


def test_a_webp_is_not_turned_by_its_exif_orientation_as_in_paddleocr_s_opencv_4():
    pixels = picture(96, 40, 3)  # 96 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, ::-1]).save(buffer, format="WEBP", lossless=True, exif=exif.tobytes())
    data = buffer.getvalue()
    image = decode_bgr(data, choose_fast_decoder(data))
    # OpenCV 4.10 (PaddleOCR 3.7's) keeps the stored 96 x 40; OpenCV 5 alone would turn it to 40 x 96
    assert image is not None and np.array_equal(image, pixels)


def jpeg_with_app1_segments(jpeg: bytes, *payloads: bytes) -> bytes:
    """The JPEG with these APP1 segments inserted after its first segment (JFIF's APP0), in this order."""
    first_end = 4 + struct.unpack(">H", jpeg[4:6])[0]
    inserted = b"".join(b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload for payload in payloads)
    return jpeg[:first_end] + inserted + jpeg[first_end:]


def exif_without_orientation() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "camera maker"  # Make: an IFD0 with no Orientation tag
    return exif.tobytes()


@pytest.mark.parametrize(
    "first_app1",
    [b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>", b"FLIR\x00\x01junk", b"", exif_without_orientation()],
    ids=["XMP", "other", "empty", "EXIF without orientation"],
)
def test_a_jpeg_s_exif_orientation_after_another_app1_is_ignored_as_by_paddleocr_s_opencv_4_10(first_app1):
    pixels = picture(96, 40, 4)  # 96 wide, 40 high
    jpeg = cv_encode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    exif = exif_with_orientation(6)  # "Exif\0\0" and a TIFF block: "rotate 90° clockwise to display"
    data = jpeg_with_app1_segments(jpeg, first_app1, exif)
    image = decode_bgr(data, choose_fast_decoder(data))
    # OpenCV 4.10 (PaddleOCR 3.7's) reads the first APP1 only, so keeps the stored 96 x 40; 4.13 would turn it
    assert image is not None and np.array_equal(image, opencv(jpeg))
    turned = jpeg_with_app1_segments(jpeg, exif, first_app1)  # EXIF first: every OpenCV turns it
    image = decode_bgr(turned, choose_fast_decoder(turned))
    assert image is not None and image.shape == (96, 40, 3) and np.array_equal(image, opencv(turned))


def test_damaged_jpegs_are_decoded_as_far_as_they_go_with_a_warning(caplog):
    image = picture(131, 97, 9)
    full = cv_encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    whole = opencv(full)
    for damaged, whole_rows in ((full[:-2], 97), (full[: len(full) * 2 // 3], 16)):  # no end marker; cut short
        caplog.clear()
        with caplog.at_level("WARNING", logger="detector.inputs"):
            pixels = decode_image_bytes(damaged, "scan.jpg", DEFAULT_LOAD_OPTIONS)
        # on every OpenCV (5 refuses them; 4 leaves the missing rows black or unset): libjpeg-turbo's
        # tolerant mode keeps every row the data holds, and says so
        assert pixels.shape == whole.shape and np.array_equal(pixels[:whole_rows], whole[:whole_rows])
        assert ["scan.jpg is a damaged JPEG" in r.getMessage() for r in caplog.records] == [True]
    with pytest.raises(UnreadableImageError):  # headers only: nothing to decode
        decode_image_bytes(full[:300], "scan.jpg", DEFAULT_LOAD_OPTIONS)


def test_missing_fast_decoders_fall_back_to_opencv_silently(monkeypatch):
    monkeypatch.setattr(decode, "_import_optional", lambda name: None)
    for data in (
        cv_encode(".jpg", picture(33, 65)),
        cv_encode(".png", picture(33, 65)),
    ):
        choice = choose_fast_decoder(data)
        assert choice is not None and decode_fast(data, choice.decoder) is None
        assert np.array_equal(decode_bgr(data, choice), opencv(data))


def test_load_stage_uses_the_exact_decoders_and_the_pixel_budget():
    from detector.errors import ImageTooLargeError
    from detector.load_options import LoadOptions

    for data in (
        cv_encode(".jpg", picture(131, 97)),
        cv_encode(".png", picture(131, 97)),
        cv_encode(".bmp", picture(9, 5)),
    ):
        assert np.array_equal(decode_image_bytes(data, "x", DEFAULT_LOAD_OPTIONS), opencv(data))
    with pytest.raises(ImageTooLargeError):
        decode_image_bytes(cv_encode(".png", picture(131, 97)), "x", LoadOptions(max_pixels=131 * 97 - 1))
    with pytest.raises(ImageTooLargeError):
        decode_image_bytes(cv_encode(".jpg", picture(131, 97)), "x", LoadOptions(max_pixels=131 * 97 - 1))


def test_fast_decoders_are_imported_only_when_a_file_needs_them():
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import sys, detector, detector.inputs, detector.api; "
        "print(sorted({'simplejpeg', 'pyspng', 'zlib_ng'} & set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- PNG rows rebuilt by numpy


def test_png_rows_filtered_none_sub_or_up_are_rebuilt_by_numpy_exactly():
    # OpenCV's own files (Sub on every row), and every mix of runs of None, Sub and Up rows
    for width, height in [*SIZES, (300, 200)]:
        image = picture(width, height, width + 5)
        rgb, gray = image[:, :, ::-1].copy(), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        rgba = np.dstack([rgb, np.full((height, width), 99, np.uint8)])
        files = [cv_encode(".png", image), cv_encode(".png", gray), cv_encode(".png", np.dstack([image, gray]))]
        for seed in range(3):
            filters = filter_runs(height, seed)
            files += [filtered_png(rgb, 2, filters), filtered_png(rgba, 6, filters), filtered_png(gray, 0, filters)]
        for kind in (0, 1, 2):  # one filter on every row
            files.append(filtered_png(rgb, 2, [kind] * height))
        for data in files:
            assert choose_fast_decoder(data).decoder == PNG_DECODER
            rebuilt = decode_png_numpy(data)
            assert rebuilt is not None and rebuilt.dtype == np.uint8 and rebuilt.shape == (height, width, 3)
            assert np.array_equal(rebuilt, opencv(data))


def test_png_rows_filtered_average_or_paeth_go_to_libspng():
    rgb = picture(40, 2 * PNG_PROBE_ROWS)[:, :, ::-1].copy()
    height = rgb.shape[0]
    late_paeth = [1] * height
    late_paeth[PNG_PROBE_ROWS + 10] = 4  # past the probe: found once the whole image is inflated
    for filters in ([3] * height, [4] * height, [1, 4] * (height // 2), late_paeth):
        data = filtered_png(rgb, 2, filters)
        assert decode_png_numpy(data) is None
        assert np.array_equal(decode_fast(data, PNG_DECODER), opencv(data))  # libspng's pixels
    for data in (cv_encode(".png", rgb, [cv2.IMWRITE_PNG_COMPRESSION, 9]), interlaced_png(rgb, 2)):
        assert decode_png_numpy(data) is None  # Average rows; Adam7 passes
        assert np.array_equal(decode_fast(data, PNG_DECODER), opencv(data))


def test_png_image_data_that_does_not_end_with_the_image_is_left_to_opencv():
    rgb = picture(33, 20)[:, :, ::-1].copy()
    row = 1 + 33 * 3
    streams = {
        "one byte short": lambda raw: zlib.compress(raw[:-1]),
        "a row too many": lambda raw: zlib.compress(raw + raw[-row:]),
        "bytes after the stream": lambda raw: zlib.compress(raw) + b"\x00\x01",
        "stream cut short": lambda raw: zlib.compress(raw)[:-6],
        "not a zlib stream": lambda raw: b"\x78\x9c" + bytes(40),
    }
    for name, stream in streams.items():
        data = filtered_png(rgb, 2, [1] * 20, stream=stream)
        with pytest.raises(ValueError):
            decode_png_numpy(data)
        assert decode_fast(data, PNG_DECODER) is None, name
        reference, result = opencv(data), decode_bgr(data, choose_fast_decoder(data))
        assert (reference is None and result is None) or np.array_equal(result, reference), name


def test_png_rows_go_to_libspng_without_zlib_ng(monkeypatch):
    data = cv_encode(".png", picture(33, 65))
    real = decode._import_optional
    monkeypatch.setattr(decode, "_import_optional", lambda name: None if name.startswith("zlib_ng") else real(name))
    assert decode_png_numpy(data) is None
    assert np.array_equal(decode_fast(data, PNG_DECODER), opencv(data))
