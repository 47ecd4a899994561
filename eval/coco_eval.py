"""COCO-style second opinion on the same detections, via pycocotools' ``COCOeval``.

Boxes are converted from xyxy to COCO's xywh here, at the edge
(`torchvision.ops.box_convert`); COCO's continuous IoU (no ``+1``) and its
101-point interpolated AP apply.  Blacklisted (image, class) pairs are removed
from both ground truth and detections; ``difficult`` boxes become ``iscrowd``
(COCO's ignore regions).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert

from detect.data.record import DetectionDataset

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return box_convert(torch.as_tensor(np.asarray(boxes, np.float64).reshape(-1, 4)), "xyxy", "xywh").numpy()


def coco_ground_truth(dataset: DetectionDataset) -> dict[str, Any]:
    """A COCO-format ground-truth dict (image id = ILSVRC image index, category id = class id)."""
    images, annotations = [], []
    for rec in dataset.records:
        images.append({"id": int(rec.index), "width": int(rec.width), "height": int(rec.height)})
        for box, wh, label, difficult in zip(rec.boxes, _xywh(rec.boxes), rec.labels, rec.difficult):
            if (int(rec.index), int(label)) in dataset.blacklist:
                continue
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(rec.index), "category_id": int(label),
                "bbox": [float(v) for v in wh], "area": float(wh[2] * wh[3]), "iscrowd": int(difficult),
            })
    categories = [{"id": c, "name": dataset.classes.name_of(c)} for c in dataset.classes.ids]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results(
    image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray, boxes: np.ndarray,
    blacklist: frozenset[tuple[int, int]] = frozenset(),
) -> list[dict[str, Any]]:
    """COCO results json entries for ``(D,)`` detections with ``(D, 4)`` xyxy boxes."""
    out = []
    for i, c, s, wh in zip(image_index, class_id, score, _xywh(boxes)):
        if (int(i), int(c)) in blacklist:
            continue
        out.append({"image_id": int(i), "category_id": int(c), "score": float(s), "bbox": [float(v) for v in wh]})
    return out


def coco_evaluate(
    dataset: DetectionDataset, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray,
    boxes: np.ndarray, *, max_dets: int = 100,
) -> dict[str, float]:
    """COCO AP, AP50, AP75 and AP by object size (-1 where COCO has no ground truth)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = coco_results(image_index, class_id, score, boxes, dataset.blacklist)
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = coco_ground_truth(dataset)
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats[:6])}
