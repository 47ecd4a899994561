"""Ensemble settings and member seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detect.errors import ConfigError

SCORE_KINDS = ("softmax", "svm")


@dataclass(frozen=True)
class EnsembleSettings:
    """How members are combined into detections (conf/ensemble/default.yaml)."""

    size: int
    members: list[int] | None
    score: str
    nms_iou: float
    score_threshold: float
    max_per_image: int
    max_per_class: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"ensemble.size must be >= 1, got {self.size}")
        if self.score not in SCORE_KINDS:
            raise ConfigError(f"ensemble.score must be one of {SCORE_KINDS}, got {self.score!r}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"ensemble.nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_per_image < 1 or self.max_per_class < 1:
            raise ConfigError("ensemble.max_per_image and ensemble.max_per_class must be >= 1")
        for k in self.member_ids:
            if not 0 <= k < self.size:
                raise ConfigError(f"ensemble.members: member {k} is not in 0..{self.size - 1}")

    @property
    def member_ids(self) -> list[int]:
        return list(range(self.size)) if self.members is None else [int(k) for k in self.members]


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member``: independent streams, so seed=1/member=0 != seed=0/member=1."""
    return int(np.random.SeedSequence([seed, member]).generate_state(1)[0])
