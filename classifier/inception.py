"""Reusable GoogLeNet (Inception v1) blocks: conv unit, stem, Inception module, auxiliary head.

Shared by the Table-1 region classifier (`classifier.googlenet`) and the MultiBox
proposal network, which builds its own trunk from the same pieces.

Channel counts are the paper's (Szegedy et al. 2015, Table 1) times a ``width``
multiplier: each count ``c`` becomes ``max(1, round_half_up(c * width))``
(`scale_channels`), independently per branch, so a module's output depth is the
sum of its scaled branches. ``width=1.0`` reproduces the paper exactly.

All maps are NCHW float tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detect.errors import ConfigError

# Caffe's bvlc_googlenet LRN: 5 channels, alpha 1e-4, beta 0.75, k 1.  PyTorch divides
# alpha by `size` like Caffe does, so the numbers carry over unchanged.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded half up, at least 1 (``width=1.0`` is the identity)."""
    return max(1, int(math.floor(channels * width + 0.5)))


def check_width(width: float) -> float:
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ConfigError(f"classifier width must be a positive number, got {width!r}")
    return float(width)


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def pool_out_ceil(size: int, kernel: int, stride: int) -> int:
    """Output length of an unpadded ``ceil_mode=True`` max pool, as PyTorch (and Caffe) compute it.

    Returns 0 when the input is smaller than the kernel (PyTorch would raise).
    """
    if size < kernel:
        return 0
    out = -(-(size - kernel) // stride) + 1
    if (out - 1) * stride >= size:  # PyTorch drops a last window that starts outside the input
        out -= 1
    return out


class BasicConv2d(nn.Module):
    """Conv -> (BatchNorm) -> ReLU.  Without batch norm the conv has a bias, as in the paper."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not batch_norm
        )
        # eps 1e-3 as in BN-Inception (and torchvision's googlenet)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


@dataclass(frozen=True)
class InceptionSpec:
    """One Table-1 row: output depths of the four branches and their 1x1 reductions."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj

    def scaled(self, width: float) -> "InceptionSpec":
        return InceptionSpec(
            *(scale_channels(c, width) for c in (
                self.ch1x1, self.ch3x3red, self.ch3x3, self.ch5x5red, self.ch5x5, self.pool_proj))
        )


# Table 1 of "Going Deeper with Convolutions": #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_SPECS: dict[str, InceptionSpec] = {
    "inception3a": InceptionSpec(64, 96, 128, 16, 32, 32),
    "inception3b": InceptionSpec(128, 128, 192, 32, 96, 64),
    "inception4a": InceptionSpec(192, 96, 208, 16, 48, 64),
    "inception4b": InceptionSpec(160, 112, 224, 24, 64, 64),
    "inception4c": InceptionSpec(128, 128, 256, 24, 64, 64),
    "inception4d": InceptionSpec(112, 144, 288, 32, 64, 64),
    "inception4e": InceptionSpec(256, 160, 320, 32, 128, 128),
    "inception5a": InceptionSpec(256, 160, 320, 32, 128, 128),
    "inception5b": InceptionSpec(384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    """The Inception module with dimension reductions (paper Figure 2b).

    Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> **5x5**;
    3x3/1 max pool -> 1x1 ("pool proj").  Spatial size is preserved.
    (torchvision's ``googlenet`` uses a 3x3 kernel in the third branch, pytorch/vision#906;
    this module uses the paper's 5x5.)

    Input ``(N, in_channels, H, W)`` -> output ``(N, spec.out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, spec: InceptionSpec, *, batch_norm: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.branch1 = BasicConv2d(in_channels, spec.ch1x1, 1, batch_norm=batch_norm)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, spec.ch3x3red, 1, batch_norm=batch_norm),
            BasicConv2d(spec.ch3x3red, spec.ch3x3, 3, padding=1, batch_norm=batch_norm),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, spec.ch5x5red, 1, batch_norm=batch_norm),
            BasicConv2d(spec.ch5x5red, spec.ch5x5, 5, padding=2, batch_norm=batch_norm),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, spec.pool_proj, 1, batch_norm=batch_norm),
        )

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class Stem(nn.Module):
    """GoogLeNet's stem (Table 1 rows 1-4, Figure 3): output stride 8, 192 channels at width 1.

    7x7/2 conv 64 -> 3x3/2 max pool -> LRN -> 1x1 conv 64 ("reduce") -> 3x3 conv 192 -> LRN
    -> 3x3/2 max pool.  Max pools use ``ceil_mode`` (Caffe's rounding), so 224 px -> 112 -> 56
    -> 28.  With ``batch_norm`` the LRN layers are dropped, as BN-Inception (Ioffe & Szegedy
    2015) did: batch norm supersedes them.

    Input ``(N, 3, H, W)`` -> output ``(N, out_channels, ~H/8, ~W/8)``.
    """

    stride = 8

    def __init__(self, *, width: float = 1.0, batch_norm: bool = False) -> None:
        super().__init__()
        c64, c192 = scale_channels(64, width), scale_channels(192, width)

        def lrn() -> nn.Module:
            return nn.Identity() if batch_norm else nn.LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)

        self.conv1 = BasicConv2d(3, c64, 7, stride=2, padding=3, batch_norm=batch_norm)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = lrn()
        self.conv2 = BasicConv2d(c64, c64, 1, batch_norm=batch_norm)
        self.conv3 = BasicConv2d(c64, c192, 3, padding=1, batch_norm=batch_norm)
        self.lrn2 = lrn()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.out_channels = c192

    @staticmethod
    def out_size(size: int) -> int:
        """Spatial output length for an input of length ``size`` (0 if too small)."""
        s = pool_out_ceil(conv_out(size, 7, 2, 3), 3, 2)
        return pool_out_ceil(s, 3, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        return self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))


class AuxHead(nn.Module):
    """Auxiliary classifier (paper Section 5), attached after 4a and 4d during training.

    5x5/3 average pool -> 1x1 conv 128 + ReLU -> FC 1024 + ReLU -> dropout 0.7 -> linear.
    On the paper's 14x14 maps the pool gives 4x4, so FC 1024 sees 128*4*4 = 2048 inputs.  For
    smaller inputs the pool kernel is clipped to the map (a 4x4 map pools to 1x1), so
    ``map_size`` (the side of the input map) fixes the FC's input length.  128 and 1024 are
    scaled by ``width``.

    Input ``(N, in_channels, map_size, map_size)`` -> logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        map_size: int,
        width: float = 1.0,
        dropout: float = 0.7,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if map_size < 1:
            raise ConfigError(f"auxiliary head: feature map side must be >= 1, got {map_size}")
        kernel = min(5, map_size)
        grid = conv_out(map_size, kernel, 3)
        c128, c1024 = scale_channels(128, width), scale_channels(1024, width)
        self.pool = nn.AvgPool2d(kernel, stride=3)
        self.conv = BasicConv2d(in_channels, c128, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(c128 * grid * grid, c1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(c1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))
