"""Ensemble members: train (or load the cached) network, score a split's regions (cached too).

Cache layout under ``cache_dir``:

* ``members/<key>/``: ``checkpoint.pt`` while training (a killed run resumes from it),
  ``model.pt`` once finished.  The key hashes the training split, its proposals,
  the whole classifier config and the member's seed.
* ``scores/<key>.npz``: one member's softmax scores for every region of a split
  (``scores`` float32 ``(sum R_i, C + 1)``, ``counts`` int64 ``(N,)``), so any subset
  of members can be re-ensembled without running a network.
"""

from __future__ import annotations

import logging
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from classifier import distributed
from classifier.bbox_reg import BboxRegressor
from classifier.fuse import fold_batch_norm
from classifier.onnx_runtime import OnnxScorer
from classifier.roi import RoIClassifier, _score_roi
from classifier.roi_train import RoIBatchSampler, train_roi_classifier
from classifier.score import _score, stream_scores
from classifier.svm import SvmModel
from classifier.train import train_classifier
from classifier.warp import valid_regions
from classifier.weights import load_cached_weights
from classifier.windows import WindowDataset
from detect import atomic
from detect.data.record import DetectionDataset
from detect.errors import ConfigError
from detect.fingerprint import config_hash, dataset_fingerprint, weights_identity

log = logging.getLogger(__name__)

MODES = ("warp", "roi")
RUNTIMES = ("torch", "onnx")


