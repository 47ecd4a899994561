"""Tiny hand-made copies of every real dataset layout a reader takes (`data=` and `pretrain/data=` options).

Each writer makes a few small images with their annotations under ``root`` and returns the Hydra
overrides that point the reader's config at it (``data=voc data.root=...``): the tests compose the
real config with them.  Boxes are written by hand in each format's own convention (VOC: 1-based
pixels, a box may end at ``xmax == width``; ILSVRC: 0-based; COCO: ``[x, y, w, h]``).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from conftest import MAP_DET, voc_xml


def _jpeg(path: Path, size: tuple[int, int], colour=(90, 120, 150)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")


def voc_root(root: Path) -> list[str]:
    """VOC2007 layout: 3 images (trainval: 000001, 000002; test: 000003), classes cat/dog/person."""
    objects = {
        "000001": ((50, 40), [("cat", (1, 1, 50, 40))]),  # the whole image in VOC's 1-based pixels
        "000002": ((60, 30), [("dog", (3, 4, 30, 20)), ("person", (10, 2, 60, 30))]),
        "000003": ((40, 40), [("cat", (5, 5, 25, 35))]),
    }
    for name, (size, objs) in objects.items():
        _jpeg(root / f"JPEGImages/{name}.jpg", size)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / f"Annotations/{name}.xml").write_text(voc_xml(f"{name}.jpg", size, objs))
    (root / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n")
    (root / "ImageSets/Main/test.txt").write_text("000003\n")
    return ["data=voc", f"data.root={root}"]


def coco_root(root: Path) -> list[str]:
    """COCO layout: annotations/instances_{train2017,val2017}.json and the image folders."""
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    splits = {
        "train2017": [({"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}, [(18, [4, 4, 30, 20])]),
                      ({"id": 2, "file_name": "b.jpg", "width": 40, "height": 40}, [(1, [0, 0, 40, 40])])],
        "val2017": [({"id": 5, "file_name": "c.jpg", "width": 50, "height": 50}, [(1, [10, 10, 20, 30])])],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, images in splits.items():
        anns = []
        for image, boxes in images:
            _jpeg(root / split / image["file_name"], (image["width"], image["height"]))
            for category, bbox in boxes:
                anns.append({"id": len(anns) + 1, "image_id": image["id"], "category_id": category, "bbox": bbox,
                             "area": bbox[2] * bbox[3], "iscrowd": 0})
        data = {"images": [i for i, _ in images], "annotations": anns, "categories": categories}
        (root / f"annotations/instances_{split}.json").write_text(json.dumps(data))
    return ["data=coco", f"data.root={root}"]


def _ilsvrc_split(root: Path, images_dir: str, ann_dir: str, list_path: str, entries: dict) -> None:
    lines = []
    for index, (name, (size, objects)) in enumerate(entries.items(), 1):
        _jpeg(root / images_dir / f"{name}.JPEG", size)
        (root / ann_dir).mkdir(parents=True, exist_ok=True)
        (root / ann_dir / f"{name}.xml").write_text(voc_xml(name, size, objects))
        lines.append(f"{name} {index}\n")
    (root / list_path).parent.mkdir(parents=True, exist_ok=True)
    (root / list_path).write_text("".join(lines))


ILSVRC_TRAIN = {"train_1": ((40, 30), [("n01", (0, 0, 20, 20))]), "train_2": ((30, 30), [("n02", (2, 2, 29, 29))])}
ILSVRC_VAL = {"val_1": ((40, 30), [("n03", (5, 5, 39, 29))]), "val_2": ((20, 20), [])}


def ilsvrc_root(root: Path) -> list[str]:
    """ILSVRC DET 2015 layout (Data/DET, Annotations/DET, ImageSets/DET, devkit/data/map_det.txt)."""
    for split, entries in (("train", ILSVRC_TRAIN), ("val", ILSVRC_VAL)):
        _ilsvrc_split(root, f"Data/DET/{split}", f"Annotations/DET/{split}", f"ImageSets/DET/{split}.txt", entries)
    (root / "devkit/data").mkdir(parents=True, exist_ok=True)
    (root / "devkit/data/map_det.txt").write_text(MAP_DET)
    return ["data=ilsvrc", f"data.root={root}"]


def ilsvrc2014_root(root: Path) -> list[str]:
    """ILSVRC DET 2013/2014 devkit layout (ILSVRC2013_DET_<split>, ILSVRC2013_DET_bbox_<split>, det_lists)."""
    for split, entries in (("train", ILSVRC_TRAIN), ("val", ILSVRC_VAL)):
        _ilsvrc_split(root, f"ILSVRC2013_DET_{split}", f"ILSVRC2013_DET_bbox_{split}",
                      f"devkit/data/det_lists/{split}.txt", entries)
    (root / "devkit/data").mkdir(parents=True, exist_ok=True)
    (root / "devkit/data/map_det.txt").write_text(MAP_DET)
    return ["data=ilsvrc2014", f"data.root={root}"]


DETECTION_READERS = {"ilsvrc": ilsvrc_root, "ilsvrc2014": ilsvrc2014_root, "voc": voc_root, "coco": coco_root}

# ---- classification readers (pretrain/data=)

CLS_MAPPING = "n01440764 tench, Tinca tinca\nn01443537 goldfish\n"


def cls_loc_root(root: Path) -> list[str]:
    """Kaggle CLS-LOC layout: Data/CLS-LOC/{train/<wnid>,val}/*, LOC_synset_mapping.txt, LOC_val_solution.csv."""
    (root / "LOC_synset_mapping.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text(CLS_MAPPING)
    for wnid in ("n01440764", "n01443537"):
        for i in (1, 2):
            _jpeg(root / f"Data/CLS-LOC/train/{wnid}/{wnid}_{i}.JPEG", (16, 12))
    for i in (1, 2):
        _jpeg(root / f"Data/CLS-LOC/val/ILSVRC2012_val_{i:08d}.JPEG", (16, 12))
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n"
                                               "ILSVRC2012_val_00000001,n01443537 1 1 5 5 \n"
                                               "ILSVRC2012_val_00000002,n01440764 0 0 8 8 \n")
    return ["pretrain/data=cls_loc", f"pretrain.data.root={root}"]


def image_folder_root(root: Path) -> list[str]:
    """A class-per-folder tree: <root>/<split>/<class>/<image>."""
    for split in ("train", "val"):
        for name in ("apple", "pear"):
            _jpeg(root / split / name / f"{name}_{split}.jpg", (12, 12))
    return ["pretrain/data=image_folder", f"pretrain.data.root={root}"]


CLASSIFICATION_READERS = {"cls_loc": cls_loc_root, "image_folder": image_folder_root}
