"""VOC and COCO readers produce the same record type as the ILSVRC reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detect.data.coco import CocoSource
from detect.data.voc import VocSource
from detect.errors import DataError


def test_voc_reader_keeps_difficult_flags(tmp_path: Path):
    root = tmp_path / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    Image.new("RGB", (50, 40)).save(root / "JPEGImages/000001.jpg")
    (root / "Annotations/000001.xml").write_text(
        "<annotation><size><width>50</width><height>40</height><depth>3</depth></size>"
        "<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>20</xmax><ymax>30</ymax></bndbox></object>"
        "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>6</ymin>"
        "<xmax>45</xmax><ymax>39</ymax></bndbox></object></annotation>"
    )
    (root / "ImageSets/Main/test.txt").write_text("000001\n")
    src = VocSource(root=str(root), split="test", train_split="trainval", classes=["cat", "dog"],
                    image_ext=".jpg", unknown_classes="error", check_image_size=False)
    ds = src.load("test")
    rec = ds[0]
    assert rec.index == 1 and (rec.width, rec.height) == (50, 40)
    np.testing.assert_array_equal(rec.labels, [2, 1])
    np.testing.assert_array_equal(rec.difficult, [True, False])
    np.testing.assert_array_equal(rec.boxes[1], [5, 6, 45, 39])


def _coco(tmp_path: Path, anns: list[dict]) -> CocoSource:
    (tmp_path / "annotations").mkdir(exist_ok=True)
    data = {
        "images": [{"id": 42, "file_name": "b.jpg", "width": 100, "height": 80},
                   {"id": 7, "file_name": "a.jpg", "width": 60, "height": 60}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}],
        "annotations": anns,
    }
    (tmp_path / "annotations/instances_val.json").write_text(json.dumps(data))
    return CocoSource(root=str(tmp_path), split="val", train_split="train",
                      annotations="annotations/instances_{split}.json", images_dir="{split}")


def test_coco_reader_renumbers_categories_and_converts_xywh(tmp_path: Path):
    ds = _coco(tmp_path, [
        {"id": 1, "image_id": 42, "category_id": 90, "bbox": [10, 20, 30, 40], "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
    ]).load("val")
    # Images ordered by id: 7 (a.jpg) is index 1, 42 (b.jpg) index 2.
    assert [r.image_id for r in ds] == ["a.jpg", "b.jpg"] and [r.index for r in ds] == [1, 2]
    # Category ids sorted: 1 -> person = 1, 90 -> toothbrush = 2.
    assert ds.classes.names == ("person", "toothbrush")
    rec = ds[1]
    np.testing.assert_array_equal(rec.boxes, [[10, 20, 40, 60], [0, 0, 5, 5]])
    np.testing.assert_array_equal(rec.labels, [2, 1])
    np.testing.assert_array_equal(rec.difficult, [False, True])
    assert ds[0].num_objects == 0


def test_coco_bad_input(tmp_path: Path):
    with pytest.raises(DataError, match="unknown category_id 5"):
        _coco(tmp_path, [{"id": 1, "image_id": 42, "category_id": 5, "bbox": [0, 0, 1, 1]}]).load("val")
    (tmp_path / "annotations/instances_val.json").write_text("{not json")
    with pytest.raises(DataError, match="instances_val.json: malformed JSON"):
        CocoSource(root=str(tmp_path), split="val", train_split="train",
                   annotations="annotations/instances_{split}.json", images_dir="{split}").load("val")
