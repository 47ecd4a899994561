"""torchvision's GoogLeNet as a second architecture (``arch: torchvision_googlenet``).

For users who have torchvision's ImageNet weights on disk (``googlenet-1378be20.pth``, or
any checkpoint of this class): the state dict keys are torchvision's own, so such a file
loads as is (`classifier.weights.load_weights`); nothing is ever downloaded.

It is not Table 1 (see `classifier.googlenet` for the differences: 3x3 instead of 5x5
in the third Inception branch, a 2x2 max pool 4, batch norm always on, no LRN, no width
multiplier).  It exposes the same trunk API (`TrunkAPI`) and the same outputs as
`classifier.googlenet.GoogLeNet`, so the training and scoring code treat both alike.
"""

from __future__ import annotations

from torch import Tensor
from torchvision.models import GoogLeNet as _TorchvisionGoogLeNet

from classifier.googlenet import (
    TRUNK_LAYERS,
    ClassifierOutput,
    TrunkAPI,
    check_head_args,
    check_input,
    check_input_size,
    min_input_size,
)
from classifier.inception import Stem, pool_out_ceil


def tv_map_sizes(input_size: int) -> dict[int, int]:
    """Like `classifier.googlenet.map_sizes`, for torchvision's 2x2/2 max pool 4."""
    s8 = Stem.out_size(input_size)
    s16 = pool_out_ceil(s8, 3, 2)
    return {8: s8, 16: s16, 32: pool_out_ceil(s16, 2, 2)}


def _inception_out_channels(module) -> int:
    return sum(
        branch.conv.out_channels if hasattr(branch, "conv") else branch[-1].conv.out_channels
        for branch in (module.branch1, module.branch2, module.branch3, module.branch4)
    )


class TorchvisionGoogLeNet(TrunkAPI, _TorchvisionGoogLeNet):
    """``torchvision.models.GoogLeNet`` (weights=None, freshly initialised) with our trunk API.

    Args:
        num_classes: outputs of ``fc`` and of the aux heads' ``fc2`` (C classes + background).
        input_size: side of the square input that ``forward`` accepts.
        aux_logits: build the auxiliary heads (computed in train mode only).
        transform_input: torchvision's re-normalisation of ImageNet-normalised input; set it
            when loading torchvision's own ImageNet file, whose weights were ported from a
            model trained on a different normalisation.
        dropout, aux_dropout: dropout before ``fc`` and inside the aux heads.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        input_size: int = 224,
        aux_logits: bool = True,
        transform_input: bool = False,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
    ) -> None:
        check_head_args(num_classes, dropout, aux_dropout)
        check_input_size(input_size, min_input_size(tv_map_sizes))
        super().__init__(
            num_classes=num_classes,
            aux_logits=aux_logits,
            transform_input=transform_input,
            init_weights=True,
            dropout=dropout,
            dropout_aux=aux_dropout,
        )
        self.num_classes = num_classes
        self.input_size = input_size
        channels = {"stem": self.conv3.conv.out_channels}
        depth = channels["stem"]
        for name in TRUNK_LAYERS[1:]:
            if not name.startswith("maxpool"):
                depth = _inception_out_channels(getattr(self, name))
            channels[name] = depth
        self._channels = channels

    def stem(self, x: Tensor) -> Tensor:
        """Input transform and conv1 .. maxpool2 (stride 8)."""
        x = self._transform_input(x)
        return self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))

    def forward(self, x: Tensor) -> Tensor | ClassifierOutput:  # type: ignore[override]
        check_input(x, self.input_size)
        out = super().forward(x)
        if isinstance(out, tuple):  # torchvision's GoogLeNetOutputs(logits, aux_logits2, aux_logits1)
            return ClassifierOutput(out.logits, (out.aux_logits1, out.aux_logits2))
        return out
