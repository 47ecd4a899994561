"""Merging MultiBox and Selective Search proposals: cross-source near-duplicates, order, cap, snapping."""

from __future__ import annotations

import numpy as np
import pytest

from proposals.merge import merge_keep, merge_proposals, merge_split, snap_boxes

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


# Snapping targets (hand-worked IoUs with the boxes below).
TARGETS = np.array(
    [
        [0, 0, 10, 12],  # IoU with [0, 0, 10, 10]: 100 / 120 = 0.833
        [0, 0, 12, 10],  # the same 0.833: a tie, the first target wins
        [20, 20, 30, 40],  # IoU with [20, 20, 30, 30]: 100 / 200 = 0.5
    ],
    np.float32,
)


def test_snap_boxes_takes_the_best_target_at_or_above_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [70, 70, 80, 80]], np.float32)
    snapped = snap_boxes(boxes, TARGETS, iou_threshold=0.5)
    # Box 0: tie at 0.833 -> TARGETS[0]; box 1: exactly 0.5 snaps (>=); box 2 overlaps nothing: unchanged.
    np.testing.assert_array_equal(snapped, [[0, 0, 10, 12], [20, 20, 30, 40], [70, 70, 80, 80]])
    # Just above 0.5, box 1 keeps its own coordinates.
    np.testing.assert_array_equal(snap_boxes(boxes, TARGETS, iou_threshold=0.51)[1], boxes[1])
    # Above 0.833 nothing snaps; the input is never modified in place.
    np.testing.assert_array_equal(snap_boxes(boxes, TARGETS, iou_threshold=0.9), boxes)
    assert boxes[0, 3] == 10


def test_snap_boxes_empty_and_zero_area_inputs():
    empty = np.zeros((0, 4), np.float32)
    assert snap_boxes(empty, TARGETS, iou_threshold=0.5).shape == (0, 4)
    np.testing.assert_array_equal(snap_boxes(MB, empty, iou_threshold=0.5), MB)
    # Two identical zero-area boxes have IoU 0/0 = nan: not a match, the box stays as it is.
    point = np.array([[5, 5, 5, 5]], np.float32)
    np.testing.assert_array_equal(snap_boxes(point, point + 0, iou_threshold=0.5), point)


def test_merge_with_snapping_frees_cap_slots_and_keeps_unmatched_boxes():
    mb = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [70, 70, 80, 80]], np.float32)
    ss = np.array([[0, 0, 10, 12], [40, 40, 50, 50], [20, 20, 30, 30]], np.float32)
    # Unsnapped, interleaved, cap 4: mb0, ss0 (IoU 0.833 with mb0, not > 0.9: kept), mb1 dropped
    # (IoU 110 / 120 = 0.917 with ss0), ss1, mb2; the cap stops before ss2.
    boxes, origin = merge_proposals([mb, ss], iou_threshold=0.9, max_boxes=4, order="interleave")
    np.testing.assert_array_equal(boxes, [mb[0], ss[0], ss[1], mb[2]])
    # Snapped at 0.5: mb0 and mb1 both become ss0; the second copy is dropped, and ss0 itself
    # duplicates the snapped mb0, so the cap reaches ss2 as well.
    boxes, origin = merge_proposals([mb, ss], iou_threshold=0.9, max_boxes=4, order="interleave", snap_iou=0.5)
    # Round robin over mb' = [ss0, mb2] and ss: mb'0, (ss0 dropped), mb'1, ss1, ss2.
    np.testing.assert_array_equal(boxes, [ss[0], mb[2], ss[1], ss[2]])
    np.testing.assert_array_equal(origin, [0, 0, 1, 1])  # a snapped box keeps its source
    # One source: nothing to snap to, the merge is unchanged.
    alone, _ = merge_proposals([mb], iou_threshold=0.9, max_boxes=None, snap_iou=0.5)
    np.testing.assert_array_equal(alone, mb)
    per_image = merge_split([[mb], [ss]], iou_threshold=0.9, max_boxes=4, order="interleave", snap_iou=0.5)
    np.testing.assert_array_equal(per_image[0], boxes)
