"""Per-class linear SVMs on pooled features with hard-negative mining (R-CNN's post-classifier).

R-CNN (Girshick et al., CVPR 2014, Section 2.3 and Appendix B; code: rbgirshick/rcnn
``rcnn_train.m``) scores regions with one linear SVM per class instead of the fine-tuned
softmax.  What is taken from it, and where this differs:

* Positives of class c: its ground-truth boxes only (Appendix B: fine-tuning's IoU >= 0.5
  windows are too loose for the SVMs).
* Negatives of class c: regions whose IoU with every ground-truth box of class c is
  < ``neg_iou`` (0.3, chosen on VOC by grid search over {0, 0.1, ..., 0.5}); ground-truth
  boxes of other classes count as regions.  Regions in between are ignored.
* Features: scaled by one global factor to a mean L2 norm of ``target_norm`` = 20
  (`classifier.region_features.feature_scale`, rcnn_scale_features.m), not normalised
  one by one.
* Solver: liblinear ``-s 3 -c 0.001 -w1 2 -B 10`` (L2-regularised hinge loss, dual; C = 1e-3;
  positive loss weight 2; a bias feature of 10, so the bias is regularised 100x less than
  the weights).  scikit-learn's ``LinearSVC(loss="hinge", dual=True, C, class_weight={1: 2},
  intercept_scaling=10)`` is that same liblinear solver; its intercept is ``10 * w_bias``,
  R-CNN's ``b = w(end) * bias_mult``.
* Hard-negative mining: a cached negative is hard when its margin is > ``hard_threshold``
  (R-CNN: -1.0001, i.e. inside or on the margin); after each retraining, working-set
  negatives with margin < ``evict_threshold`` (-1.2) are evicted.  R-CNN streamed every
  proposal of every image once (all negatives of the first image, then each image's hard
  ones, retraining every 2000 additions).  Here one network pass caches up to
  ``max_negatives_per_image`` random negatives per image (float16), training starts on a
  random ``initial_negatives`` of them per class, and each of ``mining_rounds`` rounds scores
  the whole cache for all classes at once, adds the hard ones and retrains the classes that
  changed; a round that adds nothing ends the mining (evicted negatives have zero hinge
  loss, so the solution would not change).

Score convention (`svm_scores`): ``(R, C + 1)`` with column 0 = 0 (there is no background SVM;
`detect.postprocess.image_detections` ignores column 0) and columns 1..C the raw margins
``w_c . (s x) + b_c``, so an ensemble averages margins as it averages probabilities.  A
region that was not scored (degenerate box) and a class that had no training data score
``NOT_SCORED`` (-inf): never a detection at any threshold.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from torchvision.ops import box_iou
from tqdm import tqdm

from classifier.region_features import Extract, feature_scale, gather_features, load_linear, save_linear
from classifier.warp import valid_regions
from detect.data.record import DetectionDataset, ImageRecord
from detect.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NOT_SCORED = float("-inf")
CHUNK = 65536  # feature rows converted to float32 at a time (256 MB at D = 1024)


def class_overlaps(boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 ``(R, C)``: best IoU of each xyxy box ``(R, 4)`` with the ground-truth boxes
    ``(G, 4)`` of each class (labels ``(G,)`` in 1..C); 0 for classes absent from the image."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), num_classes), np.float32)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    if len(boxes) == 0 or len(gt_labels) == 0:
        return out
    iou = box_iou(torch.from_numpy(boxes), torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)).numpy()
    for c in np.unique(gt_labels):
        out[:, c - 1] = iou[:, gt_labels == c].max(axis=1)
    return out


@dataclass(frozen=True)
class SvmTrainingSet:
    """The cached training regions of a split.

    Attributes:
        features: float16 ``(M, D)`` pooled features (unscaled).
        labels: int64 ``(M,)``: class ``1..C`` for a ground-truth box (a positive of that
            class), 0 for a proposal.
        negative: bool ``(M, C)``: row is a negative of class c (IoU < ``neg_iou`` with every
            ground-truth box of class c in its image).
        image_index: int64 ``(M,)``: position of the row's image in the dataset's records.
    """

    features: np.ndarray
    labels: np.ndarray
    negative: np.ndarray
    image_index: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.negative.shape[1]


def select_regions(
    record: ImageRecord, proposals: np.ndarray, *, num_classes: int, neg_iou: float,
    max_negatives_per_image: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The regions of one image whose features the SVMs need.

    Returns ``(regions float32 (K, 4) xyxy, labels int64 (K,), negative bool (K, C))``: the
    image's valid ground-truth boxes first (labels 1..C), then up to
    ``max_negatives_per_image`` valid proposals (label 0) drawn uniformly without replacement
    from those that are a negative of at least one class, in proposal order.
    """
    gt_ok = valid_regions(record.boxes, width=record.width, height=record.height)
    gt = np.asarray(record.boxes, np.float32)[gt_ok]
    props = np.asarray(proposals, np.float32).reshape(-1, 4)
    props = props[valid_regions(props, width=record.width, height=record.height)]
    prop_neg = class_overlaps(props, record.boxes, record.labels, num_classes) < neg_iou
    candidates = np.flatnonzero(prop_neg.any(axis=1))
    take = min(len(candidates), max_negatives_per_image)
    chosen = np.sort(rng.choice(candidates, take, replace=False)) if take < len(candidates) else candidates
    regions = np.concatenate([gt, props[chosen]])
    labels = np.concatenate([np.asarray(record.labels, np.int64)[gt_ok], np.zeros(len(chosen), np.int64)])
    negative = class_overlaps(regions, record.boxes, record.labels, num_classes) < neg_iou
    return regions, labels, negative


