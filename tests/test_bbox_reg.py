"""Class-specific bounding-box regression (classifier/bbox_reg.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifier.bbox_reg import (
    BboxRegressor,
    BboxRegTrainingSet,
    collect_bbox_reg_features,
    decode_boxes,
    encode_targets,
    fit_bbox_regressors,
    select_examples,
    train_bbox_regressors,
)
from detect.data.record import ImageRecord
from detect.errors import ConfigError, DataError
from post_classifier_toy import tiny_extract, toy_dataset, toy_proposals


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def rcnn_decode(deltas: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """R-CNN's rcnn_predict_bbox_regressor.m formulas (without its eps), written out independently."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
    pw, ph = np.exp(deltas[:, 2]) * w, np.exp(deltas[:, 3]) * h
    return np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=1)


def test_targets_hand_made_and_round_trip():
    p = np.array([[0, 0, 10, 20], [0, 0, 10, 20]], np.float32)  # centre (5, 10), 10 x 20
    g = np.array([[2, 4, 12, 24],    # centre (7, 14), same size: dx = 2/10, dy = 4/20, dw = dh = 0
                  [0, 0, 20, 10]],   # centre (10, 5), 20 x 10: dx = 5/10, dy = -5/20, dw = log 2, dh = -log 2
                 np.float32)
    t = encode_targets(p, g)
    np.testing.assert_allclose(t, [[0.2, 0.2, 0, 0], [0.5, -0.25, np.log(2), -np.log(2)]], atol=1e-6)
    np.testing.assert_allclose(decode_boxes(t, p)[:, 0], g, atol=1e-5)
    np.testing.assert_allclose(rcnn_decode(t, p), g, atol=1e-5)
    # Two groups of deltas decode to two boxes per region.
    two = decode_boxes(np.concatenate([t, np.zeros_like(t)], axis=1), p)
    assert two.shape == (2, 2, 4)
    np.testing.assert_allclose(two[:, 1], p)


def test_select_examples_hand_made():
    boxes = np.array([[0, 0, 10, 10], [20, 10, 30, 20]], np.float32)
    rec = ImageRecord("im", 1, "im.jpg", 40, 30, boxes, np.array([2, 1]), np.zeros(2, bool))
    props = np.array([[0, 0, 10, 8],      # IoU 80/100 = 0.8 with the class-2 box
                      [0, 0, 10, 5],      # IoU 0.5: not an example
                      [20, 10, 30, 19],   # IoU 90/100 = 0.9 with the class-1 box
                      [5, 5, 5, 9]],      # zero width: skipped
                     np.float32)
    regions, gt, labels, overlaps = select_examples(rec, props, min_iou=0.6, include_gt=True,
                                                    max_examples_per_image=None, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(regions, np.concatenate([props[[0, 2]], boxes]))
    np.testing.assert_array_equal(gt, boxes[[0, 1, 0, 1]])
    np.testing.assert_array_equal(labels, [2, 1, 2, 1])
    np.testing.assert_allclose(overlaps, [0.8, 0.9, 1.0, 1.0], rtol=1e-6)
    regions, *_ = select_examples(rec, props, min_iou=0.6, include_gt=False, max_examples_per_image=1,
                                  rng=np.random.default_rng(0))
    assert len(regions) == 1 and any((regions[0] == props[k]).all() for k in (0, 2))


def synthetic(n=60, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 2, (n, dim)).astype(np.float16)
    xy = rng.uniform(0, 50, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (n, 2))], axis=1).astype(np.float32)
    return features, boxes


def test_regressor_recovers_a_constant_shift():
    features, boxes = synthetic()
    labels = np.repeat([1, 2], 30)
    shift = np.array([[0.1, -0.2, np.log(1.2), np.log(0.9)], [-0.3, 0.05, 0.0, np.log(1.5)]], np.float32)
    data = BboxRegTrainingSet(features, boxes, shift[labels - 1], labels, np.ones(60, np.float32))
    reg = train_bbox_regressors(data, num_classes=3, alpha=1000.0, target_norm=20.0)
    # Constant targets: the centred targets are 0, so the weights are exactly 0 and the
    # intercept is the shift, whatever alpha; class 3 had no examples and stays the identity.
    np.testing.assert_array_equal(reg.weights, 0.0)
    np.testing.assert_allclose(reg.biases[:2], shift, atol=1e-6)
    refined = reg.apply(boxes, features)
    assert refined.shape == (60, 3, 4)
    for c in (1, 2):
        np.testing.assert_allclose(refined[:, c - 1], rcnn_decode(np.tile(shift[c - 1], (60, 1)), boxes), atol=1e-4)
    np.testing.assert_allclose(refined[:, 2], boxes, atol=1e-5)
    # With labels: each region refined by its own class only.
    np.testing.assert_allclose(reg.apply(boxes, features, labels=labels), refined[np.arange(60), labels - 1])


