"""MultiBox (Erhan et al. 2014; Szegedy et al. 2014): an Inception network that regresses
K boxes, each as an offset from a prior, with a confidence per box.

* Priors: k-means (scikit-learn) over the training ground truth in normalised
  ``[0, 1]`` xyxy coordinates (`kmeans_priors`).
* Matching: each ground-truth box is assigned to exactly one prior by greedy
  bipartite matching on prior/ground-truth IoU (`match_priors`): repeatedly
  take the highest-IoU (prior, box) pair and remove both.
* Loss (`multibox_loss`): ``alpha * location + confidence``; location = smooth L1
  between predicted and target offsets of matched priors (summed over coordinates,
  averaged over matches), confidence = logistic loss with target 1 for matched
  priors and 0 for the others (averaged over priors).  ``alpha = 0.3`` as in
  Erhan et al.: the location term is summed over 4 coordinates, so it would
  otherwise dominate the per-prior confidence term.
* Inference (`MultiBoxProposer`): decode, clip to the image, NMS, keep ``top_k``.

Boxes are float ``(N, 4)`` xyxy throughout; "normalised" means divided by the
image width/height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, clip_boxes_to_image, nms, remove_small_boxes

from classifier.googlenet import GoogLeNet
from detect.errors import ConfigError


def normalise_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(N, 4)`` xyxy pixels -> ``(N, 4)`` xyxy in ``[0, 1]``."""
    return np.asarray(boxes, np.float64) / np.array([width, height, width, height], np.float64)


def kmeans_priors(normalised_boxes: np.ndarray, *, num_priors: int, seed: int) -> np.ndarray:
    """K-means cluster centres of ``(M, 4)`` normalised xyxy boxes -> float32 ``(K, 4)``.

    Centres are sorted (by area, then coordinates) so the prior order does not
    depend on k-means' internal label order.
    """
    from sklearn.cluster import KMeans

    boxes = np.asarray(normalised_boxes, np.float64).reshape(-1, 4)
    if num_priors < 1:
        raise ConfigError(f"proposals.multibox.num_priors must be >= 1, got {num_priors}")
    if len(boxes) < num_priors:
        raise ConfigError(
            f"MultiBox needs at least num_priors={num_priors} training boxes for k-means, got {len(boxes)}"
        )
    km = KMeans(n_clusters=num_priors, n_init=3, random_state=seed).fit(boxes)
    centres = np.clip(km.cluster_centers_, 0.0, 1.0)
    area = (centres[:, 2] - centres[:, 0]) * (centres[:, 3] - centres[:, 1])
    order = np.lexsort((centres[:, 3], centres[:, 2], centres[:, 1], centres[:, 0], area))
    return centres[order].astype(np.float32)


# A prior that no ground-truth box was assigned to.
UNMATCHED = -1


def match_priors(priors: Tensor, gt: Tensor) -> Tensor:
    """Greedy bipartite matching of ground truth to priors on IoU.

    Args:
        priors: ``(K, 4)`` xyxy; gt: ``(G, 4)`` xyxy (same coordinate frame).
    Returns:
        int64 ``(K,)``: index of the ground-truth box assigned to each prior, or
        `UNMATCHED`.  Each box gets exactly one prior (when ``G <= K``), chosen
        in decreasing order of IoU; ties go to the lower prior index.
    """
    k, g = len(priors), len(gt)
    assignment = torch.full((k,), UNMATCHED, dtype=torch.int64)
    if g == 0:
        return assignment
    iou = box_iou(priors, gt).clone()
    for _ in range(min(k, g)):
        flat = int(torch.argmax(iou))
        p, b = divmod(flat, g)
        assignment[p] = b
        iou[p, :] = -1.0
        iou[:, b] = -1.0
    return assignment


