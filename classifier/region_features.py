"""Pooled features of chosen regions, for the R-CNN post-classifiers (`classifier.svm`, `classifier.bbox_reg`).

Both post-classifiers learn on the pooled 5b vector (`TrunkAPI.pooled`, 1024-d at width 1) of
a few regions per training image.  The network pass is injected as ``extract``: a
`classifier.score.score_dataset` (warp mode) or `classifier.roi.score_dataset_roi` (roi mode)
with everything but the dataset and the regions bound, e.g.::

    extract = functools.partial(score_dataset, model, batch_size=256, input_size=224,
                                context_pad=15.8, pixel_mean=..., pixel_std=..., features=True)

Features are kept in float16 (half the memory of float32; their relative rounding error,
~5e-4, is far below what a linear SVM or a ridge regressor can resolve).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from classifier.score import ImageScores
from detect import atomic
from detect.data.record import DetectionDataset
from detect.errors import DataError

Extract = Callable[[DetectionDataset, Sequence[np.ndarray]], Iterable[ImageScores]]

FLOAT16_MAX = float(np.finfo(np.float16).max)


def gather_features(dataset: DetectionDataset, regions: Sequence[np.ndarray], *, extract: Extract) -> np.ndarray:
    """float16 ``(sum R_i, D)``: the pooled features of ``regions[i]`` (``(R_i, 4)`` xyxy) of every
    record ``i``, concatenated in record order.  Images without regions are not decoded.

    The regions must be valid (`classifier.warp.valid_regions`): a degenerate region would get
    an all-zero feature vector from ``extract``.
    """
    if len(regions) != len(dataset):
        raise ValueError(f"regions for {len(regions)} images, dataset has {len(dataset)}")
    counts = np.array([len(r) for r in regions], np.int64)
    busy = np.flatnonzero(counts > 0)
    if len(busy) == 0:
        if len(dataset) == 0:
            return np.zeros((0, 0), np.float16)
        # Nothing to score, but the feature length still matters to the models built from this.
        busy = np.zeros(1, np.int64)
    subset = dataclasses.replace(dataset, records=tuple(dataset.records[i] for i in busy))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    out: np.ndarray | None = None
    for scored in extract(subset, [np.asarray(regions[i], np.float32).reshape(-1, 4) for i in busy]):
        feats = scored.features
        i = int(busy[scored.index])
        if feats is None:
            raise ValueError("extract returned no features; bind features=True")
        if len(feats) != counts[i]:
            raise ValueError(f"extract returned {len(feats)} feature rows for {counts[i]} regions")
        if out is None:
            out = np.zeros((int(offsets[-1]), feats.shape[1]), np.float16)
        if np.abs(feats).max(initial=0.0) > FLOAT16_MAX:
            raise DataError(f"{dataset.records[i].path}: pooled features exceed the float16 range")
        out[offsets[i] : offsets[i + 1]] = feats
    assert out is not None
    return out


def feature_scale(features: np.ndarray, *, target_norm: float, chunk: int = 65536) -> float:
    """The one factor that makes the mean L2 norm of ``features`` (``(M, D)``) ``target_norm``.

    R-CNN (rcnn_scale_features.m) scales every feature vector by ``20 / mean norm`` instead of
    normalising each: its SVM ``C`` range was tuned on features of norm ~20, and one global
    factor keeps the relative norms (a confident window has a larger response).
    Returns 1.0 when there are no features or their mean norm is 0.
    """
    if target_norm <= 0:
        raise ValueError(f"target_norm must be > 0, got {target_norm}")
    if len(features) == 0:
        return 1.0
    total = 0.0
    for a in range(0, len(features), chunk):
        total += float(np.linalg.norm(features[a : a + chunk].astype(np.float32), axis=1).sum(dtype=np.float64))
    mean = total / len(features)
    return float(target_norm / mean) if mean > 0 else 1.0


__all__ = ["Extract", "feature_scale", "gather_features"]


def save_linear(path: str | Path, *, weights: np.ndarray, biases: np.ndarray, feature_scale: float) -> None:
    """A fitted linear model on scaled features as an atomic ``.npz`` (readable with ``allow_pickle=False``)."""
    atomic.save_npz(path, weights=np.asarray(weights, np.float32), biases=np.asarray(biases, np.float32),
                    feature_scale=np.float64(feature_scale))


def load_linear(path: str | Path, *, what: str) -> tuple[np.ndarray, np.ndarray, float]:
    """``(weights, biases, feature_scale)`` written by `save_linear`; `DataError` naming the file otherwise."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            return z["weights"], z["biases"], float(z["feature_scale"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable {what} file ({exc})") from None
