"""Cross-check: where the ILSVRC and COCO protocols must agree, pycocotools gives the same AP."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.record import ClassList, DetectionDataset, ImageRecord
from eval.coco_eval import coco_evaluate, coco_ground_truth, coco_results
from eval.ilsvrc_ap import GroundTruth, evaluate_ilsvrc


def _dataset(rng: np.random.Generator, num_images: int, num_classes: int) -> DetectionDataset:
    records = []
    for index in range(1, num_images + 1):
        n = int(rng.integers(1, 4))
        # Large boxes on a coarse grid: IoUs between them are far from 0.5.
        xy = rng.integers(0, 4, (n, 2)) * 120.0
        boxes = np.c_[xy, xy + 99.0].astype(np.float32)
        records.append(ImageRecord(f"im{index}", index, Path("x"), 600, 600, boxes,
                                   rng.integers(1, num_classes + 1, n).astype(np.int64), np.zeros(n, bool)))
    classes = ClassList(tuple(f"n{c}" for c in range(num_classes)), tuple(f"c{c}" for c in range(num_classes)))
    return DetectionDataset("t", "val", Path("."), classes, tuple(records))


def _detections(rng, ds):
    """Exact hits (IoU 1), shifted hits (IoU ~.67, far from .5), misses (IoU 0), distinct scores."""
    image, cls, boxes = [], [], []
    for rec in ds.records:
        for box, label in zip(rec.boxes, rec.labels):
            for shift in rng.choice([0.0, 20.0, 300.0], size=2):
                image.append(rec.index)
                cls.append(int(label) if rng.random() < 0.85 else int(rng.integers(1, len(ds.classes) + 1)))
                boxes.append(box + np.array([shift, 0, shift, 0]))
    score = rng.permutation(len(image)) / len(image) + 0.001
    return np.array(image), np.array(cls), score, np.array(boxes, np.float64)


def _pycocotools_all_point_ap(ds, image, cls, score, boxes, class_id: int) -> float:
    """All-point AP from pycocotools: with recThrs = k/npos, COCO's interpolated precision q[k]
    is the envelope at recall k/npos, and sum(q[1:]) / npos is the area under the envelope."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_ground_truth(ds)
        gt.createIndex()
        dt = gt.loadRes(coco_results(image, cls, score, boxes))
        ev = COCOeval(gt, dt, iouType="bbox")
    npos = len(gt.getAnnIds(catIds=[class_id]))
    ev.params.catIds = [class_id]
    ev.params.iouThrs = np.array([0.5])
    ev.params.recThrs = np.arange(npos + 1) / npos
    ev.params.maxDets = [1000]
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    q = ev.eval["precision"][0, :, 0, 0, 0]
    q = np.where(q < 0, 0.0, q)
    return float(q[1:].sum() / npos)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_matches_pycocotools_at_iou_half(seed):
    rng = np.random.default_rng(seed)
    ds = _dataset(rng, num_images=12, num_classes=3)
    image, cls, score, boxes = _detections(rng, ds)
    ours = evaluate_ilsvrc(GroundTruth.from_dataset(ds), image, cls, score, boxes)
    for c in ds.classes.ids:
        if ours.num_positives[c - 1] == 0:
            continue
        assert ours.ap[c - 1] == pytest.approx(_pycocotools_all_point_ap(ds, image, cls, score, boxes, c), abs=1e-6)


def test_coco_summary_stats():
    rng = np.random.default_rng(0)
    ds = _dataset(rng, num_images=6, num_classes=2)
    gt = GroundTruth.from_dataset(ds)
    stats = coco_evaluate(ds, gt.image_index, gt.class_id, np.linspace(1, 0.5, len(gt.class_id)), gt.boxes)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert coco_evaluate(ds, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 4)))["AP"] == 0.0
