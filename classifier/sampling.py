"""R-CNN training windows: IoU labelling, 32 positive / 96 background batches, jittered fallback boxes.

R-CNN fine-tuning (Girshick et al. 2014, Section 2.3): a window whose best IoU with a
ground-truth box is >= 0.5 is a positive of that box's class, every other window is
background; each SGD batch samples 32 positive windows (over all classes) and 96
background windows uniformly from the windows of all training images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from detect.data.record import ImageRecord
from detect.errors import ConfigError


class WindowLabeler:
    """Label windows by their best-overlapping ground-truth box (like torchvision's ``Matcher``).

    ``__call__(windows (P, 4), gt_boxes (G, 4), gt_labels (G,))`` -> ``(labels, overlaps)``:
    int64 ``(P,)`` labels and float32 ``(P,)`` best IoU, where a window with best IoU

    - ``>= fg_iou`` gets the class of that ground-truth box (``1..C``),
    - in ``[bg_iou_low, bg_iou)`` is background (``BACKGROUND = 0``),
    - otherwise (between the thresholds, or below ``bg_iou_low``) is ``IGNORE = -1``
      and never sampled.

    All boxes are xyxy pixels.  An image without ground truth has only background windows
    (best IoU 0) unless ``bg_iou_low > 0``.  Defaults are R-CNN's: 0.5 / 0.5 / 0.0
    (Fast R-CNN used a background band of [0.1, 0.5)).
    """

    BACKGROUND = 0
    IGNORE = -1

    def __init__(self, *, fg_iou: float = 0.5, bg_iou: float = 0.5, bg_iou_low: float = 0.0) -> None:
        if not 0.0 <= bg_iou_low <= bg_iou <= fg_iou <= 1.0:
            raise ConfigError(
                "classifier labeler needs 0 <= bg_iou_low <= bg_iou <= fg_iou <= 1, "
                f"got bg_iou_low={bg_iou_low}, bg_iou={bg_iou}, fg_iou={fg_iou}"
            )
        self.fg_iou, self.bg_iou, self.bg_iou_low = fg_iou, bg_iou, bg_iou_low

    def __call__(self, windows, gt_boxes, gt_labels) -> tuple[Tensor, Tensor]:
        windows = torch.as_tensor(windows, dtype=torch.float32).reshape(-1, 4)
        gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
        gt_labels = torch.as_tensor(gt_labels, dtype=torch.int64).reshape(-1)
        if len(gt_boxes) == 0:
            overlaps = torch.zeros(len(windows))
            best = torch.zeros(len(windows), dtype=torch.int64)
            gt_labels = torch.zeros(1, dtype=torch.int64)
        else:
            overlaps, best = box_iou(windows, gt_boxes).max(dim=1)
        labels = torch.full((len(windows),), self.IGNORE, dtype=torch.int64)
        labels[(overlaps >= self.bg_iou_low) & (overlaps < self.bg_iou)] = self.BACKGROUND
        fg = overlaps >= self.fg_iou
        labels[fg] = gt_labels[best[fg]]
        return labels, overlaps


class WindowSampler:
    """Pick a batch of positive and background windows (like ``BalancedPositiveNegativeSampler``).

    Windows are drawn uniformly, without replacement within a batch, from the pools of
    all images together (R-CNN samples across images, not per image).

    Fill rule: a batch always holds ``fg_per_batch + bg_per_batch`` windows when the pools
    allow it.  With fewer positives than ``fg_per_batch`` in the pool, all of them are
    taken and background windows fill the rest; with too few background windows, all of
    them are taken and positives fill the rest; with too few of both, the batch is smaller.
    """

    def __init__(self, *, fg_per_batch: int = 32, bg_per_batch: int = 96) -> None:
        if fg_per_batch < 0 or bg_per_batch < 0 or fg_per_batch + bg_per_batch < 1:
            raise ConfigError(
                f"classifier sampler needs fg_per_batch, bg_per_batch >= 0 and a non-empty batch, "
                f"got {fg_per_batch} and {bg_per_batch}"
            )
        self.fg_per_batch, self.bg_per_batch = fg_per_batch, bg_per_batch

    @property
    def batch_size(self) -> int:
        return self.fg_per_batch + self.bg_per_batch

    def counts(self, num_fg: int, num_bg: int) -> tuple[int, int]:
        """``(positives, backgrounds)`` in a batch drawn from pools of these sizes (the fill rule)."""
        fg = min(self.fg_per_batch, num_fg)
        bg = min(self.batch_size - fg, num_bg)
        fg = min(self.batch_size - bg, num_fg)
        return fg, bg

    def __call__(self, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Indices into ``labels`` (int64 ``(W,)``, `WindowLabeler` convention): ``(positive, background)``."""
        labels = torch.as_tensor(labels)
        positive = torch.nonzero(labels > 0).flatten()
        background = torch.nonzero(labels == WindowLabeler.BACKGROUND).flatten()
        return self.sample(positive, background, generator)

    def sample(self, positive: Tensor, background: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Choose from index pools ``positive`` and ``background`` (1-D int64): ``(chosen_pos, chosen_bg)``."""
        num_fg, num_bg = self.counts(len(positive), len(background))
        fg = positive[choose(len(positive), num_fg, generator)]
        bg = background[choose(len(background), num_bg, generator)]
        return fg, bg


def choose(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``k`` distinct indices drawn uniformly from ``range(n)`` (``k <= n``), int64 ``(k,)``.

    Small pools use a permutation; large ones (millions of windows over a training set)
    redraw duplicates instead, so a batch costs O(k), not O(n).
    """
    if k > n:
        raise ValueError(f"cannot choose {k} of {n}")
    if n <= 64 * k or n <= 4096:
        return torch.randperm(n, generator=generator)[:k]
    idx = torch.randint(n, (k,), generator=generator)
    while True:
        unique = torch.unique(idx)
        if len(unique) == k:
            return unique
        idx = torch.cat([unique, torch.randint(n, (k - len(unique),), generator=generator)])


def jittered_proposals(record: ImageRecord, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stand-in proposals for an image: float32 ``(n, 4)`` xyxy boxes inside the image.

    Half are ground-truth boxes with their centres shifted by up to +-30% and their sides
    scaled by 0.6-1.6x (so they cover positives, ignored windows and near-miss
    backgrounds); the rest (all ``n`` for images without objects) are uniformly random
    boxes with sides of 5-100% of the image's.  All are clipped to the image and at least
    1 px wide and tall.  Used until cached proposals exist, and in tests.
    """
    w, h = float(record.width), float(record.height)
    n_jit = n // 2 if record.num_objects else 0
    gt = np.asarray(record.boxes, np.float64).reshape(-1, 4)
    parts = []
    if n_jit:
        src = gt[rng.integers(0, len(gt), n_jit)]
        size = src[:, 2:] - src[:, :2]
        centre = (src[:, :2] + src[:, 2:]) / 2 + rng.uniform(-0.3, 0.3, (n_jit, 2)) * size
        half = size * rng.uniform(0.6, 1.6, (n_jit, 2)) / 2
        parts.append(np.concatenate([centre - half, centre + half], axis=1))
    n_rand = n - n_jit
    side = rng.uniform(0.05, 1.0, (n_rand, 2)) * [w, h]
    x1y1 = rng.uniform(0.0, 1.0, (n_rand, 2)) * ([w, h] - side)
    parts.append(np.concatenate([x1y1, x1y1 + side], axis=1))
    boxes = np.concatenate(parts)
    boxes = np.clip(boxes, 0.0, [w - 1, h - 1, w, h])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes.astype(np.float32)


__all__ = ["WindowLabeler", "WindowSampler", "choose", "jittered_proposals"]
