"""Selective Search proposals (Uijlings et al. 2013) through OpenCV's ``cv2.ximgproc.segmentation``.

`SelectiveSearch` is a proposal source: ``ss(image (H, W, 3) uint8 RGB)`` returns
float32 ``(N, 4)`` xyxy boxes in the coordinates of the image it was given, in
OpenCV's rank order (most relevant first).  Boxes are continuous: OpenCV's rect
``(x, y, w, h)`` covers pixels ``x .. x+w-1``, i.e. ``[x, x+w) x [y, y+h)``, which
`torchvision.ops.box_convert` turns into ``(x, y, x+w, y+h)``.

What ``scale`` multiplies
-------------------------
Selective Search starts from Felzenszwalb-Huttenlocher graph segmentations and
groups their regions ("superpixels") hierarchically; it returns about two boxes
per superpixel and strategy, so fewer, larger superpixels mean fewer boxes.  The
segmentation keeps two components apart when the edge between them is heavier
than their internal difference plus ``k / |C|`` (a larger ``k`` needs stronger
boundaries), then merges every component smaller than ``min_region_size``
pixels into a neighbour.  OpenCV's fast mode segments HSV and Lab images at
``k = base_k, base_k + inc_k, base_k + 2 inc_k`` and groups with two strategies
(quality mode: five ``k``, five colour spaces, four strategies).

``scale`` multiplies ``base_k``, ``inc_k`` (hence every ``k``) and
``min_region_size``, each rounded to an integer as OpenCV takes ints; ``sigma``
(pre-smoothing) is not scaled.  ``scale = 1`` is the R-CNN setting, ``scale = 2``
GoogLeNet's "superpixel size increased by 2x", which the paper reports halves
the number of boxes.  Both size controls are scaled because that is what
doubling ``k`` does in Uijlings' code, which R-CNN ran (``min_size = k``), and
because the floor otherwise keeps the small superpixels small: on 500x375
images of the embedded generator (benchmarks/RESULTS.md) doubling ``k`` alone
grew the mean superpixel 1.5x (boxes x0.61), doubling both 2.3x (boxes x0.43).
OpenCV's fast-mode call fixes the floor at 100 px, so the graph segmentations
are re-added with the scaled floor after ``switchToSelectiveSearchFast`` (same
``k`` list and ``sigma``; with ``min_region_size = 100`` the output is exactly
OpenCV's).

R-CNN's setting: Uijlings' fast mode, ``k in {50, 100}`` with ``min_size = k``,
HSV and Lab, two strategies.  OpenCV's fast mode always runs three ``k``; the
defaults ``base_k = inc_k = 50``, ``min_region_size = 50`` give ``k = 50, 100,
150`` with R-CNN's smallest floor.

Reproducible ranking
--------------------
OpenCV ranks regions by ``rand() * level`` with the C library's global
``rand()``, so the order (and any ``max_boxes`` cut) would depend on how many
images the process handled before.  We reseed ``rand()`` with a fixed seed
before every image, which makes the output a function of the image and the
parameters only, whatever the worker count or shard.

Resizing
--------
SS is not scale invariant (the box count grows with resolution), so images are
resized before SS: the short side to ``resize_short_side`` (R-CNN resized
ILSVRC images to a fixed width of 500 px, i.e. a 375 px short side for the
typical 500x375 image), the long side capped at ``max_long_side`` so extreme
aspect ratios and huge images stay cheap.  Boxes are mapped back with the exact
per-axis factors and clipped to the original image.

Tiny and odd images
-------------------
OpenCV handles any image of at least 1x1 pixels (a 1x1 or flat image yields the
whole-image box).  Grayscale ``(H, W)`` / ``(H, W, 1)`` input is replicated to
three channels.  When no box survives ``min_size`` (e.g. a 3x500 strip with
``min_size > 3``) the whole-image box is returned: it is the only region an
image that small has, and downstream stages then always get one proposal.
"""

from __future__ import annotations

import ctypes
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.ops import box_convert, clip_boxes_to_image, remove_small_boxes

from detect.errors import ConfigError

MODES = ("fast", "quality")

# Seed of the C library's rand() before each image (see "Reproducible ranking").
RANK_SEED = 0


def _libc_srand():
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError):  # Windows: no process-wide C library handle
        return None


_SRAND = _libc_srand()
_warned_srand = False


def _reseed_rank() -> None:
    global _warned_srand
    if _SRAND is not None:
        _SRAND(RANK_SEED)
    elif not _warned_srand:
        _warned_srand = True
        warnings.warn("cannot reseed the C library's rand(): Selective Search box order is not reproducible",
                      stacklevel=3)


def resize_factor(height: int, width: int, *, short_side: int | None, max_long_side: int | None) -> float:
    """Factor that brings the short side to ``short_side`` without the long side exceeding ``max_long_side``.

    ``None`` disables either constraint (both ``None``: factor 1).  Images smaller
    than ``short_side`` are enlarged, as R-CNN's fixed-width resize did.
    """
    f = 1.0
    if short_side is not None:
        f = short_side / min(height, width)
    if max_long_side is not None and max(height, width) * f > max_long_side:
        f = max_long_side / max(height, width)
    return f