def build_model(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    """The configured network with ``num_classes`` object classes + background outputs."""
    return instantiate(cfg.model)(num_classes=num_classes + 1)


def member_key(cfg: DictConfig, *, train: DetectionDataset, proposals_key: str, seed: int,
               shared_seed: int | None = None) -> str:
    training = OmegaConf.to_container(cfg, resolve=True)
    if training["model"].get("weights"):
        # The same starting weights from the shipped folder or a cache elsewhere give the same member.
        training["model"]["weights"] = weights_identity(training["model"]["weights"])
    # Scoring options and post-classifiers (fitted after the network) do not change its weights.
    for key in ("score", "runtime", "onnx", "svm", "bbox_reg"):
        training.pop(key, None)
    training["train"].pop("prefetch", None)  # where the batches are warped, not what they hold
    if training.get("mode") != "roi":
        training.pop("roi", None)
    shared = training.pop("shared", None)
    if shared and shared.get("iterations"):
        return config_hash("member", dataset_fingerprint(train), proposals_key, training, seed, shared, shared_seed)
    return config_hash("member", dataset_fingerprint(train), proposals_key, training, seed)


def uses_shared_network(cfg: DictConfig) -> bool:
    """Whether members start from one fine-tuning shared by all (``classifier.shared.iterations > 0``)."""
    return bool(cfg.get("shared") and cfg.shared.iterations)


def trained_model_path(cfg: DictConfig, *, train: DetectionDataset, proposals_key: str, seed: int,
                       shared_seed: int | None, cache_dir: str) -> Path:
    """``<cache_dir>/members/<key>/model.pt``: where `train_member` keeps the member's final weights."""
    shared_on = uses_shared_network(cfg)
    if shared_on and shared_seed is None:
        raise ConfigError("classifier.shared.iterations > 0 needs the shared network's seed (shared_seed)")
    key = member_key(cfg, train=train, proposals_key=proposals_key, seed=seed,
                     shared_seed=shared_seed if shared_on else None)
    return Path(cache_dir) / "members" / key / "model.pt"


def train_member(
    cfg: DictConfig, *, train: DetectionDataset, proposals: list[np.ndarray], proposals_key: str,
    seed: int, cache_dir: str, device: str, shared_seed: int | None = None,
) -> tuple[torch.nn.Module, str]:
    """One trained member (from the cache when it is there) and its cache key.

    ``classifier.shared.iterations > 0``: the member starts from one network that every
    member shares, fine-tuned on the detection windows from the initial weights for
    that many iterations with ``shared_seed`` (trained once, cached), then trains its own
    ``classifier.train.iterations`` with its own ``seed`` (sampling order, flips, dropout).
    """
    shared_on = uses_shared_network(cfg)
    final = trained_model_path(cfg, train=train, proposals_key=proposals_key, seed=seed, shared_seed=shared_seed,
                               cache_dir=cache_dir)
    stage, key = final.parent, final.parent.name
    torch.manual_seed(seed)  # initialisation
    model = build_model(cfg, len(train.classes))
    if load_cached_weights(model, final):
        log.info("member %s: cached weights %s", key, final)
        return model.eval(), key
    if cfg.mode not in MODES or cfg.runtime not in RUNTIMES:
        raise ConfigError(f"classifier.mode must be one of {MODES} and classifier.runtime one of {RUNTIMES}, "
                          f"got {cfg.mode!r} / {cfg.runtime!r}")
    if cfg.mode == "roi" and cfg.roi.init_from_warp:
        # Fast R-CNN fine-tunes a network that already classifies windows; a trunk trained
        # from scratch on whole images learns little from a few hundred batches (README).
        # Before this member's window pool exists, so two pools never hold decoded images at once.
        warp, warp_key = train_member(OmegaConf.merge(cfg, {"mode": "warp"}), train=train, proposals=proposals,
                                      proposals_key=proposals_key, seed=seed, cache_dir=cache_dir, device=device,
                                      shared_seed=shared_seed)
        model.load_state_dict(warp.state_dict())
        log.info("member %s: roi training starts from warp member %s", key, warp_key)
    elif shared_on:
        shared_cfg = OmegaConf.merge(cfg, {"shared": {"iterations": 0},
                                           "train": {"iterations": cfg.shared.iterations, "lr": cfg.shared.lr}})
        shared, shared_key = train_member(shared_cfg, train=train, proposals=proposals, proposals_key=proposals_key,
                                          seed=shared_seed, cache_dir=cache_dir, device=device)
        model.load_state_dict(shared.state_dict())
        log.info("member %s: starts from the shared fine-tuned network %s", key, shared_key)
    windows = WindowDataset(
        train, proposals, labeler=instantiate(cfg.labeler), sampler=instantiate(cfg.sampler),
        input_size=cfg.model.input_size, **cfg.windows,
    )
    if cfg.mode == "roi":
        roi_model = RoIClassifier(model, pool_size=cfg.roi.pool_size, sampling_ratio=cfg.roi.sampling_ratio)
        batches = RoIBatchSampler(windows, images_per_batch=cfg.roi.images_per_batch,
                                  fg_per_image=cfg.roi.fg_per_image, bg_per_image=cfg.roi.bg_per_image,
                                  image_size=cfg.roi.image_size, max_size=cfg.roi.max_size)
        # The RoI loop has no auxiliary heads, runs in the default memory format and samples in its own thread.
        train_args = {k: v for k, v in cfg.train.items()
                      if k not in ("aux_weight", "channels_last", "amp", "prefetch")}
        train_roi_classifier(roi_model, batches, checkpoint_dir=stage, seed=seed, device=device, **train_args)
    else:
        train_classifier(model, windows, checkpoint_dir=stage, seed=seed, device=device, **cfg.train)
    model.cpu()
    if distributed.is_main():  # under torchrun every process holds the same weights; one writes them
        with atomic.atomic_path(final) as tmp:
            torch.save(model.state_dict(), tmp)
    return model.eval(), key


# ``score_image(image (H, W, 3) uint8 RGB, boxes (R, 4) xyxy) -> (scores (R, C + 1), features (R, D) | None,
# number of degenerate regions)``: one member's per-image scorer (`region_scorer`).
ScoreImage = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, "np.ndarray | None", int]]


