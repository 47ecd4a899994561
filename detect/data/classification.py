"""In-memory record of a classification set (ILSVRC CLS-LOC, a class-per-folder tree, the synthetic one).

Every reader (`detect.data.cls_loc`) produces a `ClassificationDataset`; the pretraining
and classification-evaluation stages only ever see this record.  Labels are 0-based
positions in ``classes`` (ILSVRC's 1..1000 ids minus one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassInfo:
    """One class: its id in the source (a WordNet id such as ``n01440764``, or a folder name) and a readable name."""

    wnid: str
    name: str


@dataclass(frozen=True)
class ClassificationRecord:
    """One image: its file and its 0-based class label."""

    path: str
    label: int


@dataclass(frozen=True)
class ClassificationDataset:
    """A split of a classification set: the class list (label = position) and its images in a fixed order."""

    root: str
    split: str
    classes: tuple[ClassInfo, ...]
    records: tuple[ClassificationRecord, ...]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]