def test_regressor_learns_feature_dependent_offsets_per_class():
    features, boxes = synthetic(n=80, dim=3, seed=1)
    f = features.astype(np.float64)
    targets = np.zeros((80, 4))
    targets[:, 0], targets[:, 3] = 0.3 * f[:, 0], 0.1 * f[:, 1] - 0.05  # class 1: dx from feature 0, dh from 1
    targets[40:] = 0.0
    targets[40:, 1] = -0.2 * f[40:, 2]  # class 2: dy from feature 2
    labels = np.repeat([1, 2], 40)
    data = BboxRegTrainingSet(features, boxes, targets.astype(np.float32), labels, np.ones(80, np.float32))
    reg = train_bbox_regressors(data, num_classes=2, alpha=1e-8, target_norm=20.0)
    d = reg.deltas(features)
    np.testing.assert_allclose(d[np.arange(80), labels - 1], targets, atol=1e-4)
    # Weights are (C, 4, D) applied to scaled features: class 1's dx row reads feature 0 only.
    np.testing.assert_allclose(reg.weights[0, 0] * reg.feature_scale, [0.3, 0, 0], atol=1e-4)
    np.testing.assert_allclose(reg.deltas(features, labels=labels), d[np.arange(80), labels - 1], atol=1e-6)


def test_apply_clips_to_the_image_and_checks_labels():
    reg = BboxRegressor(np.zeros((1, 4, 2), np.float32), np.array([[0.0, 0.0, np.log(4.0), 0.0]], np.float32), 1.0)
    boxes = np.array([[10, 10, 20, 20]], np.float32)  # width 10 -> 40 about centre 15: x in [-5, 35]
    np.testing.assert_allclose(reg.apply(boxes, np.zeros((1, 2))), [[[-5, 10, 35, 20]]], atol=1e-5)
    np.testing.assert_allclose(reg.apply(boxes, np.zeros((1, 2)), labels=[1], image_size=(30, 32)),
                               [[0, 10, 32, 20]], atol=1e-5)
    with pytest.raises(ValueError, match="1..1"):
        reg.apply(boxes, np.zeros((1, 2)), labels=[2])


def test_save_load_round_trip_and_bad_file(tmp_path):
    reg = BboxRegressor(np.arange(24, dtype=np.float32).reshape(3, 4, 2), np.ones((3, 4), np.float32), 0.5)
    reg.save(tmp_path / "bbox.npz")
    back = BboxRegressor.load(tmp_path / "bbox.npz")
    np.testing.assert_array_equal(back.weights, reg.weights)
    np.testing.assert_array_equal(back.biases, reg.biases)
    assert back.feature_scale == 0.5
    np.savez(tmp_path / "bad.npz", weights=np.zeros((3, 4, 2)), biases=np.zeros((2, 4)), feature_scale=1.0)
    with pytest.raises(DataError, match="bad.npz"):
        BboxRegressor.load(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="min_iou"):
        collect_bbox_reg_features(None, [], extract=None, min_iou=0.0, include_gt=True, max_examples_per_image=None,
                                  seed=0)


def test_end_to_end_on_tiny_ilsvrc_images(tmp_path):
    dataset = toy_dataset(tmp_path)
    proposals = toy_proposals(dataset)
    extract, model = tiny_extract()
    seen = []

    def counting_extract(ds, regions):
        seen.append([r.image_id for r in ds.records])
        return extract(ds, regions)

    settings = dict(min_iou=0.6, include_gt=True, max_examples_per_image=8, alpha=1000.0, target_norm=20.0)
    data = collect_bbox_reg_features(dataset, proposals, extract=counting_extract, min_iou=0.6, include_gt=True,
                                     max_examples_per_image=8, seed=2)
    assert seen == [["val_1", "val_2", "val_3"]]  # val_4 has no objects: never decoded
    assert data.features.shape == (len(data.labels), model.feature_dim) and (data.overlaps >= 0.6).all()
    assert set(data.labels) == {1, 2} and len(data.labels) <= 8 * 3
    reg = fit_bbox_regressors(dataset, proposals, extract=extract, seed=2, **settings)
    again = fit_bbox_regressors(dataset, proposals, extract=extract, seed=2, **settings)
    np.testing.assert_array_equal(again.weights, reg.weights)
    assert reg.weights.shape == (2, 4, model.feature_dim)
    # Ridge never fits its training targets worse than their mean (the w = 0 solution).
    pred = reg.deltas(data.features, labels=data.labels)
    for c in (1, 2):
        t = data.targets[data.labels == c]
        assert ((pred[data.labels == c] - t) ** 2).sum() <= ((t - t.mean(0)) ** 2).sum() + 1e-6
    reg.save(tmp_path / "bbox.npz")
    refined = BboxRegressor.load(tmp_path / "bbox.npz").apply(data.boxes, data.features, image_size=(48, 64))
    assert refined.shape == (len(data.labels), 2, 4)
    assert (refined[..., 0::2] >= 0).all() and (refined[..., 0::2] <= 64).all() and (refined[..., 1::2] <= 48).all()
