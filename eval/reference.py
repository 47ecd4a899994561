"""A line-by-line transcription of the devkit's ``eval_detection.m`` loops, kept as the oracle.

Slow on purpose and structured like the MATLAB code, so it can be checked
against it by eye: detections are grouped by image (file order kept), sorted by
confidence inside each image, matched image by image against every ground-truth
box of the image, and the per-image results are concatenated in image order and
sorted by confidence once more (both sorts stable, as MATLAB's ``sort``).  It
shares no code with `eval.ilsvrc_ap` (not even ``VOCap``), so agreement between
the two is evidence for both.  Tests and ``benchmarks/eval_speed.py`` assert
identical APs.
"""

from __future__ import annotations

import numpy as np

from eval.ilsvrc_ap import GroundTruth


def _voc_ap(rec: list[float], prec: list[float]) -> float:
    """The devkit's ``VOCap``, loop for loop."""
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    terms = [(mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]
    return float(np.sum(terms))  # numpy's summation, as the vectorised code, so the floats agree exactly


def reference_ap(gt: GroundTruth, image_index, class_id, score, boxes) -> np.ndarray:
    """Per-class AP ``(C,)`` (NaN without ground truth) by the devkit's loops.

    Blacklisted (image, class) pairs: their ground truth is dropped and their
    detections skipped.  Difficult boxes (VOC): not positives; a detection that
    matches one is skipped and the box stays available.
    """
    num_classes, num_images = gt.num_classes, gt.num_images
    image_index = [int(i) for i in image_index]
    class_id = [int(c) for c in class_id]
    score = [float(s) for s in score]
    boxes = [[float(v) for v in b] for b in np.asarray(boxes).reshape(-1, 4)]

    # Ground truth per image, annotation order; blacklisted (image, class) boxes removed.
    gt_of_image: list[list[int]] = [[] for _ in range(num_images + 1)]
    num_pos = [0] * (num_classes + 1)
    for k in range(len(gt.class_id)):
        i, c = int(gt.image_index[k]), int(gt.class_id[k])
        if (i, c) in gt.blacklist:
            continue
        gt_of_image[i].append(k)
        if not gt.difficult[k]:
            num_pos[c] += 1
    gt_boxes = [[float(v) for v in b] for b in gt.boxes]
    gt_labels = [int(c) for c in gt.class_id]

    # Detections grouped by image (a stable sort by image index: file order kept).
    dets_of_image: list[list[int]] = [[] for _ in range(num_images + 1)]
    for j in range(len(score)):
        dets_of_image[image_index[j]].append(j)

    all_conf, all_label, all_tp, all_fp = [], [], [], []
    for i in range(1, num_images + 1):
        dets = sorted(dets_of_image[i], key=lambda j: -score[j])  # Python's sort is stable, as MATLAB's
        detected = {k: False for k in gt_of_image[i]}
        for j in dets:
            if (i, class_id[j]) in gt.blacklist:
                continue
            bb = boxes[j]
            ovmax, kmax = -np.inf, -1
            for k in gt_of_image[i]:
                if gt_labels[k] != class_id[j] or detected[k]:
                    continue
                bbgt = gt_boxes[k]
                gw = bbgt[2] - bbgt[0] + 1
                gh = bbgt[3] - bbgt[1] + 1
                thr = min(0.5, (gw * gh) / ((gw + 10) * (gh + 10)))
                bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
                iw = bi[2] - bi[0] + 1
                ih = bi[3] - bi[1] + 1
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + gw * gh - iw * ih
                    ov = iw * ih / ua
                    if ov >= thr and ov > ovmax:
                        ovmax, kmax = ov, k
            if kmax >= 0 and gt.difficult[kmax]:
                continue  # VOC: a detection of a difficult box is ignored; the box is not used up
            if kmax >= 0:
                detected[kmax] = True
            all_conf.append(score[j])
            all_label.append(class_id[j])
            all_tp.append(1.0 if kmax >= 0 else 0.0)
            all_fp.append(0.0 if kmax >= 0 else 1.0)

    ranked = sorted(range(len(all_conf)), key=lambda t: -all_conf[t])  # stable: image order, then file order
    # Per class, the running tp / fp counts along the ranking (the devkit's cumsum(tp_all(obj_labels==c))).
    tp = [0.0] * (num_classes + 1)
    fp = [0.0] * (num_classes + 1)
    rec: list[list[float]] = [[] for _ in range(num_classes + 1)]
    prec: list[list[float]] = [[] for _ in range(num_classes + 1)]
    for t in ranked:
        c = all_label[t]
        tp[c] += all_tp[t]
        fp[c] += all_fp[t]
        rec[c].append(tp[c] / num_pos[c] if num_pos[c] else 0.0)
        prec[c].append(tp[c] / (tp[c] + fp[c]))
    ap = np.full(num_classes, np.nan)
    for c in range(1, num_classes + 1):
        if num_pos[c]:
            ap[c - 1] = _voc_ap(rec[c], prec[c])
    return ap
