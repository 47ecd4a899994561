"""Training RoI mode (`classifier.roi.RoIClassifier`) with image-centric batches (Fast R-CNN).

A batch is ``images_per_batch`` images with ``fg_per_image`` positive and ``bg_per_image``
background regions each (Fast R-CNN: 2 images x 64 regions, 25% positive): the trunk
runs once per image and its cost is shared by all the image's regions.  Regions,
labels, ignored and degenerate boxes are those of warp mode's pool
(`classifier.windows.WindowDataset`: proposals + ground truth, `WindowLabeler`'s IoU
rule), and each image's regions are drawn by a `classifier.sampling.WindowSampler`,
so the two modes learn from the same examples.

Resumable like warp mode (`classifier.train`): all randomness of iteration ``t`` comes
from seeds derived from ``(seed, t)``; checkpoints hold the backbone's state dict in
`classifier.checkpoint`'s format, so a RoI-trained checkpoint also loads for warp-mode
scoring (`classifier.checkpoint.load_model_weights`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from classifier.checkpoint import load_training_state, model_fingerprint, save_training_state
from classifier.roi import RoIClassifier, image_to_tensor, region_rois, resize_image_and_boxes, resize_shape
from classifier.sampling import WindowSampler, choose
from classifier.score import resolve_device
from classifier.train import CHECKPOINT_NAME, iteration_seeds, make_scheduler, sgd_loop
from classifier.windows import WindowDataset
from detect.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoIBatch:
    """One image-centric batch: ``images`` (one normalised ``(1, 3, H_j, W_j)`` tensor per
    image, sizes differ), ``rois`` float32 ``(R, 5)`` (image position in ``images``, xyxy
    resized pixels, context added), ``labels`` int64 ``(R,)`` (0 = background),
    ``image_index`` int64 ``(R,)`` (record position) and ``flipped`` bool ``(len(images),)``."""

    images: list[Tensor]
    rois: Tensor
    labels: Tensor
    image_index: Tensor
    flipped: Tensor

    def __len__(self) -> int:
        return len(self.labels)


class RoIBatchSampler:
    """Image-centric batches drawn from a warp-mode window pool.

    Args:
        windows: the labelled pool (its regions, labels, images, ``flip``, ``context_pad``,
            ``pixel_mean``/``pixel_std`` and ``input_size`` are used; its own sampler is not).
        images_per_batch: images per batch (Fast R-CNN: 2); fewer if fewer images have regions.
        fg_per_image, bg_per_image: regions per image (Fast R-CNN: 16 and 48), with
            `WindowSampler`'s fill rule when an image has too few of either.
        image_size, max_size: resize before the trunk (`classifier.roi.resize_shape`).
    """

    def __init__(
        self,
        windows: WindowDataset,
        *,
        images_per_batch: int,
        fg_per_image: int,
        bg_per_image: int,
        image_size: int,
        max_size: int | None,
    ) -> None:
        if not isinstance(images_per_batch, int) or images_per_batch < 1:
            raise ConfigError(f"classifier roi images_per_batch must be a positive integer, got {images_per_batch!r}")
        resize_shape(1, 1, image_size=image_size, max_size=max_size)  # validates both
        self.windows = windows
        self.images_per_batch = images_per_batch
        self.sampler = WindowSampler(fg_per_batch=fg_per_image, bg_per_batch=bg_per_image)
        self.image_size, self.max_size = image_size, max_size
        order = torch.argsort(windows.image_index, stable=True)
        images, starts = torch.unique_consecutive(windows.image_index[order], return_counts=True)
        self._images = images
        self._pools = torch.split(order, starts.tolist())

    def sample(self, generator: torch.Generator) -> RoIBatch:
        """A batch, deterministic given ``generator``'s state (image choice, regions, flips in that order)."""
        w = self.windows
        picks = choose(len(self._images), min(self.images_per_batch, len(self._images)), generator)
        images, rois, labels, image_index, flipped = [], [], [], [], []
        for j, p in enumerate(picks.tolist()):
            i, pool = int(self._images[p]), self._pools[p]
            pool_labels = w.labels[pool]
            fg, bg = self.sampler.sample(pool[pool_labels > 0], pool[pool_labels == 0], generator)
            idx = torch.cat([fg, bg])
            flip = bool(torch.rand((), generator=generator) < 0.5) if w.flip else False
            image, boxes = resize_image_and_boxes(w.image(i), w.boxes[idx].numpy(), image_size=self.image_size,
                                                  max_size=self.max_size)
            h, width = image.shape[:2]
            if flip:
                image = image[:, ::-1]
                boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
            images.append(image_to_tensor(image, pixel_mean=w.pixel_mean, pixel_std=w.pixel_std))
            rois.append(region_rois(boxes, height=h, width=width, input_size=w.input_size,
                                    context_pad=w.context_pad, batch_index=j))
            labels.append(w.labels[idx])
            image_index.append(torch.full((len(idx),), i, dtype=torch.int64))
            flipped.append(flip)
        return RoIBatch(images, torch.cat(rois), torch.cat(labels), torch.cat(image_index), torch.tensor(flipped))


