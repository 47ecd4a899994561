"""A line-by-line transcription of the devkit's matching loop, kept as the oracle.

Slow on purpose (one Python iteration per detection and ground-truth box), so
it is easy to check against ``eval_detection.m`` by eye; tests and
``benchmarks/eval_speed.py`` assert that `eval.ilsvrc_ap.evaluate_ilsvrc` gives
the same APs.
"""

from __future__ import annotations

import numpy as np

from eval.ilsvrc_ap import GroundTruth, voc_ap


def reference_ap(gt: GroundTruth, image_index, class_id, score, boxes) -> np.ndarray:
    """Per-class AP ``(C,)`` (NaN without ground truth) by the devkit's nested loops."""
    num_classes = gt.num_classes
    per_image_gt: dict[tuple[int, int], list[int]] = {}
    npos = np.zeros(num_classes + 1)
    for k in range(len(gt.class_id)):
        key = (int(gt.image_index[k]), int(gt.class_id[k]))
        if key in gt.blacklist:
            continue
        per_image_gt.setdefault(key, []).append(k)
        if not gt.difficult[k]:
            npos[gt.class_id[k]] += 1
    per_class_dets: dict[int, list[int]] = {}
    for i in range(len(score)):
        per_class_dets.setdefault(int(class_id[i]), []).append(i)
    ap = np.full(num_classes, np.nan)
    for c in range(1, num_classes + 1):
        dets = per_class_dets.get(c, [])
        dets.sort(key=lambda i: -score[i])  # Python's sort is stable: ties keep file order
        detected = np.zeros(len(gt.class_id), bool)
        tp, fp = [], []
        for i in dets:
            key = (int(image_index[i]), c)
            if key in gt.blacklist:
                continue
            bb = boxes[i]
            ovmax, kmax = -np.inf, -1
            for k in per_image_gt.get(key, []):
                if detected[k]:
                    continue
                bbgt = gt.boxes[k]
                if bb[2] < bb[0] or bb[3] < bb[1]:
                    break  # an inverted box never matches
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
            if kmax >= 0:
                detected[kmax] = True
                if gt.difficult[kmax]:
                    continue  # matched a difficult box: ignored
                tp.append(1.0)
                fp.append(0.0)
            else:
                tp.append(0.0)
                fp.append(1.0)
        if npos[c] == 0:
            continue
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        rec = tp_c / npos[c]
        prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).tiny)
        ap[c - 1] = voc_ap(rec, prec)
    return ap
