"""Vectorised ILSVRC evaluator vs the devkit-style per-detection loop, side by side.

    python benchmarks/eval_speed.py                      # 5,000 images x 200 classes x 20 det/img
    python benchmarks/eval_speed.py --ilsvrc-val-size    # 20k images, 200 classes, 1M detections (fast path only)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.ilsvrc_ap import evaluate_ilsvrc
from eval.reference import reference_ap
from eval.submission import read_submission, write_submission
from eval.synthetic_submission import random_case


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
    parser.add_argument("--ilsvrc-val-size", action="store_true", help="20k images, 1M detections, no loop")
    args = parser.parse_args()
    if args.ilsvrc_val_size:
        args.images, args.dets_per_image = 20000, 50.0
    gt, di, dc, sc, db = random_case(num_images=args.images, num_classes=args.classes,
                                     gt_per_image=args.gt_per_image, dets_per_image=args.dets_per_image,
                                     seed=0, blacklist_pairs=50)
    print(f"{args.images} images, {args.classes} classes, {len(gt.class_id)} ground-truth boxes, {len(sc)} detections")
    fast = evaluate_ilsvrc(gt, di, dc, sc, db)  # warm-up: lazy imports, page faults
    t_fast = best_of(3, lambda: evaluate_ilsvrc(gt, di, dc, sc, db))
    print(f"vectorised: {t_fast:8.3f} s   mAP {fast.mean_ap:.6f}")
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
    slow = reference_ap(gt, di, dc, sc, db)
    t_slow = best_of(3, lambda: reference_ap(gt, di, dc, sc, db))
    print(f"loop:       {t_slow:8.3f} s   mAP {np.nanmean(slow):.6f}")
    np.testing.assert_array_equal(fast.ap, slow)
    print(f"identical APs; speed-up {t_slow / t_fast:.1f}x")


if __name__ == "__main__":
    main()
