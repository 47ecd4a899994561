"""Training windows over a detection dataset: labelled once, sampled per batch, warped on demand.

Every image contributes its proposals plus its ground-truth boxes (R-CNN).  Labels are
computed once for all windows; ignored windows (between the IoU thresholds) and
degenerate boxes are dropped from the pool.  A batch is a pure function of the
``torch.Generator`` it is given, so a trainer that seeds one generator per iteration
gets the same batches after a resume.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from classifier.sampling import WindowLabeler, WindowSampler
from classifier.warp import check_warp_args, normalise_image, valid_regions, warp_windows
from detect.data.image_io import load_rgb
from detect.data.record import DetectionDataset, ImageRecord
from detect.errors import DataError

log = logging.getLogger(__name__)


def load_record_image(record: ImageRecord) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of ``record``; `DataError` if its size is not the annotated one
    (its boxes and proposals would then point at the wrong pixels)."""
    image = load_rgb(record.path)
    if image.shape[:2] != (record.height, record.width):
        raise DataError(
            f"{record.path}: decoded image is {image.shape[1]}x{image.shape[0]}, "
            f"annotation says {record.width}x{record.height}"
        )
    return image


@dataclass(frozen=True)
class WindowBatch:
    """One training batch: ``images`` float32 ``(B, 3, S, S)`` (normalised), ``labels`` int64
    ``(B,)`` (0 = background), and where each window came from: ``image_index`` (position in
    the dataset's records), ``boxes`` float32 ``(B, 4)`` xyxy, ``flipped`` bool ``(B,)``."""

    images: Tensor
    labels: Tensor
    image_index: Tensor
    boxes: Tensor
    flipped: Tensor

    def __len__(self) -> int:
        return len(self.labels)


class WindowDataset:
    """The labelled window pool of a training split, and batches sampled from it.

    Args:
        dataset: training split (records with ground truth).
        proposals: one float ``(P_i, 4)`` xyxy array per record, in record order.
        labeler: IoU labelling rule (`WindowLabeler`).
        sampler: batch composition (`WindowSampler`).
        input_size, context_pad, pixel_mean, pixel_std: the warp (`classifier.warp.warp_regions`).
        flip: mirror each window with probability 0.5 (R-CNN's only augmentation).
        include_gt: add the ground-truth boxes to the windows (R-CNN does).
        image_cache: images kept in memory (LRU): normalised float32 ones in warp mode (~2.3 MB for a
            500x375 image; a batch draws its windows from ~100 images, and normalising each whole
            image again for its one or two windows halved the sampling rate), decoded uint8 ones in
            roi mode; windows are sampled across the whole split, so this mostly helps small datasets.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        proposals: Sequence[np.ndarray],
        *,
        labeler: WindowLabeler,
        sampler: WindowSampler,
        input_size: int,
        context_pad: float,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        flip: bool = True,
        include_gt: bool = True,
        image_cache: int = 32,
    ) -> None:
        check_warp_args(input_size, context_pad)
        if len(proposals) != len(dataset):
            raise DataError(
                f"{dataset.name} {dataset.split}: proposals for {len(proposals)} images, dataset has {len(dataset)}"
            )
        self.dataset = dataset
        self.sampler = sampler
        self.input_size = input_size
        self.context_pad = context_pad
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        self.flip = flip
        self.image_cache = image_cache
        self._images: OrderedDict[tuple[int, bool], np.ndarray] = OrderedDict()

        image_index = [np.zeros(0, np.int64)]
        boxes = [np.zeros((0, 4), np.float32)]
        labels = [np.zeros(0, np.int64)]
        skipped = ignored = 0
        for i, rec in enumerate(tqdm(dataset.records, desc="classifier: label windows", unit="img", leave=False)):
            win = np.asarray(proposals[i], np.float32).reshape(-1, 4)
            if include_gt:
                win = np.concatenate([win, rec.boxes.astype(np.float32)])
            ok = valid_regions(win, width=rec.width, height=rec.height)
            skipped += int((~ok).sum())
            win = win[ok]
            lab, _ = labeler(win, rec.boxes, rec.labels)
            keep = (lab >= 0).numpy()
            ignored += int((~keep).sum())
            image_index.append(np.full(int(keep.sum()), i, np.int64))
            boxes.append(win[keep])
            labels.append(lab.numpy()[keep])
        self.image_index = torch.from_numpy(np.concatenate(image_index))
        self.boxes = torch.from_numpy(np.concatenate(boxes))
        self.labels = torch.from_numpy(np.concatenate(labels))
        self._positive = torch.nonzero(self.labels > 0).flatten()
        self._background = torch.nonzero(self.labels == WindowLabeler.BACKGROUND).flatten()
        self.stats = {
            "images": len(dataset),
            "positive": len(self._positive),
            "background": len(self._background),
            "ignored": ignored,
            "skipped_degenerate": skipped,
        }
        if len(self.labels) == 0:
            raise DataError(f"{dataset.name} {dataset.split}: no training windows (no proposals and no ground truth)")
        log.info("classifier windows: %s", ", ".join(f"{k} {v}" for k, v in self.stats.items()))
        if skipped:
            log.warning("classifier windows: skipped %d degenerate boxes (zero size, NaN or outside the image)",
                        skipped)
        if not len(self._positive):
            log.warning("classifier windows: no positive windows; batches hold background only")

    def __len__(self) -> int:
        """Windows in the pool (positives + background)."""
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Decoded ``(H, W, 3)`` uint8 RGB image of record ``i`` (LRU-cached; what roi mode resizes)."""
        return self._cached(i, normalised=False)

    def normalised_image(self, i: int) -> np.ndarray:
        """Record ``i``'s image as `classifier.warp.normalise_image` makes it: float32 ``(H, W, 3)``
        (LRU-cached; what warp mode's windows are cut from)."""
        return self._cached(i, normalised=True)

    def _cached(self, i: int, *, normalised: bool) -> np.ndarray:
        key = (i, normalised)
        if key in self._images:
            self._images.move_to_end(key)
            return self._images[key]
        image = load_record_image(self.dataset.records[i])
        if normalised:
            image = normalise_image(image, pixel_mean=self.pixel_mean, pixel_std=self.pixel_std)
        if self.image_cache > 0:
            self._images[key] = image
            while len(self._images) > self.image_cache:
                self._images.popitem(last=False)
        return image

    def sample(self, generator: torch.Generator) -> WindowBatch:
        """A batch of windows chosen by the sampler (positives first), warped and maybe flipped.

        Deterministic given ``generator``'s state: the window choice and the flips are
        drawn from it, in that order.
        """
        fg, bg = self.sampler.sample(self._positive, self._background, generator)
        idx = torch.cat([fg, bg])
        if self.flip:
            flipped = torch.rand(len(idx), generator=generator) < 0.5
        else:
            flipped = torch.zeros(len(idx), dtype=torch.bool)
        image_index, boxes = self.image_index[idx], self.boxes[idx]
        owner = image_index.numpy()
        sources = {i: self.normalised_image(i) for i in np.unique(owner).tolist()}  # each decoded once per batch
        hwc = warp_windows(sources, owner, boxes.numpy(), input_size=self.input_size, context_pad=self.context_pad,
                           flip=flipped.numpy())
        images = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()
        return WindowBatch(images, self.labels[idx], image_index, boxes, flipped)


__all__ = ["WindowBatch", "WindowDataset", "load_record_image"]
