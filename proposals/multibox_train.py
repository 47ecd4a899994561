"""Training the MultiBox network: whole images resized to a square, greedy-matching loss.

Resumable: every random choice of iteration ``t`` (batch, flips, dropout) is
drawn from a generator seeded by ``(seed, t)``, so a checkpoint needs only the
model, optimiser, scheduler and ``t``, and a resumed run is bit-identical on CPU
to an uninterrupted one.

Data-parallel under torchrun (`classifier.distributed`): every process draws the same
global batch and trains DDP on its slice; rank 0 alone writes checkpoints and shows
progress.  The location term is normalised by each process's own number of matched
priors, so N processes follow one process's trajectory closely but not to float
rounding (the classifier's loss, a per-window mean, does).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from classifier import distributed
from detect.data.image_io import load_rgb
from detect.data.record import ImageRecord
from detect.checkpoint import iteration_seed, load_checkpoint, save_checkpoint
from detect.work_estimate import LongRunCheck
from proposals.multibox import MultiBoxNet, images_to_tensor, multibox_loss, normalise_boxes

log = logging.getLogger(__name__)


def load_training_images(records: Sequence[ImageRecord], *, input_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Images with objects, resized to ``input_size`` squares: ``(N, S, S, 3)`` uint8 and
    N arrays ``(G_i, 4)`` of normalised xyxy ground truth."""
    import cv2

    images, boxes = [], []
    for rec in tqdm(records, desc="multibox: load images", unit="img", leave=False):
        if rec.num_objects == 0:
            continue
        image = load_rgb(rec.path)
        images.append(cv2.resize(image, (input_size, input_size), interpolation=cv2.INTER_AREA))
        boxes.append(normalise_boxes(rec.boxes, rec.width, rec.height).astype(np.float32))
    if not images:
        raise ValueError("MultiBox training needs images with objects")
    return np.stack(images), boxes


def train_multibox(
    model: MultiBoxNet,
    priors: np.ndarray,
    images: np.ndarray,
    gt_boxes: list[np.ndarray],
    *,
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
    pixel_mean: tuple[float, ...],
    pixel_std: tuple[float, ...],
    seed: int,
    checkpoint_path: Path,
    checkpoint_every: int,
    fingerprint: dict,
    channels_last: bool = False,
    world: distributed.World | None = None,
) -> list[float]:
    """Train with SGD + momentum and a polynomial (power 1) decay; returns the per-iteration losses.

    ``checkpoint_path`` is written every ``checkpoint_every`` iterations and at the end;
    if it exists (same ``fingerprint``), training resumes from it.  ``world``: the DDP
    process group (None = the initialised default group under torchrun, else one process);
    ``batch_size`` is the global batch and must divide by the number of processes.
    ``channels_last``: train in channels-last memory (faster convolutions on a CPU); the model
    is returned in contiguous memory either way, as a cached copy loads, so both propose the
    same boxes.
    """
    world = world if world is not None else distributed.current()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)  # before the optimizer: the parameters are the same tensors either way
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=iterations, power=1.0)
    start, losses = 0, []
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, fingerprint=fingerprint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, losses = int(state["iteration"]), list(state["losses"])
        log.info("multibox: resuming from %s at iteration %d", checkpoint_path, start)
    priors_t = torch.from_numpy(priors)
    n = len(images)
    rows = distributed.shard_batch(min(batch_size, n), world.rank, world.world_size)
    net = distributed.wrap_model(model, world, torch.device("cpu"))
    model.train()
    bar = tqdm(range(start, iterations), desc="multibox: train", unit="it", initial=start, total=iterations,
               disable=not world.is_main)
    t0 = time.perf_counter()
    # Says how long the rest takes on this device after a few iterations (asks first when long).
    eta = LongRunCheck("multibox", start=start, iterations=iterations, device="cpu", can_ask=not world.distributed)
    for it in bar:
        gen = torch.Generator().manual_seed(iteration_seed(seed, it))
        torch.manual_seed(distributed.rank_seed(iteration_seed(seed, it), world.rank))  # dropout
        idx = torch.randperm(n, generator=gen)[:batch_size].numpy()
        flip = (torch.rand(len(idx), generator=gen) < 0.5).numpy()
        idx, flip = idx[rows], flip[rows]  # this process's slice of the global batch
        batch = images[idx].copy()
        batch[flip] = batch[flip, :, ::-1]
        boxes = []
        for j, f in zip(idx, flip):
            b = torch.from_numpy(gt_boxes[j].copy())
            if f:
                b = torch.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], 1)
            boxes.append(b)
        x = images_to_tensor(batch, pixel_mean=pixel_mean, pixel_std=pixel_std).contiguous(memory_format=memory_format)
        offsets, logits = net(x)
        loss, parts = multibox_loss(offsets, logits, priors_t, boxes, alpha=alpha, extra_match_iou=extra_match_iou,
                                    offset_units=offset_units, confidence_loss=confidence_loss, pos_weight=pos_weight,
                                    focal_alpha=focal_alpha, focal_gamma=focal_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(distributed.all_reduce_mean(loss.detach(), world)))
        done = it + 1 - start
        bar.set_postfix(loss=f"{losses[-1]:.3f}", loc=f"{parts['loc']:.3f}", conf=f"{parts['conf']:.3f}",
                        img_s=f"{done * batch_size / (time.perf_counter() - t0):.0f}")
        if world.is_main:
            eta.after_iteration(it + 1)
        if ((it + 1) % checkpoint_every == 0 or it + 1 == iterations) and world.is_main:
            save_checkpoint(checkpoint_path, fingerprint=fingerprint, iteration=it + 1, losses=losses,
                            model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict())
    distributed.sync_buffers(model, world)
    distributed.barrier(world)  # the final checkpoint exists on return, whichever rank returns
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return losses
