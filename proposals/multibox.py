"""MultiBox (Erhan et al. 2014; Szegedy et al. 2014): an Inception network that regresses
K boxes, each as an offset from a prior, with a confidence per box.

* Priors: k-means (scikit-learn) over the widths and heights of the training
  ground truth in normalised ``[0, 1]`` coordinates (`kmeans_shapes`), each shape
  centred on every cell of the network's feature map, or on every sub-cell of a finer
  tiling (`grid_priors`).
* Matching: each ground-truth box is assigned to exactly one prior by greedy
  bipartite matching on prior/ground-truth IoU (`match_priors`): repeatedly
  take the highest-IoU (prior, box) pair and remove both; optionally (SSD-style)
  every other prior with IoU >= ``extra_match_iou`` is matched to its best box.
* Offsets (`encode_offsets`, `decode_offsets`): each box corner's offset from the
  prior's, in normalised image units (``offset_units="image"``, Erhan et al.) or in
  units of the prior's width and height (``"prior"``, as SSD and Faster R-CNN scale
  them), so that a 2-pixel error on an 8-pixel object costs as much as a 20-pixel
  error on an 80-pixel one instead of nearly nothing.
* Loss (`multibox_loss`): ``alpha * location + confidence``; location = smooth L1
  between predicted and target offsets of matched priors (summed over coordinates,
  averaged over matches); confidence has target 1 for matched priors and 0 for
  the others, either the logistic loss averaged over priors (``"logistic"``, Erhan
  et al.) or the focal loss (Lin et al. 2017, `torchvision.ops.sigmoid_focal_loss`)
  summed over priors and divided by the number of matches (``"focal"``): with
  ~1,600 priors and a few matches per image, the logistic loss is dominated by
  easy background priors and ranks the boxes badly.  ``"quality_focal"`` (Li et al.
  2020) replaces a matched prior's target 1 by the IoU of its predicted box with its
  ground truth, so that of two boxes on one object the better-placed ranks first.
  ``alpha = 0.3`` as in Erhan et al.: the location term is summed over 4 coordinates.
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
from torchvision.ops import box_iou, clip_boxes_to_image, nms, remove_small_boxes, sigmoid_focal_loss

from classifier.googlenet import TRUNK_LAYERS, GoogLeNet
from detect.errors import ConfigError


def normalise_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(N, 4)`` xyxy pixels -> ``(N, 4)`` xyxy in ``[0, 1]``."""
    return np.asarray(boxes, np.float64) / np.array([width, height, width, height], np.float64)


def kmeans_shapes(normalised_boxes: np.ndarray, *, num_shapes: int, seed: int) -> np.ndarray:
    """K-means cluster centres of the ``(width, height)`` of ``(M, 4)`` normalised xyxy boxes -> float32 ``(A, 2)``.

    Sorted by area (then width) so the order does not depend on k-means' internal label order.
    """
    from sklearn.cluster import KMeans

    boxes = np.asarray(normalised_boxes, np.float64).reshape(-1, 4)
    if num_shapes < 1:
        raise ConfigError(f"proposals.multibox.num_shapes must be >= 1, got {num_shapes}")
    if len(boxes) < num_shapes:
        raise ConfigError(
            f"MultiBox needs at least num_shapes={num_shapes} training boxes for k-means, got {len(boxes)}"
        )
    wh = boxes[:, 2:] - boxes[:, :2]
    centres = np.clip(KMeans(n_clusters=num_shapes, n_init=3, random_state=seed).fit(wh).cluster_centers_, 1e-3, 1.0)
    order = np.lexsort((centres[:, 0], centres[:, 0] * centres[:, 1]))
    return centres[order].astype(np.float32)


