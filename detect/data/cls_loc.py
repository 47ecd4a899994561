"""Readers for real classification sets: the ILSVRC CLS-LOC layout and a class-per-folder tree.

Both only list files (images are decoded later by `detect.data.image_io.load_rgb`) and
return a `ClassificationDataset`.  Every problem with the files is a one-line `DataError`
naming the path (and the line for text files).

CLS-LOC (the Kaggle ImageNet-LOC layout), paths relative to ``root``::

    LOC_synset_mapping.txt              '<wnid> <name words...>' per class; label = line order
    Data/CLS-LOC/train/<wnid>/*.JPEG    the train split
    Data/CLS-LOC/<split>/*.JPEG         any other split (val, ...)
    LOC_<split>_solution.csv            ImageId,PredictionString ('<wnid> x1 y1 x2 y2 ...')

or, for val, the ILSVRC2012 devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line i:
the 1-based ILSVRC2012 id of ``ILSVRC2012_val_%08d`` i) with its ``meta.mat``.  Devkit ids
are *not* label order (id 1 is n02119789): they map to wnids, then to positions in the
class list.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

from detect.data.classification import ClassificationDataset, ClassificationRecord, ClassInfo
from detect.errors import DataError

log = logging.getLogger(__name__)

TRAIN_DIR = "Data/CLS-LOC/train"
SPLIT_DIR = "Data/CLS-LOC/{split}"
CLS_LOC_EXTENSIONS = (".jpeg", ".jpg", ".png")  # ILSVRC ships some PNGs named .JPEG; load_rgb sniffs bytes
DEVKIT_VAL_NAME = "ILSVRC2012_val_{index:08d}"
# meta.mat lists the 1000 leaf classes as ids 1..1000, then their WordNet ancestors.
ILSVRC2012_NUM_CLASSES = 1000


# ----------------------------------------------------------------------------- file access


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file ({what})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def _scan(folder: Path, what: str) -> list[os.DirEntry]:
    """Entries of ``folder`` except hidden ones (``.DS_Store``, macOS ``._x.JPEG`` forks)."""
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if not e.name.startswith(".")]
    except FileNotFoundError:
        raise DataError(f"{folder}: {what} not found") from None
    except NotADirectoryError:
        raise DataError(f"{folder}: is a file, expected a folder ({what})") from None
    except OSError as exc:
        raise DataError(f"{folder}: cannot list {what} ({exc.strerror or exc})") from None


def _images_in(folder: Path, what: str, extensions: tuple[str, ...]) -> list[str]:
    """Sorted names of the image files directly in ``folder`` (extension case-insensitive)."""
    return sorted(e.name for e in _scan(folder, what) if e.name.lower().endswith(extensions) and e.is_file())


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DataError(f"{root}: dataset root does not exist (set data.root)")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, expected the dataset root folder")


# ----------------------------------------------------------------------------- CLS-LOC classes


def read_synset_mapping(path: Path) -> tuple[ClassInfo, ...]:
    """``LOC_synset_mapping.txt``: lines ``<wnid> <name words...>``; label = line order (blank lines skipped)."""
    path = Path(path)
    classes: list[ClassInfo] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(_read_text(path, "synset mapping").splitlines(), 1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        wnid = parts[0]
        if wnid in seen:
            raise DataError(f"{path}:{lineno}: wnid {wnid!r} already listed on line {seen[wnid]}")
        seen[wnid] = lineno
        classes.append(ClassInfo(wnid=wnid, name=parts[1].strip() if len(parts) == 2 else wnid))
    if not classes:
        raise DataError(f"{path}: synset mapping lists no class")
    return tuple(classes)


def read_devkit_meta(path: Path) -> dict[int, ClassInfo]:
    """The ILSVRC2012 devkit's ``meta.mat``: ``{ILSVRC2012_ID: ClassInfo(WNID, words)}`` for the leaf ids 1..1000."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DataError(f"{path}: devkit meta.mat not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file (devkit meta.mat)") from None
    except Exception as exc:  # scipy raises several unrelated types for broken files
        raise DataError(f"{path}: cannot read MATLAB file ({exc})") from None
    if "synsets" not in mat:
        raise DataError(f"{path}: no 'synsets' variable")
    leaves: dict[int, ClassInfo] = {}
    for synset in np.atleast_1d(mat["synsets"]):
        try:
            class_id, wnid, words = int(synset.ILSVRC2012_ID), str(synset.WNID), str(synset.words)
        except (AttributeError, TypeError, ValueError):
            raise DataError(f"{path}: synsets need fields ILSVRC2012_ID (integer), WNID, words") from None
        if 1 <= class_id <= ILSVRC2012_NUM_CLASSES:
            if class_id in leaves:
                raise DataError(f"{path}: ILSVRC2012_ID {class_id} listed twice")
            leaves[class_id] = ClassInfo(wnid=wnid, name=words)
    if not leaves:
        raise DataError(f"{path}: no synset with ILSVRC2012_ID in 1..{ILSVRC2012_NUM_CLASSES}")
    return leaves


