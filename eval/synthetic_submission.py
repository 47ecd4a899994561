"""Random ground truth and detections of realistic shape, for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from eval.ilsvrc_ap import GroundTruth


def random_case(
    *, num_images: int, num_classes: int, gt_per_image: float, dets_per_image: float, seed: int,
    blacklist_pairs: int = 0,
) -> tuple[GroundTruth, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ILSVRC-like ground truth on 500x375 images and detections around it.

    Like ILSVRC val (2.8 objects and ~1.5 classes per image), each image holds
    objects of one or two classes, so several boxes of a class share an image.
    70% of detections sit near a ground-truth box (jittered by ~8 px) in its
    image, mostly of its class; the rest land anywhere.  Scores are rounded to
    2 decimals so ties occur.  Returns ``(gt, image_index, class_id, score, boxes)``.
    """
    rng = np.random.default_rng(seed)
    per_image = rng.poisson(gt_per_image - 1, num_images) + 1
    gi = np.repeat(np.arange(1, num_images + 1), per_image)
    g = len(gi)
    image_classes = rng.integers(1, num_classes + 1, (num_images + 1, 2))
    gc = image_classes[gi, (rng.random(g) < 0.3).astype(int)]
    xy = rng.uniform(0, 400, (g, 2))
    wh = rng.uniform(4, 200, (g, 2))
    gb = np.round(np.c_[xy, xy + wh])
    pairs = {(int(gi[k]), int(gc[k])) for k in rng.choice(g, size=min(blacklist_pairs, g), replace=False)}
    gt = GroundTruth(gi, gc, gb, np.zeros(g, bool), num_images, num_classes, frozenset(pairs))
    d = int(num_images * dets_per_image)
    src = rng.integers(0, g, d)
    near = rng.random(d) < 0.7
    di = np.where(near, gi[src], rng.integers(1, num_images + 1, d))
    dc = np.where(rng.random(d) < 0.8, gc[src], rng.integers(1, num_classes + 1, d))
    db = np.round(gb[src] + rng.normal(0, 8, (d, 4)), 1)
    score = np.round(rng.random(d), 2)
    return gt, di.astype(np.int64), dc.astype(np.int64), score, db
