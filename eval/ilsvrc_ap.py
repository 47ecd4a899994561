"""ILSVRC detection AP, exactly as the official devkit's ``eval_detection.m`` computes it.

Protocol (SPEC section 7):

* each ground-truth box gets its own IoU threshold
  ``thr = min(0.5, w*h / ((w+10)*(h+10)))`` with ``w = xmax-xmin+1``, ``h = ymax-ymin+1``
  (small objects are matched at a looser IoU);
* IoU uses the devkit's ``+1`` pixel arithmetic;
* per class, all detections of all images are sorted by confidence, descending,
  with a **stable** sort: equal confidences keep their order in the submission
  file (MATLAB's ``sort(..., 'descend')`` is stable too);
* each detection takes the not-yet-matched ground truth of its class and image
  with the largest IoU among those whose IoU >= their own threshold -> true
  positive; otherwise false positive (so duplicates are false positives).
  Unlike PASCAL VOC, a detection whose best box is already taken may take the
  next-best unmatched box that passes its threshold;
* blacklisted (image, class) pairs are ignored: their ground truth leaves the
  class's positive count and their detections are neither true nor false;
* AP is the area under the monotone precision envelope at every recall change
  (the devkit's ``VOCap``); classes with no ground truth get NaN and are
  excluded from the mean.

VOC ``difficult`` boxes (ILSVRC has none): not counted as positives; a
detection matched to one is ignored, as in PASCAL VOC.  Inverted detection
boxes (``xmax < xmin`` or ``ymax < ymin``) never match.

The matching only interacts inside one (image, class) group: groups without
ground truth are all false positives in one vectorised step, and the greedy
matching runs for all other groups in lock-step (step ``r`` takes every
group's ``r``-th best detection), so Python loops over detection ranks, not
over detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_iou

from detect.data.record import DetectionDataset


@dataclass(frozen=True)
class GroundTruth:
    """All ground truth of a split, flattened: ``(G,)`` arrays and ``(G, 4)`` xyxy boxes."""

    image_index: np.ndarray
    class_id: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray
    num_images: int
    num_classes: int
    blacklist: frozenset[tuple[int, int]] = frozenset()

    @classmethod
    def from_dataset(cls, dataset: DetectionDataset) -> "GroundTruth":
        recs = dataset.records
        return cls(
            image_index=np.concatenate([np.full(r.num_objects, r.index, np.int64) for r in recs] or [np.zeros(0, np.int64)]),
            class_id=np.concatenate([r.labels for r in recs] or [np.zeros(0, np.int64)]).astype(np.int64),
            boxes=np.concatenate([r.boxes for r in recs] or [np.zeros((0, 4))]).astype(np.float64).reshape(-1, 4),
            difficult=np.concatenate([r.difficult for r in recs] or [np.zeros(0, bool)]).astype(bool),
            num_images=max((r.index for r in recs), default=0),
            num_classes=len(dataset.classes),
            blacklist=dataset.blacklist,
        )


@dataclass(frozen=True)
class ApResult:
    """Per-class results, index ``c - 1`` for class id ``c``."""

    ap: np.ndarray  # float64 (C,), NaN for classes without ground truth
    num_positives: np.ndarray  # int64 (C,)
    num_detections: np.ndarray  # int64 (C,) scored detections (blacklisted/ignored excluded)
    precision: list[np.ndarray] = field(repr=False)  # per class, (D_c,) in score order
    recall: list[np.ndarray] = field(repr=False)

    @property
    def mean_ap(self) -> float:
        valid = ~np.isnan(self.ap)
        return float(self.ap[valid].mean()) if valid.any() else float("nan")


def size_thresholds(boxes: np.ndarray) -> np.ndarray:
    """ILSVRC per-box IoU threshold ``min(0.5, w*h/((w+10)*(h+10)))`` for ``(G, 4)`` xyxy boxes."""
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    return np.minimum(0.5, (w * h) / ((w + 10.0) * (h + 10.0)))


def devkit_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU with the devkit's ``+1`` pixel convention: ``(N, 4)`` x ``(M, 4)`` xyxy -> ``(N, M)``.

    Shifting ``x2, y2`` by one pixel turns the devkit's inclusive-pixel areas into
    continuous ones, so `torchvision.ops.box_iou` gives the same value whenever the
    intersection is positive (and 0 otherwise, as the devkit's ``iw>0 & ih>0`` test).
    """
    shift = np.array([0.0, 0.0, 1.0, 1.0])
    return box_iou(torch.from_numpy(a + shift), torch.from_numpy(b + shift)).numpy()


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope at every recall change (devkit ``VOCap``)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def _blacklisted(keys: np.ndarray, blacklist, stride: int) -> np.ndarray:
    """Which ``image_index * stride + class_id`` keys are in the blacklist of (image, class) pairs."""
    if not blacklist:
        return np.zeros(len(keys), bool)
    black = np.sort(np.array([i * stride + c for i, c in blacklist], np.int64))
    at = np.minimum(np.searchsorted(black, keys), len(black) - 1)
    return black[at] == keys


