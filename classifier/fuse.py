"""Batch norm folded into the preceding convolution, for scoring.

In eval mode a batch-norm layer is a fixed per-channel affine map, so ``bn(conv(x))`` is one
convolution with rescaled weights and a bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``).
Folded, the demo's width-0.125 / 64 px GoogLeNet scored 1.08x and 1.55x the windows per second
on one CPU thread in two runs (`benchmarks/cpu_speedups.py`, benchmarks/RESULTS.md).  Outputs
equal the unfolded network's to float rounding (~1e-5 on the logits).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.googlenet import BasicConv2d as TorchvisionBasicConv2d

from classifier.inception import BasicConv2d

# Blocks whose forward is exactly ``relu(bn(conv(x)))``: ours and torchvision's googlenet's.
_CONV_BN_BLOCKS: tuple[type, ...] = (BasicConv2d, TorchvisionBasicConv2d)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv -> batch norm block folded into one conv.

    ``model`` itself is not changed (it may go on training).  Networks without batch norm come
    back as an unchanged eval-mode copy.  The copy is for inference only: training it would
    train the folded weights, not batch norm.
    """
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, _CONV_BN_BLOCKS) and isinstance(block.bn, nn.BatchNorm2d):
            block.conv = fuse_conv_bn_eval(block.conv, block.bn)
            block.bn = nn.Identity()
    return folded


__all__ = ["fold_batch_norm"]
