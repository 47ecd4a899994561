"""Test-time crops of a classification image: 1 (centre), 10 (AlexNet) and 144 (GoogLeNet) per image.

Szegedy et al. 2015, section 7 (Table 3): "we resize the image to 4 scales where the shorter
dimension (height or width) is 256, 288, 320 and 352 respectively, take the left, center and
right square of these resized images (in the case of portrait images, we take the top, center
and bottom squares).  For each square, we then take the 4 corners and the center 224x224 crop as
well as the square resized to 224x224, and their mirrored versions.  This results in
4 x 3 x 6 x 2 = 144 crops per image."  The 10-crop scheme is AlexNet's (Krizhevsky et al. 2012):
the 4 corners and the centre of the image resized to short side 256, and their mirrors; the
1-crop scheme is the centre crop of that same image (`classifier.cls_batches.eval_transform`).

A network with a smaller input (``input_size`` S, e.g. the demo's 64 px) scales every short side
by ``S / 224`` (256 -> round(256 S / 224)).  Resizing follows ``torchvision.transforms.v2``:
``Resize(L)`` makes the short side ``L`` and the long side ``int(L * long / short)``; centre
offsets are ``int(round((side - S) / 2))`` as ``CenterCrop`` (Python's round-half-even), so the
1-crop here is exactly `eval_transform`'s.

Boxes are integer pixel edges, ``xyxy`` in the *resized* image (``x2 - x1`` is the crop side);
a square image's three squares coincide, and are still counted three times (the paper's 144).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

SCHEMES = (1, 10, 144)
PAPER_INPUT = 224
PAPER_SHORT_SIDES = (256, 288, 320, 352)  # the 144-crop scales; 256 alone for 1 and 10 crops


class Crop(NamedTuple):
    """One crop: the image resized to short side ``short_side``, cut to ``box`` (xyxy pixel edges in the
    resized image), resized to the network input when the box is larger (the whole square), then mirrored
    left-right when ``mirror``."""

    short_side: int
    box: tuple[int, int, int, int]
    mirror: bool


def short_sides(input_size: int) -> tuple[int, ...]:
    """The paper's four short sides scaled to ``input_size``: ``(256, 288, 320, 352)`` at 224."""
    return tuple(int(round(s * input_size / PAPER_INPUT)) for s in PAPER_SHORT_SIDES)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` of a ``width x height`` image after ``torchvision`` ``Resize(short_side)``."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def _centre(side: int, size: int) -> int:
    return int(round((side - size) / 2.0))  # torchvision CenterCrop's anchor


def _five(x0: int, y0: int, w: int, h: int, size: int) -> list[tuple[int, int, int, int]]:
    """The 4 corners (top-left, top-right, bottom-left, bottom-right) and the centre ``size`` box of the
    ``w x h`` region at ``(x0, y0)``."""
    corners = [(x0, y0), (x0 + w - size, y0), (x0, y0 + h - size), (x0 + w - size, y0 + h - size),
               (x0 + _centre(w, size), y0 + _centre(h, size))]
    return [(x, y, x + size, y + size) for x, y in corners]


def squares(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The left, centre and right squares of a landscape ``width x height`` image (top, centre and bottom of a
    portrait one), side = the short side."""
    side = min(width, height)
    if width >= height:
        return [(x, 0, x + side, side) for x in (0, _centre(width, side), width - side)]
    return [(0, y, side, y + side) for y in (0, _centre(height, side), height - side)]


def crop_boxes(width: int, height: int, *, scheme: int, input_size: int) -> list[Crop]:
    """The crops of a ``width x height`` image under ``scheme`` (1, 10 or 144), in a fixed order: each
    unmirrored crop followed by its mirror (1: the centre crop only)."""
    if scheme not in SCHEMES:
        raise ValueError(f"crop scheme must be one of {SCHEMES}, got {scheme!r}")
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    first = short_sides(input_size)[0]
    if scheme == 1:
        w, h = resized_size(width, height, first)
        return [Crop(first, _five(0, 0, w, h, input_size)[4], False)]
    if scheme == 10:
        w, h = resized_size(width, height, first)
        return [Crop(first, box, m) for box in _five(0, 0, w, h, input_size) for m in (False, True)]
    crops = []
    for side in short_sides(input_size):
        w, h = resized_size(width, height, side)
        for sq in squares(w, h):
            for box in [*_five(sq[0], sq[1], sq[2] - sq[0], sq[3] - sq[1], input_size), sq]:
                crops += [Crop(side, box, False), Crop(side, box, True)]
    return crops


def render_crops(image: Tensor, crops: Sequence[Crop], *, input_size: int) -> Tensor:
    """uint8 ``(3, H, W)`` image -> uint8 ``(len(crops), 3, input_size, input_size)``, in ``crops`` order.

    The image is resized (bilinear, antialiased, as `eval_transform`) once per short side; a box larger
    than the input (the whole square) is resized to it the same way."""
    height, width = image.shape[-2:]
    resized: dict[int, Tensor] = {}
    out = torch.empty((len(crops), 3, input_size, input_size), dtype=torch.uint8)
    for i, crop in enumerate(crops):
        if crop.short_side not in resized:
            scaled = F.resize(image, [crop.short_side], interpolation=InterpolationMode.BILINEAR, antialias=True)
            assert tuple(scaled.shape[-2:][::-1]) == resized_size(width, height, crop.short_side)
            resized[crop.short_side] = scaled
        x1, y1, x2, y2 = crop.box
        patch = resized[crop.short_side][:, y1:y2, x1:x2]
        if patch.shape[-1] != input_size or patch.shape[-2] != input_size:
            patch = F.resize(patch, [input_size, input_size], interpolation=InterpolationMode.BILINEAR,
                             antialias=True)
        out[i] = patch.flip(-1) if crop.mirror else patch
    return out
