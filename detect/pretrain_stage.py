"""The pipeline's ``pretrain`` stage: which weights the members (and MultiBox) start from (``classifier.init``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from classifier.pretrain import PretrainResult, run_pretrain, run_pretrain_networks
from detect.errors import ConfigError

INITS = ("pretrained", "scratch", "weights")


@dataclass(frozen=True)
class Initialisation:
    """``classifier`` config whose ``model.weights`` is the starting point (of MultiBox and member 0); with
    ``classifier.init=pretrained``, ``member_classifiers`` and ``pretrained`` hold one config and one
    pretraining result per pretrained network (``pretrain.networks``; empty for ``scratch`` and ``weights``),
    and member k starts from network k mod their count."""

    classifier: DictConfig
    weights: Path | None
    member_classifiers: tuple[DictConfig, ...] = ()
    pretrained: tuple[PretrainResult, ...] = ()

    def for_member(self, member: int) -> DictConfig:
        """The ``classifier`` config ensemble member ``member`` fine-tunes from."""
        if not self.member_classifiers:
            return self.classifier
        return self.member_classifiers[member % len(self.member_classifiers)]


def check_init(classifier: DictConfig) -> None:
    """One-line `ConfigError` for an unknown ``classifier.init`` or one that contradicts ``model.weights``."""
    init = classifier.get("init")
    if init not in INITS:
        raise ConfigError(f"classifier.init must be one of {INITS}, got {init!r}")
    weights = classifier.model.get("weights")
    if init == "weights" and not weights:
        raise ConfigError("classifier.init=weights needs classifier.model.weights=<state-dict file>")
    if init != "weights" and weights:
        raise ConfigError(f"classifier.model.weights is set ({weights}) but classifier.init={init}: "
                          "set classifier.init=weights to start from that file")


def initialise(cfg: DictConfig, *, device: str) -> Initialisation:
    """Resolve ``classifier.init``: pretrain (or take the shipped/cached weights), a user's file, or nothing."""
    check_init(cfg.classifier)
    if cfg.classifier.init == "scratch":
        return Initialisation(cfg.classifier, None)
    if cfg.classifier.init == "weights":
        return Initialisation(cfg.classifier, Path(str(cfg.classifier.model.weights)))
    results = tuple(run_pretrain_networks(cfg, device=device))
    configs = tuple(OmegaConf.merge(cfg.classifier, {"model": {"weights": str(r.weights)}}) for r in results)
    return Initialisation(configs[0], results[0].weights, configs, results)


def multibox_init_weights(cfg: DictConfig, *, device: str) -> Path | None:
    """The network MultiBox starts from, for entry points that run the proposals without the members
    (None when MultiBox is off or starts from scratch)."""
    if "multibox" not in cfg.proposals.sources:
        return None
    mb = cfg.proposals.multibox
    if mb.top_k == 0 or mb.get("init") != "pretrained":
        return None
    if cfg.classifier.get("init") == "pretrained":
        return run_pretrain(cfg, device=device).weights  # network 0 (pretrain.seed): the others are the members'
    return initialise(cfg, device=device).weights
