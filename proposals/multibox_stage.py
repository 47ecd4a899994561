"""The MultiBox stage: train (or load the cached) network and return a proposal source."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from classifier import distributed
from classifier.weights import load_cached_weights, load_trunk_weights
from detect import atomic
from detect.data.record import DetectionDataset
from detect.errors import ConfigError, config_int
from detect.fingerprint import config_hash, dataset_fingerprint, weights_identity
from proposals.multibox import MultiBoxNet, MultiBoxProposer, grid_priors, kmeans_shapes, normalise_boxes
from proposals.multibox_train import load_training_images, train_multibox

log = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (None: unchanged), restored after it."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(config_int("proposals.multibox.threads", threads, low=1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_cached_priors(path: Path, *, num_priors: int) -> np.ndarray | None:
    """The cached ``(num_priors, 4)`` normalised xyxy priors, or None (with a warning if the file is unusable)."""
    if not path.exists():
        return None
    try:
        priors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        log.warning("%s: cached priors unreadable (%s); training again", path, e)
        return None
    if priors.shape != (num_priors, 4):
        log.warning("%s: cached priors have shape %s, expected (%d, 4); training again", path, priors.shape, num_priors)
        return None
    return priors


def build_multibox_proposer(
    train: DetectionDataset,
    *,
    cache_dir: str | Path,
    seed: int,
    top_k: int,
    nms_iou: float,
    min_size: float,
    num_shapes: int,
    centres_per_cell: int,
    width: float,
    input_size: int,
    batch_norm: bool,
    feature_layer: str,
    iterations: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    alpha: float,
    extra_match_iou: float | None,
    offset_units: str,
    confidence_loss: str,
    pos_weight: float,
    focal_alpha: float,
    focal_gamma: float,
    checkpoint_every: int,
    pixel_mean: tuple[float, ...],
    pixel_std: tuple[float, ...],
    channels_last: bool,
    threads: int | None,
    init: str = "scratch",
    init_weights: str | Path | None = None,
) -> MultiBoxProposer | None:
    """A `MultiBoxProposer` trained on ``train`` (None when ``top_k == 0``: MultiBox off).

    Cached under ``<cache_dir>/multibox/<key>/`` where the key hashes the training
    data and every training parameter (not the inference-only ``top_k``,
    ``nms_iou``, ``min_size``), so sweeping those reuses the network.  A killed
    training resumes from its last checkpoint.

    ``init``: ``pretrained`` starts the trunk (every layer up to ``feature_layer``) from
    ``init_weights``, the pretrained classifier of `classifier.pretrain` (its width must
    be ``width``), as the 2014 MultiBox started from an ImageNet-trained Inception;
    ``scratch`` from a random initialisation.

    ``channels_last``: train in channels-last memory (on one CPU thread 0.84-0.90x the iterations/s
    of contiguous training on two, benchmarks/cpu_speedups.py; the weights differ from contiguous
    training by float rounding, so it is in the key).  ``threads``: torch threads while training (None: torch's default); not in the
    key, although the float rounding of a CPU's kernels can depend on it.
    """
    if config_int("proposals.multibox.top_k", top_k, low=0) == 0:  # 0 turns MultiBox off; < 0 is a typo
        return None
    if init not in ("pretrained", "scratch"):
        raise ConfigError(f"proposals.multibox.init must be pretrained or scratch, got {init!r}")
    if init == "pretrained" and init_weights is None:
        raise ConfigError("proposals.multibox.init=pretrained needs the pretrained network "
                          "(classifier.init=pretrained or weights); set proposals.multibox.init=scratch otherwise")
    start = weights_identity(init_weights) if init == "pretrained" else None
    training = dict(init=start, num_shapes=num_shapes, centres_per_cell=centres_per_cell, feature_layer=feature_layer, width=width, input_size=input_size, batch_norm=batch_norm,
                    iterations=iterations, batch_size=batch_size, lr=lr, momentum=momentum,
                    weight_decay=weight_decay, alpha=alpha, extra_match_iou=extra_match_iou,
                    offset_units=offset_units, confidence_loss=confidence_loss, pos_weight=pos_weight,
                    focal_alpha=focal_alpha, focal_gamma=focal_gamma, seed=seed,
                    pixel_mean=list(pixel_mean), pixel_std=list(pixel_std))
    if channels_last:  # contiguous training keeps the key it had before the option existed
        training["channels_last"] = True
    key = config_hash("multibox", dataset_fingerprint(train), training)
    stage_dir = Path(cache_dir) / "multibox" / key
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # initialisation (overwritten by the cached weights when they exist)
    model = MultiBoxNet(num_shapes=num_shapes, width=width, input_size=input_size, batch_norm=batch_norm,
                        feature_layer=feature_layer, centres_per_cell=centres_per_cell)
    done = stage_dir / "model.pt"
    priors_path = stage_dir / "priors.npy"
    priors = load_cached_priors(priors_path, num_priors=model.num_priors)
    if priors is not None and load_cached_weights(model, done):
        log.info("multibox: cached network %s", stage_dir)
    else:
        if start is not None:
            load_trunk_weights(model.backbone, init_weights, until=feature_layer)
        boxes = [normalise_boxes(r.boxes, r.width, r.height) for r in train.records if r.num_objects]
        priors = grid_priors(kmeans_shapes(np.concatenate(boxes), num_shapes=num_shapes, seed=seed), model.grid,
                             centres_per_cell=centres_per_cell)
        images, gt = load_training_images(train.records, input_size=input_size)
        with torch_threads(threads):
            train_multibox(model, priors, images, gt, iterations=iterations, batch_size=batch_size, lr=lr,
                           momentum=momentum, weight_decay=weight_decay, alpha=alpha, extra_match_iou=extra_match_iou,
                           offset_units=offset_units, confidence_loss=confidence_loss, pos_weight=pos_weight,
                           focal_alpha=focal_alpha, focal_gamma=focal_gamma, pixel_mean=tuple(pixel_mean),
                           pixel_std=tuple(pixel_std), seed=seed, checkpoint_path=stage_dir / "checkpoint.pt",
                           checkpoint_every=checkpoint_every, fingerprint={"key": key}, channels_last=channels_last)
        if distributed.is_main():  # under torchrun every process trained the same network; one writes it
            with atomic.atomic_path(priors_path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, priors)
            with atomic.atomic_path(done) as tmp:
                torch.save(model.state_dict(), tmp)
    model.eval()
    return MultiBoxProposer(model=model, priors=priors, network_key=key, offset_units=offset_units, top_k=top_k, nms_iou=nms_iou, min_size=min_size,
                            pixel_mean=tuple(pixel_mean), pixel_std=tuple(pixel_std))