def collect_svm_features(
    dataset: DetectionDataset, proposals: Sequence[np.ndarray], *, extract: Extract, neg_iou: float,
    max_negatives_per_image: int, seed: int,
) -> SvmTrainingSet:
    """One network pass over ``dataset`` (streamed per image): features of every ground-truth
    box and of up to ``max_negatives_per_image`` random negative proposals per image.

    Args:
        dataset: training split.
        proposals: ``(P_i, 4)`` xyxy proposals per record, in record order.
        extract: the network pass (`classifier.region_features`), bound with ``features=True``.
        neg_iou: a region is a negative of class c when its IoU with every ground-truth box of
            class c is below this (R-CNN: 0.3).
        max_negatives_per_image: cap on cached proposals per image; the cache holds about
            ``N_images * (cap + objects) * D * 2`` bytes (1024-d: 200 KB per image at cap 100).
        seed: the draw of image i uses ``np.random.default_rng([seed, i])``.
    """
    if not 0.0 < neg_iou <= 1.0:
        raise ConfigError(f"classifier.svm neg_iou must be in (0, 1], got {neg_iou}")
    if max_negatives_per_image < 0:
        raise ConfigError(f"classifier.svm max_negatives_per_image must be >= 0, got {max_negatives_per_image}")
    if len(proposals) != len(dataset):
        raise DataError(
            f"{dataset.name} {dataset.split}: proposals for {len(proposals)} images, dataset has {len(dataset)}"
        )
    num_classes = len(dataset.classes)
    regions, labels, negative, image_index = [], [], [], []
    for i, rec in enumerate(dataset.records):
        r, lab, neg = select_regions(rec, proposals[i], num_classes=num_classes, neg_iou=neg_iou,
                                     max_negatives_per_image=max_negatives_per_image,
                                     rng=np.random.default_rng([seed, i]))
        regions.append(r)
        labels.append(lab)
        negative.append(neg)
        image_index.append(np.full(len(r), i, np.int64))
    features = gather_features(dataset, regions, extract=extract)
    data = SvmTrainingSet(
        features=features,
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        negative=np.concatenate(negative) if negative else np.zeros((0, num_classes), bool),
        image_index=np.concatenate(image_index) if image_index else np.zeros(0, np.int64),
    )
    log.info("svm: cached %d regions (%d ground truth) of %d images, %.1f MB of features",
             len(data.labels), int((data.labels > 0).sum()), len(dataset), features.nbytes / 2**20)
    return data


