"""detect eval: the DetMetric rules on hand-made polygons, the label readers, the labelled-set
generator, and the command end to end on a few rendered images."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector import TextDetection
from detector.errors import DetectorError, ImageTooLargeError, InvalidParameterError
from detector.evaluation.labels import LabelFileError, read_labels
from detector.evaluation.metric import (
    ImageScore,
    LabelledPolygon,
    combine_scores,
    intersection_area,
    is_simple_polygon,
    polygon_iou,
    score_image,
)
from detector.load_options import DEFAULT_LOAD_OPTIONS
from tools.dev.labelled_set import render_labelled_set

REPO_ROOT = Path(__file__).resolve().parent.parent


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def rotated(cx, cy, w, h, degrees):
    angle = np.deg2rad(degrees)
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return corners @ rotation.T + [cx, cy]


def labels(*polygons, dont_care=()):
    return [LabelledPolygon(p, dont_care=i in dont_care) for i, p in enumerate(polygons)]


# --- polygon geometry -------------------------------------------------------------------------------


def test_iou_of_overlapping_boxes_is_intersection_over_union():
    assert polygon_iou(box(0, 0, 10, 10), box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert polygon_iou(box(0, 0, 10, 10), box(20, 20, 30, 30)) == 0.0


def test_intersection_of_non_convex_polygons():
    # an L shape (area 75) against the square covering its missing corner: they share only an edge
    ell = np.array([[0, 0], [10, 0], [10, 5], [5, 5], [5, 10], [0, 10]], dtype=np.float64)
    assert intersection_area(ell, box(5, 5, 10, 10)) == pytest.approx(0.0)
    assert intersection_area(ell, box(0, 0, 10, 10)) == pytest.approx(75.0)
    assert intersection_area(ell, box(2, 2, 8, 8)) == pytest.approx(36 - 9)


def test_polygons_that_are_not_simple_are_recognised():
    assert is_simple_polygon(box(0, 0, 4, 2))
    # nearly collinear corners: float arithmetic called this fold-back a fold; shapely (exact) keeps it
    assert is_simple_polygon(np.array([[0, 0], [0.1, 0.3], [0.03, 0.09], [0, 5]]))
    assert not is_simple_polygon(np.array([[0, 0], [4, 2], [4, 0], [0, 2]]))  # bow tie
    assert not is_simple_polygon(np.array([[0, 0], [2, 0], [4, 0], [1, 0]]))  # no area
    assert not is_simple_polygon(np.array([[0, 0], [4, 0]]))
    assert not is_simple_polygon(np.zeros((0, 2)))  # no corners at all (the exact form raised ValueError on it)


# --- DetMetric rules -----------------------------------------------------------------------------------


def test_an_iou_just_below_one_half_is_no_match():
    # shapely's IoU 0.4999899 (DetMetric: no match); Clipper's 1/1024 px grid made it 0.5000027, a match
    label = np.array([[467, 494], [533, 498], [533, 506], [467, 502]], np.float64)
    detection = np.array([[465, 494], [506, 497], [505, 504], [465, 501]], np.float64)
    assert polygon_iou(detection, label) == pytest.approx(0.4999898749670936, abs=1e-6)
    assert score_image([LabelledPolygon(label)], [detection]).matched == 0


def test_a_thin_label_is_scored_exactly():
    # a label 1e-6 px tall, a detection over 52 % of it: IoU 0.52, as shapely has it; the fixed 2**20 grid of
    # Clipper rounded both heights to 2**-20 while the union came from the float areas: 0.484, no match
    assert polygon_iou(box(0, 0, 52, 1e-6), box(0, 0, 100, 1e-6)) == pytest.approx(0.52, rel=1e-9)
    assert score_image(labels(box(0, 0, 100, 1e-6)), [box(0, 0, 52, 1e-6)]).matched == 1


def test_a_sliver_thinner_than_a_grid_step_is_scored_not_raised():
    # valid for shapely (is_valid, is_simple), 1e-7 px tall: on the fixed 2**20 grid it collapsed to a line and
    # pyclipper raised 'The path is invalid for clipping', ending detect eval with a traceback
    sliver = np.array([[0, 0], [200, 0], [200, 1e-7], [0, 1e-7]])
    # a don't-care sliver covers 1e-8 of the box: the box counts; a sliver detection inside a don't-care is set aside
    assert score_image(labels(sliver, dont_care=(0,)), [box(0, 0, 10, 10)]) == ImageScore(0, 1, 0)
    assert score_image(labels(box(0, 0, 300, 10), dont_care=(0,)), [sliver]) == ImageScore(0, 0, 0)
    assert intersection_area(sliver, box(0, 0, 10, 10)) == pytest.approx(1e-6, rel=1e-9)


def test_an_exact_tie_of_integer_quads_is_no_match():
    # a slanted parallelogram and the same shifted by a third of its long side: IoU exactly 1/2 (shapely: 0.5);
    # on a grid of 2**61 steps Clipper's double arithmetic put a crossing point a few steps off, and it matched
    label = np.array([[204, 84], [297, 87], [294, 97], [201, 94]], np.float64)
    assert score_image(labels(label), [label - [31, 1]]).matched == 0


def test_perfect_match():
    score = score_image(labels(box(0, 0, 100, 20), box(0, 40, 100, 60)), [box(0, 0, 100, 20), box(0, 40, 100, 60)])
    assert (score.labels, score.detections, score.matched) == (2, 2, 2)
    assert combine_scores([score]).hmean == 1.0


def test_a_line_split_in_two_detections_matches_neither_half():
    # each half covers half the line: IoU 0.5 is not > 0.5
    score = score_image(labels(box(0, 0, 100, 20)), [box(0, 0, 50, 20), box(50, 0, 100, 20)])
    assert (score.labels, score.detections, score.matched) == (1, 2, 0)


def test_two_lines_merged_into_one_detection_match_at_most_once():
    # the merged box overlaps the larger line with IoU 0.6: one match, one line missed (one-to-one)
    score = score_image(labels(box(0, 0, 100, 30), box(0, 30, 100, 50)), [box(0, 0, 100, 50)])
    assert (score.labels, score.detections, score.matched) == (2, 1, 1)
    result = combine_scores([score])
    assert (result.precision, result.recall) == (1.0, 0.5)


def test_one_detection_matches_only_one_of_two_identical_labels():
    score = score_image(labels(box(0, 0, 10, 10), box(0, 0, 10, 10)), [box(0, 0, 10, 10)])
    assert score.matched == 1


def test_dont_care_label_sets_aside_detections_mostly_inside_it():
    gts = labels(box(0, 0, 100, 20), box(0, 50, 100, 70), dont_care=(1,))
    # the second detection lies 80 % inside the don't-care region: neither a hit nor a false alarm
    score = score_image(gts, [box(0, 0, 100, 20), box(0, 50, 100, 75)])
    assert (score.labels, score.detections, score.matched) == (1, 1, 1)
    # half inside is not more than half: it stays a false alarm
    score = score_image(gts, [box(0, 0, 100, 20), box(0, 60, 100, 80)])
    assert (score.labels, score.detections, score.matched) == (1, 2, 1)


def test_dont_care_label_is_never_matched_nor_missed():
    score = score_image(labels(box(0, 0, 100, 20), dont_care=(0,)), [])
    assert (score.labels, score.detections, score.matched) == (0, 0, 0)


def test_rotated_text_matches_its_rotated_label_and_not_an_upright_box():
    line = rotated(200, 100, 200, 30, 25)
    assert score_image(labels(line), [rotated(201, 101, 196, 32, 24)]).matched == 1
    xs, ys = line[:, 0], line[:, 1]
    upright = box(xs.min(), ys.min(), xs.max(), ys.max())  # the axis-aligned box is mostly background
    assert polygon_iou(upright, line) < 0.5
    assert score_image(labels(line), [upright]).matched == 0


def test_empty_image_and_empty_prediction():
    nothing = score_image([], [])
    assert (nothing.labels, nothing.detections, nothing.matched) == (0, 0, 0)
    missed = score_image(labels(box(0, 0, 10, 10)), [])
    false_alarm = score_image([], [box(0, 0, 10, 10)])
    result = combine_scores([nothing, missed, false_alarm])
    assert (result.precision, result.recall, result.hmean) == (0.0, 0.0, 0.0)
    assert combine_scores([]).hmean == 0.0


def test_scores_are_summed_over_images_not_averaged():
    perfect = score_image(labels(box(0, 0, 10, 10)), [box(0, 0, 10, 10)])
    poor = score_image(labels(*[box(0, 20 * i, 10, 20 * i + 10) for i in range(3)]), [])
    result = combine_scores([perfect, poor])
    assert result.recall == pytest.approx(1 / 4)  # a per-image mean would say (1 + 0) / 2
    assert result.precision == 1.0


def test_invalid_polygons_are_dropped_from_both_sides():
    bow_tie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], dtype=np.float64)
    score = score_image(labels(box(0, 0, 10, 10), bow_tie), [box(0, 0, 10, 10), bow_tie])
    assert (score.labels, score.detections, score.matched) == (1, 1, 1)


# --- label readers -----------------------------------------------------------------------------------------


def write(path: Path, text: str, encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def test_paddleocr_label_file(tmp_path):
    entries = [
        {"transcription": "hello", "points": [[1, 2], [30, 2], [30, 12], [1, 12]]},
        {"transcription": "###", "points": [[5, 50], [40, 50], [40, 60], [20, 65], [5, 60]]},
    ]
    label_file = write(tmp_path / "set" / "train.txt", f"imgs/a.jpg\t{json.dumps(entries)}\n\nimgs/b.jpg\t[]\n")
    images = read_labels(label_file)
    assert [item.image_path for item in images] == [
        tmp_path / "set" / "imgs" / "a.jpg",
        tmp_path / "set" / "imgs" / "b.jpg",
    ]
    first = images[0].labels
    assert [polygon.dont_care for polygon in first] == [False, True]
    assert first[1].points.shape == (5, 2)
    assert images[1].labels == ()
    assert (
        read_labels(label_file, image_dir=tmp_path / "elsewhere")[0].image_path
        == tmp_path / "elsewhere" / "imgs" / "a.jpg"
    )


@pytest.mark.parametrize(
    "line, complaint",
    [
        ("a.jpg [] ", "expected 'image_path<TAB>"),
        ('["a.jpg", 2]\t[]', "must hold file names"),
        ('a.jpg\t[{"points": [[1, 2], [3, 4]', "not valid JSON"),
        ('a.jpg\t{"points": []}', "must be a JSON list"),
        ('a.jpg\t[{"transcription": "x"}]', 'region 0 must be an object with "points"'),
        ('a.jpg\t[{"text": "###", "points": [[1, 1], [20, 1], [20, 10]]}]', 'with "points" and "transcription"'),
        ('a.jpg\t[{"transcription": "x", "points": []}]', "non-empty list of [x, y] pairs"),
        ('a.jpg\t[{"transcription": "x", "points": [1, 2]}]', "non-empty list of [x, y] pairs"),
        ('a.jpg\t[{"transcription": "x", "points": [[1, "b"], [3, 4], [5, 6]]}]', "list of [x, y] pairs"),
        ('a.jpg\t[{"transcription": "x", "points": [[1e308, 0], [1e308, 1e308], [0, 1e308]]}]', "beyond ±1e+09"),
        ('a.jpg\t[{"transcription": "x", "points": [[0, 0], [NaN, 0], [1, 1]]}]', "finite numbers (no NaN"),
        ('a.jpg\t[{"transcription": "x", "points": [[0, 0], [9, 0], [1, -Infinity]]}]', "finite numbers (no NaN"),
    ],
)
def test_paddleocr_label_file_errors_name_file_and_line(tmp_path, line, complaint):
    label_file = write(tmp_path / "labels.txt", f"ok.jpg\t[]\n{line}\n")
    with pytest.raises(LabelFileError) as error:
        read_labels(label_file)
    assert f"{label_file}, line 2" in str(error.value)
    assert complaint in str(error.value)


def test_icdar2015_folder_with_byte_order_mark(tmp_path):
    (tmp_path / "img_1.jpg").write_bytes(b"")
    (tmp_path / "img_2.png").write_bytes(b"")
    write(
        tmp_path / "gt_img_1.txt",
        "377,117,463,117,465,130,378,130,Genaxis Theatre\n493,115,519,115,519,131,493,131,###\n1,1,20,1,20,9,1,9,a,b\n",
        encoding="utf-8-sig",
    )
    write(tmp_path / "gt_img_2.txt", "")
    images = read_labels(tmp_path)
    assert [item.image_path.name for item in images] == ["img_1.jpg", "img_2.png"]
    regions = images[0].labels
    assert len(regions) == 3
    np.testing.assert_array_equal(regions[0].points, [[377, 117], [463, 117], [465, 130], [378, 130]])
    assert [region.dont_care for region in regions] == [False, True, False]
    assert images[1].labels == ()


def test_a_wrong_kind_of_label_path_says_what_to_pass(tmp_path):
    (tmp_path / "img_1.jpg").write_bytes(b"")
    gt = write(tmp_path / "gt_img_1.txt", "1,1,20,1,20,9,1,9,text\n")
    with pytest.raises(LabelFileError, match=r"reads like ICDAR 2015 ground truth: pass the folder"):
        read_labels(gt)  # one gt file where its folder is meant
    ppocrlabel = tmp_path / "myset"
    ppocrlabel.mkdir()
    write(ppocrlabel / "Label.txt", "myset/x.jpg\t[]\n")
    with pytest.raises(LabelFileError, match=r"pass the file itself: --labels .*Label\.txt"):
        read_labels(ppocrlabel)  # PPOCRLabel's folder where its Label.txt is meant
    from detector.evaluation.evaluate import check_labelled_images_exist

    windows = write(tmp_path / "windows.txt", "imgs\\doc one.jpg\t[]\n")
    with pytest.raises(DetectorError, match=r"backslashes, Windows' separator: write / instead"):
        check_labelled_images_exist(read_labels(windows))


def test_mlt_lines_carry_a_script_before_the_text(tmp_path):
    # ICDAR 2017/2019 MLT gt_<image>.txt: x1,...,y4,script,text. 'None,###' was read as text: a region to
    # find, where it is a don't-care one
    (tmp_path / "img_1.jpg").write_bytes(b"")
    write(
        tmp_path / "gt_img_1.txt",
        "1,1,20,1,20,9,1,9,None,###\n1,11,20,11,20,19,1,19,Latin,Hello, world\n1,21,20,21,20,29,1,29,Latin\n",
    )
    regions = read_labels(tmp_path)[0].labels
    assert [region.dont_care for region in regions] == [True, False, False]


def test_icdar2015_text_is_compared_as_written(tmp_path):
    # PaddleOCR's gen_label.py and ICDAR's own script compare the text after the 8th comma as it stands:
    # ' ###' and '### ' are regions to find; they were stripped into don't-care ones
    (tmp_path / "img_1.jpg").write_bytes(b"")
    lines = ["1,1,20,1,20,9,1,9, ###", "1,11,20,11,20,19,1,19,### ", "1,21,20,21,20,29,1,29,###"]
    write(tmp_path / "gt_img_1.txt", "".join(line + "\r\n" for line in lines))
    regions = read_labels(tmp_path)[0].labels
    assert [region.dont_care for region in regions] == [False, False, True]


@pytest.mark.parametrize(
    "line, complaint",
    [
        ("1,2,3,4,5,6,7,text", "expected 8 coordinates and a transcription"),
        ("1,2,3,x,5,6,7,8,text", "the first 8 fields must be numbers"),
    ],
)
def test_icdar2015_errors_name_file_and_line(tmp_path, line, complaint):
    (tmp_path / "img_1.jpg").write_bytes(b"")
    gt = write(tmp_path / "gt_img_1.txt", f"1,1,9,1,9,9,1,9,fine\n{line}\n")
    with pytest.raises(LabelFileError) as error:
        read_labels(tmp_path)
    assert f"{gt}, line 2" in str(error.value) and complaint in str(error.value)


def test_icdar2015_folder_without_labels_or_images(tmp_path):
    with pytest.raises(LabelFileError, match=r"no gt_<image>\.txt"):
        read_labels(tmp_path)
    write(tmp_path / "gt_lost.txt", "1,1,9,1,9,9,1,9,x\n")
    with pytest.raises(LabelFileError, match="no image lost"):
        read_labels(tmp_path)
    with pytest.raises(LabelFileError, match="does not exist"):
        read_labels(tmp_path / "missing.txt")


def test_lines_end_at_line_feeds_only(tmp_path):
    # PPOCRLabel writes json.dumps(ensure_ascii=False): U+2028, U+0085, form feeds... stay raw in a line
    odd = "a\u2028b\u0085c\u2029d\x0be\x0cf\x1cg\x1dh\x1ei"
    region = {"transcription": odd, "points": [[1, 2], [30, 2], [30, 12], [1, 12]]}
    label_file = tmp_path / "Label.txt"
    label_file.write_bytes(
        f"a.jpg\t{json.dumps([region], ensure_ascii=False)}\r\nb.jpg\t[]\r\nc.jpg\tbroken\r\n".encode()
    )
    with pytest.raises(LabelFileError) as error:
        read_labels(label_file)
    assert f"{label_file}, line 3: the labels are not valid JSON" in str(error.value)
    label_file.write_bytes(label_file.read_bytes().replace(b"broken", b"[]"))
    images = read_labels(label_file)
    assert [item.image_path.name for item in images] == ["a.jpg", "b.jpg", "c.jpg"]
    assert len(images[0].labels) == 1
    (tmp_path / "img_1.jpg").write_bytes(b"")
    write(tmp_path / "gt_img_1.txt", f"1,1,9,1,9,9,1,9,{odd}\r\n2,2,8,2,8,8,2,8,###\r\n")
    icdar = read_labels(tmp_path)
    assert [region.dont_care for region in icdar[0].labels] == [False, True]


@pytest.mark.parametrize("byte_order_mark", [b"", b"\xef\xbb\xbf"])
def test_text_that_is_not_utf8_names_the_line(tmp_path, byte_order_mark):
    label_file = tmp_path / "labels.txt"
    label_file.write_bytes(byte_order_mark + b'a.jpg\t[]\nb.jpg\t[]\nc.jpg\t[{"transcription": "caf\xe9"}]\n')
    with pytest.raises(LabelFileError) as error:
        read_labels(label_file)
    assert str(error.value).startswith(f"{label_file}, line 3: not UTF-8 text")
    assert "at byte" not in str(error.value)  # a line, not a byte offset
    (tmp_path / "gts" / "img_1.jpg").parent.mkdir()
    (tmp_path / "gts" / "img_1.jpg").write_bytes(b"")
    gt = tmp_path / "gts" / "gt_img_1.txt"
    gt.write_bytes(byte_order_mark + b"1,1,9,1,9,9,1,9,ok\n1,1,9,1,9,9,1,9,\xff\n")
    with pytest.raises(LabelFileError) as error:
        read_labels(tmp_path / "gts")
    assert str(error.value).startswith(f"{gt}, line 2: not UTF-8 text")


def test_regions_of_one_or_two_points_are_read_and_dropped_by_the_metric(tmp_path):
    regions = [
        {"transcription": "line", "points": [[0, 0], [100, 0], [100, 20], [0, 20]]},
        {"transcription": "stroke", "points": [[0, 30], [100, 40]]},
        {"transcription": "dot", "points": [[5, 5]]},
        {"transcription": "###", "points": [[0, 50], [100, 70]]},
    ]
    label_file = write(tmp_path / "labels.txt", f"a.jpg\t{json.dumps(regions)}\n")
    (item,) = read_labels(label_file)
    assert [len(region.points) for region in item.labels] == [4, 2, 1, 2]
    # the two-point "###" is no don't-care area: a detection over it stays a false alarm
    score = score_image(item.labels, [box(0, 0, 100, 20), box(0, 50, 100, 70)])
    assert (score.labels, score.detections, score.matched) == (1, 2, 1)


def test_label_points_are_scored_as_the_float32_paddleocr_keeps(tmp_path):
    # DetLabelEncode stores points as float32: a label 10.0000001 px wide is 10 px there, so a detection 20 px
    # wide has IoU 0.5, no match (0.500000005 in float64 matched); a label 1e-6 px tall at y=100 has no area
    regions = [
        {"transcription": "wide", "points": [[0, 0], [10.0000001, 0], [10.0000001, 1], [0, 1]]},
        {"transcription": "flat", "points": [[0, 100], [100, 100], [100, 100.000001], [0, 100.000001]]},
    ]
    (item,) = read_labels(write(tmp_path / "labels.txt", f"a.jpg\t{json.dumps(regions)}\n"))
    assert score_image(item.labels, [box(0, 0, 20, 1)]) == ImageScore(labels=1, detections=1, matched=0)


def test_paddleocr_image_paths_relative_to_the_label_folders_parent(tmp_path):
    from detector.errors import UnreadableImageError
    from detector.evaluation.evaluate import load_labelled_images

    # PPOCRLabel: myset/Label.txt names its images myset/x.jpg
    (tmp_path / "myset").mkdir()
    (tmp_path / "myset" / "x.jpg").write_bytes(b"")
    (tmp_path / "myset" / "y.jpg").write_bytes(b"")
    (tmp_path / "myset" / "myset").mkdir()
    (tmp_path / "myset" / "myset" / "y.jpg").write_bytes(b"")  # beside the label file wins
    label_file = write(tmp_path / "myset" / "Label.txt", "myset/x.jpg\t[]\nmyset/y.jpg\t[]\n")
    images = read_labels(label_file)
    assert [item.image_path for item in images] == [
        tmp_path / "myset" / "x.jpg",
        tmp_path / "myset" / "myset" / "y.jpg",
    ]
    # --image-dir is taken as given: no second place
    given = read_labels(label_file, image_dir=tmp_path / "elsewhere")
    assert given[0].image_path == tmp_path / "elsewhere" / "myset" / "x.jpg"
    # in neither place: the error names the first place looked
    lost = write(tmp_path / "myset" / "Lost.txt", "myset/z.jpg\t[]\n")
    (item,) = read_labels(lost)
    assert item.image_path == tmp_path / "myset" / "myset" / "z.jpg"
    with pytest.raises(UnreadableImageError) as error:
        load_labelled_images([item])
    assert f"{tmp_path / 'myset' / 'myset' / 'z.jpg'} (labelled in {lost}, line 1)" in str(error.value)
    assert "--image-dir" in str(error.value)


def test_paddleocr_image_names_keep_their_spaces(tmp_path):
    from detector.evaluation.evaluate import check_labelled_images_exist

    # PaddleOCR strips only the line's newline: ' a.png' and 'b.png ' are the files of those names
    for name in (" a.png", "b.png "):
        (tmp_path / name).write_bytes(b"")
    label_file = write(tmp_path / "labels.txt", " a.png\t[]\nb.png \t[]\n")
    images = read_labels(label_file)
    assert [item.image_path.name for item in images] == [" a.png", "b.png "]
    check_labelled_images_exist(images)


def test_paddleocr_labels_end_at_the_next_tab(tmp_path):
    # PaddleOCR reads the second tab-separated field as the labels: a third column was parsed as part of the JSON
    region = {"transcription": "hello", "points": [[1, 2], [30, 2], [30, 12], [1, 12]]}
    images = read_labels(write(tmp_path / "labels.txt", f"a.png\t{json.dumps([region])}\tchecked by: ann\n"))
    assert [item.image_path.name for item in images] == ["a.png"] and len(images[0].labels) == 1


def test_paddleocr_image_field_may_list_images_sharing_the_labels(tmp_path):
    region = {"transcription": "hello", "points": [[1, 2], [30, 2], [30, 12], [1, 12]]}
    lines = [f'["a.png", "sub/b.png"]\t{json.dumps([region])}', "[1].png\t[]", "[]\t[]"]
    images = read_labels(write(tmp_path / "labels.txt", "\n".join(lines) + "\n"))
    # every listed image is scored with the line's labels; a field that is no JSON list (or an empty one) is a name
    assert [item.image_path for item in images] == [tmp_path / name for name in ("a.png", "sub/b.png", "[1].png", "[]")]
    assert images[0].labels == images[1].labels and len(images[0].labels) == 1


def test_icdar2015_image_suffix_in_any_case(tmp_path):
    gts, pictures = tmp_path / "gts", tmp_path / "pictures"
    pictures.mkdir()
    for name in ("img_a.jpg", "img_b.JPG", "img_c.Png", "img_d.Jpg", "img_e.jPeG", "img_f.txt"):
        (pictures / name).write_bytes(b"")
    for stem in ("img_a", "img_b", "img_c", "img_d", "img_e"):
        write(gts / f"gt_{stem}.txt", "1,1,9,1,9,9,1,9,x\n")
    images = read_labels(gts, image_dir=pictures)
    assert [item.image_path.name for item in images] == [
        "img_a.jpg",
        "img_b.JPG",
        "img_c.Png",
        "img_d.Jpg",
        "img_e.jPeG",
    ]
    write(gts / "gt_img_f.txt", "1,1,9,1,9,9,1,9,x\n")  # img_f.txt is no image
    with pytest.raises(LabelFileError) as error:
        read_labels(gts, image_dir=pictures)
    assert "no image img_f" in str(error.value) and f"in --image-dir {pictures}" in str(error.value)
    assert "pass --image-dir" not in str(error.value)
    with pytest.raises(LabelFileError, match="pass --image-dir"):
        read_labels(gts)
    with pytest.raises(LabelFileError, match="is not a folder"):
        read_labels(gts, image_dir=tmp_path / "nowhere")


# --- the labelled-set generator ----------------------------------------------------------------------------


def test_generator_is_deterministic_for_a_seed(tmp_path):
    first = render_labelled_set(tmp_path / "a", count=2, seed=5)
    again = render_labelled_set(tmp_path / "b", count=2, seed=5)
    other = render_labelled_set(tmp_path / "c", count=2, seed=6)
    assert first.read_text() == again.read_text()
    for image in sorted((tmp_path / "a" / "images").iterdir()):
        assert image.read_bytes() == (tmp_path / "b" / "images" / image.name).read_bytes()
    assert first.read_text() != other.read_text().replace("_6_", "_5_")
    images = read_labels(first)
    assert [item.image_path.name.split("_")[0] for item in images] == ["document", "scene"]
    assert all(len(item.labels) > 0 for item in images)


def test_generated_labels_cover_the_ink(tmp_path):
    """Every label quad is where the text is: dark-on-light documents have their ink inside the labels."""
    import cv2

    label_file = render_labelled_set(tmp_path, count=1, seed=11, kinds=("document",))
    (item,) = read_labels(label_file)
    image = cv2.imread(str(item.image_path), cv2.IMREAD_GRAYSCALE)
    inside = np.zeros_like(image)
    for region in item.labels:
        cv2.fillPoly(inside, [np.round(region.points).astype(np.int32)], 1)
    ink = image < 100
    assert ink.sum() > 1000
    assert (ink & (inside == 1)).sum() / ink.sum() > 0.97


# --- detect eval end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return render_labelled_set(tmp_path_factory.mktemp("eval_set"), count=4, seed=3)


def detect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "detector", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_detect_eval_json_on_rendered_set(default_onnx, small_set):
    done = detect("eval", "--labels", str(small_set), "--model", str(default_onnx), "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["images"] == 4
    assert report["hmean"] > 0.8  # the default model reads rendered text well
    assert report["seconds"] > 0 and 0 < report["precision"] <= 1 and 0 < report["recall"] <= 1
    assert report["model_precision"] == "fp32"
    assert "evaluating" in done.stderr  # a progress bar on stderr (a long set was silent for minutes)


def test_detect_eval_table_and_settings_take_effect(default_onnx, small_set):
    done = detect("eval", "--labels", str(small_set), "--model", str(default_onnx), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    header, _rule, _row = done.stdout.strip().splitlines()
    assert header.split() == ["model", "variant", "precision", "recall", "hmean", "images", "boxes/img", "s/img"]

    def recall_with(*setting: str) -> float:
        done = detect(
            "eval", "--labels", str(small_set), "--model", str(default_onnx), "--device", "cpu", *setting, "--json"
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["recall"]

    # an absurd box threshold keeps (almost) nothing: the override reaches the detector
    assert recall_with("--box-thresh", "0.999") < 0.2
    # max_side_limit reaches it too: pages shrunk to a 64-pixel side keep hardly a line readable
    assert recall_with("--max-side-limit", "64") < 0.5
    # and a fixed network size: every page squeezed to 64 x 64
    assert recall_with("--input-shape", "3", "64", "64") < 0.5


def test_detect_eval_compare_two_models(default_onnx, small_set, tmp_path):
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(default_onnx.read_bytes())
    done = detect(
        "eval", "--labels", str(small_set), "--compare", str(default_onnx), str(copy), "--device", "cpu", "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    first, second = report["rows"]
    assert first["hmean"] == second["hmean"] and report["difference"]["hmean"] == 0.0
    assert report["time_ratio"] > 0


def test_detect_eval_errors_are_one_line(tmp_path, default_onnx):
    bad = write(tmp_path / "labels.txt", "a.jpg\tnot json\n")
    done = detect("eval", "--labels", str(bad), "--model", str(default_onnx))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"detect eval: error: {bad}, line 1: the labels are not valid JSON (Expecting value, column 1)"
    )
    missing_image = write(tmp_path / "l2.txt", "nowhere.jpg\t[]\n")
    done = detect("eval", "--labels", str(missing_image), "--model", str(default_onnx), "--device", "cpu")
    assert done.returncode == 2 and "nowhere.jpg (labelled in" in done.stderr and "Traceback" not in done.stderr
    assert f"{missing_image}, line 1) does not exist" in done.stderr
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    broken = write(tmp_path / "l3.txt", "broken.png\t[]\n")
    done = detect("eval", "--labels", str(broken), "--model", str(default_onnx), "--device", "cpu")
    assert done.returncode == 2 and f"(labelled in {broken}, line 1)" in done.stderr, done.stderr


def test_precision_with_a_compare_of_two_precisions_is_refused():
    from detector.evaluation.command import _detector_specs

    # it was silently ignored: the two precisions compared are the ones run
    with pytest.raises(InvalidParameterError, match="--precision int8 with --compare fp32 int8"):
        _detector_specs(("PP-OCRv6_tiny_det",), None, "int8", ("fp32", "int8"))
    assert _detector_specs(("A",), None, "int8", ("A", "other/B.onnx"))["A"]["precision"] == "int8"  # models: applies


def test_eval_reads_model_names_as_names_like_detect(tmp_path, monkeypatch):
    from detector.evaluation.command import _model_keywords

    (tmp_path / "PP-OCRv4_mobile_det").mkdir()  # a same-named folder in the working directory is never read
    monkeypatch.chdir(tmp_path)
    assert _model_keywords(("PP-OCRv4_mobile_det",)) == {"model_name": "PP-OCRv4_mobile_det", "model_dir": None}
    assert _model_keywords(("other/model.onnx",)) == {"model_name": None, "model_dir": "other/model.onnx"}


def test_detect_eval_reads_images_within_its_max_pixels(default_onnx, small_set):
    # eval decoded with the default budget whatever the detector's was, and had no --max-pixels to raise it
    from detector.evaluation.evaluate import evaluate

    labelled = read_labels(str(small_set), None)
    tight = TextDetection(model_dir=default_onnx, device="cpu", max_pixels=1000)
    with pytest.raises(ImageTooLargeError, match="above the limit of 1,000"):
        evaluate({"tight": tight}, labelled)
    done = detect("eval", "--labels", str(small_set), "--model", str(default_onnx), "--max-pixels", "1000")
    assert done.returncode == 2 and "above the limit of 1,000" in done.stderr, done.stderr


def test_detect_eval_takes_model_folders(default_onnx, small_set):
    folder = str(default_onnx.parent)
    by_dir = detect("eval", "--labels", str(small_set), "--model-dir", folder, "--device", "cpu", "--json")
    assert by_dir.returncode == 0, by_dir.stderr
    # a --compare model with a path separator is a path: a folder (or .onnx file) against a name
    compared = detect(
        "eval", "--labels", str(small_set), "--compare", folder, default_onnx.parent.name, "--device", "cpu", "--json"
    )
    assert compared.returncode == 0, compared.stderr
    first, second = json.loads(compared.stdout)["rows"]
    assert first["hmean"] == second["hmean"] == json.loads(by_dir.stdout)["hmean"]


def test_parity_set_labels_are_the_rendered_line_boxes(tmp_path):
    from tools.dev.parity_set import write_parity_set
    from tools.dev.sample_image import RENDERED_PAGES, render_text_image

    labelled = read_labels(write_parity_set(tmp_path))
    assert [Path(item.image_path).stem for item in labelled] == list(RENDERED_PAGES)
    for item in labelled:
        assert Path(item.image_path).is_file()
        _, boxes = render_text_image(**RENDERED_PAGES[Path(item.image_path).stem])
        assert len(item.labels) == len(boxes) and not any(label.dont_care for label in item.labels)
        for label, (x0, y0, x1, y1) in zip(item.labels, boxes):
            assert label.points.tolist() == [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_detect_eval_passes_threads_sizes_and_buckets_to_each_model(small_set, monkeypatch):
    from click.testing import CliRunner

    from detector.cli import cli
    from detector.errors import DetectorError
    from detector.evaluation import command

    made = []

    def recording(**kwargs):
        made.append(kwargs)
        raise DetectorError("recorded")

    monkeypatch.setattr(command, "TextDetection", recording)
    args = ["eval", "--labels", str(small_set), "--compare", "fp32", "int8", "--cpu-threads", "1"]
    result = CliRunner().invoke(cli, [*args, "--max-side-limit", "64"])
    assert result.exit_code == 2 and "recorded" in result.output
    assert made[0]["cpu_threads"] == 1 and made[0]["max_side_limit"] == 64
    assert made[0]["input_shape"] is None and made[0]["shape_bucket"] is None  # the detector's defaults
    made.clear()
    result = CliRunner().invoke(cli, [*args, "--shape-bucket", "320"])
    assert result.exit_code == 2 and made[0]["shape_bucket"] == 320
    made.clear()
    result = CliRunner().invoke(cli, [*args, "--input-shape", "3", "640", "640"])
    assert result.exit_code == 2 and made[0]["input_shape"] == (3, 640, 640)


# --- evaluate: one image at a time, boxes as returned ------------------------------------------------------


class RecordingDetector:
    """Stands in for TextDetection: returns fixed boxes and notes each predict in ``events``."""

    def __init__(self, name, events, boxes=()):
        self.model_name, self.model_path, self.precision, self.device = name, Path(name), "fp32", "cpu"
        self.name, self.events, self.boxes = name, events, np.asarray(boxes, dtype=np.int16).reshape(-1, 4, 2)
        self.load_options = DEFAULT_LOAD_OPTIONS

    def predict(self, image, **overrides):
        self.events.append(("predict", self.name, int(image[0, 0, 0])))
        return [{"dt_polys": self.boxes, "dt_scores": [0.9] * len(self.boxes)}]


def test_detect_eval_decodes_each_image_just_before_its_detections(tmp_path, monkeypatch):
    import cv2
    from click.testing import CliRunner

    from detector.cli import cli
    from detector.evaluation import command

    evaluate = importlib.import_module("detector.evaluation.evaluate")  # the package's `evaluate` is the function
    for value in (1, 2, 3):
        cv2.imwrite(str(tmp_path / f"{value}.png"), np.full((8, 8, 3), value, np.uint8))
    label_file = write(tmp_path / "labels.txt", "1.png\t[]\n2.png\t[]\n3.png\t[]\n")
    events: list = []
    decode = evaluate.iter_images

    def recording_decode(path, options):
        events.append(("decode", Path(path).stem))
        return decode(path, options)

    monkeypatch.setattr(evaluate, "iter_images", recording_decode)
    monkeypatch.setattr(command, "TextDetection", lambda **kw: RecordingDetector(kw["model_dir"], events))
    result = CliRunner().invoke(cli, ["eval", "--labels", str(label_file), "--compare", "m/a", "m/b", "--json"])
    assert result.exit_code == 0, result.output
    warm = [("predict", "m/a", 1), ("predict", "m/b", 1)]  # one untimed run each on the first image
    assert events == [
        ("decode", "1"),
        *warm,
        ("predict", "m/a", 1),
        ("predict", "m/b", 1),
        ("decode", "2"),  # decoded only once the first image is done with
        ("predict", "m/b", 2),  # who goes first alternates
        ("predict", "m/a", 2),
        ("decode", "3"),
        ("predict", "m/a", 3),
        ("predict", "m/b", 3),
    ]


def test_a_missing_or_broken_image_is_a_usage_error(tmp_path, monkeypatch):
    import cv2
    from click.testing import CliRunner

    from detector.cli import cli
    from detector.evaluation import command

    events: list = []
    monkeypatch.setattr(command, "TextDetection", lambda **kw: RecordingDetector(str(kw["model_dir"]), events))
    cv2.imwrite(str(tmp_path / "fine.png"), np.zeros((8, 8, 3), np.uint8))
    missing = write(tmp_path / "missing.txt", "fine.png\t[]\nnowhere.png\t[]\n")
    result = CliRunner().invoke(cli, ["eval", "--labels", str(missing), "--model-dir", "m/a"])
    assert result.exit_code == 2 and f"(labelled in {missing}, line 2) does not exist" in result.output
    assert events == []  # found before any detection
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    broken = write(tmp_path / "broken.txt", "fine.png\t[]\nbroken.png\t[]\n")
    result = CliRunner().invoke(cli, ["eval", "--labels", str(broken), "--model-dir", "m/a"])
    assert result.exit_code == 2 and f"(labelled in {broken}, line 2)" in result.output


def test_boxes_per_image_counts_every_box_the_model_returned(tmp_path):
    from detector.evaluation.evaluate import evaluate
    from detector.evaluation.labels import LabelledImage
    from detector.evaluation.report import format_table, report_dict

    bow_tie = [[0, 0], [10, 10], [10, 0], [0, 10]]
    returned = [box(0, 0, 100, 20), bow_tie, box(0, 52, 100, 68)]  # a hit, an invalid polygon, one in "###"
    item = LabelledImage(tmp_path / "a.png", tuple(labels(box(0, 0, 100, 20), box(0, 50, 100, 70), dont_care=(1,))))
    detectors = {"a": RecordingDetector("a", [], returned)}
    (row,) = evaluate(detectors, [item, item], decoded=[np.zeros((80, 120, 3), np.uint8)] * 2)
    assert (row.score.detections, row.score.matched, row.score.precision) == (2, 2, 1.0)  # the metric's count
    assert row.boxes_per_image == 3.0 and row.boxes == 6  # what the model returned
    assert report_dict([row])["boxes_per_image"] == 3.0 and report_dict([row])["detections"] == 2
    assert format_table([row]).splitlines()[2].split()[6] == "3.00"
