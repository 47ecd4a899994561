"""``drawn/`` of ``python -m detect.predict``: an image with its detections, class name and score on each box."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detect import atomic


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct bright colour per class id (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
) -> Image.Image:
    """``image`` ``(H, W, 3)`` uint8 RGB with ``boxes`` ``(D, 4)`` xyxy drawn, each labelled
    ``"<class name> <score>"`` (``labels`` ``(D,)`` in 1..C, ``scores`` ``(D,)``)."""
    out = Image.fromarray(np.ascontiguousarray(image, np.uint8), "RGB")
    draw = ImageDraw.Draw(out)
    h, w = image.shape[:2]
    line = max(1, round(min(h, w) / 250))  # visible on a 4000 px photo, not a blob on a 100 px one
    font = ImageFont.load_default()
    for box, score, label in sorted(zip(boxes, scores, labels), key=lambda d: d[1]):  # best drawn last, on top
        colour = class_colour(int(label))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        text = f"{class_names[int(label) - 1]} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y1 - th - 2 if y1 - th - 2 >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((x1, ty, x1 + tw + 2, ty + th + 2), fill=colour)
        draw.text((x1 + 1, ty + 1 - top), text, fill=(0, 0, 0), font=font)
    return out


def save_drawn(path: Path, drawn: Image.Image) -> None:
    """JPEG (quality 90), written atomically."""
    with atomic.atomic_path(path) as tmp:
        drawn.save(tmp, format="JPEG", quality=90)
