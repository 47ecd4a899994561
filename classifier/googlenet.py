"""GoogLeNet exactly as Table 1 of "Going Deeper with Convolutions" (Szegedy et al., CVPR 2015).

Differences from ``torchvision.models.googlenet`` (offered separately as the
``torchvision_googlenet`` arch, `classifier.tv_googlenet`, for its ImageNet weights):

- the third Inception branch is the paper's **5x5** conv; torchvision's is 3x3
  (pytorch/vision#906), which saves ~0.6M weights;
- max pool 4 is the paper's 3x3/2; torchvision's is 2x2/2;
- LRN after the first pool and after the 3x3 conv (paper Figure 3); torchvision has none;
- batch norm is optional (off = the paper); torchvision always uses it;
- the auxiliary heads use the paper's 5x5/3 average pool; torchvision pools adaptively to 4x4;
- ``width`` multiplier and ``input_size`` for small CPU profiles.

Layer names follow torchvision's where the layers are the same (``inception4a``,
``maxpool3``, ``fc``, ``aux1`` ...), with the stem grouped as ``stem``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from classifier.inception import (
    INCEPTION_SPECS,
    AuxHead,
    Inception,
    Stem,
    check_width,
    pool_out_ceil,
)
from detect.errors import ConfigError

# The trunk in execution order; `trunk(x, start=..., until=...)` runs a contiguous slice of it.
TRUNK_LAYERS: tuple[str, ...] = (
    "stem",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
)
# Nominal output stride of each trunk layer (exact at 224 px: 28, 14, 7 px maps).
LAYER_STRIDES: dict[str, int] = {
    name: 8 if i < 3 else 16 if i < 9 else 32 for i, name in enumerate(TRUNK_LAYERS)
}
# Trunk layer -> auxiliary head fed by its output (paper Section 5: after 4a and 4d).
AUX_TAPS: dict[str, str] = {"inception4a": "aux1", "inception4d": "aux2"}
# Final linear layers whose shape depends on num_classes (re-initialised when fine-tuning).
CLASS_HEAD_KEYS: tuple[str, ...] = ("fc.", "aux1.fc2.", "aux2.fc2.")
AUX_KEYS: tuple[str, ...] = ("aux1.", "aux2.")


class ClassifierOutput(NamedTuple):
    """Training-mode output: main logits ``(N, K)`` and the aux heads' logits (aux1 at 4a, aux2 at 4d)."""

    logits: Tensor
    aux: tuple[Tensor, ...]


class FeatureInfo(NamedTuple):
    channels: int
    stride: int


def map_sizes(input_size: int) -> dict[int, int]:
    """Side of the stride-8, -16 and -32 feature maps for a square ``input_size`` input (0 = empty)."""
    s8 = Stem.out_size(input_size)
    s16 = pool_out_ceil(s8, 3, 2)
    s32 = pool_out_ceil(s16, 3, 2)
    return {8: s8, 16: s16, 32: s32}


def min_input_size(sizes: Callable[[int], dict[int, int]]) -> int:
    """Smallest input side whose stride-32 map (given by ``sizes``, e.g. `map_sizes`) is non-empty."""
    return next(n for n in range(1, 1024) if sizes(n)[32] >= 1)


def check_input_size(input_size: int, minimum: int) -> None:
    if not isinstance(input_size, int) or input_size < minimum:
        raise ConfigError(
            f"classifier input_size must be an integer >= {minimum} (non-empty stride-32 map), got {input_size!r}"
        )


def check_head_args(num_classes: int, dropout: float, aux_dropout: float) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"classifier num_classes must be a positive integer, got {num_classes!r}")
    for key, p in (("dropout", dropout), ("aux_dropout", aux_dropout)):
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"classifier {key} must be in [0, 1), got {p}")


def check_input(x: Tensor, input_size: int) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (input_size, input_size):
        raise ValueError(f"expected images of shape (N, 3, {input_size}, {input_size}), got {tuple(x.shape)}")