def grid_priors(shapes: np.ndarray, grid: int, *, centres_per_cell: int = 1) -> np.ndarray:
    """Convolutional priors: every ``(A, 2)`` shape centred on every cell of a ``grid x grid`` tiling.

    ``centres_per_cell = s`` puts each shape at the ``s x s`` centres of the cell's sub-cells
    instead of at the cell's centre alone: on a stride-8 map an 8-pixel shift of a 17-pixel
    object costs most of its IoU, so a finer tiling gives small objects a close prior at the
    cost of a wider head only.

    Returns float32 ``(grid * grid * s * s * A, 4)`` normalised xyxy, ordered (row, column,
    sub-row, sub-column, shape) like the head's output; boxes may reach outside ``[0, 1]``
    (clipped after decoding).
    """
    s = int(centres_per_cell)
    if s < 1:
        raise ConfigError(f"proposals.multibox.centres_per_cell must be >= 1, got {centres_per_cell}")
    sub = (np.arange(s, dtype=np.float32) + 0.5) / s
    centres = ((np.arange(grid, dtype=np.float32)[:, None] + sub[None, :]) / grid).reshape(-1)  # cell, then sub-cell
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    c = np.stack([cx, cy], -1).reshape(grid, s, grid, s, 2).transpose(0, 2, 1, 3, 4).reshape(-1, 1, 2)
    half = np.asarray(shapes, np.float32).reshape(1, -1, 2) / 2
    return np.concatenate([c - half, c + half], -1).reshape(-1, 4)


# How offsets are measured (`encode_offsets`): normalised image units, or the prior's width/height.
OFFSET_UNITS = ("image", "prior")
# The confidence term of `multibox_loss`.
CONFIDENCE_LOSSES = ("logistic", "focal", "quality_focal")


def _offset_scale(priors: Tensor, offset_units: str) -> Tensor:
    """``(K, 4)`` divisor of each prior's corner offsets: 1, or the prior's ``(w, h, w, h)``."""
    if offset_units == "image":
        return torch.ones_like(priors)
    if offset_units == "prior":
        return (priors[:, 2:] - priors[:, :2]).repeat(1, 2)
    raise ConfigError(f"proposals.multibox.offset_units must be one of {', '.join(OFFSET_UNITS)}, got {offset_units!r}")


def encode_offsets(boxes: Tensor, priors: Tensor, *, offset_units: str) -> Tensor:
    """Regression targets: ``(K, 4)`` xyxy boxes relative to their ``(K, 4)`` xyxy priors (same frame)."""
    return (boxes - priors) / _offset_scale(priors, offset_units)


def decode_offsets(offsets: Tensor, priors: Tensor, *, offset_units: str) -> Tensor:
    """Inverse of `encode_offsets`: ``(..., K, 4)`` offsets and ``(K, 4)`` priors -> ``(..., K, 4)`` xyxy boxes."""
    return priors + offsets * _offset_scale(priors, offset_units)


# A prior that no ground-truth box was assigned to.
UNMATCHED = -1


def match_priors(priors: Tensor, gt: Tensor, *, extra_match_iou: float | None = None) -> Tensor:
    """Greedy bipartite matching of ground truth to priors on IoU, plus optional extra matches.

    Args:
        priors: ``(K, 4)`` xyxy; gt: ``(G, 4)`` xyxy (same coordinate frame).
        extra_match_iou: if set, every prior left unmatched whose best IoU with a
            ground-truth box is ``>= extra_match_iou`` is also assigned to that box
            (SSD-style; None = bipartite only, as in Erhan et al.).
    Returns:
        int64 ``(K,)``: index of the ground-truth box assigned to each prior, or
        `UNMATCHED`.  Each box gets exactly one prior (when ``G <= K``), chosen
        in decreasing order of IoU; ties go to the lower prior index.
    """
    k, g = len(priors), len(gt)
    assignment = torch.full((k,), UNMATCHED, dtype=torch.int64)
    if g == 0:
        return assignment
    overlaps = box_iou(priors, gt)
    if extra_match_iou is not None:
        best_iou, best_gt = overlaps.max(dim=1)
        extra = best_iou >= extra_match_iou
        assignment[extra] = best_gt[extra]
    iou = overlaps.clone()
    for _ in range(min(k, g)):
        flat = int(torch.argmax(iou))
        p, b = divmod(flat, g)
        assignment[p] = b
        iou[p, :] = -1.0
        iou[:, b] = -1.0
    return assignment


