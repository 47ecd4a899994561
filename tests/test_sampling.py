"""Window labelling by IoU, batch composition (32/96 and the fill rule), jittered stand-in proposals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from classifier.sampling import WindowLabeler, WindowSampler, choose, jittered_proposals
from detect.data.record import ImageRecord
from detect.errors import ConfigError

GT = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
GT_LABELS = np.array([3, 1])
WINDOWS = np.array(
    [
        [0, 0, 10, 10],  # IoU 1 with gt 0
        [0, 0, 10, 5],  # 50 / 100 = 0.5 with gt 0 (the threshold itself is foreground)
        [0, 0, 10, 4],  # 40 / 100 = 0.4
        [5, 0, 15, 10],  # 50 / (100 + 100 - 50) = 0.333 with gt 0
        [5, 0, 25, 10],  # 50 / (200 + 100 - 50) = 0.2 with each gt
        [18, 0, 30, 10],  # 100 / 120 = 0.833 with gt 1
        [40, 0, 50, 10],  # 0
    ],
    np.float32,
)


def test_rcnn_labels_on_hand_made_overlaps():
    labels, overlaps = WindowLabeler()(WINDOWS, GT, GT_LABELS)
    np.testing.assert_allclose(overlaps.numpy(), [1, 0.5, 0.4, 1 / 3, 0.2, 100 / 120, 0], atol=1e-6)
    assert labels.tolist() == [3, 3, 0, 0, 0, 1, 0]


def test_ignore_band_and_low_background_threshold():
    labels, _ = WindowLabeler(fg_iou=0.5, bg_iou=0.3, bg_iou_low=0.1)(WINDOWS, GT, GT_LABELS)
    # 0.4 lies between bg_iou and fg_iou; 0 lies below bg_iou_low: both ignored (-1).
    assert labels.tolist() == [3, 3, -1, -1, 0, 1, -1]


def test_image_without_objects_is_all_background():
    labels, overlaps = WindowLabeler()(WINDOWS, np.zeros((0, 4)), np.zeros(0))
    assert labels.tolist() == [0] * len(WINDOWS) and (overlaps == 0).all()


def test_inconsistent_thresholds_are_rejected():
    with pytest.raises(ConfigError, match="bg_iou"):
        WindowLabeler(fg_iou=0.4, bg_iou=0.5)


@pytest.mark.parametrize(
    "num_fg, num_bg, expected",
    [
        (100, 1000, (32, 96)),  # enough of both: R-CNN's 32 / 96
        (10, 1000, (10, 118)),  # few positives: all of them, background fills the batch
        (0, 1000, (0, 128)),
        (1000, 50, (78, 50)),  # few backgrounds: all of them, positives fill
        (5, 7, (5, 7)),  # too few of both: a smaller batch
    ],
)
def test_batch_composition_and_fill_rule(num_fg, num_bg, expected):
    sampler = WindowSampler(fg_per_batch=32, bg_per_batch=96)
    labels = torch.cat([torch.randint(1, 4, (num_fg,), generator=torch.Generator().manual_seed(0)),
                        torch.zeros(num_bg, dtype=torch.int64)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    fg, bg = sampler(labels, torch.Generator().manual_seed(2))
    assert (len(fg), len(bg)) == expected
    assert (labels[fg] > 0).all() and (labels[bg] == 0).all()
    assert len(set(fg.tolist())) == len(fg) and len(set(bg.tolist())) == len(bg)  # no repeats in a batch
    again = sampler(labels, torch.Generator().manual_seed(2))
    assert torch.equal(fg, again[0]) and torch.equal(bg, again[1])


def test_sampling_is_uniform_over_windows_of_all_images():
    # Image A owns 100 of 1000 background windows, image B the other 900: a uniform draw
    # over windows (not over images) takes ~10% of each batch from A.
    sampler = WindowSampler(fg_per_batch=0, bg_per_batch=50)
    background = torch.arange(1000)
    gen = torch.Generator().manual_seed(0)
    from_a = sum(int((sampler.sample(torch.zeros(0, dtype=torch.int64), background, gen)[1] < 100).sum())
                 for _ in range(200))
    # 10,000 draws, expected 1000, sd ~ 30 (hypergeometric within a batch is tighter still)
    assert 850 < from_a < 1150
    assert WindowSampler().batch_size == 128


def test_choose_large_pool_is_distinct_and_in_range():
    gen = torch.Generator().manual_seed(3)
    idx = choose(1_000_000, 128, gen)
    assert len(idx) == 128 and len(torch.unique(idx)) == 128
    assert 0 <= int(idx.min()) and int(idx.max()) < 1_000_000
    assert sorted(choose(10, 10, gen).tolist()) == list(range(10))
    with pytest.raises(ValueError):
        choose(3, 4, gen)


def _record(boxes, labels, width=64, height=48) -> ImageRecord:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ImageRecord("img", 1, Path("img.png"), width, height, boxes, np.asarray(labels, np.int64),
                       np.zeros(len(boxes), bool))


def test_jittered_proposals_cover_positives_and_background():
    rec = _record([[10, 8, 30, 40], [40, 5, 60, 25]], [1, 2])
    boxes = jittered_proposals(rec, 200, np.random.default_rng(0))
    assert boxes.shape == (200, 4) and boxes.dtype == np.float32
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
    assert (boxes[:, 2:] - boxes[:, :2] >= 1 - 1e-6).all()
    best = box_iou(torch.from_numpy(boxes), torch.from_numpy(rec.boxes)).max(dim=1).values
    assert (best >= 0.5).sum() >= 20 and (best < 0.5).sum() >= 100
    np.testing.assert_array_equal(boxes, jittered_proposals(rec, 200, np.random.default_rng(0)))


def test_jittered_proposals_without_objects_are_random_boxes():
    boxes = jittered_proposals(_record(np.zeros((0, 4)), []), 7, np.random.default_rng(1))
    assert boxes.shape == (7, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
