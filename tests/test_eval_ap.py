"""ILSVRC AP on hand-worked cases; the arithmetic is beside each expected number."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eval.ilsvrc_ap
from eval.ilsvrc_ap import GroundTruth, devkit_iou, evaluate_ilsvrc, paired_iou, size_thresholds, voc_ap
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


def test_equal_confidences_across_images_rank_by_image_index():
    # The devkit concatenates per-image results in image order before its stable sort,
    # so a tie between images 1 and 2 puts image 1 first even when the file lists image 2 first.
    gt = gt_of([BIG], [1], [1])
    fp_on_2 = (2, 1, 0.5, BIG)  # image 2 has no ground truth
    tp_on_1 = (1, 1, 0.5, BIG)
    # ranked TP, FP: precision 1, .5 at recall 1, 1 -> AP 1 (file order would give FP, TP -> .5)
    assert ap_of(gt, [fp_on_2, tp_on_1]).ap[0] == 1.0


def test_ilsvrc_takes_next_best_unmatched_box_where_voc_would_not():
    g1, g2 = BIG, [10, 0, 109, 99]
    # det2 [4,0,103,99]: IoU with g1 = 96*100/(10000+10000-9600) = .923, with g2 = 94*100/10600 = .887.
    # g1 is already taken by det1, so ILSVRC gives det2 g2 (.887 >= .5): two TPs, AP 1.
    # (PASCAL VOC would pick g1, see it taken, and count a FP: AP .5.)
    r = ap_of(gt_of([g1, g2], [1, 1], [1, 1]), [(1, 1, 0.9, g1), (1, 1, 0.8, [4, 0, 103, 99])])
    assert r.ap[0] == 1.0


def test_inverted_boxes_follow_the_devkit_arithmetic():
    assert ap_of(gt_of([BIG], [1], [1]), [(1, 1, 0.9, [99, 99, 0, 0])]).ap[0] == 0.0
    # Inverted by half a pixel is still 0.5 px wide with +1: GT [10,0,10,0] is 1x1 (threshold
    # 1/(11*11) = .0083); det [10,0,9.5,0]: iw = 9.5-10+1 = .5, ih = 1, inter .5,
    # union .5*1 + 1 - .5 = 1 -> IoU .5 -> true positive, as in the devkit.
    one_pixel = gt_of([[10, 0, 10, 0]], [1], [1])
    assert ap_of(one_pixel, [(1, 1, 0.9, [10, 0, 9.5, 0])]).ap[0] == 1.0
    # Inverted by 1.5 px: iw = 8.5-10+1 = -.5 -> no overlap -> false positive.
    assert ap_of(one_pixel, [(1, 1, 0.9, [10, 0, 8.5, 0])]).ap[0] == 0.0


def test_zero_width_ground_truth_never_matches():
    # GT [10,0,9,9]: w = 9-10+1 = 0 -> threshold 0; the devkit only scores overlapping boxes
    # (iw = min(x2) - max(x1) + 1 <= 9 - 10 + 1 = 0), so even IoU 0 >= 0 is not a match.
    assert ap_of(gt_of([[10, 0, 9, 9]], [1], [1]), [(1, 1, 0.9, [0, 0, 9, 9])]).ap[0] == 0.0


def test_exact_iou_tie_takes_the_first_box_in_annotation_order():
    a, b = BIG, [20, 0, 119, 99]
    det1 = [10, 0, 109, 99]  # vs a and b: inter 90*100 = 9000, union 11000 -> .818 both (a tie)
    det2 = [0, 0, 69, 99]  # vs a: 7000/10000 = .7; vs b: inter 50*100 = 5000, union 12000 -> .417 < .5
    dets = [(1, 1, 0.9, det1), (1, 1, 0.8, det2)]
    # a annotated first: det1 takes a, det2 finds nothing -> TP, FP: AP = .5 * 1 = .5
    assert ap_of(gt_of([a, b], [1, 1], [1, 1]), dets).ap[0] == 0.5
    # b annotated first: det1 takes b, det2 takes a -> AP 1
    assert ap_of(gt_of([b, a], [1, 1], [1, 1]), dets).ap[0] == 1.0


def test_difficult_boxes_are_neither_required_nor_penalised():
    hard = [200, 200, 299, 299]
    gt = gt_of([BIG, hard], [1, 1], [1, 1], difficult=[False, True])
    # Both detections on the difficult box are ignored (VOC: a duplicate on a difficult box is
    # not a false positive either); npos = 1 and the one scored detection is a TP -> AP 1.
    r = ap_of(gt, [(1, 1, 0.95, hard), (1, 1, 0.93, hard), (1, 1, 0.9, BIG)])
    assert r.ap[0] == 1.0 and r.num_positives[0] == 1 and r.num_detections[0] == 1


def test_voc_ap_envelope():
    # recall .5 .5 1, precision 1 .5 .667 -> .5 * 1 + .5 * .667
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)


def test_box_iou_shift_equals_devkit_iou():
    # torchvision's box_iou on boxes with x2, y2 + 1 is the devkit's IoU (positive overlap) or 0.
    rng = np.random.default_rng(0)
    a = np.round(rng.uniform(0, 60, (40, 4)))
    b = np.round(rng.uniform(0, 60, (30, 4)))
    a[:, 2:] = np.maximum(a[:, 2:], a[:, :2])  # at least 1 px wide with +1 (zero-area boxes give NaN)
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
    pairs_a, pairs_b = np.repeat(a, len(b), 0), np.tile(b, (len(a), 1))
    expected = paired_iou(pairs_a, pairs_b).reshape(len(a), len(b))
    got = devkit_iou(a, b)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert (got == 0).any() and (got > 0).any() and ((got > 0) == (expected > 0)).all()


def _hard_random_case(seed):
    """Random data plus difficult boxes, duplicated ground truth (exact IoU ties) and boxes inverted
    by up to a pixel and a half, in shuffled file order with tied scores."""
    gt, di, dc, sc, db = random_case(num_images=60, num_classes=5, gt_per_image=3, dets_per_image=12,
                                     seed=seed, blacklist_pairs=4)
    rng = np.random.default_rng(100 + seed)
    dup = rng.random(len(gt.class_id)) < 0.15
    gt = dataclasses.replace(
        gt,
        image_index=np.r_[gt.image_index, gt.image_index[dup]], class_id=np.r_[gt.class_id, gt.class_id[dup]],
        boxes=np.r_[gt.boxes, gt.boxes[dup]], difficult=rng.random(len(gt.class_id) + dup.sum()) < 0.1,
    )
    flip = rng.random(len(sc)) < 0.05
    db[flip, 2] = db[flip, 0] - rng.choice([0.5, 1.5], flip.sum())
    return gt, di, dc, sc, db


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_equals_devkit_loop_on_random_data(seed):
    gt, di, dc, sc, db = _hard_random_case(seed)
    fast = evaluate_ilsvrc(gt, di, dc, sc, db)
    np.testing.assert_array_equal(fast.ap, reference_ap(gt, di, dc, sc, db))
    assert np.isfinite(fast.ap).sum() >= 4 and 0.05 < fast.mean_ap < 0.95  # a non-trivial case


@pytest.mark.parametrize("seed", range(3))
def test_crowded_groups_over_several_rounds_equal_devkit_loop(seed):
    # Images with 40 boxes of one class (a few difficult) and 400 detections each: the
    # lock-step matching runs several rounds (32, 64, 128 ranks, ...) with pruning between.
    rng = np.random.default_rng(seed)
    n_img, n_box, n_det = 3, 40, 400
    xy = rng.uniform(0, 800, (n_img * n_box, 2))
    boxes = np.round(np.c_[xy, xy + rng.uniform(8, 120, (n_img * n_box, 2))])
    images = np.repeat(np.arange(1, n_img + 1), n_box)
    gt = gt_of(boxes, images, np.ones(len(boxes)), num_images=n_img, num_classes=1,
               difficult=rng.random(len(boxes)) < 0.08)
    src = rng.integers(0, len(boxes), n_img * n_det)
    dets = np.round(boxes[src] + rng.normal(0, 6, (len(src), 4)), 1)
    score = np.round(rng.random(len(src)), 2)
    fast = evaluate_ilsvrc(gt, images[src], np.ones(len(src), np.int64), score, dets)
    np.testing.assert_array_equal(fast.ap, reference_ap(gt, images[src], np.ones(len(src)), score, dets))


def test_binary_search_lookup_equals_dense_table(monkeypatch):
    # Splits too large for the dense (image, class) table use binary search instead.
    gt, di, dc, sc, db = _hard_random_case(7)
    dense = evaluate_ilsvrc(gt, di, dc, sc, db).ap
    monkeypatch.setattr(eval.ilsvrc_ap, "_DENSE_TABLE_MAX", 0)
    np.testing.assert_array_equal(evaluate_ilsvrc(gt, di, dc, sc, db).ap, dense)
    np.testing.assert_array_equal(dense, reference_ap(gt, di, dc, sc, db))


def test_speed_benchmark_runs_and_all_three_implementations_agree():
    # benchmarks/eval_speed.py asserts identical APs from the vectorised evaluator, the devkit
    # transcription and its own dict-grouped loop; a small size keeps this at about a second.
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_speed.py"
    proc = subprocess.run([sys.executable, str(script), "--images", "300", "--repeats", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "identical APs" in proc.stdout