def predicted_iou(offsets: Tensor, priors: Tensor, gt: Tensor, assignment: Tensor, *, offset_units: str) -> Tensor:
    """IoU of each matched prior's predicted box with its ground truth: ``(M, 4)`` offsets of
    ``(M, 4)`` xyxy priors, ``(G, 4)`` xyxy ground truth and ``(M,)`` indices into it -> ``(M,)``."""
    boxes = decode_offsets(offsets, priors, offset_units=offset_units)
    boxes = torch.maximum(boxes, torch.cat([boxes[:, :2], boxes[:, :2]], 1))  # inverted corners: an empty box, IoU 0
    return box_iou(boxes, gt).gather(1, assignment[:, None]).squeeze(1).nan_to_num(0.0)


def quality_focal_loss(logits: Tensor, targets: Tensor, *, beta: float) -> Tensor:
    """Quality focal loss (Li et al. 2020, Generalized Focal Loss), elementwise: the logistic loss
    towards a soft target in ``[0, 1]`` (here the predicted box's IoU), scaled by ``|target - p| ** beta``."""
    p = torch.sigmoid(logits)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * (targets - p).abs().pow(beta)


def multibox_loss(
    offsets: Tensor, logits: Tensor, priors: Tensor, gt_boxes: list[Tensor], *, alpha: float,
    extra_match_iou: float | None, offset_units: str, confidence_loss: str, pos_weight: float,
    focal_alpha: float, focal_gamma: float,
) -> tuple[Tensor, dict[str, float]]:
    """MultiBox matching loss for a batch.

    Args:
        offsets: ``(N, K, 4)`` predicted offsets from ``priors`` (in ``offset_units``, see `encode_offsets`).
        logits: ``(N, K)`` confidence logits.
        priors: ``(K, 4)`` normalised xyxy.
        gt_boxes: N tensors ``(G_i, 4)`` of normalised xyxy ground truth.
        alpha: weight of the location term.
        extra_match_iou: see `match_priors`.
        confidence_loss: ``logistic`` (mean over priors; ``pos_weight`` weighs the matched
            priors, 1 = Erhan et al.), ``focal`` (sum over priors / number of matches,
            with ``focal_alpha`` and ``focal_gamma``, Lin et al. 2017) or ``quality_focal``
            (`quality_focal_loss` with ``beta = focal_gamma``, same normalisation): a matched
            prior's target is the IoU of its predicted box with its ground truth instead of 1,
            so the confidence ranks well-placed boxes first.
    Returns:
        ``(loss, {"loc": ..., "conf": ...})``.
    """
    targets = torch.zeros_like(logits)
    loc_pred, loc_target = [], []
    for i, gt in enumerate(gt_boxes):
        assignment = match_priors(priors, gt, extra_match_iou=extra_match_iou)
        matched = assignment >= 0
        if confidence_loss == "quality_focal":
            targets[i, matched] = predicted_iou(offsets[i, matched].detach(), priors[matched], gt, assignment[matched],
                                                offset_units=offset_units)
        else:
            targets[i, matched] = 1.0
        loc_pred.append(offsets[i, matched])
        loc_target.append(encode_offsets(gt[assignment[matched]], priors[matched], offset_units=offset_units))
    pred, target = torch.cat(loc_pred), torch.cat(loc_target)
    if confidence_loss == "logistic":
        conf = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(float(pos_weight)))
    elif confidence_loss == "focal":
        conf = sigmoid_focal_loss(logits, targets, alpha=focal_alpha, gamma=focal_gamma, reduction="sum") / max(len(pred), 1)
    elif confidence_loss == "quality_focal":
        conf = quality_focal_loss(logits, targets, beta=focal_gamma).sum() / max(len(pred), 1)
    else:
        raise ConfigError(f"proposals.multibox.confidence_loss must be one of {', '.join(CONFIDENCE_LOSSES)}, "
                          f"got {confidence_loss!r}")
    loc = F.smooth_l1_loss(pred, target, reduction="sum", beta=0.1) / max(len(pred), 1)
    loss = alpha * loc + conf
    return loss, {"loc": loc.item(), "conf": conf.item()}


