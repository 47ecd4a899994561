"""Build the region classifier network named by ``classifier.arch`` (Hydra instantiates this)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from classifier.googlenet import AUX_KEYS, CLASS_HEAD_KEYS, GoogLeNet
from classifier.weights import load_weights
from detect.errors import ConfigError, config_int

ARCHS = ("googlenet", "torchvision_googlenet")


def build_classifier(
    arch: str,
    *,
    num_classes: int,
    width: float = 1.0,
    input_size: int = 224,
    batch_norm: bool | None = None,
    aux_logits: bool = True,
    dropout: float = 0.4,
    aux_dropout: float = 0.7,
    weights: str | Path | None = None,
    transform_input: bool = False,
) -> nn.Module:
    """A freshly initialised classifier, optionally initialised from a local weights file.

    Args:
        arch: ``googlenet`` (Table 1, `classifier.googlenet.GoogLeNet`) or
            ``torchvision_googlenet`` (`classifier.tv_googlenet.TorchvisionGoogLeNet`).
        num_classes: C object classes + background.
        width: channel multiplier (googlenet only; torchvision_googlenet needs 1.0).
        input_size: side of the square input windows.
        batch_norm: None = the architecture's own (googlenet: off, as the paper;
            torchvision_googlenet: always on).  googlenet accepts True/False;
            torchvision_googlenet rejects False.
        aux_logits: build the auxiliary heads (used in training only).
        dropout, aux_dropout: paper values 0.4 and 0.7.
        weights: local state-dict file to initialise from (``torch.load(weights_only=True)``).
            Every key and shape must match the built model, except that the final linear
            layers (``fc``, ``aux*.fc2``) may have a different class count (they are then
            re-initialised: fine-tuning from ImageNet) and the aux heads may be absent.
            Mismatches raise `detect.errors.UserError` naming the file and the key.
        transform_input: torchvision_googlenet only (set it for torchvision's ImageNet file).
    """
    config_int("classifier.model.input_size", input_size, low=1)
    if arch == "googlenet":
        if transform_input:
            raise ConfigError("classifier transform_input is only available for arch=torchvision_googlenet")
        model: nn.Module = GoogLeNet(
            num_classes,
            width=width,
            input_size=input_size,
            batch_norm=bool(batch_norm),
            aux_logits=aux_logits,
            dropout=dropout,
            aux_dropout=aux_dropout,
        )
    elif arch == "torchvision_googlenet":
        from classifier.tv_googlenet import TorchvisionGoogLeNet

        if width != 1.0:
            raise ConfigError(
                f"arch=torchvision_googlenet has no width multiplier; set classifier.width=1.0 (got {width})"
            )
        if batch_norm is False:
            raise ConfigError(
                "arch=torchvision_googlenet always uses batch norm; set classifier.batch_norm=null or true"
            )
        model = TorchvisionGoogLeNet(
            num_classes,
            input_size=input_size,
            aux_logits=aux_logits,
            transform_input=transform_input,
            dropout=dropout,
            aux_dropout=aux_dropout,
        )
    else:
        raise ConfigError(f"unknown classifier arch {arch!r}; expected one of {ARCHS}")
    if weights:
        load_weights(model, weights, replaceable=CLASS_HEAD_KEYS, optional=AUX_KEYS)
    return model