def _cls_loc_classes(root: Path, synset_mapping: str, meta: Path | None) -> tuple[ClassInfo, ...]:
    """The mapping file; else the train folder names; else (a val-only copy) the devkit's leaves; all sorted by wnid."""
    mapping = root / synset_mapping
    if mapping.exists():
        return read_synset_mapping(mapping)
    train = root / TRAIN_DIR
    if train.exists():
        names = sorted(e.name for e in _scan(train, "train image folder") if e.is_dir())
        if not names:
            raise DataError(f"{train}: no class folder (and no {mapping} to list the classes)")
        return tuple(ClassInfo(wnid=n, name=n) for n in names)
    if meta is not None and meta.exists():
        return tuple(sorted(read_devkit_meta(meta).values(), key=lambda c: c.wnid))
    raise DataError(f"no class list: neither {mapping} nor {train} exists")


# ----------------------------------------------------------------------------- CLS-LOC splits


def _train_records(root: Path, classes: tuple[ClassInfo, ...]) -> list[ClassificationRecord]:
    train = root / TRAIN_DIR
    entries = _scan(train, "train image folder")
    known = {c.wnid for c in classes}
    extra = sorted(e.name for e in entries if e.is_dir() and e.name not in known)
    if extra:  # a class subset is a legitimate use of a shorter mapping file
        log.warning("%s: %d folders are not in the class list, skipped (first: %s)", train, len(extra), extra[0])
    records = []
    for label, c in enumerate(classes):
        folder = train / c.wnid
        names = _images_in(folder, f"image folder of class {c.wnid!r}", CLS_LOC_EXTENSIONS)
        if not names:
            raise DataError(f"{folder}: no image of class {c.wnid!r} ({'/'.join(CLS_LOC_EXTENSIONS)})")
        records.extend(ClassificationRecord(path=str(folder / n), label=label) for n in names)
    return records


def _split_images(folder: Path, split: str) -> dict[str, str]:
    """``{image id (file stem): file name}`` of a non-train split's folder."""
    names = _images_in(folder, f"{split} image folder", CLS_LOC_EXTENSIONS)
    if not names:
        raise DataError(f"{folder}: no image in split {split!r} ({'/'.join(CLS_LOC_EXTENSIONS)})")
    by_id: dict[str, str] = {}
    for name in names:
        image_id = os.path.splitext(name)[0]
        if image_id in by_id:
            raise DataError(f"{folder}: two image files for id {image_id!r}: {by_id[image_id]}, {name}")
        by_id[image_id] = name
    return by_id


