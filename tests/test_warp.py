"""R-CNN region warping: context geometry, mean fill at the border, anisotropy, flips, bad boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import classifier.warp as warp
from classifier.warp import context_boxes, normalise_image, rcnn_context_pad, valid_regions, warp_regions
from detect.errors import ConfigError

# mean 0.5, std 0.25: pixel 0 -> (0 - 0.5) / 0.25 = -2, pixel 255 -> +2, the mean (fill) -> 0.
HALF = dict(pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25))
# mean 0, std 1/255: normalised values equal raw pixel values.
RAW = dict(pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1 / 255, 1 / 255, 1 / 255))


def test_context_padding_arithmetic():
    # R-CNN: S = 227, p = 16 -> scale = 227 / 195.  Box [10, 20, 30, 60]: centre (20, 40),
    # half sides (10, 20) -> (11.641, 23.282); so [8.359, 16.718, 31.641, 63.282].
    got = context_boxes(np.array([[10, 20, 30, 60]]), input_size=227, context_pad=16)
    s = 227 / 195
    np.testing.assert_allclose(got, [[20 - 10 * s, 40 - 20 * s, 20 + 10 * s, 40 + 20 * s]])
    np.testing.assert_allclose(got, [[8.35897, 16.71795, 31.64103, 63.28205]], atol=1e-5)
    # 16 px at 227 -> 16 * 224 / 227 = 15.789 at 224, 16 * 64 / 227 = 4.511 at 64.
    assert rcnn_context_pad(224) == pytest.approx(15.7885, abs=1e-4)
    assert rcnn_context_pad(64) == pytest.approx(4.5110, abs=1e-4)
    # No context: the box itself.
    np.testing.assert_allclose(context_boxes(np.array([[1, 2, 3, 4]]), input_size=8, context_pad=0), [[1, 2, 3, 4]])


def test_boundary_lands_on_expected_column_and_border_is_mean():
    # 20x12 image, columns 0..9 black (0), 10..19 white (255): the edge is at x = 10.
    image = np.zeros((12, 20, 3), np.uint8)
    image[:, 10:] = 255
    # S = 16, p = 2: the box fills the central 12 px.  Box x [6, 18] (12 px wide) -> context
    # box [6 - 2, 18 + 2] = [4, 20], 1 image px per output px; output column j samples
    # x = 4 + j + 0.5, so columns 0..5 (x <= 9.5, centres of black pixels) are black and
    # columns 6..15 (x >= 10.5) white.  Box y [0, 12] touches the top and bottom of the
    # image -> context box y [-2, 14]; row i samples y = -2 + i + 0.5: rows 0, 1 (y = -1.5,
    # -0.5) and 14, 15 (y = 12.5, 13.5) lie at least half a pixel outside: pure mean fill.
    out = warp_regions(image, np.array([[6, 0, 18, 12]]), input_size=16, context_pad=2, **HALF)
    assert out.shape == (1, 3, 16, 16)
    inside = out[0, :, 2:14]
    assert (inside[:, :, :6] == -2).all() and (inside[:, :, 6:] == 2).all()
    assert (out[0, :, [0, 1, 14, 15]] == 0).all()


def test_warp_is_anisotropic_and_samples_pixel_centres():
    # Horizontal ramp: pixel x has value 8x, so bilinear value at position u is 8 (u - 0.5).
    image = np.repeat((8 * np.arange(32, dtype=np.uint8))[None, :, None], 8, axis=0).repeat(3, axis=2)
    # Box x [4, 28] (24 px) with S = 16, p = 2 -> context width 24 * 16 / 12 = 32, x in [0, 32]:
    # 2 image px per output px; column j samples u = 2j + 1 -> value 8 (2j + 0.5) = 16j + 4.
    # Box y [2, 6] (4 px) -> 4 * 16 / 12 = 5.33 px tall: 1/3 image px per output px.
    out = warp_regions(image, np.array([[4, 2, 28, 6]]), input_size=16, context_pad=2, **RAW)
    expected = 16 * np.arange(16) + 4
    np.testing.assert_allclose(out[0].numpy(), np.broadcast_to(expected, (3, 16, 16)), atol=1e-3)


def test_matches_opencv_warp_affine():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    boxes = np.array([[3.2, 4.7, 40.1, 30.3], [-5.0, -3.0, 20.0, 50.0], [10.0, 10.0, 12.5, 11.0]])
    s, p = 24, 3.0
    out = warp_regions(image, boxes, input_size=s, context_pad=p, **RAW).numpy()
    for box, got in zip(context_boxes(boxes, input_size=s, context_pad=p), out):
        sx, sy = (box[2] - box[0]) / s, (box[3] - box[1]) / s
        # dst pixel j -> src index x1 + (j + 0.5) sx - 0.5 (cv2 pixel centres are integers)
        m = np.array([[sx, 0, box[0] + 0.5 * sx - 0.5], [0, sy, box[1] + 0.5 * sy - 0.5]])
        ref = cv2.warpAffine(image.astype(np.float32), m, (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        # both use OpenCV's 1/32-px fixed-point interpolation tables
        np.testing.assert_allclose(got.transpose(1, 2, 0), ref, atol=0.5)


def test_flip_mirrors_the_window():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    boxes = np.array([[2.0, 3.0, 25.0, 20.0], [10.0, 0.0, 39.0, 29.0]])
    plain = warp_regions(image, boxes, input_size=16, context_pad=2, **HALF)
    flipped = warp_regions(image, boxes, input_size=16, context_pad=2, flip=np.array([True, False]), **HALF)
    assert np.array_equal(flipped[0].numpy(), plain[0].flip(-1).numpy())
    assert np.array_equal(flipped[1].numpy(), plain[1].numpy())


def test_normalisation_is_per_channel():
    image = np.full((2, 2, 3), 51, np.uint8)  # 51 / 255 = 0.2
    norm = normalise_image(image, pixel_mean=(0.2, 0.1, 0.0), pixel_std=(1.0, 0.5, 0.1))
    # (0.2 - 0.2) / 1 = 0; (0.2 - 0.1) / 0.5 = 0.2; (0.2 - 0) / 0.1 = 2
    np.testing.assert_allclose(norm[0, 0], [0.0, 0.2, 2.0], atol=1e-6)


def test_degenerate_regions_are_flagged_and_never_crash():
    image = np.full((10, 10, 3), 200, np.uint8)
    boxes = np.array(
        [
            [2, 2, 8, 8],  # fine
            [5, 1, 5, 9],  # zero width
            [6, 1, 4, 9],  # inverted
            [12, 0, 20, 5],  # right of the image
            [-8, -8, 0, 0],  # touches the top-left corner from outside: no overlap
            [np.nan, 0, 5, 5],  # not a number
            [-5, -5, 15, 15],  # larger than the image: valid, mostly mean fill
        ],
        np.float32,
    )
    ok = valid_regions(boxes, width=10, height=10)
    assert ok.tolist() == [True, False, False, False, False, False, True]
    out = warp_regions(image, boxes, input_size=8, context_pad=1, **HALF)
    assert out.shape == (7, 3, 8, 8) and np.isfinite(out.numpy()).all()
    assert (out[~ok] == 0).all()  # degenerate windows are all mean
    assert (out[0] != 0).all()
    assert warp_regions(image, np.zeros((0, 4)), input_size=8, context_pad=1, **HALF).shape == (0, 3, 8, 8)


def test_chunked_remap_equals_single_call(monkeypatch):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    xy = rng.uniform(0, 15, (9, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 15, (9, 2))], axis=1)
    flip = rng.random(9) < 0.5
    whole = warp_regions(image, boxes, input_size=8, context_pad=1, flip=flip, **HALF)
    monkeypatch.setattr(warp, "_MAX_ROWS", 2 * 8)  # two regions per cv2.remap call
    chunked = warp_regions(image, boxes, input_size=8, context_pad=1, flip=flip, **HALF)
    assert np.array_equal(whole.numpy(), chunked.numpy())


def test_bad_context_pad_is_a_config_error():
    with pytest.raises(ConfigError, match="context_pad"):
        context_boxes(np.zeros((1, 4)), input_size=16, context_pad=8)


def test_batch_of_windows_from_many_images_equals_each_window_warped_alone():
    rng = np.random.default_rng(3)
    raw = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((30, 40), (25, 25), (41, 17))]
    images = {7: normalise_image(raw[0], **HALF), 2: normalise_image(raw[1], **HALF), 5: normalise_image(raw[2], **HALF)}
    owner = np.array([5, 7, 7, 2, 5, 7])  # interleaved, as a training batch draws them
    boxes = np.array([[1, 2, 15, 30], [0, 0, 40, 30], [10.5, 3, 20, 9.5], [-4, -4, 10, 30], [2, 2, 3, 3],
                      [30, 20, 45, 35]], np.float32)
    flip = np.array([True, False, True, False, True, True])
    out = warp.warp_windows(images, owner, boxes, input_size=12, context_pad=1.5, flip=flip)
    assert out.shape == (6, 12, 12, 3) and out.dtype == np.float32
    for k in range(6):
        alone = warp_regions(raw[[7, 2, 5].index(owner[k])], boxes[k:k + 1], input_size=12, context_pad=1.5,
                             flip=flip[k:k + 1], **HALF)
        np.testing.assert_array_equal(out[k], alone[0].permute(1, 2, 0).numpy())
    assert warp.warp_windows(images, np.zeros(0, int), np.zeros((0, 4)), input_size=12, context_pad=1.5,
                             flip=np.zeros(0, bool)).shape == (0, 12, 12, 3)
