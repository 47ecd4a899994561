"""VOC-style XML annotations, as used by both PASCAL VOC and ILSVRC DET."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from detect.data.image_io import image_size
from detect.data.record import ClassList, ImageRecord, clip_to_image, empty_annotations, outside_image
from detect.data.report import LoadReport
from detect.errors import ConfigError, DataError, read_user_file


@dataclass(frozen=True)
class XmlAnnotation:
    """Parsed XML: the size it declares (None when absent) and raw objects."""

    size: tuple[int, int] | None  # (width, height) from <size>
    synsets: list[str]
    boxes: np.ndarray  # float64 (N, 4) xyxy as written in the file
    difficult: np.ndarray  # bool (N,)


def _number(obj: ET.Element, tag: str, path: Path) -> float:
    text = obj.findtext(tag)
    if text is None:
        raise DataError(f"{path}: object without <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: <{tag}> is not a number: {text.strip()!r}") from None


def _strip_namespaces(root: ET.Element) -> None:
    """``{uri}object`` -> ``object`` on every element: a default namespace (``xmlns="..."``) or
    declared prefixes (``<voc:object>``) name the same VOC tags, whose objects must not be lost."""
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith("{"):
            el.tag = el.tag.split("}", 1)[1]


def parse_voc_xml(path: Path) -> XmlAnnotation:
    """Parse a VOC/ILSVRC XML file. Raises `DataError` naming the file when malformed.

    Namespaced tags are read as the plain VOC tags (`_strip_namespaces`); a prefix that is
    never declared is malformed XML (an error, never silently zero objects).
    """
    path = Path(path)
    data = read_user_file(path, "annotation file", text=False)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"{path}: malformed XML ({exc})") from None
    _strip_namespaces(root)
    size = None
    size_el = root.find("size")
    if size_el is not None and size_el.findtext("width") and size_el.findtext("height"):
        try:
            size = (int(float(size_el.findtext("width"))), int(float(size_el.findtext("height"))))
        except ValueError:
            raise DataError(f"{path}: <size> is not numeric") from None
    synsets, boxes, difficult = [], [], []
    for obj in root.iter("object"):
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise DataError(f"{path}: object without <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(f"{path}: object {name.strip()!r} without <bndbox>")
        boxes.append([_number(bndbox, t, path) for t in ("xmin", "ymin", "xmax", "ymax")])
        synsets.append(name.strip())
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    return XmlAnnotation(
        size=size,
        synsets=synsets,
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        difficult=np.asarray(difficult, bool),
    )


def annotation_to_arrays(
    ann: XmlAnnotation,
    *,
    path: Path,
    classes: ClassList,
    width: int,
    height: int,
    unknown_classes: str,
    report: LoadReport,
    unknown_hint: Callable[[str], str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map synsets to ids and make boxes valid for a ``width x height`` image.

    Boxes are rescaled when the XML's ``<size>`` differs from the real image
    (ILSVRC has such files), clipped to the image extent ``[0, width] x [0, height]``
    (`detect.data.record.clip_to_image`: ILSVRC's 0-based and VOC's 1-based pixels both lie
    inside it, so VOC's ``xmax == width`` is kept as written), and dropped when empty
    after clipping (``x2 <= x1`` or ``y2 <= y1``, which includes inverted boxes).
    Every fix is counted in ``report``.  ``unknown_hint(name)``: what the error for a class
    name the list lacks tells the user to do (the reader knows where its class list comes from).

    Returns ``(boxes float32 (N,4) xyxy, labels int64 (N,), difficult bool (N,))``.
    """
    where = str(path)
    boxes = ann.boxes.copy()
    if ann.size is not None and ann.size != (width, height) and len(boxes):
        xml_w, xml_h = ann.size
        if xml_w <= 0 or xml_h <= 0:
            raise DataError(f"{path}: <size> {xml_w}x{xml_h} is not positive")
        boxes[:, [0, 2]] *= width / xml_w
        boxes[:, [1, 3]] *= height / xml_h
        report.add("boxes rescaled from the XML <size> to the real image size", where, len(boxes))
    labels = np.zeros(len(boxes), np.int64)
    keep = np.ones(len(boxes), bool)
    for i, synset in enumerate(ann.synsets):
        try:
            labels[i] = classes.id_of(synset)
        except KeyError:
            if unknown_classes == "error":
                hint = unknown_hint(synset) if unknown_hint is not None else (
                    "(not in the class list); data.unknown_classes=skip skips such objects (counted)")
                raise DataError(f"{path}: unknown class {synset!r} {hint}") from None
            report.add("objects of unknown classes skipped", where)
            keep[i] = False
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        report.add("inverted boxes (xmax < xmin or ymax < ymin) skipped", where, int(inverted.sum()))
    outside = outside_image(boxes, width, height) & ~inverted
    if outside.any():
        report.add("boxes extending outside the image clipped", where, int(outside.sum()))
    clipped = clip_to_image(boxes, width, height)
    empty = ~inverted & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if empty.any():
        report.add("zero-area boxes (after clipping) skipped", where, int(empty.sum()))
    keep &= ~inverted & ~empty
    return clipped[keep].astype(np.float32), labels[keep], ann.difficult[keep]


def read_xml_records(
    entries,
    *,
    list_path: Path,
    images_dir: Path,
    annotations_dir: Path,
    image_ext: str,
    classes: ClassList,
    unknown_classes: str,
    check_image_size: bool,
    report: LoadReport,
    desc: str,
    unknown_hint: Callable[[str], str] | None = None,
) -> list[ImageRecord]:
    """One `ImageRecord` per split entry, from ``images_dir/<name><ext>`` and ``annotations_dir/<name>.xml``.

    A missing XML file means a negative image (no objects), which ILSVRC allows.
    Files are located from the split list's names only (`read_split_list` refuses names
    that leave the dataset root); the XML's ``<folder>``/``<filename>``/``<path>`` are never used.
    Image sizes come from the image header when ``check_image_size`` (or when the
    XML has no ``<size>``), else from the XML.
    """
    if unknown_classes not in ("error", "skip"):
        raise ConfigError(f"data.unknown_classes must be 'error' or 'skip', got {unknown_classes!r}")
    records = []
    for entry in tqdm(entries, desc=desc, unit="img", leave=False, disable=len(entries) < 500):
        image_path = images_dir / f"{entry.name}{image_ext}"
        if not image_path.exists():
            raise DataError(f"{image_path}: image listed in {list_path} is missing")
        xml_path = annotations_dir / f"{entry.name}.xml"
        ann = parse_voc_xml(xml_path) if xml_path.exists() else None
        if check_image_size or ann is None or ann.size is None:
            width, height = image_size(image_path)
        else:
            width, height = ann.size
        if ann is None:
            boxes, labels, difficult = empty_annotations()
        else:
            boxes, labels, difficult = annotation_to_arrays(
                ann, path=xml_path, classes=classes, width=width, height=height,
                unknown_classes=unknown_classes, report=report, unknown_hint=unknown_hint,
            )
        records.append(ImageRecord(entry.name, entry.index, image_path, width, height, boxes, labels, difficult))
    return records
