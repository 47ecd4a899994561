"""Classification batches for pretraining: the paper's augmentation, worker processes, exact resume.

Every sample's augmentation draws from its own seed, derived from ``(seed, iteration,
position in the batch)``, and batches are a pure function of ``(seed, iteration)``
(`IterationBatchSampler`), so a run resumed at iteration ``k`` sees exactly the batches
and crops the uninterrupted run saw, however many `DataLoader` workers there are.

Training transform (Szegedy et al. 2015, section 6): a random crop of 8-100% of the
image area with aspect ratio in [3/4, 4/3] (``RandomResizedCrop``), resized with a
randomly chosen interpolation, photometric distortion (``ColorJitter``), mirroring.
Evaluation: short side resized to ``input_size * resize_ratio`` (256/224 as the
ILSVRC recipes), one centre crop.  All ``torchvision.transforms.v2``.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import InterpolationMode, v2

from detect.data.classification import ClassificationDataset
from detect.data.image_io import load_rgb
from detect.errors import ConfigError

INTERPOLATIONS = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
                  "bicubic": InterpolationMode.BICUBIC}


def train_transform(*, input_size: int, crop_scale: Sequence[float], crop_ratio: Sequence[float],
                    interpolations: Sequence[str], brightness: float, contrast: float, saturation: float,
                    hue: float, flip: bool, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> v2.Transform:
    """uint8 ``(3, H, W)`` -> float32 ``(3, input_size, input_size)`` normalised, randomly cropped and distorted."""
    unknown = [i for i in interpolations if i not in INTERPOLATIONS]
    if unknown or not interpolations:
        raise ConfigError(f"pretrain.augment.interpolations must be a non-empty list of {list(INTERPOLATIONS)}, "
                          f"got {list(interpolations)}")
    crops = [v2.RandomResizedCrop(input_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio),
                                  interpolation=INTERPOLATIONS[i], antialias=True) for i in interpolations]
    steps = [v2.RandomChoice(crops) if len(crops) > 1 else crops[0]]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if brightness or contrast or saturation or hue:
        steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pixel_mean), list(pixel_std))]
    return v2.Compose(steps)


def eval_transform(*, input_size: int, resize_ratio: float, pixel_mean: Sequence[float],
                   pixel_std: Sequence[float]) -> v2.Transform:
    """uint8 ``(3, H, W)`` -> the normalised ``input_size`` centre crop of the image resized to short side
    ``round(input_size * resize_ratio)``."""
    return v2.Compose([
        v2.Resize(int(round(input_size * resize_ratio)), interpolation=InterpolationMode.BILINEAR, antialias=True),
        v2.CenterCrop(input_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(pixel_mean), list(pixel_std)),
    ])


def decode(path: str) -> Tensor:
    """uint8 ``(3, H, W)`` RGB tensor of an image file (any mode the readers accept)."""
    return torch.from_numpy(np.array(load_rgb(path), copy=True)).permute(2, 0, 1)


class ClassificationSamples(Dataset):
    """``dataset[(index, seed)]`` -> ``(image, label)``: record ``index`` under ``transform``, whose random
    draws come from ``seed`` alone (the caller's global generator is left untouched)."""

    def __init__(self, dataset: ClassificationDataset, transform: v2.Transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = key
        record = self.dataset.records[index]
        image = decode(record.path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), record.label


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of ``n`` samples used in ``epoch``."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x5EED])).permutation(n)


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(sample index, augmentation seed)`` for iterations ``start .. iterations - 1``.

    Iteration ``t`` takes positions ``[t * B, (t + 1) * B)`` of the endless sequence of epoch
    permutations (`epoch_order`), so epochs follow each other without a partial last batch
    and ``iterations_per_epoch = n / B``.  With DDP, process ``rank`` keeps its contiguous
    ``1 / world_size`` slice of each global batch.
    """

    def __init__(self, n: int, *, batch_size: int, seed: int, start: int, iterations: int,
                 rank: int = 0, world_size: int = 1):
        if n < 1:
            raise ConfigError("pretraining needs at least one training image")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.iterations, self.rank, self.world_size = start, iterations, rank, world_size

    def __len__(self) -> int:
        return max(self.iterations - self.start, 0)

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        first = iteration * self.batch_size
        positions = range(first, first + self.batch_size)
        orders: dict[int, np.ndarray] = {}
        out = []
        for j, pos in enumerate(positions):
            epoch = pos // self.n
            if epoch not in orders:
                orders[epoch] = epoch_order(self.seed, epoch, self.n)
            sample_seed = int(np.random.SeedSequence([self.seed, iteration, j]).generate_state(1)[0])
            out.append((int(orders[epoch][pos % self.n]), sample_seed))
        per = self.batch_size // self.world_size
        return out[self.rank * per:(self.rank + 1) * per]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.iterations):
            yield self.batch(it)