def region_scorer(
    model: torch.nn.Module, cfg: DictConfig, *, device: str, checkpoint: Path | None = None, features: bool = False,
) -> ScoreImage:
    """The per-image scorer of one member as ``cfg`` (the ``classifier`` group) configures it.

    Warp mode (`classifier.score`), roi mode (`classifier.roi`), or warp mode run by ONNX Runtime
    (``runtime=onnx``; exported once beside ``checkpoint``, the file the weights came from).
    ``features``: also the pooled features (SVMs, box regression; torch only).  `score_member`
    streams a split through it and `detect.inference` one image, so both score identically.
    """
    common = dict(context_pad=cfg.windows.context_pad, pixel_mean=cfg.windows.pixel_mean,
                  pixel_std=cfg.windows.pixel_std, device=device, features=features, **cfg.score)
    if cfg.mode == "roi":
        roi_model = RoIClassifier(fold_batch_norm(model), pool_size=cfg.roi.pool_size,
                                  sampling_ratio=cfg.roi.sampling_ratio)
        return partial(_score_roi, roi_model, image_size=cfg.roi.image_size, max_size=cfg.roi.max_size, **common)
    if cfg.runtime == "onnx" and not features:
        if checkpoint is None:
            raise ValueError("classifier.runtime=onnx needs the checkpoint the weights came from")
        model = OnnxScorer(model, checkpoint=checkpoint, intra_op_threads=cfg.onnx.intra_op_threads,
                           atol=cfg.onnx.atol).model  # onnxruntime folds batch norm itself
    else:
        model = fold_batch_norm(model)
    return partial(_score, model, input_size=cfg.model.input_size, **common)


def _feature_extract(model: torch.nn.Module, cfg: DictConfig, device: str):
    """``extract(dataset, regions)`` streaming `ImageScores` with pooled features (torch, either mode)."""
    desc = "classifier: score (roi)" if cfg.mode == "roi" else "classifier: score"
    return partial(stream_scores, score_image=region_scorer(model, cfg, device=device, features=True), desc=desc)


def post_classifier_path(cfg: DictConfig, name: str, *, member_key: str, cache_dir: str) -> Path:
    """Cache file of a member's fitted ``svm`` or ``bbox_reg`` (keyed by its ``fit`` settings)."""
    key = config_hash(name, OmegaConf.to_container(cfg[name].fit, resolve=True))
    return Path(cache_dir) / "members" / member_key / f"{name}_{key}.npz"


