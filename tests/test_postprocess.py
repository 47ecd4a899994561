"""Ensemble averaging, class-wise NMS and per-class caps on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from detect.postprocess import average_member_scores, cap_per_class, image_detections


def test_average_member_scores():
    a = np.array([[0.5, 0.5], [1.0, 0.0]], np.float32)
    b = np.array([[0.1, 0.9], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(average_member_scores([a, b]), [[0.3, 0.7], [0.5, 0.5]], rtol=1e-6)
    with pytest.raises(ValueError, match="different regions"):
        average_member_scores([a, b[:1]])


def test_classwise_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    # Box 1 overlaps box 0 with IoU = 90/110 = 0.818 > 0.3: suppressed within class 1.
    # Box 2 is the same region as box 0 but scored for class 2: kept (class-wise NMS).
    scores = np.array([
        [0.1, 0.9, 0.0],
        [0.2, 0.8, 0.0],
        [0.3, 0.0, 0.7],
        [0.95, 0.04, 0.01],  # below threshold 0.05 for both classes
    ], np.float32)
    b, s, l = image_detections(boxes, scores, nms_iou=0.3, score_threshold=0.05, max_per_image=100)
    np.testing.assert_allclose(s, [0.9, 0.7])
    np.testing.assert_array_equal(l, [1, 2])
    np.testing.assert_array_equal(b, [[0, 0, 10, 10], [0, 0, 10, 10]])
    _, s1, _ = image_detections(boxes, scores, nms_iou=0.3, score_threshold=0.05, max_per_image=1)
    np.testing.assert_allclose(s1, [0.9])


def test_box_voting_averages_the_kept_box_with_its_class_neighbours_by_score():
    boxes = np.array([
        [0, 0, 10, 10],    # class 1, 0.6: kept by NMS
        [2, 0, 12, 10],    # class 1, 0.2: IoU 80/120 = 0.667 with box 0: suppressed, votes at 0.5
        [0, 0, 10, 20],    # class 1, 0.1: IoU 100/200 = 0.5 with box 0: suppressed, votes (IoU >= 0.5)
        [0, 5, 10, 15],    # class 1, 0.1: IoU 50/150 = 0.333: suppressed (> 0.3), too far to vote
        [4, 0, 14, 10],    # class 2, 0.8: the same place, another class: kept, never votes for class 1
    ], np.float32)
    scores = np.zeros((5, 3), np.float32)
    scores[:4, 1] = [0.6, 0.2, 0.1, 0.1]
    scores[4, 2] = 0.8
    plain = image_detections(boxes, scores, nms_iou=0.3, score_threshold=0.05, max_per_image=10)
    voted = image_detections(boxes, scores, nms_iou=0.3, score_threshold=0.05, max_per_image=10,
                             box_voting_iou=0.5)
    np.testing.assert_array_equal(plain[2], [2, 1])
    np.testing.assert_array_equal(voted[2], [2, 1])
    np.testing.assert_allclose(voted[1], plain[1])  # scores unchanged
    np.testing.assert_array_equal(plain[0], [[4, 0, 14, 10], [0, 0, 10, 10]])
    # class 1: (0.6 * [0,0,10,10] + 0.2 * [2,0,12,10] + 0.1 * [0,0,10,20]) / 0.9 = [0.444, 0, 10.444, 11.111]
    np.testing.assert_allclose(voted[0], [[4, 0, 14, 10], [0.4 / 0.9, 0, 9.4 / 0.9, 10 / 0.9]], rtol=1e-6)


def test_no_detection_above_threshold():
    b, s, l = image_detections(np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32),
                               nms_iou=0.3, score_threshold=0.5, max_per_image=10)
    assert b.shape == (0, 4) and s.shape == (0,) and l.shape == (0,)


def test_cap_per_class_keeps_the_best_of_each_class():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    labels = np.array([1, 1, 2, 1, 2])
    # class 1: scores 0.9 (i=1), 0.7 (i=3), 0.1 (i=0) -> keep 1, 3; class 2: 0.5 (i=2), 0.3 (i=4) -> keep 2, 4
    np.testing.assert_array_equal(cap_per_class(scores, labels, max_per_class=2), [1, 2, 3, 4])
    np.testing.assert_array_equal(cap_per_class(scores, labels, max_per_class=1), [1, 2])


def test_random_score_baseline_looks_like_softmax_and_is_seeded():
    from detect.pipeline import random_scores

    shapes = [np.zeros((5, 4), np.float32), np.zeros((0, 4), np.float32), np.zeros((3, 4), np.float32)]
    drawn = random_scores(shapes, seed=7)
    assert [d.shape for d in drawn] == [(5, 4), (0, 4), (3, 4)]
    assert all((d >= 0).all() and np.allclose(d.sum(axis=1), 1.0, atol=1e-5) for d in drawn)
    again, other = random_scores(shapes, seed=7), random_scores(shapes, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(drawn, again))
    assert not np.array_equal(drawn[0], other[0])
