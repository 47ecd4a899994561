"""The MultiBox stage: train (or load the cached) network and return a proposal source."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from detect import atomic
from detect.data.record import DetectionDataset
from detect.fingerprint import config_hash, dataset_fingerprint
from proposals.multibox import MultiBoxNet, MultiBoxProposer, kmeans_priors, normalise_boxes
from proposals.multibox_train import load_training_images, train_multibox

log = logging.getLogger(__name__)


def build_multibox_proposer(
    train: DetectionDataset,
    *,
    cache_dir: str | Path,
    seed: int,
    top_k: int,
    nms_iou: float,
    min_size: float,
    num_priors: int,
    width: float,
    input_size: int,
    batch_norm: bool,
    iterations: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    alpha: float,
    checkpoint_every: int,
    pixel_mean: tuple[float, ...],
    pixel_std: tuple[float, ...],
) -> MultiBoxProposer | None:
    """A `MultiBoxProposer` trained on ``train`` (None when ``top_k == 0``: MultiBox off).

    Cached under ``<cache_dir>/multibox/<key>/`` where the key hashes the training
    data and every training parameter (not the inference-only ``top_k``,
    ``nms_iou``, ``min_size``), so sweeping those reuses the network.  A killed
    training resumes from its last checkpoint.
    """
    if top_k <= 0:
        return None
    training = dict(num_priors=num_priors, width=width, input_size=input_size, batch_norm=batch_norm,
                    iterations=iterations, batch_size=batch_size, lr=lr, momentum=momentum,
                    weight_decay=weight_decay, alpha=alpha, seed=seed,
                    pixel_mean=list(pixel_mean), pixel_std=list(pixel_std))
    key = config_hash("multibox", dataset_fingerprint(train), training)
    stage_dir = Path(cache_dir) / "multibox" / key
    stage_dir.mkdir(parents=True, exist_ok=True)
    model = MultiBoxNet(num_priors=num_priors, width=width, input_size=input_size, batch_norm=batch_norm)
    done = stage_dir / "model.pt"
    priors_path = stage_dir / "priors.npy"
    if done.exists() and priors_path.exists():
        log.info("multibox: cached network %s", stage_dir)
        model.load_state_dict(torch.load(done, map_location="cpu", weights_only=True))
        priors = np.load(priors_path, allow_pickle=False)
    else:
        boxes = [normalise_boxes(r.boxes, r.width, r.height) for r in train.records if r.num_objects]
        priors = kmeans_priors(np.concatenate(boxes), num_priors=num_priors, seed=seed)
        images, gt = load_training_images(train.records, input_size=input_size)
        torch.manual_seed(seed)  # initialisation
        train_multibox(model, priors, images, gt, iterations=iterations, batch_size=batch_size, lr=lr,
                       momentum=momentum, weight_decay=weight_decay, alpha=alpha, pixel_mean=tuple(pixel_mean),
                       pixel_std=tuple(pixel_std), seed=seed, checkpoint_path=stage_dir / "checkpoint.pt",
                       checkpoint_every=checkpoint_every, fingerprint={"key": key})
        with atomic.atomic_path(priors_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, priors)
        with atomic.atomic_path(done) as tmp:
            torch.save(model.state_dict(), tmp)
    model.eval()
    return MultiBoxProposer(model=model, priors=priors, network_key=key, top_k=top_k, nms_iou=nms_iou, min_size=min_size,
                            pixel_mean=tuple(pixel_mean), pixel_std=tuple(pixel_std))
