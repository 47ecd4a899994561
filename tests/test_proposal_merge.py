"""Merging MultiBox and Selective Search proposals: cross-source near-duplicates, order, cap."""

from __future__ import annotations

import numpy as np
import pytest

from proposals.merge import merge_keep, merge_proposals, merge_split

MB = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
SS = np.array(
    [
        [0, 0, 10, 10],  # exact copy of MB[0]: IoU 1
        [0, 0, 10, 11],  # IoU with MB[0] = 100 / 110 = 0.909
        [50, 50, 60, 60],  # overlaps nothing
        [50, 50, 60, 61],  # IoU 0.909 with SS[2], but same source: never compared
        [20, 20, 30, 40],  # IoU with MB[1] = 100 / 200 = 0.5
    ],
    np.float32,
)


def test_drops_later_near_duplicates_only():
    boxes, origin = merge_proposals([MB, SS], iou_threshold=0.9, max_boxes=None)
    # Kept: MB[0], MB[1], then SS[2], SS[3], SS[4] (SS[0] IoU 1 > 0.9 and SS[1] 0.909 > 0.9 dropped).
    np.testing.assert_array_equal(boxes, np.concatenate([MB, SS[2:]]))
    np.testing.assert_array_equal(origin, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(merge_keep([MB, SS], iou_threshold=0.9, max_boxes=None), [0, 1, 4, 5, 6])


def test_threshold_is_strict_and_configurable():
    # At 0.95 the 0.909 box stays; only the exact copy (IoU 1) goes.
    keep = merge_keep([MB, SS], iou_threshold=0.95, max_boxes=None)
    np.testing.assert_array_equal(keep, [0, 1, 3, 4, 5, 6])
    # At 0.5 the IoU-0.5 box stays too (strictly greater is a duplicate).
    np.testing.assert_array_equal(merge_keep([MB, SS], iou_threshold=0.5, max_boxes=None), [0, 1, 4, 5, 6])
    # >= 1: nothing is a duplicate.
    np.testing.assert_array_equal(merge_keep([MB, SS], iou_threshold=1.0, max_boxes=None), np.arange(7))


def test_cap_keeps_first_source_first():
    boxes, origin = merge_proposals([MB, SS], iou_threshold=0.9, max_boxes=3)
    np.testing.assert_array_equal(boxes, [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    np.testing.assert_array_equal(origin, [0, 0, 1])


def test_empty_sources():
    empty = np.zeros((0, 4), np.float32)
    boxes, origin = merge_proposals([empty, SS], iou_threshold=0.9, max_boxes=None)
    np.testing.assert_array_equal(boxes, SS)
    np.testing.assert_array_equal(origin, np.ones(5))
    boxes, origin = merge_proposals([MB, empty], iou_threshold=0.9, max_boxes=None)
    np.testing.assert_array_equal(boxes, MB)
    boxes, origin = merge_proposals([empty, empty], iou_threshold=0.9, max_boxes=None)
    assert boxes.shape == (0, 4) and origin.shape == (0,)


def test_merge_split_per_image():
    merged = merge_split([[MB, MB[:1]], [SS, SS[:2]]], iou_threshold=0.9, max_boxes=None)
    assert len(merged) == 2
    np.testing.assert_array_equal(merged[0], np.concatenate([MB, SS[2:]]))
    np.testing.assert_array_equal(merged[1], MB[:1])  # both SS boxes duplicate MB[0]
    with pytest.raises(ValueError):
        merge_split([[MB], [SS, SS]], iou_threshold=0.9, max_boxes=None)


def test_interleave_takes_turns_by_rank_and_still_drops_cross_source_duplicates():
    # Round robin: MB[0], SS[0] (IoU 1 with MB[0]: dropped), MB[1], SS[1] (0.909 with MB[0]: dropped), SS[2], SS[3], SS[4].
    keep = merge_keep([MB, SS], iou_threshold=0.9, max_boxes=None, order="interleave")
    np.testing.assert_array_equal(keep, [0, 1, 4, 5, 6])
    # With a cap of 3 the first source no longer fills the cap first.
    boxes, origin = merge_proposals([MB[:1], SS[2:]], iou_threshold=0.9, max_boxes=2, order="interleave")
    np.testing.assert_array_equal(origin, [0, 1])
    np.testing.assert_array_equal(boxes, [[0, 0, 10, 10], [50, 50, 60, 60]])
    # A later source's box comes first when it has the better rank: SS[2] (rank 0 of its list) before MB[1].
    keep = merge_keep([MB, SS[2:]], iou_threshold=0.9, max_boxes=3, order="interleave")
    np.testing.assert_array_equal(keep, [0, 2, 1])
    with pytest.raises(ValueError, match="order"):
        merge_keep([MB, SS], iou_threshold=0.9, max_boxes=None, order="random")
