"""PASCAL VOC reader (VOC2007-style folders) into the common record type."""

from __future__ import annotations

from dataclasses import dataclass

from detect.data.classes import class_list_from_names
from detect.data.record import DetectionDataset
from detect.data.report import LoadReport
from detect.data.split_list import read_split_list
from detect.data.voc_xml import read_xml_records
from detect.errors import require_folder


def unknown_class_hint(names, unknown: str, *, shown: int = 30) -> str:
    """The end of the unknown-class error: the class list is ``data.classes``, and how to extend it."""
    listed = list(names)[:shown] + (["..."] if len(names) > shown else [])
    return (f"(not in data.classes, {len(names)} names): add it to the class list, "
            f"data.classes=[{','.join(listed + [unknown])}], or skip such objects with data.unknown_classes=skip")


@dataclass(frozen=True)
class VocSource:
    """A VOC year folder (``VOCdevkit/VOC2007``): JPEGImages/, Annotations/, ImageSets/Main/.

    ``classes`` is the ordered class list (ids 1..C; ``data.classes=[...]``, default VOC's 20); the
    XML ``<name>`` of every object must be one of them (else a one-line error that says how to add it,
    or ``unknown_classes=skip``).
    Difficult objects keep ``difficult=True`` (the evaluator ignores them, as VOC does).
    """

    root: str
    split: str
    train_split: str
    classes: list[str]
    image_ext: str
    unknown_classes: str
    check_image_size: bool

    def load(self, split: str) -> DetectionDataset:
        root = require_folder(self.root, "dataset root", " (set data.root)")
        classes = class_list_from_names(self.classes)
        list_path = root / "ImageSets" / "Main" / f"{split}.txt"
        report = LoadReport()
        records = read_xml_records(
            read_split_list(list_path, split),
            list_path=list_path,
            images_dir=root / "JPEGImages",
            annotations_dir=root / "Annotations",
            image_ext=self.image_ext,
            classes=classes,
            unknown_classes=self.unknown_classes,
            check_image_size=self.check_image_size,
            report=report,
            desc=f"read {split}",
            unknown_hint=lambda name: unknown_class_hint(classes.names, name),
        )
        report.log(f"{root} [{split}]")
        return DetectionDataset(name="voc", split=split, root=root, classes=classes, records=tuple(records))