class MultiBoxNet(nn.Module):
    """Table-1 GoogLeNet trunk up to ``feature_layer`` and a 3x3 convolutional box head.

    Each cell of the ``grid x grid`` feature map predicts, for each of its
    ``centres_per_cell ** 2 * num_shapes`` priors (`grid_priors`), 4 offsets and a confidence (the convolutional priors of
    Szegedy et al. 2014, "Scalable, high-quality object detection"): the same weights
    look for objects everywhere, which a from-scratch network on a few hundred images
    learns far faster than one global regressor over all priors.

    Input ``(N, 3, input_size, input_size)`` -> ``(offsets (N, K, 4), logits (N, K))``,
    ``K = grid * grid * centres_per_cell ** 2 * num_shapes`` in `grid_priors` order.
    """

    def __init__(self, *, num_shapes: int, width: float, input_size: int, batch_norm: bool,
                 feature_layer: str, centres_per_cell: int = 1) -> None:
        super().__init__()
        self.num_shapes = num_shapes
        self.priors_per_cell = num_shapes * centres_per_cell ** 2
        self.input_size = input_size
        self.feature_layer = feature_layer
        self.backbone = GoogLeNet(1, width=width, input_size=input_size, batch_norm=batch_norm, aux_logits=False)
        for name in TRUNK_LAYERS[TRUNK_LAYERS.index(feature_layer) + 1:]:
            setattr(self.backbone, name, nn.Identity())  # layers past the feature map are never run
        self.backbone.fc = nn.Identity()
        channels = self.backbone.feature_info(feature_layer).channels
        self.head = nn.Conv2d(channels, self.priors_per_cell * 5, kernel_size=3, padding=1)
        nn.init.normal_(self.head.weight, std=1e-3)  # start at the priors, confidence 0.5
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.grid = int(self.backbone.features(torch.zeros(1, 3, input_size, input_size), feature_layer).shape[-1])

    @property
    def num_priors(self) -> int:
        return self.grid * self.grid * self.priors_per_cell

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(self.backbone.features(x, self.feature_layer))  # (N, P * 5, G, G)
        out = out.permute(0, 2, 3, 1).reshape(len(x), -1, 5)  # (row, column, prior of the cell) order
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
    offset_units: str  # how the network's offsets are measured (`encode_offsets`)
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
        if self.top_k <= 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes, scores = self.select(*self.decode(image))
        return boxes.numpy(), scores.numpy()

    def decode(self, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """Every prior's box and confidence: ``(H, W, 3)`` uint8 RGB -> float ``(K, 4)`` xyxy pixels
        clipped to the image, ``(K,)`` in prior order."""
        import cv2

        h, w = image.shape[:2]
        s = self.model.input_size
        resized = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA if min(h, w) > s else cv2.INTER_LINEAR)
        self.model.eval()
        with torch.inference_mode():
            offsets, logits = self.model(images_to_tensor(resized[None], pixel_mean=self.pixel_mean,
                                                          pixel_std=self.pixel_std))
        boxes = decode_offsets(offsets[0], torch.from_numpy(self.priors), offset_units=self.offset_units)
        boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32)
        return clip_boxes_to_image(boxes, (h, w)), torch.sigmoid(logits[0])

    def select(self, boxes: Tensor, scores: Tensor, *, nms_iou: float | None = None) -> tuple[Tensor, Tensor]:
        """The proposals among `decode`'s ``(K, 4)`` boxes and ``(K,)`` scores: boxes of at least
        ``min_size``, NMS at ``nms_iou`` (default: the proposer's), best ``top_k`` first."""
        keep = remove_small_boxes(boxes, self.min_size)
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes, scores, self.nms_iou if nms_iou is None else nms_iou)[: self.top_k]
        return boxes[keep], scores[keep]