# A dense (image, class) lookup table beats binary search up to this many keys
# (ILSVRC val: 20k images x 201 = 4M entries, 32 MB).
_DENSE_TABLE_MAX = 50_000_000

# Outcome of a detection after matching.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, 2


def match_detections(
    gt: GroundTruth, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy devkit matching of every detection.

    Returns:
        ``order`` int64 ``(D,)``: detection indices sorted by (class, confidence
        descending, file order); ``outcome`` int8 ``(D,)`` in that order
        (`TRUE_POSITIVE`, `FALSE_POSITIVE` or `IGNORED`).
    """
    stride = gt.num_classes + 1
    # Stable sorts: class ascending, then confidence descending, ties in file order
    # (two stable passes; a small-int class key lets numpy use radix sort).
    by_score = np.argsort(-score, kind="stable")
    order = by_score[np.argsort(class_id[by_score].astype(np.int32), kind="stable")]
    det_key = (image_index * stride + class_id)[order]
    outcome = np.full(len(score), FALSE_POSITIVE, np.int8)
    outcome[_blacklisted(det_key, gt.blacklist, stride)] = IGNORED

    gt_key_all = gt.image_index * stride + gt.class_id
    keep_gt = ~_blacklisted(gt_key_all, gt.blacklist, stride)
    gt_order = np.nonzero(keep_gt)[0][np.argsort(gt_key_all[keep_gt], kind="stable")]
    gt_key = gt_key_all[gt_order]
    gt_boxes = gt.boxes[gt_order]
    gt_thr = size_thresholds(gt_boxes)
    gt_difficult = gt.difficult[gt_order]

    # Where each detection's (image, class) boxes start in the sorted ground truth and how many.
    num_keys = (gt.num_images + 1) * stride
    if num_keys <= _DENSE_TABLE_MAX and (len(det_key) == 0 or det_key.max() < num_keys):
        per_key = np.bincount(gt_key, minlength=num_keys)
        key_start = np.cumsum(per_key) - per_key
        start, count = key_start[det_key], per_key[det_key]
    else:
        start = np.searchsorted(gt_key, det_key, side="left")
        count = np.searchsorted(gt_key, det_key, side="right") - start
    has_gt = (count > 0) & (outcome != IGNORED)
    if not has_gt.any():
        return order, outcome
    det_boxes = boxes[order]
    valid_box = (det_boxes[:, 2] >= det_boxes[:, 0]) & (det_boxes[:, 3] >= det_boxes[:, 1])

    # Detections that have ground truth in their (image, class), grouped, score order
    # kept inside each group; ``rank`` = position inside the group.
    pos = np.nonzero(has_gt)[0]
    grouped = pos[np.argsort(det_key[pos], kind="stable")]
    keys = det_key[grouped]
    first_of_group = np.r_[True, keys[1:] != keys[:-1]]
    group_id = np.cumsum(first_of_group) - 1
    rank = np.arange(len(grouped)) - np.flatnonzero(first_of_group)[group_id]
    n_gt = count[grouped]
    # Buckets of groups by number of boxes (1, 2, 3-4, 5-8, ...) bound the padding.
    bucket = np.ceil(np.log2(n_gt)).astype(np.int64)
    for b in np.unique(bucket):
        sel = bucket == b
        _match_bucket(
            dets=grouped[sel], group=group_id[sel], rank=rank[sel], gt_start=start[grouped[sel]],
            gt_count=n_gt[sel], width=int(2**b), det_boxes=det_boxes, valid_box=valid_box,
            gt_boxes=gt_boxes, gt_thr=gt_thr, gt_difficult=gt_difficult, outcome=outcome,
        )
    return order, outcome


def _match_bucket(*, dets, group, rank, gt_start, gt_count, width, det_boxes, valid_box,
                  gt_boxes, gt_thr, gt_difficult, outcome) -> None:
    """Greedy matching for groups with at most ``width`` boxes, all groups in lock-step.

    Step ``r`` handles the ``r``-th best detection of every group at once, so the
    Python loop runs (largest group's detection count) times, not once per detection.
    """
    slots = np.arange(width)
    gt_idx = gt_start[:, None] + slots  # (n, width), padded past gt_count
    real = slots < gt_count[:, None]
    gt_idx = np.where(real, gt_idx, gt_start[:, None])
    iou = _paired_iou(np.repeat(det_boxes[dets], width, 0), gt_boxes[gt_idx.ravel()]).reshape(-1, width)
    iou[~real | (iou < gt_thr[gt_idx]) | ~valid_box[dets][:, None]] = -1.0
    if width == 1:
        # One box per group: the group's first detection (in score order) that passes takes it.
        passes = np.flatnonzero(iou[:, 0] >= 0.0)
        _, first = np.unique(group[passes], return_index=True)
        winners = passes[first]
        outcome[dets[winners]] = np.where(gt_difficult[gt_idx[winners, 0]], IGNORED, TRUE_POSITIVE)
        return
    _, local_group = np.unique(group, return_inverse=True)
    taken = np.zeros((local_group.max() + 1, width), bool)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    for r in range(rank.max() + 1):
        rows = by_rank[bounds[r] : bounds[r + 1]]
        g = local_group[rows]
        masked = np.where(taken[g], -1.0, iou[rows])
        j = masked.argmax(1)
        hit = masked[np.arange(len(rows)), j] >= 0.0
        taken[g[hit], j[hit]] = True
        matched_gt = gt_idx[rows[hit], j[hit]]
        outcome[dets[rows[hit]]] = np.where(gt_difficult[matched_gt], IGNORED, TRUE_POSITIVE)


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Devkit IoU of ``a[i]`` with ``b[i]``: ``(N, 4)``, ``(N, 4)`` -> ``(N,)``."""
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area = lambda x: (x[:, 2] - x[:, 0] + 1.0) * (x[:, 3] - x[:, 1] + 1.0)
    union = area(a) + area(b) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def evaluate_ilsvrc(
    gt: GroundTruth, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray, boxes: np.ndarray
) -> ApResult:
    """Per-class AP of detections ``(D,)`` ids/scores and ``(D, 4)`` xyxy boxes against ``gt``."""
    num_classes = gt.num_classes
    order, outcome = match_detections(
        gt, np.asarray(image_index, np.int64), np.asarray(class_id, np.int64),
        np.asarray(score, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4),
    )
    stride = num_classes + 1
    counted = ~gt.difficult & ~_blacklisted(gt.image_index * stride + gt.class_id, gt.blacklist, stride)
    num_pos = np.bincount(gt.class_id[counted], minlength=num_classes + 1)[1:].astype(np.int64)
    scored = outcome != IGNORED
    cls = np.asarray(class_id, np.int64)[order][scored]  # ascending class, confidence descending
    is_tp = outcome[scored] == TRUE_POSITIVE
    bounds = np.searchsorted(cls, np.arange(1, num_classes + 2))
    # Running TP counts restarted at each class: a global cumsum minus its value at the class start.
    tp_cum = np.concatenate([[0.0], np.cumsum(is_tp, dtype=np.float64)])
    seg_start = bounds[cls - 1]
    tp = tp_cum[1:] - tp_cum[seg_start]
    seen = np.arange(1, len(cls) + 1, dtype=np.float64) - seg_start
    all_precision = tp / seen
    all_recall = tp / np.maximum(num_pos[cls - 1], 1)
    ap = np.full(num_classes, np.nan)
    precision = [all_precision[bounds[c] : bounds[c + 1]] for c in range(num_classes)]
    recall = [all_recall[bounds[c] : bounds[c + 1]] for c in range(num_classes)]
    for c in np.flatnonzero(num_pos):
        ap[c] = voc_ap(recall[c], precision[c])
    n_det = np.diff(bounds).astype(np.int64)
    return ApResult(ap=ap, num_positives=num_pos, num_detections=n_det, precision=precision, recall=recall)
