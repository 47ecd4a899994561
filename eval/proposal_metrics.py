"""How good a set of region proposals is: count, coverage, recall, average best overlap.

All overlaps use the evaluator's ``+1`` devkit IoU (`eval.ilsvrc_ap.devkit_iou`),
so "coverage" (a ground-truth box has a proposal passing its own ILSVRC
size-dependent threshold) and recall at fixed IoUs are directly comparable with
what the detection evaluator can possibly match.  Difficult boxes are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detect.data.record import ImageRecord
from eval.ilsvrc_ap import devkit_iou, size_thresholds

# Proposal counts at which the recall-vs-number curve is sampled.
DEFAULT_CURVE_COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000, 1500, 2000, 3000)


@dataclass(frozen=True)
class ProposalMetrics:
    per_image: float  # mean number of proposals per image
    coverage: float  # fraction of GT boxes with a proposal at their ILSVRC threshold
    recall_50: float
    recall_70: float
    average_best_overlap: float
    num_images: int
    num_ground_truth: int
    curve_counts: tuple[int, ...]  # top-k proposal counts
    curve_coverage: tuple[float, ...]  # coverage using only each image's first k proposals
    curve_recall_50: tuple[float, ...]

    def summary(self) -> dict:
        """The keys of ``metrics.json``'s ``proposals.<source>`` entry."""
        return {
            "per_image": self.per_image,
            "coverage": self.coverage,
            "recall_50": self.recall_50,
            "recall_70": self.recall_70,
            "average_best_overlap": self.average_best_overlap,
            "num_images": self.num_images,
            "num_ground_truth": self.num_ground_truth,
            "curve": {"counts": list(self.curve_counts), "coverage": list(self.curve_coverage),
                      "recall_50": list(self.curve_recall_50)},
        }


def proposal_metrics(
    records: Sequence[ImageRecord],
    proposals: Sequence[np.ndarray],
    *,
    curve_counts: Sequence[int] = DEFAULT_CURVE_COUNTS,
) -> ProposalMetrics:
    """Score per-image proposals against ground truth.

    Args:
        records: the images, with ``boxes`` ``(G_i, 4)`` xyxy ground truth.
        proposals: ``(P_i, 4)`` xyxy proposals per image, best first (the curve
            takes each image's first ``k``).
        curve_counts: ``k`` values of the recall-vs-number-of-proposals curve.
    """
    if len(records) != len(proposals):
        raise ValueError(f"{len(records)} images but {len(proposals)} proposal sets")
    counts = np.array(curve_counts, np.int64)
    best_iou, thresholds, first_hit_thr, first_hit_50 = [], [], [], []
    for rec, props in zip(records, proposals):
        gt = rec.boxes[~rec.difficult].astype(np.float64)
        if len(gt) == 0:
            continue
        thr = size_thresholds(gt)
        thresholds.append(thr)
        props = np.asarray(props, np.float64).reshape(-1, 4)
        if len(props) == 0:
            best_iou.append(np.zeros(len(gt)))
            first_hit_thr.append(np.full(len(gt), np.iinfo(np.int64).max))
            first_hit_50.append(np.full(len(gt), np.iinfo(np.int64).max))
            continue
        iou = devkit_iou(props, gt)  # (P, G)
        best_iou.append(iou.max(0))
        # 1-based rank of the first proposal passing the threshold (inf when none does).
        first_hit_thr.append(_first_hit(iou >= thr[None, :]))
        first_hit_50.append(_first_hit(iou >= 0.5))
    n_prop = float(np.mean([len(p) for p in proposals])) if len(proposals) else 0.0
    if not best_iou:
        nan = float("nan")
        return ProposalMetrics(n_prop, nan, nan, nan, nan, len(records), 0, tuple(counts.tolist()),
                               (nan,) * len(counts), (nan,) * len(counts))
    best = np.concatenate(best_iou)
    thr = np.concatenate(thresholds)
    hit_thr = np.concatenate(first_hit_thr)
    hit_50 = np.concatenate(first_hit_50)
    return ProposalMetrics(
        per_image=n_prop,
        coverage=float(np.mean(best >= thr)),
        recall_50=float(np.mean(best >= 0.5)),
        recall_70=float(np.mean(best >= 0.7)),
        average_best_overlap=float(best.mean()),
        num_images=len(records),
        num_ground_truth=len(best),
        curve_counts=tuple(counts.tolist()),
        curve_coverage=tuple(float(np.mean(hit_thr <= k)) for k in counts),
        curve_recall_50=tuple(float(np.mean(hit_50 <= k)) for k in counts),
    )


def _first_hit(passes: np.ndarray) -> np.ndarray:
    """``(P, G)`` bool -> ``(G,)`` 1-based index of the first True per column, int64 max when none."""
    any_hit = passes.any(0)
    first = passes.argmax(0).astype(np.int64) + 1
    return np.where(any_hit, first, np.iinfo(np.int64).max)
