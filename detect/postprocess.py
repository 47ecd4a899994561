"""From per-region class scores to detections: ensemble averaging, per-class NMS, caps."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou


def average_member_scores(member_scores: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the members' region scores.

    Args:
        member_scores: M arrays ``(R, C + 1)`` (column 0 = background), softmax
            probabilities or SVM scores, all for the same R regions.
    Returns:
        float32 ``(R, C + 1)``.
    """
    if len(member_scores) == 0:
        raise ValueError("an ensemble needs at least one member")
    shapes = {s.shape for s in member_scores}
    if len(shapes) != 1:
        raise ValueError(f"members scored different regions: shapes {sorted(shapes)}")
    return np.mean(np.stack(member_scores, 0), axis=0, dtype=np.float64).astype(np.float32)


def image_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    nms_iou: float,
    score_threshold: float,
    max_per_image: int,
    box_voting_iou: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise greedy NMS over one image's scored regions (R-CNN's post-processing).

    Args:
        boxes: float ``(R, 4)`` xyxy regions, or ``(R, C, 4)`` per-class boxes (after box
            regression: each detection keeps its own class's box, as in R-CNN).
        scores: float ``(R, C + 1)`` class scores; column 0 (background) is ignored.
        nms_iou: IoU above which a lower-scored box of the same class is suppressed.
        score_threshold: class scores at or below this are dropped before NMS.
        max_per_image: keep at most this many detections (highest scores).
        box_voting_iou: None: each kept detection keeps its own box.  A float: it takes the
            score-weighted mean of every candidate box of its class with IoU >= this with it,
            itself included (box voting, Gidaris & Komodakis 2015); scores are unchanged.
    Returns:
        ``(boxes float32 (D, 4) xyxy, scores float32 (D,), labels int64 (D,) in 1..C)``,
        sorted by score, descending.
    """
    region, cls = np.nonzero(scores[:, 1:] > score_threshold)
    if len(region) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    cand_boxes = torch.as_tensor(boxes[region, cls] if boxes.ndim == 3 else boxes[region], dtype=torch.float32)
    cand_scores = torch.as_tensor(scores[region, cls + 1], dtype=torch.float32)
    labels = torch.as_tensor(cls + 1, dtype=torch.int64)
    keep = batched_nms(cand_boxes, cand_scores, labels, nms_iou)[:max_per_image]
    kept_boxes = cand_boxes[keep]
    if box_voting_iou is not None and len(keep):
        kept_boxes = vote_boxes(kept_boxes, labels[keep], cand_boxes, cand_scores, labels, iou=box_voting_iou)
    return kept_boxes.numpy(), cand_scores[keep].numpy(), labels[keep].numpy()


def vote_boxes(kept: torch.Tensor, kept_labels: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
               labels: torch.Tensor, *, iou: float) -> torch.Tensor:
    """``(K, 4)`` xyxy: each kept box replaced by the score-weighted mean of the ``(N, 4)`` candidate
    boxes of its label with IoU >= ``iou`` with it (it is one of them, so the weights never sum to 0
    for a positive score)."""
    votes = (box_iou(kept, boxes) >= iou) & (kept_labels[:, None] == labels[None, :])  # (K, N)
    weights = votes.to(scores.dtype) * scores[None, :]
    total = weights.sum(1, keepdim=True)
    voted = weights @ boxes / total.clamp_min(torch.finfo(scores.dtype).tiny)
    # A weighted mean lies within its boxes' extent up to float rounding: clamp the rounding away, so
    # boxes that touch the image border do not come out a hair outside it.
    voted = torch.minimum(torch.maximum(voted, boxes.min(0).values), boxes.max(0).values)
    return torch.where(total > 0, voted, kept)


def cap_per_class(scores: np.ndarray, labels: np.ndarray, *, max_per_class: int) -> np.ndarray:
    """Indices of the detections kept when each class keeps only its ``max_per_class`` best.

    R-CNN kept the top 30,000 detections per class over the whole split; applied
    to the split-level arrays ``scores (D,)`` and ``labels (D,)``.  Returns sorted indices.
    """
    order = np.lexsort((-scores, labels))  # by class, then score descending
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = np.arange(len(order)) - starts
    return np.sort(order[rank_in_class < max_per_class])
