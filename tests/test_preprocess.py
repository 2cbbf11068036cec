import numpy as np
import pytest

from detector.errors import InvalidParameterError
from detector.preprocess import (
    group_by_shape,
    normalize_image,
    pad_small_image,
    resize_for_detection,
    target_size,
)

pytestmark = pytest.mark.runtime  # no Paddle needed: make test-pythons runs these on every Python


@pytest.mark.parametrize(
    "height, width, limit, limit_type, expected",
    [
        (500, 1000, 960, "max", (480, 960)),  # long side shrunk to 960
        (1000, 500, 960, "max", (960, 480)),
        (100, 200, 960, "max", (96, 192)),  # small: not enlarged, only rounded to 32
        (80, 100, 960, "max", (64, 96)),  # 80/32 = 2.5 rounds half to even, as Python (and PaddleOCR) round
        (100, 200, 736, "min", (736, 1472)),  # short side raised to 736
        (800, 900, 736, "min", (800, 896)),  # already large enough: only rounded
        (10, 10, 960, "max", (32, 32)),  # never below 32
        (100, 2000, 640, "resize_long", (32, 640)),  # PaddleX's third type: the long side to the limit, down
        (100, 200, 640, "resize_long", (320, 640)),  # ... and up
    ],
)
def test_target_size_follows_paddleocr_rules(height, width, limit, limit_type, expected):
    assert target_size(height, width, limit, limit_type, 4000) == expected


def test_max_side_limit_caps_the_long_side():
    # min-type scaling would make this strip 7360 px long; max_side_limit shrinks it back to 4000
    assert target_size(100, 1000, 736, "min", 4000) == (384, 4000)
    assert target_size(100, 1000, 736, "min", 2000) == (192, 1984)  # 1999.99 truncates to 1999, which rounds to 62 * 32


def test_unknown_limit_type_is_a_parameter_error():
    with pytest.raises(InvalidParameterError, match="'max', 'min' or 'resize_long'"):
        target_size(100, 100, 960, "resize_short", 4000)


def test_resize_reports_ratios_against_the_original():
    image = np.full((500, 1000, 3), 255, np.uint8)
    resized, info = resize_for_detection(image, 960, "max", 4000)
    assert resized.shape == (480, 960, 3)
    assert (info.src_height, info.src_width) == (500, 1000)
    assert info.ratio_height == pytest.approx(480 / 500)
    assert info.ratio_width == pytest.approx(960 / 1000)


def test_unchanged_size_returns_the_image_itself():
    image = np.zeros((64, 96, 3), np.uint8)
    resized, info = resize_for_detection(image, 960, "max", 4000)
    assert resized is image and (info.ratio_height, info.ratio_width) == (1.0, 1.0)


def test_tiny_images_are_padded_top_left_before_resizing():
    image = np.full((10, 20, 3), 7, np.uint8)
    padded = pad_small_image(image)
    assert padded.shape == (32, 32, 3)
    assert (padded[:10, :20] == 7).all() and padded[10:].sum() == 0 and padded[:, 20:].sum() == 0
    resized, info = resize_for_detection(image, 960, "max", 4000)
    assert resized.shape == (32, 32, 3) and (info.src_height, info.src_width) == (10, 20)
    big = np.zeros((40, 30, 3), np.uint8)  # 40 + 30 >= 64: left alone
    assert pad_small_image(big) is big


def test_normalize_is_imagenet_on_bgr_channels_in_chw():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255  # blue channel
    out = normalize_image(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    assert out[0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-6)
    assert out[1, 0, 0] == pytest.approx(-0.456 / 0.224, rel=1e-6)
    assert out[2, 0, 0] == pytest.approx(-0.406 / 0.225, rel=1e-6)


def test_group_by_shape_keeps_first_seen_order():
    a, b = np.zeros((3, 32, 64)), np.zeros((3, 64, 32))
    assert group_by_shape([a, b, a, a, b]) == [[0, 2, 3], [1, 4]]


def paddlex_normalize(image, mean, std, scale):
    """PaddleX's NormalizeImage (order hwc) then ToCHWImage, step by step, as its processors.py does it."""
    alpha = [scale / s for s in std]
    beta = [-m / s for m, s in zip(mean, std)]
    planes = [image[:, :, c].astype(np.float32) for c in range(image.shape[2])]
    for c, plane in enumerate(planes):
        plane *= alpha[c]
        plane += beta[c]
    return np.ascontiguousarray(np.stack(planes, axis=-1).transpose(2, 0, 1))


@pytest.mark.parametrize("shape", [(32, 32, 3), (37, 129, 3), (736, 960, 3)])
def test_normalize_is_bit_identical_to_paddlex(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = paddlex_normalize(image, mean, std, 1 / 255)
    np.testing.assert_array_equal(normalize_image(image, mean, std, 1 / 255), expected)
    # written into a slot of a batch, and from a non-contiguous view
    batch = np.full((2, *expected.shape), np.nan, np.float32)
    normalize_image(np.ascontiguousarray(image[:, ::-1])[:, ::-1], mean, std, 1 / 255, out=batch[1])
    np.testing.assert_array_equal(batch[1], expected)
    assert np.isnan(batch[0]).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_every_pixel_value_normalizes_as_paddlex_does(dtype):
    # all 256 values in each channel, the table path (uint8) and the arithmetic one (other dtypes)
    image = np.stack([np.roll(np.arange(256), shift) for shift in (0, 85, 170)], axis=-1)[np.newaxis].astype(dtype)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    np.testing.assert_array_equal(
        normalize_image(image, mean, std, 1 / 255), paddlex_normalize(image.astype(np.uint8), mean, std, 1 / 255)
    )


def test_normalize_writes_into_a_strided_slot_of_a_bucketed_batch():
    # shape_bucket pads each image into the top-left corner: its rows are strided in the batch
    image = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    batch = np.zeros((1, 3, 64, 64), np.float32)
    normalize_image(image, mean, std, 1 / 255, out=batch[0, :, :40, :50])
    np.testing.assert_array_equal(batch[0, :, :40, :50], paddlex_normalize(image, mean, std, 1 / 255))
    assert not batch[0, :, 40:].any() and not batch[0, :, :, 50:].any()