def read_solution_csv(path: Path, wnid_label: dict[str, int]) -> dict[str, int]:
    """``LOC_<split>_solution.csv`` -> ``{ImageId: label}``; the label is the first box's wnid."""
    path = Path(path)
    text = _read_text(path, "label file")
    reader = csv.reader(io.StringIO(text))
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    header = next(reader, None)
    if header is None or [h.strip().lstrip("\ufeff") for h in header] != ["ImageId", "PredictionString"]:
        raise DataError(f"{path}:1: expected the header 'ImageId,PredictionString', got {header!r}")
    for row in reader:
        lineno = reader.line_num
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip():
            raise DataError(f"{path}:{lineno}: expected '<ImageId>,<wnid> x1 y1 x2 y2 ...', got {','.join(row)!r}")
        image_id, tokens = row[0].strip(), row[1].split()
        if not tokens or len(tokens) % 5:
            raise DataError(f"{path}:{lineno}: PredictionString must be groups of '<wnid> x1 y1 x2 y2', "
                            f"got {row[1].strip()!r}")
        for wnid in tokens[::5]:
            if wnid not in wnid_label:
                raise DataError(f"{path}:{lineno}: unknown wnid {wnid!r} (not in the class list)")
        if image_id in labels:
            raise DataError(f"{path}:{lineno}: ImageId {image_id!r} already listed on line {first_line[image_id]}")
        labels[image_id] = wnid_label[tokens[0]]
        first_line[image_id] = lineno
    return labels


