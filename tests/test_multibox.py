"""MultiBox: priors, greedy matching, loss, a tiny overfit, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detect.checkpoint import load_checkpoint, save_checkpoint
from detect.errors import UserError
from proposals.multibox import (
    UNMATCHED,
    MultiBoxNet,
    MultiBoxProposer,
    grid_priors,
    kmeans_shapes,
    match_priors,
    multibox_loss,
)
from proposals.multibox_train import train_multibox

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_kmeans_shapes_deterministic_and_sorted():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.5, (200, 2))
    boxes = np.c_[xy, xy + rng.uniform(0.1, 0.5, (200, 2))]
    a = kmeans_shapes(boxes, num_shapes=8, seed=3)
    b = kmeans_shapes(boxes, num_shapes=8, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8, 2) and np.all(np.diff(a[:, 0] * a[:, 1]) >= 0)
    assert np.all((a >= 0.1 - 1e-6) & (a <= 0.5 + 1e-6))  # inside the range of the drawn sizes


def test_grid_priors_centre_every_shape_on_every_cell():
    shapes = np.array([[0.2, 0.4], [0.5, 0.5]], np.float32)
    priors = grid_priors(shapes, 2)
    # (row, column, shape) order; cell centres at 0.25 and 0.75.
    np.testing.assert_allclose(priors[0], [0.15, 0.05, 0.35, 0.45])
    np.testing.assert_allclose(priors[1], [0.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(priors[2], [0.65, 0.05, 0.85, 0.45])  # row 0, column 1
    np.testing.assert_allclose(priors[5], [0.0, 0.5, 0.5, 1.0])  # row 1, column 0, shape 1
    assert priors.shape == (8, 4)


def test_head_output_order_matches_grid_priors():
    model = MultiBoxNet(num_shapes=3, width=0.125, input_size=64, batch_norm=False, feature_layer="inception4e")
    assert model.grid == 4 and model.num_priors == 48
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.weight.zero_()
        model.head.bias[4::5] = torch.tensor([1.0, 2.0, 3.0])  # confidence logit of shape a = a + 1
        offsets, logits = model(torch.zeros(2, 3, 64, 64))
    assert offsets.shape == (2, 48, 4) and logits.shape == (2, 48)
    np.testing.assert_array_equal(logits[0].numpy(), np.tile([1.0, 2.0, 3.0], 16))


def test_too_few_boxes_for_priors():
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="at least num_shapes=4"):
        kmeans_shapes(np.zeros((2, 4)), num_shapes=4, seed=0)


def test_greedy_matching_hand_case():
    priors = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 60]], dtype=torch.float32)
    gt = torch.tensor([[0, 0, 19, 19], [0, 0, 11, 11]], dtype=torch.float32)
    # IoUs: prior1/gt0 = 361/400 = .90 (highest, taken first); prior0/gt1 = 100/121 = .83
    # (prior1/gt1 = 121/400 = .30 is not considered: prior1 is already used); prior2 unmatched.
    np.testing.assert_array_equal(match_priors(priors, gt).numpy(), [1, 0, UNMATCHED])
    assert (match_priors(priors, torch.zeros((0, 4))) == UNMATCHED).all()


def test_extra_matches_keep_bipartite_assignment():
    priors = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [0, 0, 18, 18], [50, 50, 60, 60]], dtype=torch.float32)
    gt = torch.tensor([[0, 0, 19, 19], [0, 0, 11, 11]], dtype=torch.float32)
    # Bipartite as in the hand case above (prior1 -> gt0, prior0 -> gt1); prior2's best is gt0 at
    # 324/361 = .90 >= .5, so it is added; prior3 overlaps nothing.
    np.testing.assert_array_equal(match_priors(priors, gt, extra_match_iou=0.5).numpy(), [1, 0, 0, UNMATCHED])
    # At 0.95 nothing is added: the bipartite matches alone.
    np.testing.assert_array_equal(match_priors(priors, gt, extra_match_iou=0.95).numpy(), [1, 0, UNMATCHED, UNMATCHED])


def test_pos_weight_scales_the_matched_term():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5]])]
    logits = torch.zeros(1, 2)  # p = 0.5: each prior's logistic loss is log 2
    for w in (1.0, 3.0):
        _, parts = multibox_loss(torch.zeros(1, 2, 4), logits, priors, gt, alpha=0.3, extra_match_iou=None,
                                 pos_weight=w)
        assert parts["conf"] == pytest.approx((w + 1) * np.log(2) / 2, rel=1e-6)


def test_loss_is_zero_confidence_target_and_exact_location():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    gt = [torch.tensor([[0.1, 0.0, 0.5, 0.5]])]
    offsets = torch.zeros(1, 2, 4)
    offsets[0, 0] = gt[0][0] - priors[0]  # exact offsets for the matched prior
    logits = torch.tensor([[20.0, -20.0]])  # confident and right
    loss, parts = multibox_loss(offsets, logits, priors, gt, alpha=0.3, extra_match_iou=None, pos_weight=1.0)
    assert parts["loc"] == pytest.approx(0.0) and parts["conf"] < 1e-6


def _toy_data(n=8, s=64):
    rng = np.random.default_rng(0)
    images = np.full((n, s, s, 3), 40, np.uint8)
    boxes = []
    for i in range(n):
        x0, y0 = rng.integers(4, 28, 2)
        images[i, y0 : y0 + 24, x0 : x0 + 24] = 220
        boxes.append(np.array([[x0, y0, x0 + 24, y0 + 24]], np.float32) / s)
    return images, boxes


def _train(tmp_path, iterations, name="mb.pt", every=100, kill_at=None):
    torch.manual_seed(0)
    images, boxes = _toy_data()
    model = MultiBoxNet(num_shapes=2, width=0.125, input_size=64, batch_norm=True, feature_layer="inception4e")
    priors = grid_priors(kmeans_shapes(np.concatenate(boxes + [b * 0.5 for b in boxes]), num_shapes=2, seed=0),
                         model.grid)
    if kill_at is not None:
        calls = []

        def kill(module, args):
            calls.append(1)
            if len(calls) > kill_at:
                raise KeyboardInterrupt("killed")

        model.register_forward_pre_hook(kill)
    losses = train_multibox(model, priors, images, boxes, iterations=iterations, batch_size=4, lr=0.05,
                            momentum=0.9, weight_decay=0.0, alpha=0.3, extra_match_iou=0.5, pos_weight=1.0,
                            pixel_mean=MEAN, pixel_std=STD, seed=1,
                            checkpoint_path=tmp_path / name, checkpoint_every=every, fingerprint={"width": 0.125})
    return model, priors, losses


def test_loss_decreases_on_tiny_set(tmp_path):
    model, priors, losses = _train(tmp_path, 40)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    proposer = MultiBoxProposer(model, priors, network_key="k", top_k=3, nms_iou=0.7, min_size=1.0, pixel_mean=MEAN, pixel_std=STD)
    boxes, scores = proposer(np.zeros((50, 80, 3), np.uint8))
    assert boxes.shape[1] == 4 and len(boxes) <= 3 and np.all(np.diff(scores) <= 0)
    assert boxes[:, [0, 2]].max() <= 80 and boxes[:, [1, 3]].max() <= 50


def test_resume_is_bit_identical(tmp_path):
    full, _, full_losses = _train(tmp_path / "a", 6)
    # Killed during iteration 5 (checkpoints every 3 iterations), then restarted.
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", 6, every=3, kill_at=4)
    state = torch.load(tmp_path / "b" / "mb.pt", weights_only=True)
    assert state["iteration"] == 3
    resumed, _, resumed_losses = _train(tmp_path / "b", 6, every=3)
    assert resumed_losses == full_losses
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_fingerprint_mismatch(tmp_path):
    save_checkpoint(tmp_path / "c.pt", fingerprint={"width": 0.25}, iteration=1)
    with pytest.raises(UserError, match="trained with width=0.25, config has 0.5"):
        load_checkpoint(tmp_path / "c.pt", fingerprint={"width": 0.5})
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt", fingerprint={})
