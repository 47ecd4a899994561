"""Counted warnings while reading a dataset: fixed-up input is reported, never silent."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """Counts of each kind of fixed-up input, with the first file that showed it."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, where: str, n: int = 1) -> None:
        self.counts[kind] += n
        self.examples.setdefault(kind, where)

    def log(self, prefix: str) -> None:
        for kind, n in sorted(self.counts.items()):
            log.warning("%s: %d %s (first: %s)", prefix, n, kind, self.examples[kind])
