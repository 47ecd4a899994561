"""Proposal metrics on hand-made boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detect.data.record import ImageRecord
from eval.proposal_metrics import proposal_metrics


def rec(boxes, index=1):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return ImageRecord(f"im{index}", index, Path("x"), 200, 200, boxes, np.ones(n, np.int64), np.zeros(n, bool))


def test_coverage_recall_and_abo():
    # GT a = 100x100 (thr 0.5), GT b = 10x10 (thr 100/400 = 0.25).
    records = [rec([[0, 0, 99, 99], [150, 150, 159, 159]]), rec([], 2)]
    proposals = [
        np.array([
            [0, 0, 99, 59],        # vs a: 100*60/10000 = 0.6 (>= .5, < .7)
            [150, 150, 159, 152],  # vs b: 10*3/100 = 0.3 (>= .25 threshold, < .5)
            [0, 0, 99, 79],        # vs a: 0.8 -- but only third in rank
        ], np.float32),
        np.zeros((5, 4), np.float32),
    ]
    m = proposal_metrics(records, proposals, curve_counts=(1, 2, 3))
    assert m.per_image == 4.0  # (3 + 5) / 2
    assert m.num_ground_truth == 2
    assert m.coverage == 1.0  # both pass their own threshold
    assert m.recall_50 == 0.5 and m.recall_70 == 0.5  # a: best 0.8; b: best 0.3
    assert m.average_best_overlap == pytest.approx((0.8 + 0.3) / 2)
    # top-1: only a is covered; top-2: both.  recall@0.5 reaches 0.5 at k = 1.
    assert m.curve_coverage == (0.5, 1.0, 1.0)
    assert m.curve_recall_50 == (0.5, 0.5, 0.5)


def test_image_without_proposals_counts_as_missed():
    m = proposal_metrics([rec([[0, 0, 99, 99]])], [np.zeros((0, 4))], curve_counts=(1,))
    assert m.coverage == 0.0 and m.average_best_overlap == 0.0 and m.per_image == 0.0
