"""Vectorised ILSVRC evaluator vs per-detection Python loops of the same devkit algorithm.

    python benchmarks/eval_speed.py                      # 5,000 images x 200 classes x 20 det/img
    python benchmarks/eval_speed.py --images 2000        # smaller
    python benchmarks/eval_speed.py --ilsvrc-val-size    # 20k images, 200 classes, 1M detections (fast path only)

Two loops are timed: `eval.reference.reference_ap`, the devkit's ``eval_detection.m``
transcribed loop for loop (each detection scans every ground-truth box of its
image), and `grouped_loop_ap` below, a smarter Python loop that indexes ground
truth by (image, class) first.  All three must give identical APs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.ilsvrc_ap import GroundTruth, evaluate_ilsvrc, size_thresholds, voc_ap
from eval.reference import reference_ap
from eval.submission import read_submission, write_submission
from eval.synthetic_submission import random_case


def grouped_loop_ap(gt: GroundTruth, image_index, class_id, score, boxes) -> np.ndarray:
    """The devkit algorithm as a per-detection loop over dict-indexed (image, class) groups."""
    thr = size_thresholds(gt.boxes)
    groups: dict[tuple[int, int], list[int]] = {}
    num_pos = np.zeros(gt.num_classes + 1)
    for k, key in enumerate(zip(gt.image_index.tolist(), gt.class_id.tolist())):
        if key not in gt.blacklist:
            groups.setdefault(key, []).append(k)
            num_pos[key[1]] += not gt.difficult[k]
    per_class: dict[int, list[int]] = {}
    for j, c in enumerate(class_id.tolist()):
        per_class.setdefault(c, []).append(j)
    gtb, ii, sc, bx = gt.boxes.tolist(), image_index.tolist(), score.tolist(), boxes.tolist()
    ap = np.full(gt.num_classes, np.nan)
    for c in range(1, gt.num_classes + 1):
        used: set[int] = set()
        tp: list[float] = []
        for j in sorted(per_class.get(c, []), key=lambda j: (-sc[j], ii[j])):  # devkit tie order
            key = (ii[j], c)
            if key in gt.blacklist:
                continue
            b = bx[j]
            best, kbest = -1.0, -1
            for k in groups.get(key, ()):
                if k in used:
                    continue
                g = gtb[k]
                iw = min(b[2], g[2]) - max(b[0], g[0]) + 1
                ih = min(b[3], g[3]) - max(b[1], g[1]) + 1
                if iw > 0 and ih > 0:
                    inter = iw * ih
                    ov = inter / ((b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - inter)
                    if ov >= thr[k] and ov > best:
                        best, kbest = ov, k
            if kbest >= 0 and gt.difficult[kbest]:
                continue
            if kbest >= 0:
                used.add(kbest)
            tp.append(float(kbest >= 0))
        if num_pos[c]:
            tp_c = np.cumsum(tp)
            ap[c - 1] = voc_ap(tp_c / num_pos[c], tp_c / np.arange(1, len(tp) + 1))
    return ap


def best_of(repeats: int, fn) -> float:
    """Fastest of ``repeats`` timed calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--dets-per-image", type=float, default=20.0)
    parser.add_argument("--gt-per-image", type=float, default=2.5)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    parser.add_argument("--ilsvrc-val-size", action="store_true", help="20k images, 1M detections, no loops")
    args = parser.parse_args()
    if args.ilsvrc_val_size:
        args.images, args.dets_per_image = 20000, 50.0
    gt, di, dc, sc, db = random_case(num_images=args.images, num_classes=args.classes,
                                     gt_per_image=args.gt_per_image, dets_per_image=args.dets_per_image,
                                     seed=0, blacklist_pairs=50)
    print(f"{args.images} images, {args.classes} classes, {len(gt.class_id)} ground-truth boxes, {len(sc)} detections")
    fast = evaluate_ilsvrc(gt, di, dc, sc, db)  # warm-up: lazy imports, page faults
    t_fast = best_of(args.repeats, lambda: evaluate_ilsvrc(gt, di, dc, sc, db))
    print(f"vectorised:   {t_fast:8.3f} s   mAP {fast.mean_ap:.6f}")
    if args.ilsvrc_val_size:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "detections.txt"
            write_submission(path, di, dc, sc, db)
            t0 = time.perf_counter()
            sub = read_submission(path)
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            evaluate_ilsvrc(gt, sub.image_index, sub.class_id, sub.score, sub.boxes)
            t_eval = time.perf_counter() - t0
        print(f"from a submission file: read {t_read:.2f} s + evaluate {t_eval:.2f} s = {t_read + t_eval:.2f} s")
        return
    devkit = reference_ap(gt, di, dc, sc, db)
    t_devkit = best_of(args.repeats, lambda: reference_ap(gt, di, dc, sc, db))
    print(f"devkit loop:  {t_devkit:8.3f} s   mAP {np.nanmean(devkit):.6f}")
    grouped = grouped_loop_ap(gt, di, dc, sc, db)
    t_grouped = best_of(args.repeats, lambda: grouped_loop_ap(gt, di, dc, sc, db))
    print(f"grouped loop: {t_grouped:8.3f} s   mAP {np.nanmean(grouped):.6f}")
    np.testing.assert_array_equal(fast.ap, devkit)
    np.testing.assert_array_equal(fast.ap, grouped)
    print(f"identical APs; speed-up {t_devkit / t_fast:.1f}x over the devkit loop, "
          f"{t_grouped / t_fast:.1f}x over the grouped loop")


if __name__ == "__main__":
    main()
