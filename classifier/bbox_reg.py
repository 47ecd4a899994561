"""Class-specific bounding-box regression (R-CNN, Appendix C); optional, off by default.

The 2014 GoogLeNet entry did not use it (`classifier.bbox_reg.enabled: false`).  R-CNN
(code: rbgirshick/rcnn ``bbox_regression/rcnn_train_bbox_regressor.m``) learns, per class, a
ridge regression from a region's pooled features to the offsets of the ground-truth box it
covers:

* Examples of class c: regions whose best-overlapping ground-truth box has IoU >= ``min_iou``
  (0.6) and class c (R-CNN's cached regions included the ground-truth boxes themselves,
  whose targets are 0: ``include_gt``).
* Targets, for a region P and its ground-truth box G (widths ``x2 - x1``, centres
  ``x1 + w / 2``)::

      dx = (G_cx - P_cx) / P_w      dy = (G_cy - P_cy) / P_h
      dw = log(G_w / P_w)           dh = log(G_h / P_h)

  and the inverse for decoding.  torchvision's ``BoxCoder`` with weights ``(1, 1, 1, 1)`` is
  exactly this (R-CNN added ``eps`` to the widths; valid regions have positive widths); its
  decoder also clamps ``dw, dh`` at ``log(1000 / 16)``, which R-CNN did not (a 62x growth).
* Features: R-CNN regressed from pool5, a 6x6 spatial map; here from the pooled 5b vector
  (the feature `classifier.score` exports), which has averaged the spatial layout away, so
  expect less than R-CNN's gain (VOC 2007: 54.2 -> 58.5 mAP, its Table 2).
* Features scaled to a mean L2 norm of ``target_norm`` = 20 as for the SVMs (the scale sets the
  effective strength of ``alpha``); here the mean is over the regression examples.
* Ridge with ``alpha`` = 1000 (R-CNN's lambda).  R-CNN also centred and whitened the targets and
  appended a regularised bias column.  Whitening is a no-op for ridge (the solution is linear
  in the targets, the same operator for every column, so whitening and un-whitening cancel);
  scikit-learn's ``Ridge`` fits an unregularised intercept on centred features instead of the
  regularised bias column on centred targets, a difference of one feature-mean term.

At test time R-CNN refines every scored region with the regressor of the class it is scored
for, clips it to the image, and only then applies NMS: `BboxRegressor.apply` returns one box
per class (``(R, C, 4)``) or, given labels, one per region.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import Ridge
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, clip_boxes_to_image
from tqdm import tqdm

from classifier.region_features import Extract, feature_scale, gather_features, load_linear, save_linear
from classifier.warp import valid_regions
from detect.data.record import DetectionDataset, ImageRecord
from detect.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
CHUNK = 65536


def encode_targets(proposals: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """R-CNN regression targets: float32 ``(N, 4)`` ``(dx, dy, dw, dh)`` taking the xyxy
    ``proposals`` ``(N, 4)`` (positive width and height) onto ``gt_boxes`` ``(N, 4)``."""
    p = torch.as_tensor(np.asarray(proposals, np.float32).reshape(-1, 4))
    g = torch.as_tensor(np.asarray(gt_boxes, np.float32).reshape(-1, 4))
    return BOX_CODER.encode_single(g, p).numpy()


def decode_boxes(deltas: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Apply ``deltas`` float ``(N, 4K)`` (K groups of ``(dx, dy, dw, dh)``) to xyxy ``boxes``
    ``(N, 4)``: float32 ``(N, K, 4)`` xyxy.  Inverse of `encode_targets`."""
    d = torch.as_tensor(np.asarray(deltas, np.float32))
    b = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    if d.ndim != 2 or d.shape[1] % 4 or len(d) != len(b):
        raise ValueError(f"deltas {tuple(d.shape)} do not fit boxes {tuple(b.shape)}")
    return BOX_CODER.decode_single(d, b).reshape(len(b), -1, 4).numpy()


@dataclass(frozen=True)
class BboxRegTrainingSet:
    """Regression examples of a split: ``features`` float16 ``(M, D)`` (unscaled), ``boxes``
    float32 ``(M, 4)`` xyxy regions, ``targets`` float32 ``(M, 4)`` (`encode_targets` onto the
    region's best ground-truth box), ``labels`` int64 ``(M,)`` that box's class, ``overlaps``
    float32 ``(M,)`` their IoU."""

    features: np.ndarray
    boxes: np.ndarray
    targets: np.ndarray
    labels: np.ndarray
    overlaps: np.ndarray