def svm_scores(
    features: np.ndarray, *, weights: np.ndarray, biases: np.ndarray, feature_scale: float,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Region scores for the ensemble: float32 ``(R, C + 1)``.

    Column 0 is 0 (no background SVM); column c is the margin ``weights[c-1] . (feature_scale *
    features) + biases[c-1]`` of class c.  Rows where ``valid`` (bool ``(R,)``, e.g.
    `classifier.warp.valid_regions` of the boxes) is False, and classes whose bias is
    ``NOT_SCORED``, score ``NOT_SCORED``.

    Args:
        features: ``(R, D)`` pooled features, unscaled, any float dtype.
        weights: float32 ``(C, D)``; biases: float32 ``(C,)``.
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != weights.shape[1]:
        raise ValueError(f"features {features.shape} do not match SVM weights {weights.shape}")
    out = np.zeros((len(features), len(weights) + 1), np.float32)
    for a in range(0, len(features), CHUNK):
        f = features[a : a + CHUNK].astype(np.float32) * np.float32(feature_scale)
        out[a : a + CHUNK, 1:] = f @ weights.T + biases
    if valid is not None:
        out[~np.asarray(valid, bool), 1:] = NOT_SCORED
    return out


@dataclass(frozen=True)
class SvmModel:
    """Trained SVMs: ``weights`` float32 ``(C, D)``, ``biases`` float32 ``(C,)`` (``NOT_SCORED`` for a
    class without positives or negatives), applied to features times ``feature_scale``."""

    weights: np.ndarray
    biases: np.ndarray
    feature_scale: float

    def scores(self, features: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """`svm_scores` with this model: float32 ``(R, C + 1)``, column 0 = 0."""
        return svm_scores(features, weights=self.weights, biases=self.biases, feature_scale=self.feature_scale,
                          valid=valid)

    def save(self, path: str | Path) -> None:
        """Atomic ``.npz`` (``weights``, ``biases``, ``feature_scale``), readable with ``allow_pickle=False``."""
        save_linear(path, weights=self.weights, biases=self.biases, feature_scale=self.feature_scale)

    @classmethod
    def load(cls, path: str | Path) -> "SvmModel":
        """Read `save`'s file; `DataError` naming the file when it is unreadable or inconsistent."""
        weights, biases, scale = load_linear(path, what="SVM")
        if weights.ndim != 2 or biases.shape != (len(weights),):
            raise DataError(f"{path}: SVM weights {weights.shape} and biases {biases.shape} disagree")
        return cls(weights, biases, scale)


def mining_step(
    margins: np.ndarray, negative: np.ndarray, active: np.ndarray, *, hard_threshold: float,
    evict_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One hard-negative update of the working sets (elementwise, any shape, e.g. ``(M, C)``).

    Args:
        margins: float SVM margins of the cached rows.
        negative: bool, row is a negative of the class.
        active: bool, row is in the class's working set.
    Returns:
        ``(new_active, added)``: bool arrays.  ``added`` = negatives not in the working set
        whose margin is > ``hard_threshold``; ``new_active`` = the working set without its
        negatives below ``evict_threshold``, plus ``added``.
    """
    added = negative & ~active & (margins > hard_threshold)
    easy = active & (margins < evict_threshold)
    return (active & ~easy) | added, added


def _fit_one(pos: np.ndarray, neg: np.ndarray, *, C: float, positive_weight: float, bias_mult: float, tol: float,
             max_iter: int, seed: int, name: str) -> tuple[np.ndarray, float]:
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos), np.int64), -np.ones(len(neg), np.int64)])
    svm = LinearSVC(penalty="l2", loss="hinge", dual=True, C=C, class_weight={1: positive_weight},
                    fit_intercept=True, intercept_scaling=bias_mult, tol=tol, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("svm %s: liblinear did not converge in %d iterations (raise classifier.svm.max_iter)",
                    name, max_iter)
    return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


def _scaled(features: np.ndarray, rows: np.ndarray, scale: float) -> np.ndarray:
    return features[rows].astype(np.float32) * np.float32(scale)


def train_svms(
    data: SvmTrainingSet, *, C: float, positive_weight: float, bias_mult: float, target_norm: float,
    initial_negatives: int, mining_rounds: int, hard_threshold: float, evict_threshold: float, tol: float,
    max_iter: int, seed: int, class_names: Sequence[str] | None = None,
) -> SvmModel:
    """Train one linear SVM per class on ``data`` with hard-negative mining (module docstring).

    Args:
        data: cached regions (`collect_svm_features`).
        C, positive_weight, bias_mult: liblinear's ``-c``, ``-w1``, ``-B`` (R-CNN: 1e-3, 2, 10).
        target_norm: mean feature norm after scaling (R-CNN: 20), the mean taken over all cached
            regions (R-CNN: over 200 random regions of each of 200 random training images).
        initial_negatives: size of each class's random starting working set.
        mining_rounds: at most this many rounds of (score the cache, add hard negatives, retrain).
        hard_threshold, evict_threshold: margins that add / evict a negative (R-CNN: -1.0001, -1.2).
        tol, max_iter: liblinear stopping tolerance and iteration cap.
        seed: seeds the starting working sets and liblinear's coordinate order (deterministic).
        class_names: for log messages (default ``class 1..C``).
    """
    if C <= 0 or positive_weight <= 0 or bias_mult <= 0:
        raise ConfigError(f"classifier.svm C, positive_weight, bias_mult must be > 0, got {C}, {positive_weight}, "
                          f"{bias_mult}")
    if initial_negatives < 1 or mining_rounds < 0:
        raise ConfigError(f"classifier.svm needs initial_negatives >= 1 and mining_rounds >= 0, "
                          f"got {initial_negatives} and {mining_rounds}")
    if not evict_threshold <= hard_threshold:
        raise ConfigError(f"classifier.svm evict_threshold ({evict_threshold}) must be <= hard_threshold "
                          f"({hard_threshold})")
    num_classes, dim = data.num_classes, data.features.shape[1] if data.features.size else 0
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(1, num_classes + 1)]
    scale = feature_scale(data.features, target_norm=target_norm)
    weights = np.zeros((num_classes, dim), np.float32)
    biases = np.full(num_classes, NOT_SCORED, np.float32)
    fit = dict(C=C, positive_weight=positive_weight, bias_mult=bias_mult, tol=tol, max_iter=max_iter, seed=seed)

    positives = [np.flatnonzero(data.labels == c) for c in range(1, num_classes + 1)]
    trainable = np.array([len(positives[c]) > 0 and data.negative[:, c].any() for c in range(num_classes)])
    for c in np.flatnonzero(~trainable):
        log.warning("svm %s: no %s in the training set; it scores %s", names[c],
                    "positives" if not len(positives[c]) else "negatives", NOT_SCORED)
    active = np.zeros_like(data.negative)
    for c in np.flatnonzero(trainable):
        neg = np.flatnonzero(data.negative[:, c])
        take = min(initial_negatives, len(neg))
        active[np.random.default_rng([seed, c]).choice(neg, take, replace=False), c] = True

    def refit(classes: np.ndarray, desc: str) -> None:
        for c in tqdm(classes, desc=desc, unit="class", leave=False):
            weights[c], biases[c] = _fit_one(_scaled(data.features, positives[c], scale),
                                             _scaled(data.features, np.flatnonzero(active[:, c]), scale),
                                             name=names[c], **fit)

    refit(np.flatnonzero(trainable), "svm: train")
    for r in range(1, mining_rounds + 1):
        added = np.zeros(num_classes, np.int64)
        for a in tqdm(range(0, len(data.labels), CHUNK), desc=f"svm: mine round {r}", unit="chunk", leave=False):
            margins = svm_scores(data.features[a : a + CHUNK], weights=weights, biases=biases,
                                 feature_scale=scale)[:, 1:]
            active[a : a + CHUNK], new = mining_step(margins, data.negative[a : a + CHUNK], active[a : a + CHUNK],
                                                     hard_threshold=hard_threshold, evict_threshold=evict_threshold)
            added += new.sum(axis=0)
        changed = np.flatnonzero(added > 0)
        log.info("svm: mining round %d added %d hard negatives to %d classes; working sets hold %d negatives",
                 r, int(added.sum()), len(changed), int(active.sum()))
        if len(changed) == 0:
            break
        refit(changed, f"svm: retrain round {r}")
    return SvmModel(weights, biases, scale)


def fit_svms(
    dataset: DetectionDataset, proposals: Sequence[np.ndarray], *, extract: Extract, seed: int, neg_iou: float,
    max_negatives_per_image: int, C: float, positive_weight: float, bias_mult: float, target_norm: float,
    initial_negatives: int, mining_rounds: int, hard_threshold: float, evict_threshold: float, tol: float,
    max_iter: int,
) -> SvmModel:
    """`collect_svm_features` then `train_svms` (``classifier.svm.fit`` in the config)."""
    data = collect_svm_features(dataset, proposals, extract=extract, neg_iou=neg_iou,
                                max_negatives_per_image=max_negatives_per_image, seed=seed)
    return train_svms(data, C=C, positive_weight=positive_weight, bias_mult=bias_mult, target_norm=target_norm,
                      initial_negatives=initial_negatives, mining_rounds=mining_rounds,
                      hard_threshold=hard_threshold, evict_threshold=evict_threshold, tol=tol, max_iter=max_iter,
                      seed=seed, class_names=dataset.classes.names)


__all__ = [
    "NOT_SCORED",
    "SvmModel",
    "SvmTrainingSet",
    "class_overlaps",
    "collect_svm_features",
    "fit_svms",
    "mining_step",
    "select_regions",
    "svm_scores",
    "train_svms",
]
