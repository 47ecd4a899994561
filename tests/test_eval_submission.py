"""Submission files: round trip, and every kind of bad line is a one-line error naming file and line."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from detect.data.record import ClassList, DetectionDataset, ImageRecord
from detect.errors import UserError
from eval.map import evaluate_submission
from eval.submission import read_submission, validate_submission, write_submission


def test_round_trip_and_comments(tmp_path):
    path = tmp_path / "dets.txt"
    write_submission(path, np.array([2, 1]), np.array([3, 1]), np.array([0.5, 0.25]),
                     np.array([[1, 2, 3, 4], [5.5, 6, 7, 8]]))
    path.write_text("# produced by a test\n\n" + path.read_text())
    sub = read_submission(path)
    np.testing.assert_array_equal(sub.image_index, [2, 1])
    np.testing.assert_array_equal(sub.class_id, [3, 1])
    np.testing.assert_array_equal(sub.score, [0.5, 0.25])
    np.testing.assert_array_equal(sub.boxes, [[1, 2, 3, 4], [5.5, 6, 7, 8]])
    np.testing.assert_array_equal(sub.line, [3, 4])  # line numbers count the comment and blank line


@pytest.mark.parametrize(
    "content, message",
    [
        ("1 1 0.5 0 0 10\n", ":1: expected 7 columns"),
        ("1 1 0.5 0 0 10 10\n1 1 0.5 0 0 10 10 9\n", ":2: expected 7 columns"),
        ("1 1 high 0 0 10 10\n", ":1: confidence 'high' is not a number"),
        ("x 1 0.5 0 0 10 10\n", ":1: image_index 'x' is not an integer"),
        ("1 1 0.5 0 0 10 10\n1 1 nan 0 0 10 10\n", ":2: confidence is NaN or infinite"),
        ("1 1 inf 0 0 10 10\n", ":1: confidence is NaN or infinite"),
        ("1 1 0.5 0 0 inf 10\n", ":1: box coordinate is NaN or infinite"),
        ("1.5 1 0.5 0 0 10 10\n", ":1: image_index and class_id must be integers"),
    ],
)
def test_malformed_lines(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        read_submission(path)
    assert str(path) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 1 0.5 0 0 10 10", "image index 0 is out of range 1..3"),
        ("4 1 0.5 0 0 10 10", "image index 4 is out of range 1..3"),
        ("1 7 0.5 0 0 10 10", "unknown class id 7 (classes are 1..2)"),
    ],
)
def test_ids_checked_against_split(tmp_path, line, message):
    path = tmp_path / "s.txt"
    path.write_text("1 1 0.5 0 0 10 10\n" + line + "\n")
    with pytest.raises(UserError) as err:
        validate_submission(read_submission(path), path=path, num_images=3, num_classes=2)
    assert str(err.value) == f"{path}:2: {message}"


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(UserError) as err:
        read_submission(tmp_path / "nope.txt")
    assert str(err.value) == f"{tmp_path / 'nope.txt'}: submission file not found"
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError) as err:
        read_submission(tmp_path / "bin.txt")
    assert str(err.value).startswith(f"{tmp_path / 'bin.txt'}: not a text file")


def test_inverted_outside_and_empty_are_accepted_with_warnings(tmp_path, caplog):
    path = tmp_path / "w.txt"
    path.write_text("1 1 0.5 10 10 0 0\n1 1 0.4 -5 0 10 10\n1 1 0.3 0 0 20 20\n1 1 0.2 0 0 20.5 20\n")
    sizes = np.array([[20, 20]])
    with caplog.at_level(logging.WARNING):
        counts = validate_submission(read_submission(path), path=path, num_images=1, num_classes=1,
                                     image_sizes=sizes)
    assert counts == {"inverted_boxes": 1, "out_of_image_boxes": 2}  # x1 = -5 and x2 = 20.5 > 20
    assert "1 inverted boxes" in caplog.text and "2 boxes extend outside" in caplog.text
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with caplog.at_level(logging.WARNING):
        validate_submission(read_submission(empty), path=empty, num_images=1, num_classes=1)
    assert "no detections" in caplog.text


def _one_image_dataset():
    rec = ImageRecord("im1", 1, Path("im1.jpg"), 100, 100, np.array([[0, 0, 49, 49]], np.float32),
                      np.array([1], np.int64), np.zeros(1, bool))
    return DetectionDataset("t", "val", Path("."), ClassList(("n1",), ("thing",)), (rec,))


def test_empty_submission_scores_zero_with_a_warning(tmp_path, caplog):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing detected\n\n")
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_submission(_one_image_dataset(), path, out_dir=None, coco=False, coco_max_dets=100,
                                      plots=False)
    assert metrics["mAP"] == 0.0 and metrics["per_class_ap"] == {"thing": 0.0}
    assert metrics["n_detections"] == 0 and metrics["n_ground_truth"] == 1
    assert "no detections" in caplog.text


def test_evaluate_submission_rejects_bad_files(tmp_path):
    kwargs = dict(out_dir=None, coco=False, coco_max_dets=100, plots=False)
    with pytest.raises(UserError, match="submission file not found"):
        evaluate_submission(_one_image_dataset(), tmp_path / "missing.txt", **kwargs)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 0.5 0 0 10 10\n1 2 0.5 0 0 10 10\n")
    with pytest.raises(UserError, match=r"bad.txt:2: unknown class id 2 \(classes are 1..1\)"):
        evaluate_submission(_one_image_dataset(), bad, **kwargs)