def select_examples(
    record: ImageRecord, proposals: np.ndarray, *, min_iou: float, include_gt: bool,
    max_examples_per_image: int | None, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The regression examples of one image.

    Returns ``(regions float32 (K, 4), gt_boxes float32 (K, 4), labels int64 (K,), overlaps
    float32 (K,))``: the valid proposals (and ground-truth boxes with ``include_gt``) whose best
    IoU with a valid ground-truth box is >= ``min_iou``, with that box, its class and the IoU;
    at most ``max_examples_per_image`` of them (a uniform draw, kept in order; None = all).
    """
    gt_ok = valid_regions(record.boxes, width=record.width, height=record.height)
    gt = np.asarray(record.boxes, np.float32)[gt_ok]
    gt_labels = np.asarray(record.labels, np.int64)[gt_ok]
    empty = (np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
             np.zeros(0, np.float32))
    if len(gt) == 0:
        return empty
    regions = np.asarray(proposals, np.float32).reshape(-1, 4)
    regions = regions[valid_regions(regions, width=record.width, height=record.height)]
    if include_gt:
        regions = np.concatenate([regions, gt])
    if len(regions) == 0:
        return empty
    overlaps, best = box_iou(torch.from_numpy(regions), torch.from_numpy(gt)).max(dim=1)
    keep = np.flatnonzero(overlaps.numpy() >= min_iou)
    if max_examples_per_image is not None and len(keep) > max_examples_per_image:
        keep = np.sort(rng.choice(keep, max_examples_per_image, replace=False))
    best = best.numpy()[keep]
    return regions[keep], gt[best], gt_labels[best], overlaps.numpy()[keep].astype(np.float32)


def collect_bbox_reg_features(
    dataset: DetectionDataset, proposals: Sequence[np.ndarray], *, extract: Extract, min_iou: float,
    include_gt: bool, max_examples_per_image: int | None, seed: int,
) -> BboxRegTrainingSet:
    """One network pass (streamed per image; images without examples are not decoded) giving
    the features of every regression example (`select_examples`) of ``dataset``.

    ``proposals[i]`` is the ``(P_i, 4)`` xyxy array of record i; ``extract`` the network pass
    (`classifier.region_features`, bound with ``features=True``); the draw of image i uses
    ``np.random.default_rng([seed, i])``.
    """
    if not 0.0 < min_iou <= 1.0:
        raise ConfigError(f"classifier.bbox_reg min_iou must be in (0, 1], got {min_iou}")
    if max_examples_per_image is not None and max_examples_per_image < 1:
        raise ConfigError(f"classifier.bbox_reg max_examples_per_image must be >= 1 or null, "
                          f"got {max_examples_per_image}")
    if len(proposals) != len(dataset):
        raise DataError(
            f"{dataset.name} {dataset.split}: proposals for {len(proposals)} images, dataset has {len(dataset)}"
        )
    parts = [select_examples(rec, proposals[i], min_iou=min_iou, include_gt=include_gt,
                             max_examples_per_image=max_examples_per_image, rng=np.random.default_rng([seed, i]))
             for i, rec in enumerate(dataset.records)]
    regions = [p[0] for p in parts]
    features = gather_features(dataset, regions, extract=extract)
    cat = (lambda k, shape, dtype: np.concatenate([p[k] for p in parts]) if parts else np.zeros(shape, dtype))
    boxes, gt = cat(0, (0, 4), np.float32), cat(1, (0, 4), np.float32)
    data = BboxRegTrainingSet(features=features, boxes=boxes, targets=encode_targets(boxes, gt),
                              labels=cat(2, (0,), np.int64), overlaps=cat(3, (0,), np.float32))
    log.info("bbox_reg: %d examples (IoU >= %.2f) in %d images", len(data.labels), min_iou, len(dataset))
    return data


@dataclass(frozen=True)
class BboxRegressor:
    """Per-class linear regressors ``deltas = weights[c] @ (feature_scale * f) + biases[c]``.

    ``weights`` float32 ``(C, 4, D)``, ``biases`` float32 ``(C, 4)``, rows in ``(dx, dy, dw, dh)``
    order; a class without examples has zeros (it leaves its boxes unchanged).
    """

    weights: np.ndarray
    biases: np.ndarray
    feature_scale: float

    @property
    def num_classes(self) -> int:
        return len(self.weights)

    def deltas(self, features: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """float32 ``(R, C, 4)`` offsets for every class of every region (features ``(R, D)``), or
        ``(R, 4)`` for class ``labels[r]`` (int ``(R,)`` in 1..C) of each region."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.weights.shape[2]:
            raise ValueError(f"features {features.shape} do not match regressor weights {self.weights.shape}")
        if labels is not None:
            labels = np.asarray(labels, np.int64).reshape(-1)
            in_range = len(labels) == 0 or 1 <= labels.min() <= labels.max() <= self.num_classes
            if len(labels) != len(features) or not in_range:
                raise ValueError(f"labels must be {len(features)} class ids in 1..{self.num_classes}")
        num = len(self.weights)
        flat_w = self.weights.reshape(num * 4, -1).T  # (D, 4C)
        out = np.zeros((len(features), 4) if labels is not None else (len(features), num, 4), np.float32)
        for a in range(0, len(features), CHUNK):
            f = features[a : a + CHUNK].astype(np.float32) * np.float32(self.feature_scale)
            if labels is None:
                out[a : a + CHUNK] = (f @ flat_w).reshape(len(f), num, 4) + self.biases
            else:
                c = labels[a : a + CHUNK] - 1
                out[a : a + CHUNK] = np.einsum("rd,rkd->rk", f, self.weights[c]) + self.biases[c]
        return out

    def apply(
        self, boxes: np.ndarray, features: np.ndarray, labels: np.ndarray | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Refined xyxy boxes of regions ``boxes`` ``(R, 4)`` with features ``(R, D)``.

        Returns float32 ``(R, C, 4)`` (box ``[r, c - 1]`` refined by class c's regressor), or
        ``(R, 4)`` with ``labels`` (int ``(R,)`` in 1..C).  With ``image_size`` ``(height, width)``
        the boxes are clipped to the image, as R-CNN did before NMS.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        d = self.deltas(features, labels)
        refined = decode_boxes(d.reshape(len(boxes), -1), boxes)
        if image_size is not None:
            refined = clip_boxes_to_image(torch.from_numpy(refined), tuple(image_size)).numpy()
        return refined[:, 0] if labels is not None else refined

    def save(self, path: str | Path) -> None:
        """Atomic ``.npz`` (``weights``, ``biases``, ``feature_scale``), readable with ``allow_pickle=False``."""
        save_linear(path, weights=self.weights, biases=self.biases, feature_scale=self.feature_scale)

    @classmethod
    def load(cls, path: str | Path) -> "BboxRegressor":
        """Read `save`'s file; `DataError` naming the file when it is unreadable or inconsistent."""
        weights, biases, scale = load_linear(path, what="box-regression")
        if weights.ndim != 3 or weights.shape[1] != 4 or biases.shape != weights.shape[:2]:
            raise DataError(f"{path}: regressor weights {weights.shape} and biases {biases.shape} disagree")
        return cls(weights, biases, scale)


def train_bbox_regressors(
    data: BboxRegTrainingSet, *, num_classes: int, alpha: float, target_norm: float,
    class_names: Sequence[str] | None = None,
) -> BboxRegressor:
    """Fit one ``Ridge(alpha)`` per class from scaled features to targets (module docstring)."""
    if alpha < 0:
        raise ConfigError(f"classifier.bbox_reg alpha must be >= 0, got {alpha}")
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(1, num_classes + 1)]
    dim = data.features.shape[1] if data.features.size else 0
    scale = feature_scale(data.features, target_norm=target_norm)
    weights = np.zeros((num_classes, 4, dim), np.float32)
    biases = np.zeros((num_classes, 4), np.float32)
    for c in tqdm(range(1, num_classes + 1), desc="bbox_reg: train", unit="class", leave=False):
        rows = np.flatnonzero(data.labels == c)
        if len(rows) == 0:
            log.warning("bbox_reg %s: no examples; its boxes are left as they are", names[c - 1])
            continue
        x = data.features[rows].astype(np.float64) * scale
        ridge = Ridge(alpha=alpha, fit_intercept=True).fit(x, data.targets[rows].astype(np.float64))
        weights[c - 1], biases[c - 1] = ridge.coef_, ridge.intercept_
    return BboxRegressor(weights, biases, scale)


def fit_bbox_regressors(
    dataset: DetectionDataset, proposals: Sequence[np.ndarray], *, extract: Extract, seed: int, min_iou: float,
    include_gt: bool, max_examples_per_image: int | None, alpha: float, target_norm: float,
) -> BboxRegressor:
    """`collect_bbox_reg_features` then `train_bbox_regressors` (``classifier.bbox_reg.fit`` in the config)."""
    data = collect_bbox_reg_features(dataset, proposals, extract=extract, min_iou=min_iou, include_gt=include_gt,
                                     max_examples_per_image=max_examples_per_image, seed=seed)
    return train_bbox_regressors(data, num_classes=len(dataset.classes), alpha=alpha, target_norm=target_norm,
                                 class_names=dataset.classes.names)


__all__ = [
    "BOX_CODER",
    "BboxRegTrainingSet",
    "BboxRegressor",
    "collect_bbox_reg_features",
    "decode_boxes",
    "encode_targets",
    "fit_bbox_regressors",
    "select_examples",
    "train_bbox_regressors",
]
