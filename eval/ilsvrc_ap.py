"""ILSVRC detection AP, exactly as the official devkit's ``eval_detection.m`` computes it.

Protocol (SPEC section 7):

* each ground-truth box gets its own IoU threshold
  ``thr = min(0.5, w*h / ((w+10)*(h+10)))`` with ``w = xmax-xmin+1``, ``h = ymax-ymin+1``
  (small objects are matched at a looser IoU);
* IoU uses the devkit's ``+1`` pixel arithmetic: ``iw = min(xmax) - max(xmin) + 1``,
  overlap only when ``iw > 0 and ih > 0``.  Boxes are used as given (no clipping, no
  reordering of corners), so a box inverted by more than one pixel can never match;
* per class, detections are ranked by confidence, descending.  Ties follow the
  devkit's stable sorts: the devkit matches image by image (detections sorted by
  confidence within the image, file order for ties), concatenates the images in
  index order and then sorts by confidence again, so **equal confidences are
  ordered by image index, then by submission-file order**.  For a file written
  image by image (as `eval.submission.write_submission` callers do) that is
  plain file order;
* each detection takes the not-yet-matched ground truth of its class and image
  with the largest IoU among those whose IoU >= their own threshold (the first
  such box in annotation order on an exact IoU tie) -> true positive; otherwise
  false positive, so duplicates are false positives.  Unlike PASCAL VOC, a
  detection whose best box is already taken may take the next-best unmatched box
  that passes its threshold (VOC instead counts it as a false positive);
* blacklisted (image, class) pairs are ignored: their ground truth leaves the
  class's positive count and their detections are neither true nor false;
* AP is the area under the monotone precision envelope at every recall change
  (the devkit's ``VOCap``); classes with no ground truth get NaN and are
  excluded from the mean.

VOC ``difficult`` boxes (ILSVRC has none) are handled the VOC way: they are not
positives, and a detection whose match is a difficult box is ignored (neither
true nor false); the difficult box is not used up, so further detections on it
are ignored too rather than counted as duplicates.

Speed: matching only interacts inside one (image, class) group.  Detections of
groups without ground truth are false positives in one vectorised step; the
greedy matching runs for all other groups in lock-step (step ``r`` takes every
group's ``r``-th candidate, see `_match_bucket`), so the Python loop runs over
detection ranks, not over detections.  `eval.reference` is a line-by-line transcription of the devkit
loops; tests and ``benchmarks/eval_speed.py`` assert identical APs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detect.data.record import DetectionDataset


@dataclass(frozen=True)
class GroundTruth:
    """All ground truth of a split, flattened: ``(G,)`` arrays and ``(G, 4)`` xyxy boxes.

    ``image_index`` is 1-based (split-list order), ``class_id`` in ``1..num_classes``;
    boxes of one image keep their annotation order.
    """

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
    num_positives: np.ndarray  # int64 (C,) ground-truth boxes that count (not blacklisted, not difficult)
    num_detections: np.ndarray  # int64 (C,) scored detections (blacklisted/ignored excluded)
    precision: list[np.ndarray] = field(repr=False)  # per class, (D_c,) in rank order
    recall: list[np.ndarray] = field(repr=False)

    @property
    def mean_ap(self) -> float:
        """Mean AP over classes with ground truth (NaN when there are none)."""
        valid = ~np.isnan(self.ap)
        return float(self.ap[valid].mean()) if valid.any() else float("nan")


def size_thresholds(boxes: np.ndarray) -> np.ndarray:
    """ILSVRC per-box IoU threshold ``min(0.5, w*h/((w+10)*(h+10)))`` for ``(G, 4)`` xyxy boxes -> ``(G,)``."""
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    return np.minimum(0.5, (w * h) / ((w + 10.0) * (h + 10.0)))


def devkit_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU with the devkit's ``+1`` pixel convention: ``(N, 4)`` x ``(M, 4)`` xyxy -> ``(N, M)``.

    Shifting ``x2, y2`` by one pixel turns the devkit's inclusive-pixel areas into
    continuous ones, so `torchvision.ops.box_iou` gives the devkit's value (up to
    floating-point rounding) whenever the intersection is positive, and 0 otherwise
    (the devkit's ``iw>0 & ih>0`` test), for boxes at least one pixel wide and high
    (``x2 >= x1``; a zero-area pair would give 0/0, returned as 0).  ``tests/test_eval_ap.py`` checks it against `paired_iou`, the
    devkit arithmetic used for matching.  Used for proposal statistics.
    """
    # Imported here: the evaluator itself does not need torch, and `python -m eval.map`
    # starts seconds faster without it.
    import torch
    from torchvision.ops import box_iou

    shift = np.array([0.0, 0.0, 1.0, 1.0])
    a = np.asarray(a, np.float64).reshape(-1, 4) + shift
    b = np.asarray(b, np.float64).reshape(-1, 4) + shift
    return np.nan_to_num(box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), nan=0.0)  # 0/0: zero-area pair


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Devkit IoU of ``a[..., i, :]`` with ``b[..., i, :]``: xyxy ``(..., 4)`` arrays (broadcast) -> ``(...)``.

    The devkit's arithmetic operation for operation (``iw = min(x2) - max(x1) + 1``,
    overlap only when ``iw > 0 and ih > 0``), so the values equal its bit for bit.
    """
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1.0
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1.0
    overlap = (iw > 0) & (ih > 0)
    inter = iw * ih
    union = (a[..., 2] - a[..., 0] + 1.0) * (a[..., 3] - a[..., 1] + 1.0) + (b[..., 2] - b[..., 0] + 1.0) * (
        b[..., 3] - b[..., 1] + 1.0
    ) - inter
    # iw > 0 implies both boxes are wider than 0 (iw <= each width), so union > 0 where it counts.
    return np.divide(inter, union, out=np.zeros(np.shape(inter)), where=overlap)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope at every recall change (devkit ``VOCap``).

    ``recall``, ``precision``: ``(D,)`` in rank order.
    """
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def _small_uint(values: np.ndarray, bound: int) -> np.ndarray:
    """``values`` (all in ``0..bound-1``) as uint16 when they fit: numpy's stable sort is then a radix sort."""
    return values.astype(np.uint16) if bound <= 2**16 else values