def to_rgb3(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` uint8 -> contiguous ``(H, W, 3)`` uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels: shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    return np.ascontiguousarray(image)


# How many graph segmentations OpenCV's modes run (k = base_k + i * inc_k, i < this):
# switchToSelectiveSearchFast / ...Quality in opencv_contrib's selectivesearchsegmentation.cpp.
NUM_K = {"fast": 3, "quality": 5}


def selective_search_rects(image_bgr: np.ndarray, *, mode: str, base_k: int, inc_k: int, sigma: float,
                           min_region_size: int) -> np.ndarray:
    """OpenCV Selective Search on a BGR uint8 image -> int64 ``(N, 4)`` xywh rects, ranked, unique."""
    seg = cv2.ximgproc.segmentation
    ss = seg.createSelectiveSearchSegmentation()
    ss.setBaseImage(image_bgr)  # OpenCV converts BGR -> HSV / Lab itself
    if mode == "fast":
        ss.switchToSelectiveSearchFast(base_k, inc_k, sigma)
    else:
        ss.switchToSelectiveSearchQuality(base_k, inc_k, sigma)
    ss.clearGraphSegmentations()  # same k list, with our minimum region size
    for i in range(NUM_K[mode]):
        ss.addGraphSegmentation(seg.createGraphSegmentation(sigma, float(base_k + i * inc_k), min_region_size))
    _reseed_rank()
    rects = np.asarray(ss.process(), dtype=np.int64).reshape(-1, 4)
    # OpenCV already drops repeated rects; keep the first occurrence in case a version does not.
    _, first = np.unique(rects, axis=0, return_index=True)
    return rects[np.sort(first)]


def rects_to_boxes(rects: np.ndarray, *, fx: float, fy: float, width: int, height: int) -> torch.Tensor:
    """xywh rects in a resized image -> float32 ``(N, 4)`` xyxy in the original ``width x height`` image.

    ``fx, fy``: resized size / original size along x and y.
    """
    boxes = box_convert(torch.as_tensor(rects, dtype=torch.float64).reshape(-1, 4), in_fmt="xywh", out_fmt="xyxy")
    boxes = boxes / torch.tensor([fx, fy, fx, fy], dtype=torch.float64)
    return clip_boxes_to_image(boxes, (height, width)).to(torch.float32)


@dataclass(frozen=True)
class SelectiveSearch:
    """Selective Search proposal source (see the module docstring for every choice).

    Args:
        mode: ``fast`` (R-CNN's choice) or ``quality``.
        base_k, inc_k, sigma: OpenCV's fast/quality-mode graph-segmentation parameters.
        min_region_size: graph-segmentation floor on superpixel area, pixels (OpenCV: 100).
        scale: multiplies ``base_k``, ``inc_k`` and ``min_region_size`` (1 = R-CNN, 2 = GoogLeNet).
        resize_short_side: short side SS runs at (None: no resize).
        max_long_side: cap on the long side SS runs at (None: no cap).
        max_boxes: keep the first ``max_boxes`` in rank order (None: all).
        min_size: drop boxes narrower or shorter than this, in original pixels.
    """

    mode: str
    base_k: int
    inc_k: int
    sigma: float
    min_region_size: int
    scale: float
    resize_short_side: int | None
    max_long_side: int | None
    max_boxes: int | None
    min_size: float

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"proposals.ss.mode must be one of {MODES}, got {self.mode!r}")
        if self.scale <= 0:
            raise ConfigError(f"proposals.ss.scale must be > 0, got {self.scale}")
        if min(self.base_k, self.inc_k) * self.scale < 1 or self.min_region_size < 0:
            # inc_k = 0 would loop forever inside OpenCV (for k = base_k; k <= base_k + 2 inc_k; k += inc_k).
            raise ConfigError(f"proposals.ss: need base_k * scale >= 1, inc_k * scale >= 1, min_region_size >= 0; "
                              f"got base_k={self.base_k}, inc_k={self.inc_k}, "
                              f"min_region_size={self.min_region_size}, scale={self.scale}")
        for key in ("resize_short_side", "max_long_side", "max_boxes"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"proposals.ss.{key} must be >= 1 or null, got {value}")
        if self.min_size < 0:
            raise ConfigError(f"proposals.ss.min_size must be >= 0, got {self.min_size}")

    @property
    def scaled(self) -> tuple[int, int, int]:
        """``(base_k, inc_k, min_region_size)`` after ``scale``, as passed to OpenCV."""
        return tuple(int(round(v * self.scale)) for v in (self.base_k, self.inc_k, self.min_region_size))

    def identity(self) -> dict[str, Any]:
        """Everything that determines the output (for cache keys)."""
        return {"source": "selective_search", **asdict(self)}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB (or grayscale ``(H, W)``) -> float32 ``(N, 4)`` xyxy boxes, ranked."""
        rgb = to_rgb3(image)
        h, w = rgb.shape[:2]
        f = resize_factor(h, w, short_side=self.resize_short_side, max_long_side=self.max_long_side)
        rw, rh = max(1, round(w * f)), max(1, round(h * f))
        if (rw, rh) != (w, h):
            interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (rw, rh), interpolation=interp)
        base_k, inc_k, min_region = self.scaled
        rects = selective_search_rects(np.ascontiguousarray(rgb[:, :, ::-1]), mode=self.mode, base_k=base_k,
                                       inc_k=inc_k, sigma=self.sigma, min_region_size=min_region)
        boxes = rects_to_boxes(rects, fx=rw / w, fy=rh / h, width=w, height=h)
        boxes = boxes[remove_small_boxes(boxes, self.min_size)]
        if len(boxes) == 0:
            return np.array([[0.0, 0.0, w, h]], np.float32)
        if self.max_boxes is not None:
            boxes = boxes[: self.max_boxes]
        return boxes.numpy()
