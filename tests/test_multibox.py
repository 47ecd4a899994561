"""MultiBox: priors, greedy matching, loss, a tiny overfit, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detect.checkpoint import load_checkpoint, save_checkpoint
from detect.errors import ConfigError, UserError
from proposals.multibox import (
    UNMATCHED,
    MultiBoxNet,
    MultiBoxProposer,
    decode_offsets,
    encode_offsets,
    grid_priors,
    images_to_tensor,
    kmeans_shapes,
    match_priors,
    multibox_loss,
    predicted_iou,
    quality_focal_loss,
)
from proposals.multibox_stage import torch_threads
from proposals.multibox_train import train_multibox

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Erhan et al.'s loss: image-unit offsets, logistic confidence.
LOGISTIC = dict(offset_units="image", confidence_loss="logistic", pos_weight=1.0, focal_alpha=0.25, focal_gamma=2.0)


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


def test_grid_priors_sub_cell_centres():
    shapes = np.array([[0.1, 0.2]], np.float32)
    priors = grid_priors(shapes, 2, centres_per_cell=2)
    # (row, column, sub-row, sub-column, shape) order; sub-cell centres at 0.125, 0.375 | 0.625, 0.875.
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    np.testing.assert_allclose(centres[:4], [[0.125, 0.125], [0.375, 0.125], [0.125, 0.375], [0.375, 0.375]])
    np.testing.assert_allclose(centres[4], [0.625, 0.125])  # row 0, column 1, first sub-cell
    np.testing.assert_allclose(centres[8], [0.125, 0.625])  # row 1, column 0
    np.testing.assert_allclose(priors[0], [0.075, 0.025, 0.175, 0.225])
    assert priors.shape == (16, 4)
    np.testing.assert_array_equal(grid_priors(shapes, 3, centres_per_cell=1), grid_priors(shapes, 3))


def test_grid_priors_rejects_no_centres():
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="centres_per_cell must be >= 1, got 0"):
        grid_priors(np.array([[0.1, 0.1]]), 2, centres_per_cell=0)


def test_head_predicts_every_sub_cell_prior():
    model = MultiBoxNet(num_shapes=3, width=0.125, input_size=64, batch_norm=False, feature_layer="inception4e",
                        centres_per_cell=2)
    priors = grid_priors(np.full((3, 2), 0.2, np.float32), model.grid, centres_per_cell=2)
    assert model.num_priors == len(priors) == 4 * 4 * 4 * 3
    with torch.no_grad():
        offsets, logits = model(torch.zeros(1, 3, 64, 64))
    assert offsets.shape == (1, len(priors), 4) and logits.shape == (1, len(priors))


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
                                 **{**LOGISTIC, "pos_weight": w})
        assert parts["conf"] == pytest.approx((w + 1) * np.log(2) / 2, rel=1e-6)


def test_focal_confidence_by_hand():
    # Three priors, one matched, all at p = 0.5: each term is log 2 * (1 - p_t)^gamma = log 2 / 4, weighted
    # alpha = 0.25 for the match and 0.75 for the two others, summed and divided by the one match.
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]])
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5]])]
    _, parts = multibox_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3), priors, gt, alpha=0.3, extra_match_iou=None,
                             **{**LOGISTIC, "confidence_loss": "focal"})
    assert parts["conf"] == pytest.approx((0.25 + 2 * 0.75) * np.log(2) / 4, rel=1e-6)
    # A confident right answer costs far less than under the logistic loss (easy priors are down-weighted).
    logits = torch.tensor([[3.0, -3.0, -3.0]])
    focal = multibox_loss(torch.zeros(1, 3, 4), logits, priors, gt, alpha=0.3, extra_match_iou=None,
                          **{**LOGISTIC, "confidence_loss": "focal"})[1]["conf"]
    logistic = multibox_loss(torch.zeros(1, 3, 4), logits, priors, gt, alpha=0.3, extra_match_iou=None,
                             **LOGISTIC)[1]["conf"]
    assert focal < 0.01 * logistic


def test_quality_focal_loss_by_hand():
    # p = 0.5, target 0.8: logistic loss -(0.8 log 0.5 + 0.2 log 0.5) = log 2, times |0.8 - 0.5|^2 = 0.09.
    value = quality_focal_loss(torch.zeros(1), torch.tensor([0.8]), beta=2.0)
    assert float(value) == pytest.approx(0.09 * np.log(2), rel=1e-6)
    # A confidence equal to its target costs nothing: the modulating factor is 0.
    assert float(quality_focal_loss(torch.logit(torch.tensor([0.3])), torch.tensor([0.3]), beta=2.0)) == pytest.approx(0.0, abs=1e-9)


def test_predicted_iou_by_hand():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.2, 0.2]])
    gt = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.25]])
    offsets = torch.zeros(3, 4)
    offsets[2] = torch.tensor([0.0, 0.0, -0.3, 0.0])  # x1 0.2 -> -0.1, left of x0: an empty box
    iou = predicted_iou(offsets, priors, gt, torch.tensor([1, 0, 1]), offset_units="image")
    # Prior 0 holds the top half of gt 1 (0.125 / 0.25); prior 1 is gt 0; prior 2 has no area.
    torch.testing.assert_close(iou, torch.tensor([0.5, 1.0, 0.0]))


def test_quality_focal_targets_are_the_predicted_iou():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]])
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.25]])]
    offsets = torch.zeros(1, 3, 4, requires_grad=True)
    logits = torch.zeros(1, 3, requires_grad=True)
    kwargs = dict(alpha=0.3, extra_match_iou=None, **{**LOGISTIC, "confidence_loss": "quality_focal"})
    _, parts = multibox_loss(offsets, logits, priors, gt, **kwargs)
    # Prior 0 is matched with IoU 0.5: log 2 * 0^2 = 0; the two others: target 0, log 2 * 0.5^2 each.
    assert parts["conf"] == pytest.approx(2 * np.log(2) / 4, rel=1e-6)
    # The confidence term does not move the boxes: the IoU target is a constant.
    alpha0 = {**kwargs, "alpha": 0.0}
    multibox_loss(offsets, logits, priors, gt, **alpha0)[0].backward()
    assert offsets.grad is None or not offsets.grad.any()
    # With boxes on their ground truth the target is 1: twice torchvision's focal loss at alpha 0.5.
    exact = torch.tensor([[[0.0, 0.0, 0.0, -0.25], [0.0] * 4, [0.0] * 4]])
    logits = torch.tensor([[1.0, -2.0, 0.5]])
    qfl = multibox_loss(exact, logits, priors, gt, **kwargs)[1]["conf"]
    focal = multibox_loss(exact, logits, priors, gt, **{**kwargs, "confidence_loss": "focal", "focal_alpha": 0.5})[1]["conf"]
    assert qfl == pytest.approx(2 * focal, rel=1e-5)


def test_offsets_in_prior_units_by_hand():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.25], [0.2, 0.2, 0.4, 0.6]])
    boxes = torch.tensor([[0.1, 0.05, 0.5, 0.25], [0.2, 0.2, 0.4, 0.6]])
    # Prior 0 is 0.5 wide and 0.25 high: x0 moved 0.1 = 0.2 widths, y0 moved 0.05 = 0.2 heights.
    np.testing.assert_allclose(encode_offsets(boxes, priors, offset_units="prior").numpy(),
                               [[0.2, 0.2, 0, 0], [0, 0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(encode_offsets(boxes, priors, offset_units="image").numpy(),
                               [[0.1, 0.05, 0, 0], [0, 0, 0, 0]], atol=1e-6)
    for units in ("prior", "image"):
        back = decode_offsets(encode_offsets(boxes, priors, offset_units=units), priors, offset_units=units)
        np.testing.assert_allclose(back.numpy(), boxes.numpy(), atol=1e-6)


def test_proposer_decodes_in_the_networks_units():
    class Fixed(torch.nn.Module):  # the one prior's x0 offset is +0.2, full confidence
        input_size = 8

        def forward(self, x):
            return torch.tensor([[[0.2, 0.0, 0.0, 0.0]]]), torch.tensor([[5.0]])

    priors = np.array([[0.0, 0.0, 0.5, 1.0]], np.float32)  # the left half of the image
    image = np.zeros((10, 100, 3), np.uint8)
    common = dict(network_key="k", top_k=5, nms_iou=0.7, min_size=1.0, pixel_mean=MEAN, pixel_std=STD)
    by_prior = MultiBoxProposer(Fixed(), priors, offset_units="prior", **common)(image)[0]
    by_image = MultiBoxProposer(Fixed(), priors, offset_units="image", **common)(image)[0]
    np.testing.assert_allclose(by_prior, [[10, 0, 50, 10]], atol=1e-4)  # 0.2 of the prior's 50-pixel width
    np.testing.assert_allclose(by_image, [[20, 0, 50, 10]], atol=1e-4)  # 0.2 of the image's 100 pixels


def test_loss_is_zero_confidence_target_and_exact_location():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    gt = [torch.tensor([[0.1, 0.0, 0.5, 0.5]])]
    for units in ("image", "prior"):
        offsets = torch.zeros(1, 2, 4)
        offsets[0, 0] = encode_offsets(gt[0], priors[:1], offset_units=units)[0]  # exact offsets for the matched prior
        logits = torch.tensor([[20.0, -20.0]])  # confident and right
        loss, parts = multibox_loss(offsets, logits, priors, gt, alpha=0.3, extra_match_iou=None,
                                    **{**LOGISTIC, "offset_units": units})
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


def _train(tmp_path, iterations, name="mb.pt", every=100, kill_at=None, lr=0.05, loss=LOGISTIC, channels_last=False):
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
    losses = train_multibox(model, priors, images, boxes, iterations=iterations, batch_size=4, lr=lr,
                            momentum=0.9, weight_decay=0.0, alpha=0.3, extra_match_iou=0.5, **loss,
                            pixel_mean=MEAN, pixel_std=STD, seed=1,
                            checkpoint_path=tmp_path / name, checkpoint_every=every, fingerprint={"width": 0.125},
                            channels_last=channels_last)
    return model, priors, losses


def _whole_set_loss(model, priors, loss) -> float:
    """The loss over all 8 toy images in eval mode (per-batch training losses of 4 images are too noisy to compare)."""
    images, boxes = _toy_data()
    model.eval()
    with torch.no_grad():
        offsets, logits = model(images_to_tensor(images, pixel_mean=MEAN, pixel_std=STD))
        total, _ = multibox_loss(offsets, logits, torch.from_numpy(priors), [torch.from_numpy(b) for b in boxes],
                                 alpha=0.3, extra_match_iou=0.5, **loss)
    return float(total)


def test_loss_decreases_on_tiny_set(tmp_path):
    default = {**LOGISTIC, "offset_units": "prior", "confidence_loss": "focal"}  # conf/proposals/multibox.yaml's
    untrained, priors, _ = _train(tmp_path / "untrained", 0, loss=default)
    model, priors, losses = _train(tmp_path, 100, lr=0.01, loss=default)
    assert len(losses) == 100
    assert _whole_set_loss(model, priors, default) < 0.3 * _whole_set_loss(untrained, priors, default)
    proposer = MultiBoxProposer(model, priors, network_key="k", offset_units="prior", top_k=3, nms_iou=0.7, min_size=1.0, pixel_mean=MEAN, pixel_std=STD)
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


def test_channels_last_training_learns_and_returns_a_contiguous_model(tmp_path):
    default = {**LOGISTIC, "offset_units": "prior", "confidence_loss": "focal"}
    untrained, priors, _ = _train(tmp_path / "untrained", 0, loss=default)
    plain, _, plain_losses = _train(tmp_path / "a", 100, lr=0.01, loss=default)
    fast, _, fast_losses = _train(tmp_path / "b", 100, lr=0.01, loss=default, channels_last=True)
    # the first batch's loss is the same forward pass in another memory layout; later ones drift apart by
    # float rounding amplified by SGD, so the test asks that it learns as well, not that it learns the same
    assert fast_losses[0] == pytest.approx(plain_losses[0], rel=1e-5)
    start = _whole_set_loss(untrained, priors, default)
    assert _whole_set_loss(fast, priors, default) < 0.3 * start
    assert all(v.is_contiguous() for v in fast.state_dict().values())  # proposes as a copy loaded from the cache
    assert torch.load(tmp_path / "b" / "mb.pt", weights_only=True)["iteration"] == 100


def test_torch_threads_are_set_inside_the_block_and_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="proposals.multibox.threads must be"):
        with torch_threads(0):
            pass
    assert torch.get_num_threads() == before


def test_checkpoint_fingerprint_mismatch(tmp_path):
    save_checkpoint(tmp_path / "c.pt", fingerprint={"width": 0.25}, iteration=1)
    with pytest.raises(UserError, match="trained with width=0.25, config has 0.5"):
        load_checkpoint(tmp_path / "c.pt", fingerprint={"width": 0.5})
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt", fingerprint={})
