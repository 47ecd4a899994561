"""The one in-memory record every dataset reader produces.

Boxes are float32 `(N, 4)` arrays in `xyxy` pixel coordinates of the image
file as decoded (after EXIF orientation), exactly as stored in the annotation
(ILSVRC/VOC pixel indices are kept as they are; the ILSVRC evaluator applies
its own `+1` arithmetic).  Labels are int64 `(N,)` class ids in `1..C`
(0 is reserved for background in the classifier).

The image extent (`inside_image`, `clip_to_image`), one convention for every reader and for
the submission checker: a ``W x H`` image spans ``[0, W] x [0, H]``.  That holds boxes written
in 0-based pixel indices (ILSVRC: ``0 .. W-1``), in VOC's 1-based pixels (``1 .. W``: ``xmax ==
W`` is the last column) and continuous boxes (COCO, proposals: ``x2 = W`` is the far edge),
without renumbering any of them; only a coordinate outside it is clipped (readers) or counted
(submissions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ClassList:
    """Class ids `1..C` with their synset (WordNet id or dataset key) and readable name."""

    synsets: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.synsets) != len(self.names):
            raise ValueError("synsets and names must have the same length")

    def __len__(self) -> int:
        return len(self.synsets)

    @property
    def ids(self) -> range:
        return range(1, len(self.synsets) + 1)

    def id_of(self, synset: str) -> int:
        """1-based class id of a synset; KeyError when unknown."""
        return self._index()[synset]

    def name_of(self, class_id: int) -> str:
        return self.names[class_id - 1]

    def _index(self) -> dict[str, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {s: i + 1 for i, s in enumerate(self.synsets)}
            object.__setattr__(self, "_cache", cache)
        return cache


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its ground truth.

    Attributes:
        image_id: the name used in the split list (e.g. ``ILSVRC2013_val_00000001``
            or ``ILSVRC2013_train/n01443537/n01443537_10``).
        index: 1-based position in the split list (the ILSVRC image index used in
            submission files).
        path: image file.
        width, height: size of the decoded image in pixels.
        boxes: float32 ``(N, 4)`` xyxy.
        labels: int64 ``(N,)`` class ids in ``1..C``.
        difficult: bool ``(N,)``; difficult boxes are neither required nor penalised
            by VOC-style evaluation (always False for ILSVRC).
    """

    image_id: str
    index: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    difficult: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.boxes.shape != (n, 4) or self.difficult.shape != (n,):
            raise ValueError(
                f"{self.image_id}: boxes {self.boxes.shape}, labels {self.labels.shape} "
                f"and difficult {self.difficult.shape} disagree"
            )

    @property
    def num_objects(self) -> int:
        return len(self.labels)


def outside_image(boxes: np.ndarray, width, height) -> np.ndarray:
    """bool ``(N,)``: the xyxy box has a coordinate outside ``[0, width] x [0, height]`` (module docstring).

    ``width``/``height`` are numbers or ``(N,)`` arrays (one image size per box).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (b[:, :2] < 0).any(1) | (b[:, 2] > width) | (b[:, 3] > height)


def clip_to_image(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """xyxy ``boxes`` clipped to ``[0, width] x [0, height]`` (a copy, same dtype)."""
    clipped = np.array(boxes, copy=True).reshape(-1, 4)
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    return clipped


def empty_annotations() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(boxes (0,4) float32, labels (0,) int64, difficult (0,) bool)` for negative images."""
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), bool)


@dataclass(frozen=True, eq=False)
class DetectionDataset:
    """A split of a detection dataset: its classes, image records and blacklist.

    ``blacklist`` holds ``(image_index, class_id)`` pairs that the ILSVRC protocol
    ignores entirely (neither ground truth nor detections count).
    """

    name: str
    split: str
    root: Path
    classes: ClassList
    records: tuple[ImageRecord, ...]
    blacklist: frozenset[tuple[int, int]] = frozenset()

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i: int) -> ImageRecord:
        return self.records[i]

    @property
    def num_objects(self) -> int:
        return sum(r.num_objects for r in self.records)
