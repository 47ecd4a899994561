"""COCO json reader into the common record type.

COCO category ids are sparse (1..90 for 80 classes); they are renumbered 1..C in
ascending id order.  Crowd annotations become ``difficult`` boxes (ignored by the
evaluator, as COCO ignores crowd regions).  Image index = 1-based position in
ascending image-id order, which is also the order of submission files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from detect.data.record import ClassList, DetectionDataset, ImageRecord
from detect.data.report import LoadReport
from detect.data.split_list import escapes_root
from detect.errors import DataError


@dataclass(frozen=True)
class CocoSource:
    """COCO layout: ``annotations`` json and ``images_dir`` are ``{split}`` templates under root."""

    root: str
    split: str
    train_split: str
    annotations: str
    images_dir: str

    def load(self, split: str) -> DetectionDataset:
        root = Path(self.root)
        ann_path = root / self.annotations.format(split=split)
        try:
            data = json.loads(ann_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{ann_path}: COCO annotation file not found") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{ann_path}: malformed JSON ({exc})") from None
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DataError(f"{ann_path}: missing top-level key {key!r}")
        categories = sorted(data["categories"], key=lambda c: c["id"])
        cat_to_label = {c["id"]: i + 1 for i, c in enumerate(categories)}
        classes = ClassList(
            synsets=tuple(str(c["name"]) for c in categories), names=tuple(str(c["name"]) for c in categories)
        )
        per_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            per_image.setdefault(ann["image_id"], []).append(ann)
        try:
            images = sorted(data["images"], key=lambda im: im["id"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{ann_path}: an entry of 'images' has no usable 'id' "
                            f"({type(exc).__name__}: {exc})") from None
        if not images:
            raise DataError(f"{ann_path}: split {split!r} has no images")
        report = LoadReport()
        images_dir = root / self.images_dir.format(split=split)
        records = []
        for index, image in enumerate(images, 1):
            anns = per_image.get(image["id"], [])
            for ann in anns:
                if ann.get("category_id") not in cat_to_label:
                    raise DataError(f"{ann_path}: annotation {ann.get('id')} has unknown category_id {ann.get('category_id')}")
            file_name, width, height = _image_fields(image, ann_path)
            try:
                xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise DataError(f"{ann_path}: image id {image['id']}: an annotation has no valid 'bbox' "
                                f"([x, y, width, height]) ({type(exc).__name__}: {exc})") from None
            boxes = box_convert(xywh, "xywh", "xyxy").numpy()
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
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
