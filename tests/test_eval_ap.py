"""ILSVRC AP on hand-worked cases; the arithmetic is beside each expected number."""

from __future__ import annotations

import numpy as np
import pytest

from eval.ilsvrc_ap import GroundTruth, devkit_iou, evaluate_ilsvrc, size_thresholds, voc_ap
from eval.reference import reference_ap
from eval.synthetic_submission import random_case

BIG = [0, 0, 99, 99]  # w = h = 100 (+1 convention): threshold min(0.5, 10000/12100) = 0.5


def gt_of(boxes, images, classes, num_images=3, num_classes=3, blacklist=(), difficult=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return GroundTruth(
        image_index=np.asarray(images, np.int64), class_id=np.asarray(classes, np.int64), boxes=boxes,
        difficult=np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool),
        num_images=num_images, num_classes=num_classes, blacklist=frozenset(blacklist),
    )


def ap_of(gt, dets):
    """dets: list of (image_index, class_id, score, box)."""
    image = np.array([d[0] for d in dets], np.int64)
    cls = np.array([d[1] for d in dets], np.int64)
    score = np.array([d[2] for d in dets], np.float64)
    boxes = np.array([d[3] for d in dets], np.float64).reshape(-1, 4)
    result = evaluate_ilsvrc(gt, image, cls, score, boxes)
    # Every hand case is also checked against the devkit-loop transcription.
    np.testing.assert_array_equal(result.ap, reference_ap(gt, image, cls, score, boxes))
    return result


def test_size_threshold_formula():
    # 10x10 box: 100 / (20 * 20) = 0.25; 100x100 box: min(0.5, 10000/12100) = 0.5
    np.testing.assert_allclose(size_thresholds(np.array([[0, 0, 9, 9], BIG], float)), [0.25, 0.5])


def test_devkit_iou_uses_plus_one_pixels():
    # [0,0,99,49] inside BIG: 100*50 / 100*100 = 0.5 exactly
    assert devkit_iou(np.array([[0, 0, 99, 49.0]]), np.array([BIG], float))[0, 0] == 0.5
    # touching boxes share one pixel column: [0..9] and [9..18] overlap in x = 9 (iw = 1)
    # inter 1*10 = 10, union 100 + 100 - 10 = 190
    assert devkit_iou(np.array([[0, 0, 9, 9.0]]), np.array([[9, 0, 18, 9.0]]))[0, 0] == pytest.approx(10 / 190)


def test_perfect_detection():
    assert ap_of(gt_of([BIG], [1], [1]), [(1, 1, 0.9, BIG)]).ap[0] == 1.0


def test_duplicate_is_a_false_positive():
    gt = gt_of([BIG, BIG], [1, 2], [1, 1])
    # order: A 0.9 TP, A-dup 0.8 FP, B 0.7 TP -> recall .5 .5 1, precision 1 .5 .667
    # envelope: 1 at recall .5, 2/3 at recall 1 -> AP = .5*1 + .5*2/3 = 0.8333
    r = ap_of(gt, [(1, 1, 0.9, BIG), (1, 1, 0.8, BIG), (2, 1, 0.7, BIG)])
    assert r.ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_small_box_matches_below_half_iou():
    # GT 10x10: threshold 0.25. Detection [0,0,9,2]: 10*3 / 100 = 0.3 >= 0.25 -> true positive
    # (PASCAL's fixed 0.5 would call it a false positive).
    assert ap_of(gt_of([[0, 0, 9, 9]], [1], [1]), [(1, 1, 0.9, [0, 0, 9, 2])]).ap[0] == 1.0
    # [0,0,9,1]: 10*2 / 100 = 0.2 < 0.25 -> false positive, AP 0
    assert ap_of(gt_of([[0, 0, 9, 9]], [1], [1]), [(1, 1, 0.9, [0, 0, 9, 1])]).ap[0] == 0.0


@pytest.mark.parametrize(
    "gt_box, det_box, expected",
    [
        (BIG, [0, 0, 99, 49], 1.0),            # IoU 5000/10000 = 0.5 == threshold 0.5 -> match
        (BIG, [0, 0, 99, 48], 0.0),            # IoU 4900/10000 = 0.49 < 0.5 -> no match
        ([0, 0, 9, 9], [0, 0, 9, 1.5], 1.0),   # IoU 10*2.5/100 = 0.25 == threshold 100/400 -> match
    ],
)
def test_iou_exactly_at_threshold_matches(gt_box, det_box, expected):
    assert ap_of(gt_of([gt_box], [1], [1]), [(1, 1, 0.9, det_box)]).ap[0] == expected


