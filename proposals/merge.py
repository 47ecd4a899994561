"""Merging ranked proposal lists (GoogLeNet: Selective Search boxes plus the top 200 MultiBox boxes).

Sources are given in priority order, MultiBox first: its boxes carry learned
confidences and are only ``top_k``, so they should survive a per-image cap;
Selective Search follows in its own rank order.  A box of a later source is
dropped when its IoU with a box kept from an *earlier* source exceeds
``iou_threshold`` (a near-duplicate adds no coverage).  Boxes are never compared
with boxes of their own source: each source already removed its own duplicates
(SS exact repeats, MultiBox by NMS), and thinning SS's near-duplicates here would
change the SS box count the paper's comparison is about.

Optionally (``snap_iou``) each box of the first source is first replaced by the
best-overlapping box of the later sources when their IoU reaches ``snap_iou``:
MultiBox then picks *which* objects get a region from its learned confidence,
while Selective Search, whose boxes follow the image's edges, places it.  A
snapped box that copies a box already kept is dropped by the duplicate rule,
which frees its slot under a cap; MultiBox boxes with no SS box near them stay
as they are, so what only MultiBox finds is kept.

All boxes are float ``(N, 4)`` xyxy in the same image coordinates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou


ORDERS = ("priority", "interleave")


def merge_keep(sources: Sequence[np.ndarray], *, iou_threshold: float, max_boxes: int | None,
               order: str = "priority") -> np.ndarray:
    """Indices (int64, in output order) into ``np.concatenate(sources)`` of the merged proposals.

    Args:
        sources: ``(N_i, 4)`` xyxy arrays in priority order, each in its own rank order.
        iou_threshold: a box whose IoU with an earlier source's kept box is ``> iou_threshold``
            is dropped (``>= 1``: nothing is dropped, not even exact copies).
        max_boxes: keep at most this many, first ones first (None: no cap).
        order: ``priority``: every box of the first source, then the second's, ... (ascending
            indices); ``interleave``: round robin over the sources in their rank orders (the
            first box of each source, then the second of each, ...), so that a cap keeps the
            best-ranked boxes of every source rather than only the first source's.  "Earlier"
            in the duplicate rule then means earlier in this output order.
    """
    if order not in ORDERS:
        raise ValueError(f"merge order must be one of {ORDERS}, got {order!r}")
    if order == "interleave":
        return _interleave_keep(sources, iou_threshold=iou_threshold, max_boxes=max_boxes)
    keep: list[np.ndarray] = []
    kept_boxes = torch.zeros((0, 4), dtype=torch.float32)
    offset = 0
    for boxes in sources:
        b = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
        idx = torch.arange(len(b))
        if len(kept_boxes) and len(b):
            # IoU of two identical zero-area boxes is 0/0 = nan; nan > t is False, so such a box stays.
            dup = (box_iou(b, kept_boxes) > iou_threshold).any(dim=1)
            idx = idx[~dup]
        keep.append((idx + offset).numpy())
        kept_boxes = torch.cat([kept_boxes, b[idx]])
        offset += len(b)
    out = np.concatenate(keep).astype(np.int64) if keep else np.zeros((0,), np.int64)
    return out if max_boxes is None else out[:max_boxes]


def _interleave_keep(sources: Sequence[np.ndarray], *, iou_threshold: float, max_boxes: int | None) -> np.ndarray:
    arrays = [np.asarray(b, np.float32).reshape(-1, 4) for b in sources]
    rank = np.concatenate([np.arange(len(a)) for a in arrays]) if arrays else np.zeros(0, np.int64)
    origin = np.concatenate([np.full(len(a), i) for i, a in enumerate(arrays)]) if arrays else rank
    sequence = np.lexsort((origin, rank))  # rank 0 of every source, then rank 1, ...
    boxes = torch.as_tensor(np.concatenate(arrays) if arrays else np.zeros((0, 4), np.float32))
    # Duplicates are only looked for across sources, as in priority order.
    duplicate = (box_iou(boxes, boxes) > iou_threshold).numpy() & (origin[:, None] != origin[None, :])
    limit = len(sequence) if max_boxes is None else max_boxes
    keep: list[int] = []
    kept = np.zeros(len(sequence), bool)
    for i in sequence:
        if len(keep) >= limit:
            break
        if not (duplicate[i] & kept).any():
            keep.append(int(i))
            kept[i] = True
    return np.asarray(keep, np.int64)


def snap_boxes(boxes: np.ndarray, targets: np.ndarray, *, iou_threshold: float) -> np.ndarray:
    """``boxes`` float32 ``(N, 4)`` xyxy with each box replaced by its highest-IoU box of ``targets``
    ``(T, 4)`` xyxy when that IoU is ``>= iou_threshold`` (ties: the first such target); others unchanged."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    targets = np.asarray(targets, np.float32).reshape(-1, 4)
    if not len(boxes) or not len(targets):
        return boxes.copy()
    best, which = box_iou(torch.as_tensor(boxes), torch.as_tensor(targets)).max(dim=1)
    # nan IoU (two zero-area boxes) fails the comparison, so such a box is not snapped.
    snap = (best >= iou_threshold).numpy()
    out = boxes.copy()
    out[snap] = targets[which.numpy()[snap]]
    return out


def merge_proposals(
    sources: Sequence[np.ndarray], *, iou_threshold: float, max_boxes: int | None, order: str = "priority",
    snap_iou: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merged boxes float32 ``(M, 4)`` xyxy and, per box, the index of its source int64 ``(M,)``.

    See `merge_keep` for the rule.  ``snap_iou``: the first source's boxes are snapped to the
    later sources' boxes first (`snap_boxes`; None: not) and exact copies among them dropped (the
    first kept); a snapped box keeps its source index.
    """
    arrays = [np.asarray(s, np.float32).reshape(-1, 4) for s in sources]
    if snap_iou is not None and len(arrays) > 1:
        snapped = snap_boxes(arrays[0], np.concatenate(arrays[1:]), iou_threshold=snap_iou)
        # Two boxes snapped onto the same target are one region: keep the better-ranked copy.
        _, first = np.unique(snapped, axis=0, return_index=True)
        arrays[0] = snapped[np.sort(first)]
    keep = merge_keep(arrays, iou_threshold=iou_threshold, max_boxes=max_boxes, order=order)
    if not arrays:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    origin = np.concatenate([np.full(len(a), i, np.int64) for i, a in enumerate(arrays)])
    return np.concatenate(arrays)[keep], origin[keep]


def merge_split(
    per_source: Sequence[Sequence[np.ndarray]], *, iou_threshold: float, max_boxes: int | None,
    order: str = "priority", snap_iou: float | None = None,
) -> list[np.ndarray]:
    """`merge_proposals` image by image: ``per_source[s][i]`` are source ``s``'s boxes for image ``i``.

    Returns one float32 ``(M_i, 4)`` xyxy array per image.
    """
    lengths = {len(p) for p in per_source}
    if len(lengths) > 1:
        raise ValueError(f"sources cover different numbers of images: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    return [merge_proposals([p[i] for p in per_source], iou_threshold=iou_threshold, max_boxes=max_boxes,
                            order=order, snap_iou=snap_iou)[0] for i in range(n)]
