"""Shared fixtures: a small hand-written ILSVRC-layout dataset (not produced by the generator)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from detect.data.ilsvrc import IlsvrcSource

MAP_DET = "n01 1 cat\nn02 2 dog\nn03 3 traffic light\n"


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[tuple[str, tuple]]) -> str:
    size_xml = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return f"<annotation><folder>val</folder><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def ilsvrc_source(root: Path, **overrides) -> IlsvrcSource:
    kwargs = dict(
        root=str(root),
        split="val",
        train_split="train",
        images_dir="Data/DET/{split}",
        annotations_dir="Annotations/DET/{split}",
        split_list="ImageSets/DET/{split}.txt",
        image_ext=".JPEG",
        class_list="devkit/data/map_det.txt",
        meta_det="devkit/data/meta_det.mat",
        blacklist="devkit/data/ILSVRC2014_det_validation_blacklist.txt",
        blacklist_split="val",
        unknown_classes="error",
        check_image_size=True,
        folder_of_split={"train_*": "train", "val?": "val"},
    )
    kwargs.update(overrides)
    return IlsvrcSource(**kwargs)


@pytest.fixture
def ilsvrc_root(tmp_path: Path) -> Path:
    root = tmp_path / "ILSVRC"
    for d in ("Data/DET/val", "Annotations/DET/val", "ImageSets/DET", "devkit/data",
              "Data/DET/train/ILSVRC2013_train/n01", "Annotations/DET/train/ILSVRC2013_train/n01"):
        (root / d).mkdir(parents=True)
    (root / "devkit/data/map_det.txt").write_text(MAP_DET)
    images = {"val_1": (40, 30), "val_2": (50, 20), "val_3": (20, 20), "val_4": (60, 40)}
    for name, size in images.items():
        Image.new("RGB", size, (10, 20, 30)).save(root / f"Data/DET/val/{name}.JPEG", format="JPEG")
    ann = root / "Annotations/DET/val"
    (ann / "val_1.xml").write_text(voc_xml("val_1", (40, 30), [("n01", (1, 2, 10, 12)), ("n03", (5, 5, 39, 29))]))
    # XML <size> is half the real image: boxes must be scaled by 2.
    (ann / "val_2.xml").write_text(voc_xml("val_2", (25, 10), [("n02", (2, 1, 12, 9))]))
    # No objects at all: a negative image with an XML file.
    (ann / "val_3.xml").write_text(voc_xml("val_3", (20, 20), []))
    # val_4 has no XML file: also a valid negative.
    (root / "ImageSets/DET/val.txt").write_text("val_1 1\nval_2 2\nval_3 3\nval_4 4\n")
    (root / "devkit/data/ILSVRC2014_det_validation_blacklist.txt").write_text("2 n02\n")
    # Training entries carry sub-folders; per-class lists carry labels.
    Image.new("RGB", (30, 30)).save(root / "Data/DET/train/ILSVRC2013_train/n01/n01_7.JPEG", format="JPEG")
    (root / "Annotations/DET/train/ILSVRC2013_train/n01/n01_7.xml").write_text(
        voc_xml("n01_7", (30, 30), [("n01", (0, 0, 29, 29))])
    )
    (root / "ImageSets/DET/train.txt").write_text("ILSVRC2013_train/n01/n01_7 1\n")
    (root / "ImageSets/DET/train_1.txt").write_text("ILSVRC2013_train/n01/n01_7 1\n")
    return root




@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test (modules opt in with ``pytest.mark.usefixtures``).

    Tiny models gain nothing from a second OpenMP thread, and on a shared 2-core machine
    its barriers stall whenever another process holds the other core (0.15 s -> 6 s).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
