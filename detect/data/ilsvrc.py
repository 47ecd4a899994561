"""ILSVRC DET reader (2015 layout by default; the 2013/2014 layout is a config preset).

Directory and list locations are templates with ``{split}``, relative to ``root``:

=================  ===============================  ===================================
key                2015 (ILSVRC2015_DET)             2013/2014 devkit
=================  ===============================  ===================================
images_dir         ``Data/DET/{split}``             ``ILSVRC2013_DET_{split}``
annotations_dir    ``Annotations/DET/{split}``      ``ILSVRC2013_DET_bbox_{split}``
split_list         ``ImageSets/DET/{split}.txt``    ``devkit/data/det_lists/{split}.txt``
=================  ===============================  ===================================
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path

from detect.data.classes import read_class_list
from detect.data.record import ClassList, DetectionDataset
from detect.data.report import LoadReport
from detect.data.split_list import read_split_list
from detect.data.voc_xml import read_xml_records
from detect.errors import DataError, read_user_file, require_folder

log = logging.getLogger(__name__)


def read_blacklist(path: Path, classes: ClassList) -> frozenset[tuple[int, int]]:
    """Lines ``<image_index> <synset>`` -> ``{(image_index, class_id)}``."""
    pairs = set()
    for lineno, line in enumerate(read_user_file(path, "blacklist").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected '<image_index> <synset>', got {line.strip()!r}")
        try:
            index = int(parts[0])
        except ValueError:
            raise DataError(f"{path}:{lineno}: image index {parts[0]!r} is not an integer") from None
        try:
            pairs.add((index, classes.id_of(parts[1])))
        except KeyError:
            raise DataError(f"{path}:{lineno}: unknown synset {parts[1]!r}") from None
    return frozenset(pairs)


@dataclass(frozen=True)
class IlsvrcSource:
    """Where an ILSVRC DET copy lives and how to read it; ``load(split)`` builds a dataset.

    Args:
        root: dataset root.
        split: the evaluation split (``val``); train_split: the training split.
        images_dir, annotations_dir, split_list: ``{split}`` templates relative to root.
        image_ext: extension appended to list names (the content decides the format).
        class_list: ``map_det.txt``; meta_det: ``meta_det.mat`` used when class_list is absent.
        blacklist: ``(image_index, synset)`` pairs ignored by the evaluator, applied to
            ``blacklist_split`` only (its indices refer to that split's list).
        unknown_classes: ``error`` (one-line error) or ``skip`` (counted warning).
        folder_of_split: ``{split pattern: folder split}``; per-class lists (``train_12``)
            and R-CNN's ``val1``/``val2`` live in the ``train``/``val`` folders.
        check_image_size: read each image header to catch XML ``<size>`` mismatches
            and EXIF rotations (slow on the 450k-image train split; off trusts the XML).
    """

    root: str
    split: str
    train_split: str
    images_dir: str
    annotations_dir: str
    split_list: str
    image_ext: str
    class_list: str
    meta_det: str | None
    blacklist: str | None
    blacklist_split: str | None
    unknown_classes: str
    check_image_size: bool
    folder_of_split: dict[str, str]

    def folder_split(self, split: str) -> str:
        """The split whose image/annotation folders hold ``split``'s images (first matching pattern)."""
        for pattern, folder in self.folder_of_split.items():
            if fnmatch.fnmatchcase(split, pattern):
                return folder
        return split

    def _path(self, template: str | None, split: str = "") -> Path | None:
        return None if template is None else Path(self.root) / template.format(split=split)

    def classes(self) -> ClassList:
        return read_class_list(self._path(self.class_list), self._path(self.meta_det))

    def _unknown_hint(self, synset: str) -> str:
        listed = self._path(self.class_list)
        source = listed if listed is not None and listed.exists() else self._path(self.meta_det)
        return (f"(not in the class list {source}, data.class_list): add a line '{synset} <id> <name>' there, "
                f"or skip such objects with data.unknown_classes=skip")

    def load(self, split: str) -> DetectionDataset:
        root = require_folder(self.root, "dataset root", " (set data.root)")
        classes = self.classes()
        entries = read_split_list(self._path(self.split_list, split), split)
        report = LoadReport()
        records = read_xml_records(
            entries,
            list_path=self._path(self.split_list, split),
            images_dir=self._path(self.images_dir, self.folder_split(split)),
            annotations_dir=self._path(self.annotations_dir, self.folder_split(split)),
            image_ext=self.image_ext,
            classes=classes,
            unknown_classes=self.unknown_classes,
            check_image_size=self.check_image_size,
            report=report,
            desc=f"read {split}",
            unknown_hint=self._unknown_hint,
        )
        report.log(f"{root} [{split}]")
        blacklist: frozenset[tuple[int, int]] = frozenset()
        blacklist_path = self._path(self.blacklist)
        if split == self.blacklist_split and blacklist_path is not None and blacklist_path.exists():
            blacklist = read_blacklist(blacklist_path, classes)
            known = {r.index for r in records}
            unknown = sorted({i for i, _ in blacklist} - known)
            if unknown:
                raise DataError(f"{blacklist_path}: image index {unknown[0]} is not in split {split!r}")
        log.info("%s [%s]: %d images, %d objects, %d classes", root, split, len(records),
                 sum(len(r.labels) for r in records), len(classes))
        return DetectionDataset(
            name="ilsvrc",
            split=split,
            root=root,
            classes=classes,
            records=tuple(records),
            blacklist=blacklist,
        )