def devkit_order(image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Detection indices sorted by class, then confidence descending, then image index, then file order.

    ``image_index``, ``class_id``: validated int64 ``(D,)`` (>= 1); ``score`` float64 ``(D,)``.
    Three stable passes, least significant key first; image indices (ILSVRC val:
    20k) and class ids fit in 16 bits, which numpy sorts by radix.
    """
    if len(score) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(_small_uint(image_index, int(image_index.max()) + 1), kind="stable")
    order = order[np.argsort(-score[order], kind="stable")]
    return order[np.argsort(_small_uint(class_id[order], int(class_id.max()) + 1), kind="stable")]


def _blacklisted(keys: np.ndarray, blacklist, stride: int) -> np.ndarray:
    """Which ``image_index * stride + class_id`` keys are in the blacklist of (image, class) pairs."""
    if not blacklist:
        return np.zeros(len(keys), bool)
    black = np.sort(np.array([i * stride + c for i, c in blacklist], np.int64))
    at = np.minimum(np.searchsorted(black, keys), len(black) - 1)
    return black[at] == keys


# A dense (image, class) -> group table beats binary search up to this many keys
# (ILSVRC val: 20k images x 201 = 4M entries, 16 MB of int32).
_DENSE_TABLE_MAX = 50_000_000

# Outcome of a detection after matching.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, 2


def match_detections(
    gt: GroundTruth, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy devkit matching of every detection.

    Args:
        image_index, class_id: int64 ``(D,)``, validated to lie in the split and class list.
        score: float64 ``(D,)``; boxes: float64 ``(D, 4)`` xyxy.
    Returns:
        ``order`` int64 ``(D,)``: detection indices in `devkit_order`; ``outcome`` int8
        ``(D,)`` in that order (`TRUE_POSITIVE`, `FALSE_POSITIVE` or `IGNORED`).
    """
    stride = gt.num_classes + 1
    order = devkit_order(image_index, class_id, score)
    det_key = (image_index * stride + class_id)[order]
    outcome = np.full(len(order), FALSE_POSITIVE, np.int8)

    # Ground truth grouped by (image, class); the stable sort keeps annotation order in a group.
    gt_key_all = gt.image_index * stride + gt.class_id
    keep = np.flatnonzero(~_blacklisted(gt_key_all, gt.blacklist, stride))
    gt_order = keep[np.argsort(gt_key_all[keep], kind="stable")]
    gt_boxes = gt.boxes[gt_order]
    gt_thr = size_thresholds(gt_boxes)
    gt_difficult = gt.difficult[gt_order]
    group_key, group_start, group_size = np.unique(gt_key_all[gt_order], return_index=True, return_counts=True)
    # Group ids ordered by bucket (groups of 1, 2, 3-4, 5-8, ... boxes: the padding of the
    # matching step stays below 2x), so one sort of the detections by group id also
    # makes every bucket contiguous.
    group_bucket = np.ceil(np.log2(group_size)).astype(np.int64)
    by_bucket = np.argsort(group_bucket, kind="stable")
    group_key, group_start, group_size = group_key[by_bucket], group_start[by_bucket], group_size[by_bucket]
    group_bucket = group_bucket[by_bucket]

    # Each detection's ground-truth group: -1 none in its image and class (false positive),
    # -2 a blacklisted pair (ignored).
    num_keys = (gt.num_images + 1) * stride
    if num_keys <= _DENSE_TABLE_MAX and (len(det_key) == 0 or det_key.max() < num_keys):
        table = np.full(num_keys, -1, np.int32)
        table[group_key] = np.arange(len(group_key), dtype=np.int32)
        table[[i * stride + c for i, c in gt.blacklist if i * stride + c < num_keys]] = -2
        group = table[det_key]
    elif len(group_key) == 0:
        group = np.where(_blacklisted(det_key, gt.blacklist, stride), -2, -1)
    else:
        by_key = np.argsort(group_key)  # group ids are in bucket order, not key order
        at = np.minimum(np.searchsorted(group_key[by_key], det_key), len(group_key) - 1)
        group = np.where(group_key[by_key][at] == det_key, by_key[at], -1)
        group[_blacklisted(det_key, gt.blacklist, stride)] = -2
    outcome[group == -2] = IGNORED
    pos = np.flatnonzero(group >= 0)
    if len(pos) == 0:
        return order, outcome

    # Detections with ground truth, sorted by group id (so by bucket too); rank order
    # (confidence, then file) kept inside a group.
    grouped = pos[np.argsort(_small_uint(group[pos], len(group_key)), kind="stable")]
    g = group[grouped].astype(np.int64)
    det_boxes = boxes[order[grouped]]
    bucket = group_bucket[g]
    bounds = np.searchsorted(bucket, np.arange(bucket[-1] + 2))
    for b in np.flatnonzero(np.diff(bounds)):
        sel = slice(bounds[b], bounds[b + 1])
        _match_bucket(
            dets=grouped[sel], group=g[sel], gt_start=group_start[g[sel]], gt_count=group_size[g[sel]],
            width=int(2**b), det_boxes=det_boxes[sel], gt_boxes=gt_boxes, gt_thr=gt_thr, gt_difficult=gt_difficult,
            outcome=outcome,
        )
    return order, outcome


def _match_bucket(*, dets, group, gt_start, gt_count, width, det_boxes, gt_boxes, gt_thr, gt_difficult,
                  outcome) -> None:
    """Greedy matching for groups with at most ``width`` boxes, all groups in lock-step.

    ``dets`` ``(n,)`` positions in rank order, sorted by ``group`` with rank order kept
    inside a group; ``det_boxes`` ``(n, 4)`` their boxes.  Writes ``outcome``.

    Step ``r`` handles the ``r``-th candidate of every group at once, so the Python
    loop runs (largest group's candidate count) times, not once per detection.
    After each round of steps (32, then 64, 128, ...) detections that no longer have
    an untaken box passing their threshold are dropped as false positives (boxes are
    never freed), which keeps a group with thousands of detections cheap.
    """
    slots = np.arange(width)
    real = slots < gt_count[:, None]
    gt_idx = np.where(real, gt_start[:, None] + slots, gt_start[:, None])  # (n, width), padding repeats box 0
    iou = paired_iou(det_boxes[:, None, :], gt_boxes[gt_idx])  # (n, width)
    # iou > 0: the devkit only compares overlapping boxes (matters only for a degenerate threshold of 0).
    passes = real & (iou > 0.0) & (iou >= gt_thr[gt_idx])
    # A detection passing no box's threshold stays a false positive whatever came before it.
    cand = np.flatnonzero(passes.any(1))
    if len(cand) == 0:
        return
    dets, group, gt_idx, passes = dets[cand], group[cand], gt_idx[cand], passes[cand]
    iou = np.where(passes, iou[cand], -1.0)
    local = np.cumsum(np.r_[True, group[1:] != group[:-1]]) - 1
    taken = np.zeros((local[-1] + 1, width), bool)
    rounds = 32
    remaining = np.arange(len(dets))  # sorted by (group, rank)
    while len(remaining):
        lg = local[remaining]
        first = np.r_[True, lg[1:] != lg[:-1]]
        rank = np.arange(len(remaining)) - np.flatnonzero(first)[np.cumsum(first) - 1]
        by_rank = np.argsort(_small_uint(rank, int(rank.max()) + 1), kind="stable")
        bounds = np.searchsorted(rank[by_rank], np.arange(min(int(rank.max()) + 1, rounds) + 1))
        for r in range(len(bounds) - 1):
            rows = remaining[by_rank[bounds[r] : bounds[r + 1]]]
            g = local[rows]
            masked = np.where(taken[g], -1.0, iou[rows])
            j = masked.argmax(1)  # first maximum: annotation order breaks exact IoU ties, as the devkit's '>'
            hit = masked[np.arange(len(rows)), j] >= 0.0
            rows, g, j = rows[hit], g[hit], j[hit]
            difficult = gt_difficult[gt_idx[rows, j]]
            taken[g[~difficult], j[~difficult]] = True  # a difficult box is never used up
            outcome[dets[rows]] = np.where(difficult, IGNORED, TRUE_POSITIVE)
        remaining = remaining[rank >= rounds]
        remaining = remaining[(passes[remaining] & ~taken[local[remaining]]).any(1)]
        rounds *= 2


def evaluate_ilsvrc(
    gt: GroundTruth, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray, boxes: np.ndarray
) -> ApResult:
    """Per-class AP of detections against ``gt``.

    Args:
        image_index, class_id: ``(D,)`` 1-based, already validated (`eval.submission.validate_submission`).
        score: ``(D,)`` finite confidences; boxes: ``(D, 4)`` xyxy pixel coordinates.
    """
    num_classes = gt.num_classes
    class_id = np.asarray(class_id, np.int64)
    order, outcome = match_detections(
        gt, np.asarray(image_index, np.int64), class_id, np.asarray(score, np.float64),
        np.asarray(boxes, np.float64).reshape(-1, 4),
    )
    stride = num_classes + 1
    counted = ~gt.difficult & ~_blacklisted(gt.image_index * stride + gt.class_id, gt.blacklist, stride)
    num_pos = np.bincount(gt.class_id[counted], minlength=num_classes + 1)[1:].astype(np.int64)
    scored = outcome != IGNORED
    cls = class_id[order][scored]  # class ascending, rank order inside a class
    is_tp = outcome[scored] == TRUE_POSITIVE
    bounds = np.searchsorted(cls, np.arange(1, num_classes + 2))
    # Running TP counts restarted at each class: a global cumsum minus its value at the class start.
    tp_cum = np.concatenate([[0.0], np.cumsum(is_tp, dtype=np.float64)])
    seg_start = bounds[cls - 1]
    tp = tp_cum[1:] - tp_cum[seg_start]
    seen = np.arange(1, len(cls) + 1, dtype=np.float64) - seg_start  # tp + fp
    all_precision = tp / seen
    all_recall = tp / np.maximum(num_pos[cls - 1], 1)
    ap = np.full(num_classes, np.nan)
    precision = [all_precision[bounds[c] : bounds[c + 1]] for c in range(num_classes)]
    recall = [all_recall[bounds[c] : bounds[c + 1]] for c in range(num_classes)]
    for c in np.flatnonzero(num_pos):
        ap[c] = voc_ap(recall[c], precision[c])
    n_det = np.diff(bounds).astype(np.int64)
    return ApResult(ap=ap, num_positives=num_pos, num_detections=n_det, precision=precision, recall=recall)
