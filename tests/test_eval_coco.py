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


def _pycocotools_summary(ds, image, cls, score, boxes) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_ground_truth(ds)
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(coco_results(image, cls, score, boxes)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


@pytest.mark.parametrize("seed", [0, 1])
def test_summary_at_100_is_pycocotools_own(seed):
    rng = np.random.default_rng(seed)
    ds = _dataset(rng, num_images=10, num_classes=3)
    image, cls, score, boxes = _detections(rng, ds)
    ours = coco_evaluate(ds, image, cls, score, boxes, max_dets=100)
    np.testing.assert_allclose(list(ours.values()), _pycocotools_summary(ds, image, cls, score, boxes), atol=1e-12)
    # No limit (the default) reaches every detection: here no image has 100, so the same numbers.
    assert coco_evaluate(ds, image, cls, score, boxes) == ours


def _crowd(n: int) -> DetectionDataset:
    """One 2000x2000 image with ``n`` disjoint 40x40 boxes of one class (as ILSVRC images with 279 objects)."""
    xy = np.array([(i % 40, i // 40) for i in range(n)], np.float32) * 50
    boxes = np.c_[xy, xy + 39]
    rec = ImageRecord("im1", 1, Path("x"), 2000, 2000, boxes, np.ones(n, np.int64), np.zeros(n, bool))
    return DetectionDataset("t", "val", Path("."), ClassList(("n1",), ("thing",)), (rec,))


def test_perfect_submission_on_a_crowded_image_scores_1_without_a_limit_and_warns_with_one(caplog):
    from eval.coco_eval import warn_images_over_max_dets

    ds = _crowd(279)
    gt = GroundTruth.from_dataset(ds)
    score = np.linspace(1, 0.5, len(gt.class_id))
    assert coco_evaluate(ds, gt.image_index, gt.class_id, score, gt.boxes)["AP"] == pytest.approx(1.0)
    capped = coco_evaluate(ds, gt.image_index, gt.class_id, score, gt.boxes, max_dets=100)
    assert 0 < capped["AP"] < 0.5  # recall capped at 100/279: the limit, not the detections, sets the number
    for limit in (1, 10, 50, 300):  # pycocotools' own summarize reads -1 at every limit but 100
        stats = coco_evaluate(ds, gt.image_index, gt.class_id, score, gt.boxes, max_dets=limit)
        assert stats["AP"] != -1 and stats["AP50"] != -1
    with caplog.at_level("WARNING"):
        assert warn_images_over_max_dets(ds, 100) == 1 and warn_images_over_max_dets(ds, None) == 0
    assert "1 images have more ground-truth objects than eval.coco_max_dets=100 (most: 279 in image 1)" in caplog.text
