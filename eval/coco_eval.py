"""COCO-style second opinion on the same detections, via pycocotools' ``COCOeval``.

Boxes are converted from xyxy to COCO's xywh here, at the edge
(`torchvision.ops.box_convert`); COCO's continuous IoU (no ``+1``) and its
101-point interpolated AP apply.  Blacklisted (image, class) pairs are removed
from both ground truth and detections; ``difficult`` boxes become ``iscrowd``
(COCO's ignore regions).

Per-image detection limit (``eval.coco_max_dets``): COCO keeps only the top ``max_dets``
detections of each image; the ILSVRC devkit keeps them all.  The default, ``null``, is the
ILSVRC rule (no limit: the limit is the largest number of detections any image has, so the
pipeline's ``ensemble.max_per_image`` (100) is what bounds them).  The summary is computed at
the configured limit (pycocotools' own ``summarize`` reads AP at 100 detections only, and
prints -1 for any other limit), and images with more ground-truth objects than a set limit
are counted in a warning: a perfect submission cannot reach AP 1 on them.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert

from detect.data.record import DetectionDataset
from detect.errors import config_int

log = logging.getLogger(__name__)

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


def check_max_dets(max_dets: int | None) -> int | None:
    """``eval.coco_max_dets``: a positive integer, or None (no per-image limit, as in ILSVRC)."""
    return None if max_dets is None else config_int("eval.coco_max_dets", max_dets, low=1)


def images_over_max_dets(dataset: DetectionDataset, max_dets: int | None) -> tuple[int, int, int]:
    """``(images, most objects, its image index)``: images with more scored ground-truth objects
    (not blacklisted, not difficult) than ``max_dets``; ``(0, 0, 0)`` without a limit."""
    over, most, where = 0, 0, 0
    if max_dets is None:
        return over, most, where
    for rec in dataset.records:
        n = sum(1 for label, difficult in zip(rec.labels, rec.difficult)
                if not difficult and (int(rec.index), int(label)) not in dataset.blacklist)
        if n > max_dets:
            over += 1
            if n > most:
                most, where = n, int(rec.index)
    return over, most, where


def warn_images_over_max_dets(dataset: DetectionDataset, max_dets: int | None) -> int:
    """Log (and return the count of) images with more ground-truth objects than ``max_dets``."""
    over, most, where = images_over_max_dets(dataset, max_dets)
    if over:
        log.warning("COCO second opinion: %d images have more ground-truth objects than eval.coco_max_dets=%d "
                    "(most: %d in image %d); COCO scores only the top %d detections of an image, so their "
                    "recall is capped (eval.coco_max_dets=null applies no limit, as the ILSVRC devkit)",
                    over, max_dets, most, where, max_dets)
    return over


def _summary(ev, m: int) -> dict[str, float]:
    """COCO's AP, AP50, AP75 and AP by size from ``ev.eval['precision']`` at maxDets index ``m``
    (what ``summarize`` computes, at any limit)."""
    precision = ev.eval["precision"]  # [IoU thresholds, recall thresholds, classes, areas, maxDets]
    p = ev.params
    area = {label: i for i, label in enumerate(p.areaRngLbl)}

    def mean(iou: float | None = None, rng: str = "all") -> float:
        s = precision[:, :, :, area[rng], m]
        if iou is not None:
            s = s[np.isclose(p.iouThrs, iou)]
        s = s[s > -1]
        return float(s.mean()) if s.size else -1.0

    values = (mean(), mean(0.5), mean(0.75), mean(rng="small"), mean(rng="medium"), mean(rng="large"))
    return dict(zip(COCO_STAT_NAMES, values))


def coco_evaluate(
    dataset: DetectionDataset, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray,
    boxes: np.ndarray, *, max_dets: int | None = None,
) -> dict[str, float]:
    """COCO AP, AP50, AP75 and AP by object size (-1 where COCO has no ground truth of that size).

    ``max_dets``: detections scored per image (COCO's ``maxDets``); None: all of them.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    max_dets = check_max_dets(max_dets)
    results = coco_results(image_index, class_id, score, boxes, dataset.blacklist)
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    if max_dets is None:
        max_dets = int(np.bincount(np.asarray([r["image_id"] for r in results], np.int64)).max())
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = coco_ground_truth(dataset)
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        # The last entry is the one evaluateImg keeps detections up to: the configured limit.
        ev.params.maxDets = sorted({d for d in (1, 10) if d < max_dets} | {max_dets})
        ev.evaluate()
        ev.accumulate()
    return _summary(ev, len(ev.params.maxDets) - 1)