def roi_batch_logits(model: RoIClassifier, images: list[Tensor], rois: Tensor) -> Tensor:
    """Logits ``(R, C + 1)`` of a batch: one trunk pass over all its images, then every region.

    The images (``(1, 3, H_j, W_j)``, sizes differ) are padded at the bottom and right with
    zeros, the mean pixel once normalised, into one ``(B, 3, max H, max W)`` tensor, so
    region coordinates are unchanged.  One pass matters with batch norm: per-image passes
    would normalise each image by its own statistics in training, and by the running
    averages at inference.
    """
    height = max(x.shape[-2] for x in images)
    width = max(x.shape[-1] for x in images)
    batch = images[0].new_zeros((len(images), images[0].shape[1], height, width))
    for j, x in enumerate(images):
        batch[j, :, : x.shape[-2], : x.shape[-1]] = x[0]
    return model(batch, rois)


def train_roi_classifier(
    model: RoIClassifier,
    batches: RoIBatchSampler,
    *,
    iterations: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    lr_schedule: str,
    step_size: int,
    gamma: float,
    power: float,
    checkpoint_dir: str | Path | None,
    checkpoint_every: int,
    seed: int,
    device: str = "cpu",
    log_every: int = 20,
    deterministic: bool = True,
) -> dict[str, list[float]]:
    """Train ``model`` in place (cross-entropy over the batch's regions); returns the history.

    Arguments are those of `classifier.train.train_classifier` (without ``aux_weight``:
    no auxiliary heads in RoI mode), with ``batches`` (`RoIBatchSampler`) in place of the
    window pool.  ``checkpoint_dir/checkpoint.pt`` holds the backbone's state and a
    fingerprint of the model, the RoI geometry, the sampling and these hyperparameters;
    training resumes from it when it exists (a mismatch is a one-line `UserError`).

    Returns ``{"loss": [...], "lr": [...]}`` (one float per iteration since 0) and
    ``"regions_per_s"``: ``[throughput of this call's iterations]``.
    """
    if iterations < 0 or checkpoint_every < 1 or log_every < 1:
        raise ConfigError(
            f"classifier train needs iterations >= 0, checkpoint_every >= 1 and log_every >= 1, "
            f"got {iterations}, {checkpoint_every}, {log_every}"
        )
    dev = resolve_device(device)
    model.to(dev)
    backbone = model.backbone
    optimizer = torch.optim.SGD(backbone.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = make_scheduler(
        optimizer, lr_schedule=lr_schedule, iterations=iterations, step_size=step_size, gamma=gamma, power=power
    )
    w = batches.windows
    schedule_keys = {"step_size": step_size, "gamma": gamma} if lr_schedule == "step" else {"power": power}
    fingerprint: dict[str, Any] = {
        **model_fingerprint(backbone),
        "mode": "roi",
        "pool_size": model.pool_size,
        "sampling_ratio": model.sampling_ratio,
        "image_size": batches.image_size,
        "max_size": batches.max_size,
        "images_per_batch": batches.images_per_batch,
        "fg_per_image": batches.sampler.fg_per_batch,
        "bg_per_image": batches.sampler.bg_per_batch,
        "context_pad": float(w.context_pad),
        "flip": w.flip,
        "iterations": iterations,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "lr_schedule": lr_schedule,
        **schedule_keys,
        "seed": seed,
    }
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start = 0
    history: dict[str, list[float]] = {"loss": [], "lr": []}
    if path is not None and path.exists():
        start, history = load_training_state(
            path, fingerprint=fingerprint, model=backbone, optimizer=optimizer, scheduler=scheduler
        )
        log.info("classifier (roi): resuming from %s at iteration %d", path, start)

    def save(iteration: int) -> None:
        if path is not None:
            save_training_state(path, fingerprint=fingerprint, model=backbone, optimizer=optimizer,
                                scheduler=scheduler, iteration=iteration, history=history)

    def step(it: int) -> tuple[dict[str, torch.Tensor], int]:
        sample_seed, dropout_seed = iteration_seeds(seed, it)
        batch = batches.sample(torch.Generator().manual_seed(sample_seed))
        torch.manual_seed(dropout_seed)
        images = [x.to(dev, non_blocking=True) for x in batch.images]
        logits = roi_batch_logits(model, images, batch.rois.to(dev))
        return {"loss": F.cross_entropy(logits, batch.labels.to(dev))}, len(batch)

    model.train()
    rate = sgd_loop(step, optimizer=optimizer, scheduler=scheduler, history=history, start=start,
                    iterations=iterations, save=save, log_every=log_every, checkpoint_every=checkpoint_every,
                    deterministic=deterministic, name="classifier (roi)", unit="regions")
    if start < iterations or (path is not None and not path.exists()):
        save(iterations)
    model.eval()
    return {**history, "regions_per_s": [rate]}


__all__ = ["RoIBatch", "RoIBatchSampler", "roi_batch_logits", "train_roi_classifier"]