class TrunkAPI:
    """Trunk access shared by both architectures (needs ``_channels``, the trunk layers as
    attributes/methods named as in `TRUNK_LAYERS`, and ``avgpool``/``dropout``/``fc``)."""

    _channels: dict[str, int]
    avgpool: nn.Module
    dropout: nn.Module
    fc: nn.Module

    @property
    def feature_dim(self) -> int:
        """Length of the pooled feature vector (`pooled`): 1024 at width 1."""
        return self._channels["inception5b"]

    def feature_info(self, layer: str) -> FeatureInfo:
        """Channels and nominal stride (input px per map cell) of trunk layer ``layer``."""
        _check_layer(layer)
        return FeatureInfo(self._channels[layer], LAYER_STRIDES[layer])

    def trunk(self, x: Tensor, *, start: str | None = None, until: str = "inception5b") -> Tensor:
        """Run trunk layers ``start`` .. ``until`` (both inclusive; default from the image).

        Any input size works here (a whole image for RoI pooling; or, with ``start``, a map
        pooled from the output of the layer before ``start``).
        """
        for name in _layer_slice(start, until):
            x = getattr(self, name)(x)
        return x

    def features(self, x: Tensor, layer: str = "inception5b") -> Tensor:
        """Feature map of ``layer`` for images ``(N, 3, H, W)``: ``(N, channels, ~H/stride, ~W/stride)``."""
        return self.trunk(x, until=layer)

    def head(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` from a 5b map: average pool, dropout, linear."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def pooled(self, x: Tensor) -> Tensor:
        """Pooled 5b feature vector ``(N, feature_dim)`` (1024-d at width 1), e.g. for linear SVMs."""
        return torch.flatten(self.avgpool(self.trunk(x)), 1)


class GoogLeNet(TrunkAPI, nn.Module):
    """Table-1 GoogLeNet: stem, Inception 3a-5b, global average pool, dropout, linear.

    Args:
        num_classes: outputs of the final linear layer (C object classes + background).
        width: multiplier on every channel count (`classifier.inception.scale_channels`);
            1.0 is the paper (1024-d pooled features, ~6.8M weights).
        input_size: side of the square input; 224 is the paper.  ``forward`` accepts only
            this size (the aux heads' FC length depends on it); the final average pool is
            adaptive (the paper's 7x7 at 224 px).
        batch_norm: conv -> BN -> ReLU (no conv bias, no LRN) instead of the paper's conv -> ReLU.
        aux_logits: build the two auxiliary heads (training only; loss weight 0.3 is the trainer's).
        dropout: before the final linear layer (paper: 0.4).
        aux_dropout: inside the auxiliary heads (paper: 0.7).

    ``forward(x)`` takes ``(N, 3, input_size, input_size)``.  In train mode with
    ``aux_logits`` it returns ``ClassifierOutput(logits, (aux1, aux2))``; otherwise (eval) it
    returns the ``(N, num_classes)`` logits and the aux heads are never called.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width: float = 1.0,
        input_size: int = 224,
        batch_norm: bool = False,
        aux_logits: bool = True,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
    ) -> None:
        super().__init__()
        check_head_args(num_classes, dropout, aux_dropout)
        width = check_width(width)
        check_input_size(input_size, min_input_size(map_sizes))
        self.num_classes = num_classes
        self.width = width
        self.input_size = input_size
        self.aux_logits = aux_logits
        sizes = map_sizes(input_size)

        self.stem = Stem(width=width, batch_norm=batch_norm)
        channels = self.stem.out_channels
        self._channels: dict[str, int] = {"stem": channels}
        for name in TRUNK_LAYERS[1:]:
            if name.startswith("maxpool"):
                layer: nn.Module = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            else:
                layer = Inception(channels, INCEPTION_SPECS[name].scaled(width), batch_norm=batch_norm)
                channels = layer.out_channels
            self.add_module(name, layer)
            self._channels[name] = channels

        if aux_logits:
            for tap, aux in AUX_TAPS.items():
                head = AuxHead(
                    self._channels[tap],
                    num_classes,
                    map_size=sizes[16],
                    width=width,
                    dropout=aux_dropout,
                    batch_norm=batch_norm,
                )
                self.add_module(aux, head)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the paper's 7x7/1 average pool at 224 px
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # BVLC's Caffe GoogLeNet recipe: Xavier weights; conv biases 0.2 keep the ReLUs
        # active at the start of training when there is no batch norm.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.2 if isinstance(m, nn.Conv2d) else 0.0)

    def forward(self, x: Tensor) -> Tensor | ClassifierOutput:
        check_input(x, self.input_size)
        with_aux = self.training and self.aux_logits
        aux: list[Tensor] = []
        for name in TRUNK_LAYERS:
            x = getattr(self, name)(x)
            if with_aux and name in AUX_TAPS:
                aux.append(getattr(self, AUX_TAPS[name])(x))
        logits = self.head(x)
        return ClassifierOutput(logits, tuple(aux)) if with_aux else logits


def _check_layer(layer: str) -> None:
    if layer not in TRUNK_LAYERS:
        raise ValueError(f"unknown trunk layer {layer!r}; expected one of {TRUNK_LAYERS}")


def _layer_slice(start: str | None, until: str) -> tuple[str, ...]:
    first = 0
    if start is not None:
        _check_layer(start)
        first = TRUNK_LAYERS.index(start)
    _check_layer(until)
    last = TRUNK_LAYERS.index(until)
    if last < first:
        raise ValueError(f"trunk layer {until!r} comes before {start!r}")
    return TRUNK_LAYERS[first : last + 1]


__all__ = [
    "AUX_KEYS",
    "AUX_TAPS",
    "CLASS_HEAD_KEYS",
    "ClassifierOutput",
    "FeatureInfo",
    "GoogLeNet",
    "LAYER_STRIDES",
    "TRUNK_LAYERS",
    "TrunkAPI",
    "map_sizes",
]