def read_devkit_ground_truth(path: Path, id_to_class: dict[int, ClassInfo],
                             wnid_label: dict[str, int]) -> dict[str, int]:
    """``ILSVRC2012_validation_ground_truth.txt`` -> ``{ILSVRC2012_val_%08d: label}`` (line i is image i)."""
    path = Path(path)
    labels: dict[str, int] = {}
    for lineno, line in enumerate(_read_text(path, "devkit ground truth").splitlines(), 1):
        text = line.strip()
        try:
            class_id = int(text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected one ILSVRC2012 class id, got {text!r}") from None
        if class_id not in id_to_class:
            raise DataError(f"{path}:{lineno}: ILSVRC2012 id {class_id} is not a leaf class of meta.mat")
        wnid = id_to_class[class_id].wnid
        if wnid not in wnid_label:
            raise DataError(f"{path}:{lineno}: wnid {wnid!r} (id {class_id}) is not in the class list")
        labels[DEVKIT_VAL_NAME.format(index=lineno)] = wnid_label[wnid]
    return labels


def read_cls_loc(
    root: str | Path,
    split: str,
    *,
    synset_mapping: str = "LOC_synset_mapping.txt",
    val_solution: str = "LOC_{split}_solution.csv",
    devkit_ground_truth: str | None = None,
    devkit_meta: str | None = None,
) -> ClassificationDataset:
    """One split of an ILSVRC CLS-LOC copy.

    Args:
        root: dataset root (holds ``Data/CLS-LOC/`` and the ``LOC_*`` files).
        split: ``train`` reads ``Data/CLS-LOC/train/<wnid>/``, sorted by (class order, file name);
            any other split reads ``Data/CLS-LOC/<split>/``, sorted by file name.
        synset_mapping: class list relative to root; when absent, the sorted folder names of
            ``Data/CLS-LOC/train/`` (or, lacking those, the devkit meta.mat's leaves by wnid).
        val_solution: ``{split}`` template of the Kaggle label CSV, relative to root.
        devkit_ground_truth: when set, non-train labels come from this devkit file instead
            (``{split}`` template relative to root); devkit_meta: its ``meta.mat``, by default
            the ``meta.mat`` beside it.

    Every image must have a label and every label an image.
    """
    root = Path(root)
    _check_root(root)
    gt = meta = None
    if devkit_ground_truth is not None:
        gt = root / devkit_ground_truth.format(split=split)
        meta = root / devkit_meta if devkit_meta is not None else gt.parent / "meta.mat"
    classes = _cls_loc_classes(root, synset_mapping, meta)
    if split == "train":
        records = _train_records(root, classes)
    else:
        folder = root / SPLIT_DIR.format(split=split)
        images = _split_images(folder, split)
        wnid_label = {c.wnid: i for i, c in enumerate(classes)}
        if gt is not None:
            label_file, labels = gt, read_devkit_ground_truth(gt, read_devkit_meta(meta), wnid_label)
        else:
            label_file = root / val_solution.format(split=split)
            labels = read_solution_csv(label_file, wnid_label)
        for image_id, name in images.items():
            if image_id not in labels:
                raise DataError(f"{folder / name}: image has no label in {label_file}")
        for image_id in labels:
            if image_id not in images:
                raise DataError(f"{label_file}: {image_id!r} has no image file in {folder}")
        records = [ClassificationRecord(path=str(folder / name), label=labels[image_id])
                   for image_id, name in images.items()]  # images is sorted by file name
    log.info("%s [%s]: %d images, %d classes", root, split, len(records), len(classes))
    return ClassificationDataset(root=str(root), split=split, classes=classes, records=tuple(records))


# ----------------------------------------------------------------------------- class-per-folder tree


def image_folder_classes(folder: str | Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder`` (torchvision's ``find_classes``)."""
    folder = Path(folder)
    names = sorted(e.name for e in _scan(folder, "image folder") if e.is_dir())
    if not names:
        raise DataError(f"{folder}: no class folder (expected <class>/<images>)")
    return names


def _walk_images(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, in torchvision's order (sorted dirs, then sorted names)."""
    def fail(exc: OSError) -> None:
        raise DataError(f"{exc.filename}: cannot list folder ({exc.strerror or exc})")

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend((dirpath, f) for f in filenames
                     if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS))
    return [os.path.join(d, f) for d, f in sorted(found)]


def read_image_folder(root: str | Path, split: str | None = None) -> ClassificationDataset:
    """A torchvision ``ImageFolder`` tree ``root[/split]/<class>/**/<image>``.

    Classes are the sorted sub-folder names (wnid = name = folder name; label = position);
    images carry torchvision's ``IMG_EXTENSIONS`` (any case), in torchvision's order.
    Unlike torchvision, hidden files and folders are skipped.  ``dataset.split`` is
    ``split``, or ``""`` without one.
    """
    root = Path(root)
    _check_root(root)
    folder = root / split if split is not None else root
    names = image_folder_classes(folder)
    records = []
    for label, name in enumerate(names):
        files = _walk_images(folder / name)
        if not files:
            raise DataError(f"{folder / name}: no image in class folder ({'/'.join(IMG_EXTENSIONS)})")
        records.extend(ClassificationRecord(path=p, label=label) for p in files)
    log.info("%s: %d images, %d classes", folder, len(records), len(names))
    return ClassificationDataset(root=str(root), split=split if split is not None else "",
                                 classes=tuple(ClassInfo(wnid=n, name=n) for n in names), records=tuple(records))


# ----------------------------------------------------------------------------- Hydra sources


@dataclass(frozen=True)
class ClsLocSource:
    """An ILSVRC CLS-LOC copy; ``load(split)`` = `read_cls_loc` with these options."""

    root: str
    split: str = "val"
    train_split: str = "train"
    synset_mapping: str = "LOC_synset_mapping.txt"
    val_solution: str = "LOC_{split}_solution.csv"
    devkit_ground_truth: str | None = None
    devkit_meta: str | None = None

    def load(self, split: str) -> ClassificationDataset:
        return read_cls_loc(self.root, split, synset_mapping=self.synset_mapping, val_solution=self.val_solution,
                            devkit_ground_truth=self.devkit_ground_truth, devkit_meta=self.devkit_meta)


@dataclass(frozen=True)
class ImageFolderSource:
    """A class-per-folder tree; ``split_dir`` is the ``{split}`` template of a split's folder ("" = root itself).

    Labels are positions in the sorted class folders, so every split must have the same
    class folders as ``train_split``: a split missing one would silently shift labels.
    """

    root: str
    split: str = "val"
    train_split: str = "train"
    split_dir: str = "{split}"

    def load(self, split: str) -> ClassificationDataset:
        folder = self.split_dir.format(split=split) or None
        dataset = read_image_folder(self.root, folder)
        train_folder = self.split_dir.format(split=self.train_split) or None
        if train_folder != folder:
            train_path = Path(self.root) / train_folder if train_folder else Path(self.root)
            expected = image_folder_classes(train_path)
            got = [c.wnid for c in dataset.classes]
            if got != expected:
                missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
                what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}"
                raise DataError(f"{Path(self.root) / (folder or '')}: class folders differ from {train_path} "
                                f"(this split {what})")
        return dataclasses.replace(dataset, split=split)
