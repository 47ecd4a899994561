"""COCO json reader into the common record type.

COCO category ids are sparse (1..90 for 80 classes); they are renumbered 1..C in
ascending id order.  The class list is the file's ``categories`` (there is no ``data.classes``).  Crowd annotations become ``difficult`` boxes (ignored by the
evaluator, as COCO ignores crowd regions).  Image index = 1-based position in
ascending image-id order, which is also the order of submission files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from detect.data.record import ClassList, DetectionDataset, ImageRecord, clip_to_image
from detect.data.report import LoadReport
from detect.data.split_list import escapes_root
from detect.errors import DataError, read_user_file, require_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CocoSource:
    """COCO layout: ``annotations`` json and ``images_dir`` are ``{split}`` templates under root."""

    root: str
    split: str
    train_split: str
    annotations: str
    images_dir: str

    def load(self, split: str) -> DetectionDataset:
        root = require_folder(self.root, "dataset root", " (set data.root)")
        ann_path = root / self.annotations.format(split=split)
        try:
            data = json.loads(read_user_file(ann_path, "COCO annotation file"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{ann_path}: malformed JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(f"{ann_path}: expected a JSON object with 'images', 'annotations' and 'categories'")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DataError(f"{ann_path}: missing top-level key {key!r}")
            if not isinstance(data[key], list) or not all(isinstance(e, dict) for e in data[key]):
                raise DataError(f"{ann_path}: {key!r} must be a list of JSON objects")
        report = LoadReport()
        categories = sorted(_unique_ids(data["categories"], "categories", ann_path, ("name",)),
                            key=lambda c: c["id"])
        names = [str(c["name"]) for c in categories]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise DataError(f"{ann_path}: category name {name!r} is used by category ids "
                                f"{categories[names.index(name)]['id']} and {categories[i]['id']}")
        cat_to_label = {c["id"]: i + 1 for i, c in enumerate(categories)}
        classes = ClassList(synsets=tuple(names), names=tuple(names))
        images = sorted(_unique_ids(data["images"], "images", ann_path), key=lambda im: im["id"])
        if not images:
            raise DataError(f"{ann_path}: split {split!r} has no images")
        image_ids = {im["id"] for im in images}
        per_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            image_id = ann.get("image_id")
            if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
                raise DataError(f"{ann_path}: annotation {ann.get('id')} has no usable 'image_id' (got {image_id!r})")
            if image_id not in image_ids:
                report.add("annotations whose image_id is not in 'images' ignored",
                           f"{ann_path}, annotation {ann.get('id')} -> image id {ann['image_id']!r}")
                continue
            per_image.setdefault(ann["image_id"], []).append(ann)
        if not data["annotations"]:
            log.warning("%s: 'annotations' is empty: all %d images are negatives (no ground truth to score)",
                        ann_path, len(images))
        images_dir = root / self.images_dir.format(split=split)
        records = []
        for index, image in enumerate(images, 1):
            anns = per_image.get(image["id"], [])
            for ann in anns:
                if ann.get("category_id") not in cat_to_label:
                    raise DataError(f"{ann_path}: annotation {ann.get('id')} has unknown category_id "
                                    f"{ann.get('category_id')} (the class list of a COCO file is its 'categories': "
                                    f"add that id there)")
            file_name, width, height = _image_fields(image, ann_path)
            try:
                xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise DataError(f"{ann_path}: image id {image['id']}: an annotation has no valid 'bbox' "
                                f"([x, y, width, height]) ({type(exc).__name__}: {exc})") from None
            boxes = box_convert(xywh, "xywh", "xyxy").numpy()
            boxes = clip_to_image(boxes, width, height)
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not valid.all():
                report.add("zero-area boxes skipped", str(ann_path), int((~valid).sum()))
            labels = np.array([cat_to_label[a["category_id"]] for a in anns], np.int64)
            crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
            records.append(
                ImageRecord(
                    image_id=file_name,
                    index=index,
                    path=images_dir / file_name,
                    width=width,
                    height=height,
                    boxes=boxes[valid].astype(np.float32),
                    labels=labels[valid],
                    difficult=crowd[valid],
                )
            )
        report.log(f"{ann_path}")
        return DetectionDataset(name="coco", split=split, root=root, classes=classes, records=tuple(records))


def _unique_ids(entries: list[dict], key: str, ann_path: Path, needs: tuple[str, ...] = ()) -> list[dict]:
    """``entries`` of the top-level list ``key``; a `DataError` for an entry without a usable
    ``id`` (or a field of ``needs``) and for an id listed twice (it would mean two images or
    classes for one id, silently changing every score)."""
    seen: set = set()
    for entry in entries:
        value = entry.get("id")
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            raise DataError(f"{ann_path}: an entry of {key!r} has no usable 'id' (got {value!r})")
        missing = [f for f in needs if f not in entry]
        if missing:
            raise DataError(f"{ann_path}: {key} id {value!r} has no {missing[0]!r}")
        if value in seen:
            raise DataError(f"{ann_path}: {key} id {value!r} is listed twice")
        seen.add(value)
    kinds = {type(e["id"]) for e in entries}
    if len(kinds) > 1:
        raise DataError(f"{ann_path}: {key} ids mix numbers and strings")
    return entries


def _image_fields(image: dict, ann_path: Path) -> tuple[str, int, int]:
    """``(file_name, width, height)`` of one ``images`` entry; a `DataError` naming it when malformed.

    ``file_name`` must stay inside ``images_dir``: absolute names and ``..`` are refused.
    """
    try:
        file_name, width, height = str(image["file_name"]), int(image["width"]), int(image["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{ann_path}: image id {image['id']}: needs 'file_name', 'width' and 'height' "
                        f"({type(exc).__name__}: {exc})") from None
    if escapes_root(file_name):
        raise DataError(f"{ann_path}: image id {image['id']}: file_name {file_name!r} escapes the dataset root")
    return file_name, width, height
