"""Selective Search source: box mapping to original coordinates, odd images, the scale knob, determinism."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detect.errors import ConfigError
from proposals import selective_search
from proposals.selective_search import (
    SelectiveSearch,
    _reseed_rank,
    rects_to_boxes,
    resize_factor,
    selective_search_rects,
)


def make_ss(**overrides) -> SelectiveSearch:
    kwargs = dict(mode="fast", base_k=50, inc_k=50, sigma=0.8, min_region_size=50, scale=1,
                  resize_short_side=None, max_long_side=None, max_boxes=None, min_size=0)
    kwargs.update(overrides)
    return SelectiveSearch(**kwargs)


def textured(seed: int, w: int = 120, h: int = 90) -> np.ndarray:
    """Smooth random colour field with a few flat rectangles and pixel noise."""
    rng = np.random.default_rng(seed)
    img = cv2.resize((rng.random((h // 6, w // 6, 3)) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(8):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y, s = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(6, 40))
        cv2.rectangle(img, (x, y), (x + s, y + s // 2 + 3), colour, -1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def bright_rectangle() -> tuple[np.ndarray, torch.Tensor]:
    img = np.full((80, 100, 3), 40, np.uint8)
    img[20:50, 30:80] = 220  # pixels x 30..79, y 20..49 -> continuous xyxy (30, 20, 80, 50)
    return img, torch.tensor([[30.0, 20.0, 80.0, 50.0]])


def test_resize_factor_arithmetic():
    assert resize_factor(375, 500, short_side=375, max_long_side=1000) == 1.0
    assert resize_factor(80, 100, short_side=40, max_long_side=None) == 0.5
    # 3x500 strip: short side -> 375 would be x125 (long side 62500); the long-side cap wins: 1000/500 = 2.
    assert resize_factor(3, 500, short_side=375, max_long_side=1000) == 2.0
    # Huge image with no short-side target: only the cap applies, 1000/4000 = 0.25.
    assert resize_factor(3000, 4000, short_side=None, max_long_side=1000) == 0.25
    assert resize_factor(10, 20, short_side=None, max_long_side=None) == 1.0


def test_rects_to_boxes_hand_case():
    # rect (x=10, y=20, w=30, h=40) -> xyxy (10, 20, 40, 60) in the resized image; resized/original
    # factors fx=2, fy=0.5 -> (5, 40, 20, 120); the original image is 100x100 so y2 clips to 100.
    boxes = rects_to_boxes(np.array([[10, 20, 30, 40]]), fx=2.0, fy=0.5, width=100, height=100)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[5.0, 40.0, 20.0, 100.0]]


@pytest.mark.parametrize("short_side,long_cap", [(None, None), (40, None), (200, None), (60, 70)])
def test_box_matches_rectangle_in_original_coordinates(short_side, long_cap):
    img, gt = bright_rectangle()
    boxes = make_ss(resize_short_side=short_side, max_long_side=long_cap)(img)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= 100).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= 80).all()
    assert box_iou(torch.from_numpy(boxes), gt).max().item() > 0.9


def test_huge_image_is_downscaled_and_boxes_mapped_back(monkeypatch):
    img = np.full((1500, 2000, 3), 40, np.uint8)
    img[300:900, 500:1700] = 220  # continuous xyxy (500, 300, 1700, 900)
    seen = []

    def spy(image_bgr, **kwargs):
        seen.append(image_bgr.shape)
        return selective_search_rects(image_bgr, **kwargs)

    monkeypatch.setattr(selective_search, "selective_search_rects", spy)
    boxes = make_ss(resize_short_side=375, max_long_side=100)(img)
    assert seen == [(75, 100, 3)]  # long side 2000 capped to 100: factor 0.05
    iou = box_iou(torch.from_numpy(boxes), torch.tensor([[500.0, 300.0, 1700.0, 900.0]])).max().item()
    assert iou > 0.9


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 500, 3), (500, 3, 3), (1, 1), (2, 700)])
def test_tiny_and_strip_images_do_not_crash(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    h, w = shape[:2]
    boxes = make_ss(resize_short_side=20, max_long_side=200, min_size=0)(image)
    assert len(boxes) >= 1
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()


def test_nothing_survives_min_size_gives_whole_image_box():
    strip = np.random.default_rng(0).integers(0, 256, (3, 500, 3), dtype=np.uint8)
    boxes = make_ss(resize_short_side=20, max_long_side=200, min_size=8)(strip)
    np.testing.assert_array_equal(boxes, [[0, 0, 500, 3]])


def test_grayscale_input_equals_replicated_rgb():
    rgb = textured(3)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ss = make_ss()
    expected = ss(np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(ss(gray), expected)
    np.testing.assert_array_equal(ss(gray[:, :, None]), expected)


def test_scale_2_gives_fewer_boxes_than_scale_1():
    img = textured(0)
    n1, n2 = len(make_ss(scale=1)(img)), len(make_ss(scale=2)(img))
    assert make_ss(scale=2).scaled == (100, 100, 100)  # base_k, inc_k, min_region_size
    # Measured 582 -> 249 boxes on this image; the paper reports about half.
    assert n2 < 0.75 * n1


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_opencv_floor_reproduces_opencv_mode_exactly(mode):
    # Re-adding the graph segmentations with OpenCV's own floor (100 px) must change nothing.
    bgr = np.ascontiguousarray(textured(6)[:, :, ::-1])
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(bgr)
    (ss.switchToSelectiveSearchFast if mode == "fast" else ss.switchToSelectiveSearchQuality)(150, 150, 0.8)
    _reseed_rank()
    expected = np.asarray(ss.process()).reshape(-1, 4)
    ours = selective_search_rects(bgr, mode=mode, base_k=150, inc_k=150, sigma=0.8, min_region_size=100)
    np.testing.assert_array_equal(ours, expected)


def test_output_is_deterministic_whatever_ran_before():
    ss = make_ss()
    first = ss(textured(1))
    ss(textured(2))  # consumes the C library's rand() in between
    np.testing.assert_array_equal(ss(textured(1)), first)


def test_min_size_and_max_boxes():
    img = textured(4)
    full = make_ss()(img)
    capped = make_ss(max_boxes=5)(img)
    np.testing.assert_array_equal(capped, full[:5])  # the cap keeps the rank order's head
    big = make_ss(min_size=20)(img)
    assert ((big[:, 2] - big[:, 0]) >= 20).all() and ((big[:, 3] - big[:, 1]) >= 20).all()
    # Filtering keeps the rank order: big is the subsequence of full with both sides >= 20.
    wide = full[((full[:, 2] - full[:, 0]) >= 20) & ((full[:, 3] - full[:, 1]) >= 20)]
    np.testing.assert_array_equal(big, wide)


def test_unique_boxes():
    boxes = make_ss()(textured(5))
    assert len(np.unique(boxes, axis=0)) == len(boxes)


@pytest.mark.parametrize("bad", [dict(mode="slow"), dict(scale=0), dict(max_boxes=0), dict(min_size=-1),
                                 dict(resize_short_side=0), dict(inc_k=0), dict(min_region_size=-1)])
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        make_ss(**bad)


def test_quality_mode_runs():
    img, gt = bright_rectangle()
    boxes = make_ss(mode="quality")(img)
    assert box_iou(torch.from_numpy(boxes), gt).max().item() > 0.9


def test_config_file_instantiates_and_maps_onto_parameters():
    import inspect

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from proposals.extract import extract_proposals

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/proposals/ss.yaml")
    ss = instantiate(cfg.ss)
    assert isinstance(ss, SelectiveSearch) and ss.scale == 1 and ss.mode == "fast"
    params = inspect.signature(extract_proposals).parameters
    assert {"workers", "chunk_size", "shard"} <= set(cfg) and {"workers", "chunk_size", "shard"} <= set(params)
    assert cfg.shard is None