def test_blacklisted_pair_is_ignored_on_both_sides():
    dets = [(2, 1, 0.9, [300, 300, 350, 350]), (1, 1, 0.8, BIG)]
    # Without blacklist: FP then TP with 2 positives: precision 0, .5; recall 0, .5 -> AP = .5*.5 = .25
    assert ap_of(gt_of([BIG, BIG], [1, 2], [1, 1]), dets).ap[0] == pytest.approx(0.25)
    # With (image 2, class 1) blacklisted: its GT leaves the count and its detection is ignored -> AP 1
    r = ap_of(gt_of([BIG, BIG], [1, 2], [1, 1], blacklist=[(2, 1)]), dets)
    assert r.ap[0] == 1.0 and r.num_positives[0] == 1 and r.num_detections[0] == 1


def test_detection_on_image_without_ground_truth():
    # image 3 has no GT: FP (0.9) then TP (0.8): precision 0, .5; recall 0, 1 -> AP = 1 * .5
    assert ap_of(gt_of([BIG], [1], [1]), [(3, 1, 0.9, BIG), (1, 1, 0.8, BIG)]).ap[0] == 0.5


def test_class_without_detections_scores_zero_and_class_without_gt_is_nan():
    r = ap_of(gt_of([BIG, BIG], [1, 1], [1, 2]), [(1, 1, 0.9, BIG), (1, 3, 0.5, BIG)])
    assert r.ap[0] == 1.0 and r.ap[1] == 0.0 and np.isnan(r.ap[2])
    assert r.mean_ap == 0.5  # mean over classes 1 and 2 only


def test_equal_confidences_keep_file_order():
    fp = (1, 1, 0.5, [300, 300, 350, 350])
    tp = (1, 1, 0.5, BIG)
    gt = gt_of([BIG], [1], [1])
    assert ap_of(gt, [fp, tp]).ap[0] == 0.5  # FP first: precision 0, .5 at recall 0, 1
    assert ap_of(gt, [tp, fp]).ap[0] == 1.0  # TP first


def test_ilsvrc_takes_next_best_unmatched_box_where_voc_would_not():
    g1, g2 = BIG, [10, 0, 109, 99]
    # det2 [4,0,103,99]: IoU with g1 = 96*100/(10000+10000-9600) = .923, with g2 = 94*100/10600 = .887.
    # g1 is already taken by det1, so ILSVRC gives det2 g2 (.887 >= .5): two TPs, AP 1.
    # (PASCAL VOC would pick g1, see it taken, and count a FP: AP .5.)
    r = ap_of(gt_of([g1, g2], [1, 1], [1, 1]), [(1, 1, 0.9, g1), (1, 1, 0.8, [4, 0, 103, 99])])
    assert r.ap[0] == 1.0


def test_inverted_box_never_matches():
    assert ap_of(gt_of([BIG], [1], [1]), [(1, 1, 0.9, [99, 99, 0, 0])]).ap[0] == 0.0


def test_difficult_boxes_are_neither_required_nor_penalised():
    gt = gt_of([BIG, [200, 200, 299, 299]], [1, 1], [1, 1], difficult=[False, True])
    # The detection on the difficult box is ignored; npos = 1 -> AP 1.
    r = ap_of(gt, [(1, 1, 0.95, [200, 200, 299, 299]), (1, 1, 0.9, BIG)])
    assert r.ap[0] == 1.0 and r.num_positives[0] == 1


def test_voc_ap_envelope():
    # recall .5 .5 1, precision 1 .5 .667 -> .5 * 1 + .5 * .667
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_equals_devkit_loop_on_random_data(seed):
    gt, di, dc, sc, db = random_case(num_images=60, num_classes=5, gt_per_image=3, dets_per_image=12,
                                     seed=seed, blacklist_pairs=4)
    np.testing.assert_array_equal(evaluate_ilsvrc(gt, di, dc, sc, db).ap, reference_ap(gt, di, dc, sc, db))