def post_scores(
    scores: np.ndarray, features: np.ndarray | None, boxes: np.ndarray, *, width: int, height: int,
    svm: SvmModel | None, bbox_reg: BboxRegressor | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image's member output after the optional post-classifiers.

    ``scores`` float32 ``(R, C + 1)`` softmax, ``features`` ``(R, D)``, ``boxes`` ``(R, 4)`` xyxy in a
    ``width x height`` image.  Returns SVM margins ``(R, C + 1)`` (column 0 = 0) with ``svm``, else
    ``scores``; and with ``bbox_reg`` refined float32 ``(R, C, 4)`` xyxy boxes, else None.
    """
    if svm is not None:
        scores = svm.scores(features, valid=valid_regions(boxes, width=width, height=height))
    refined = None
    if bbox_reg is not None:
        refined = bbox_reg.apply(boxes, features, image_size=(height, width)).astype(np.float32)
    return scores, refined


def fit_post_classifiers(
    model: torch.nn.Module, cfg: DictConfig, *, member_key: str, train: DetectionDataset,
    proposals: list[np.ndarray], seed: int, cache_dir: str, device: str,
) -> tuple[SvmModel | None, BboxRegressor | None]:
    """The member's optional SVMs and box regressors (None when off), fitted once and cached."""
    fitted: list[Any] = []
    for name, kind in (("svm", SvmModel), ("bbox_reg", BboxRegressor)):
        group = cfg[name]
        if not group.enabled:
            fitted.append(None)
            continue
        path = post_classifier_path(cfg, name, member_key=member_key, cache_dir=cache_dir)
        if path.exists():
            fitted.append(kind.load(path))
            continue
        result = instantiate(group.fit)(train, proposals, extract=_feature_extract(model, cfg, device), seed=seed)
        result.save(path)
        fitted.append(result)
    return fitted[0], fitted[1]


def _load_scores(path: Path, expected_counts: np.ndarray) -> list[np.ndarray] | None:
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            scores, counts = z["scores"], z["counts"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable region-score cache (%s); recomputing", path, exc)
        return None
    if not np.array_equal(counts, expected_counts) or len(scores) != counts.sum():
        log.warning("%s: region-score cache does not match the proposals; recomputing", path)
        return None
    return np.split(scores, np.cumsum(counts)[:-1])


def score_member(
    model: torch.nn.Module, cfg: DictConfig, *, member_key: str, dataset: DetectionDataset,
    proposals: list[np.ndarray], proposals_key: str, cache_dir: str, device: str,
    svm: SvmModel | None = None, bbox_reg: BboxRegressor | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per-image region scores of ``proposals`` on ``dataset`` and, with ``bbox_reg``, refined boxes.

    Scores are float32 ``(R_i, C + 1)`` softmax probabilities, or SVM margins (column 0
    = 0) with ``svm``; refined boxes are float32 ``(R_i, C, 4)`` xyxy, one per class.
    Both are cached under ``<cache_dir>/scores/``.
    """
    if svm is not None or bbox_reg is not None:
        return _score_with_features(model, cfg, dataset=dataset, proposals=proposals, device=device, svm=svm,
                                    bbox_reg=bbox_reg, cache_path=Path(cache_dir) / "scores" / (config_hash(
                                        "scores+post", member_key, dataset_fingerprint(dataset), proposals_key,
                                        OmegaConf.to_container(cfg, resolve=True)) + ".npz"))
    scoring = {"score": OmegaConf.to_container(cfg.score, resolve=True), "runtime": cfg.runtime}
    key = config_hash("scores", member_key, dataset_fingerprint(dataset), proposals_key, scoring)
    path = Path(cache_dir) / "scores" / f"{key}.npz"
    counts = np.array([len(p) for p in proposals], np.int64)
    if path.exists():
        cached = _load_scores(path, counts)
        if cached is not None:
            return cached, None
    score_image = region_scorer(model, cfg, device=device,
                                checkpoint=Path(cache_dir) / "members" / member_key / "model.pt")
    desc = "classifier: score (roi)" if cfg.mode == "roi" else "classifier: score"
    per_image = [s.scores for s in stream_scores(dataset, proposals, score_image, desc=desc)]
    num_outputs = len(dataset.classes) + 1
    flat = np.concatenate(per_image) if per_image else np.zeros((0, num_outputs), np.float32)
    atomic.save_npz(path, scores=flat.astype(np.float32), counts=counts)
    return per_image, None


def _score_with_features(
    model: torch.nn.Module, cfg: DictConfig, *, dataset: DetectionDataset, proposals: list[np.ndarray],
    device: str, svm: SvmModel | None, bbox_reg: BboxRegressor | None, cache_path: Path,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    counts = np.array([len(p) for p in proposals], np.int64)
    if cache_path.exists():
        try:
            with open(cache_path, "rb") as f, np.load(f, allow_pickle=False) as z:
                if np.array_equal(z["counts"], counts):
                    splits = np.cumsum(counts)[:-1]
                    boxes = np.split(z["boxes"], splits) if "boxes" in z.files else None
                    return np.split(z["scores"], splits), boxes
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("%s: unreadable region-score cache (%s); recomputing", cache_path, exc)
    scores, refined = [], []
    for s in _feature_extract(model, cfg, device)(dataset, proposals):
        rec = dataset.records[s.index]
        image_scores, image_boxes = post_scores(s.scores, s.features, proposals[s.index], width=rec.width,
                                                height=rec.height, svm=svm, bbox_reg=bbox_reg)
        scores.append(image_scores)
        if image_boxes is not None:
            refined.append(image_boxes)
    num_outputs = len(dataset.classes) + 1
    arrays = {"scores": np.concatenate(scores) if scores else np.zeros((0, num_outputs), np.float32),
              "counts": counts}
    if bbox_reg is not None:
        arrays["boxes"] = np.concatenate(refined) if refined else np.zeros((0, num_outputs - 1, 4), np.float32)
    atomic.save_npz(cache_path, **arrays)
    return scores, (refined if bbox_reg is not None else None)

