"""Ensemble settings and member seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detect.errors import ConfigError, config_float, config_int

SCORE_KINDS = ("softmax", "svm")


@dataclass(frozen=True)
class EnsembleSettings:
    """How members are combined into detections (conf/ensemble/default.yaml)."""

    size: int
    members: list[int] | None
    member: int | None
    score: str
    nms_iou: float
    score_threshold: float
    max_per_image: int
    max_per_class: int
    workers: int = 1  # detectors exported before the key existed trained their members one at a time
    box_voting_iou: float | None = None  # and kept NMS's boxes

    def __post_init__(self) -> None:
        # Types first: a command-line typo (ensemble.size=abc) is a one-line error, not a TypeError.
        config_int("ensemble.size", self.size, low=1)
        if self.score not in SCORE_KINDS:
            raise ConfigError(f"ensemble.score must be one of {SCORE_KINDS}, got {self.score!r}")
        if not 0.0 < config_float("ensemble.nms_iou", self.nms_iou) <= 1.0:
            raise ConfigError(f"ensemble.nms_iou must be in (0, 1], got {self.nms_iou}")
        config_float("ensemble.score_threshold", self.score_threshold)
        config_int("ensemble.max_per_image", self.max_per_image, low=1)
        config_int("ensemble.max_per_class", self.max_per_class, low=1)
        config_int("ensemble.workers", self.workers, low=1)
        if self.box_voting_iou is not None and not 0.0 < config_float("ensemble.box_voting_iou",
                                                                      self.box_voting_iou) <= 1.0:
            raise ConfigError(f"ensemble.box_voting_iou must be in (0, 1] or null, got {self.box_voting_iou}")
        if self.member is not None:
            config_int("ensemble.member", self.member, low=0)
        if self.members is not None:
            if isinstance(self.members, (str, bytes)) or not hasattr(self.members, "__iter__"):
                raise ConfigError(f"ensemble.members must be a list of member indices or null, got {self.members!r}")
            for i, k in enumerate(self.members):
                config_int(f"ensemble.members[{i}]", k, low=0)
        if self.member is not None and self.members is not None:
            raise ConfigError("set ensemble.member (one job per member) or ensemble.members (a subset), not both")
        for k in self.member_ids:
            if not 0 <= k < self.size:
                raise ConfigError(f"ensemble.members: member {k} is not in 0..{self.size - 1}")

    @property
    def member_ids(self) -> list[int]:
        if self.member is not None:
            return [int(self.member)]
        return list(range(self.size)) if self.members is None else [int(k) for k in self.members]


def shared_seed(seed: int) -> int:
    """Seed of the fine-tuning every member shares (``classifier.shared``): a stream no member index gives."""
    return int(np.random.SeedSequence([seed, 2**32 - 1, 0x5EED]).generate_state(1)[0])


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member``: independent streams, so seed=1/member=0 != seed=0/member=1."""
    return int(np.random.SeedSequence([seed, member]).generate_state(1)[0])