def multibox_loss(
    offsets: Tensor, logits: Tensor, priors: Tensor, gt_boxes: list[Tensor], *, alpha: float
) -> tuple[Tensor, dict[str, float]]:
    """MultiBox matching loss for a batch.

    Args:
        offsets: ``(N, K, 4)`` predicted offsets (normalised units) from ``priors``.
        logits: ``(N, K)`` confidence logits.
        priors: ``(K, 4)`` normalised xyxy.
        gt_boxes: N tensors ``(G_i, 4)`` of normalised xyxy ground truth.
        alpha: weight of the location term.
    Returns:
        ``(loss, {"loc": ..., "conf": ...})``.
    """
    targets = torch.zeros_like(logits)
    loc_pred, loc_target = [], []
    for i, gt in enumerate(gt_boxes):
        assignment = match_priors(priors, gt)
        matched = assignment >= 0
        targets[i, matched] = 1.0
        loc_pred.append(offsets[i, matched])
        loc_target.append(gt[assignment[matched]] - priors[matched])
    conf = F.binary_cross_entropy_with_logits(logits, targets)
    pred, target = torch.cat(loc_pred), torch.cat(loc_target)
    loc = F.smooth_l1_loss(pred, target, reduction="sum", beta=0.1) / max(len(pred), 1)
    loss = alpha * loc + conf
    return loss, {"loc": loc.item(), "conf": conf.item()}


class MultiBoxNet(nn.Module):
    """Table-1 GoogLeNet trunk, global average pool, one linear layer to ``K * (4 + 1)`` outputs.

    Input ``(N, 3, input_size, input_size)`` -> ``(offsets (N, K, 4), logits (N, K))``.
    """

    def __init__(self, *, num_priors: int, width: float, input_size: int, batch_norm: bool) -> None:
        super().__init__()
        self.num_priors = num_priors
        self.input_size = input_size
        self.backbone = GoogLeNet(1, width=width, input_size=input_size, batch_norm=batch_norm, aux_logits=False)
        self.backbone.fc = nn.Identity()  # the class head is not used; the box head replaces it
        self.head = nn.Linear(self.backbone.feature_dim, num_priors * 5)
        nn.init.normal_(self.head.weight, std=1e-3)  # start at the priors, confidence 0.5
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(self.backbone.pooled(x)).view(-1, self.num_priors, 5)
        return out[..., :4], out[..., 4]


def images_to_tensor(images: np.ndarray, *, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]) -> Tensor:
    """``(N, S, S, 3)`` uint8 RGB -> normalised float ``(N, 3, S, S)``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class MultiBoxProposer:
    """Turns a trained `MultiBoxNet` into a proposal source: RGB image -> top-k boxes.

    ``__call__(image (H, W, 3) uint8)`` -> ``(boxes float32 (P, 4) xyxy pixels, scores (P,))``,
    best first, ``P <= top_k``.
    """

    model: MultiBoxNet
    priors: np.ndarray
    network_key: str  # cache key of the trained network (for proposal cache keys)
    top_k: int
    nms_iou: float
    min_size: float
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]

    def identity(self) -> dict:
        """Everything that determines the output (for cache keys)."""
        return {"source": "multibox", "network": self.network_key, "top_k": self.top_k,
                "nms_iou": self.nms_iou, "min_size": self.min_size}

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        h, w = image.shape[:2]
        if self.top_k <= 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        s = self.model.input_size
        resized = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA if min(h, w) > s else cv2.INTER_LINEAR)
        self.model.eval()
        with torch.inference_mode():
            offsets, logits = self.model(images_to_tensor(resized[None], pixel_mean=self.pixel_mean,
                                                          pixel_std=self.pixel_std))
        boxes = (torch.from_numpy(self.priors) + offsets[0]) * torch.tensor([w, h, w, h], dtype=torch.float32)
        scores = torch.sigmoid(logits[0])
        boxes = clip_boxes_to_image(boxes, (h, w))
        keep = remove_small_boxes(boxes, self.min_size)
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes, scores, self.nms_iou)[: self.top_k]
        return boxes[keep].numpy(), scores[keep].numpy()
