"""CLS-LOC and ImageFolder readers on hand-made trees (a few 8x8 JPEGs, labels written by hand)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from detect.data.classification import ClassInfo
from detect.data.cls_loc import ClsLocSource, ImageFolderSource, read_cls_loc, read_image_folder
from detect.data.image_io import load_rgb
from detect.errors import DataError

MAPPING = "n01440764 tench, Tinca tinca\nn01443537 goldfish\n\nn01484850 great white shark\n"
WNIDS = ["n01440764", "n01443537", "n01484850"]
VAL = "Data/CLS-LOC/val"
TRAIN = "Data/CLS-LOC/train"
# Kaggle's file: the first wnid is the label (the second box of image 3 says goldfish, to tell
# them apart); real lines end with a space and may hold several boxes.
SOLUTION = ("ImageId,PredictionString\n"
            "ILSVRC2012_val_00000003,n01440764 1 1 5 5 n01443537 2 2 7 7 \n"
            "ILSVRC2012_val_00000001,n01484850 0 0 8 8 \n"
            "ILSVRC2012_val_00000002,n01443537 1 2 3 4\n")

_JPEG = io.BytesIO()
Image.new("RGB", (8, 8), (200, 30, 30)).save(_JPEG, format="JPEG")


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_JPEG.getvalue())  # content is JPEG whatever the extension: load_rgb sniffs bytes
    return path


def _val_name(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}.JPEG"


@pytest.fixture
def cls_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    (root / TRAIN).mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text(MAPPING)
    for rel in ["n01440764/n01440764_20.JPEG", "n01440764/n01440764_10.JPEG",
                "n01443537/b.PNG", "n01443537/a.jpg", "n01484850/x.jpeg"]:
        _image(root / TRAIN / rel)
    _image(root / TRAIN / "n01440764/._n01440764_10.JPEG")  # macOS fork: hidden, skipped
    (root / TRAIN / "n01440764/README.txt").write_text("not an image")
    for i in (1, 2, 3):
        _image(root / VAL / _val_name(i))
    (root / "LOC_val_solution.csv").write_text(SOLUTION)
    return root


def _fails(call, *fragments) -> str:
    """``call()`` raises a one-line DataError containing every fragment (paths, line numbers)."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def _rel(ds) -> list[tuple[str, int]]:
    return [(Path(r.path).relative_to(ds.root).as_posix(), r.label) for r in ds.records]


# ------------------------------------------------------------------------------- CLS-LOC


def test_cls_loc_train_in_class_then_file_order(cls_root: Path):
    ds = read_cls_loc(cls_root, "train")
    assert ds.classes == (ClassInfo("n01440764", "tench, Tinca tinca"), ClassInfo("n01443537", "goldfish"),
                          ClassInfo("n01484850", "great white shark"))
    # README.txt and the hidden ._ fork skipped; .PNG/.jpg/.jpeg accepted; names sorted as strings within a class.
    assert _rel(ds) == [(f"{TRAIN}/n01440764/n01440764_10.JPEG", 0), (f"{TRAIN}/n01440764/n01440764_20.JPEG", 0),
                        (f"{TRAIN}/n01443537/a.jpg", 1), (f"{TRAIN}/n01443537/b.PNG", 1),
                        (f"{TRAIN}/n01484850/x.jpeg", 2)]
    assert (ds.split, ds.root, len(ds), ds.num_classes) == ("train", str(cls_root), 5, 3)
    assert load_rgb(Path(ds.records[3].path)).shape == (8, 8, 3)


def test_cls_loc_val_from_solution_csv(cls_root: Path):
    ds = read_cls_loc(cls_root, "val")
    # sorted by file name; labels = first wnid of each PredictionString: 1 -> shark, 2 -> goldfish, 3 -> tench
    assert _rel(ds) == [(f"{VAL}/{_val_name(1)}", 2), (f"{VAL}/{_val_name(2)}", 1), (f"{VAL}/{_val_name(3)}", 0)]
    assert ds.split == "val" and ds.num_classes == 3


def test_cls_loc_other_split_uses_its_own_csv(cls_root: Path):
    _image(cls_root / "Data/CLS-LOC/minival/m1.JPEG")
    (cls_root / "LOC_minival_solution.csv").write_text("ImageId,PredictionString\nm1,n01443537 0 0 1 1\n")
    assert _rel(read_cls_loc(cls_root, "minival")) == [("Data/CLS-LOC/minival/m1.JPEG", 1)]


def test_cls_loc_classes_fall_back_to_train_folders(cls_root: Path):
    (cls_root / "LOC_synset_mapping.txt").unlink()
    (cls_root / TRAIN / ".cache").mkdir()  # hidden: not a class
    ds = read_cls_loc(cls_root, "val")
    assert ds.classes == tuple(ClassInfo(w, w) for w in WNIDS)
    assert ds.labels == [2, 1, 0]


def test_cls_loc_subset_mapping_skips_other_folders(cls_root: Path):
    (cls_root / "LOC_synset_mapping.txt").write_text("n01484850 shark\nn01440764 tench\n")
    assert [r.label for r in read_cls_loc(cls_root, "train").records] == [0, 1, 1]  # shark first: mapping order


def _meta(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    synsets = np.array([tuple(r) for r in rows], dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"synsets": synsets})
    return path


# Devkit ids are not label order (as in ILSVRC2012, where id 1 is n02119789, not n01440764);
# id 1001 is a WordNet ancestor, not a class.
DEVKIT_META = [(1, "n01484850", "great white shark"), (2, "n01440764", "tench, Tinca tinca"),
               (3, "n01443537", "goldfish"), (1001, "n01000000", "fish")]
GT = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"


@pytest.fixture
def devkit_root(cls_root: Path) -> Path:
    (cls_root / "LOC_val_solution.csv").unlink()
    _meta(cls_root / "ILSVRC2012_devkit_t12/data/meta.mat", DEVKIT_META)
    (cls_root / GT).write_text("3\n1\n2\n")  # image 1 -> goldfish, 2 -> shark, 3 -> tench
    return cls_root


def test_cls_loc_val_from_devkit_ground_truth(devkit_root: Path):
    ds = read_cls_loc(devkit_root, "val", devkit_ground_truth=GT)  # meta.mat found beside the ground truth
    assert ds.labels == [1, 2, 0]  # positions in LOC_synset_mapping.txt, not devkit ids minus one
    explicit = read_cls_loc(devkit_root, "val", devkit_ground_truth=GT,
                            devkit_meta="ILSVRC2012_devkit_t12/data/meta.mat")
    assert explicit == ds


def test_cls_loc_devkit_val_only_copy_takes_classes_from_meta(devkit_root: Path):
    (devkit_root / "LOC_synset_mapping.txt").unlink()
    shutil.rmtree(devkit_root / TRAIN)
    ds = read_cls_loc(devkit_root, "val", devkit_ground_truth=GT)
    # leaves only (1001 dropped), sorted by wnid like LOC_synset_mapping.txt
    assert ds.classes == (ClassInfo("n01440764", "tench, Tinca tinca"), ClassInfo("n01443537", "goldfish"),
                          ClassInfo("n01484850", "great white shark"))
    assert ds.labels == [1, 2, 0]


def test_cls_loc_source_loads_each_split(devkit_root: Path):
    src = ClsLocSource(root=str(devkit_root), split="val", train_split="train", devkit_ground_truth=GT)
    assert src.load(src.split) == read_cls_loc(devkit_root, "val", devkit_ground_truth=GT)
    assert len(src.load(src.train_split)) == 5


def _case(mutate, fragments, split="val", **kwargs):
    return mutate, fragments, split, kwargs


def _write(rel: str, text: str):
    return lambda root: (root / rel).write_text(text)


def _csv(*rows: str):
    return _write("LOC_val_solution.csv", "ImageId,PredictionString\n" + "".join(r + "\n" for r in rows))


def _replace_with_folder(rel: str):
    def mutate(root: Path):
        target = root / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        (target / "inner").mkdir(parents=True)
    return mutate


def _replace_with_file(rel: str):
    def mutate(root: Path):
        shutil.rmtree(root / rel)
        (root / rel).write_text("")
    return mutate


V1, V2, V3 = (f"ILSVRC2012_val_{i:08d}" for i in (1, 2, 3))
CSV = "LOC_val_solution.csv"
BAD_CLS_LOC = {
    "root missing": _case(lambda root: shutil.rmtree(root), ["{root}", "does not exist"]),
    "root is a file": _case(lambda root: (shutil.rmtree(root), root.write_text("")), ["{root}", "is a file"]),
    "val folder missing": _case(lambda root: shutil.rmtree(root / VAL), [f"{{root}}/{VAL}", "not found"]),
    "val folder is a file": _case(_replace_with_file(VAL), [f"{{root}}/{VAL}", "is a file"]),
    "train class folder missing": _case(lambda root: shutil.rmtree(root / TRAIN / WNIDS[1]),
                                        [f"{{root}}/{TRAIN}/{WNIDS[1]}", "not found"], split="train"),
    "train class folder is a file": _case(_replace_with_file(f"{TRAIN}/{WNIDS[1]}"),
                                          [f"{{root}}/{TRAIN}/{WNIDS[1]}", "is a file"], split="train"),
    "train class without image": _case(lambda root: [p.unlink() for p in (root / TRAIN / WNIDS[2]).iterdir()],
                                       [f"{{root}}/{TRAIN}/{WNIDS[2]}", "no image"], split="train"),
    "label csv missing": _case(lambda root: (root / CSV).unlink(), [f"{{root}}/{CSV}", "not found"]),
    "label csv is a folder": _case(_replace_with_folder(CSV), [f"{{root}}/{CSV}", "is a folder"]),
    "label csv not utf-8": _case(lambda root: (root / CSV).write_bytes(b"\xff\xfe\x00bad"),
                                 [f"{{root}}/{CSV}", "UTF-8"]),
    "synset mapping is a folder": _case(_replace_with_folder("LOC_synset_mapping.txt"),
                                        ["{root}/LOC_synset_mapping.txt", "is a folder"]),
    "synset mapping empty": _case(_write("LOC_synset_mapping.txt", "\n\n"),
                                  ["{root}/LOC_synset_mapping.txt", "no class"]),
    "duplicate wnid in mapping": _case(_write("LOC_synset_mapping.txt", MAPPING + "n01443537 goldfish again\n"),
                                       ["{root}/LOC_synset_mapping.txt:5:", "'n01443537'", "line 2"]),
    "csv header wrong": _case(_write(CSV, "id,label\n"), [f"{{root}}/{CSV}:1:", "header"]),
    "csv row with 3 fields": _case(_csv(f"{V1},n01484850 0 0 8 8", f"{V2},n01443537 1 2 3 4,extra"),
                                   [f"{{root}}/{CSV}:3:"]),
    "csv row without comma": _case(_csv(f"{V1} n01484850 0 0 8 8"), [f"{{root}}/{CSV}:2:"]),
    "csv empty ImageId": _case(_csv(",n01484850 0 0 8 8"), [f"{{root}}/{CSV}:2:"]),
    "csv box not 5 tokens": _case(_csv(f"{V1},n01484850 0 0 8"), [f"{{root}}/{CSV}:2:", "groups"]),
    "csv empty PredictionString": _case(_csv(f"{V1},"), [f"{{root}}/{CSV}:2:", "groups"]),
    "csv unknown wnid": _case(_csv(f"{V1},n01484850 0 0 8 8", f"{V2},n09999999 1 2 3 4"),
                              [f"{{root}}/{CSV}:3:", "n09999999"]),
    "csv unknown wnid in second box": _case(_csv(f"{V1},n01484850 0 0 8 8 n09999999 1 1 2 2"),
                                            [f"{{root}}/{CSV}:2:", "n09999999"]),
    "csv duplicate ImageId": _case(_csv(f"{V1},n01484850 0 0 8 8", f"{V2},n01443537 1 2 3 4",
                                        f"{V1},n01440764 0 0 8 8"), [f"{{root}}/{CSV}:4:", V1, "line 2"]),
    "csv entry without image": _case(lambda root: (root / VAL / _val_name(2)).unlink(),
                                     [f"{{root}}/{CSV}", V2, "no image file"]),
    "image without label": _case(lambda root: _image(root / VAL / _val_name(4)),
                                 [f"{{root}}/{VAL}/{_val_name(4)}", "no label", CSV]),
    "two files for one image id": _case(lambda root: _image(root / VAL / f"{V2}.png"),
                                        [f"{{root}}/{VAL}", V2, "two image files"]),
    "empty split": _case(lambda root: [p.unlink() for p in (root / VAL).iterdir()]
                         + [(root / VAL / "notes.txt").write_text("")], [f"{{root}}/{VAL}", "no image"]),
    "no class list": _case(lambda root: ((root / "LOC_synset_mapping.txt").unlink(), shutil.rmtree(root / TRAIN)),
                           ["{root}/LOC_synset_mapping.txt", f"{{root}}/{TRAIN}"]),
}


@pytest.mark.parametrize("case", BAD_CLS_LOC.values(), ids=BAD_CLS_LOC.keys())
def test_cls_loc_bad_input(cls_root: Path, case):
    mutate, fragments, split, kwargs = case
    mutate(cls_root)
    _fails(lambda: read_cls_loc(cls_root, split, **kwargs), *(f.format(root=cls_root) for f in fragments))


META = "ILSVRC2012_devkit_t12/data/meta.mat"
BAD_DEVKIT = {
    "gt missing": _case(lambda root: (root / GT).unlink(), [f"{{root}}/{GT}", "not found"]),
    "gt not an integer": _case(_write(GT, "3\none\n2\n"), [f"{{root}}/{GT}:2:", "'one'"]),
    "gt blank line": _case(_write(GT, "3\n\n1\n2\n"), [f"{{root}}/{GT}:2:"]),
    "gt id not a leaf": _case(_write(GT, "3\n1001\n2\n"), [f"{{root}}/{GT}:2:", "1001"]),
    "gt wnid not in mapping": _case(_write("LOC_synset_mapping.txt", "n01440764 tench\nn01443537 goldfish\n"),
                                    [f"{{root}}/{GT}:2:", "n01484850"]),
    "gt line without image": _case(_write(GT, "3\n1\n2\n2\n"), [f"{{root}}/{GT}", "ILSVRC2012_val_00000004"]),
    "image without gt line": _case(_write(GT, "3\n1\n"), [f"{{root}}/{VAL}/{_val_name(3)}", "no label"]),
    "meta missing": _case(lambda root: (root / META).unlink(), [f"{{root}}/{META}", "not found"]),
    "meta is a folder": _case(_replace_with_folder(META), [f"{{root}}/{META}", "is a folder"]),
    "meta not matlab": _case(lambda root: (root / META).write_bytes(b"not a mat file" * 20),
                             [f"{{root}}/{META}", "MATLAB"]),
    "meta without synsets": _case(lambda root: scipy.io.savemat(str(root / META), {"x": np.zeros(2)}),
                                  [f"{{root}}/{META}", "synsets"]),
    "meta missing a field": _case(lambda root: scipy.io.savemat(str(root / META), {"synsets": np.array(
        [(1, "n01484850")], dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])}), [f"{{root}}/{META}", "words"]),
}


@pytest.mark.parametrize("case", BAD_DEVKIT.values(), ids=BAD_DEVKIT.keys())
def test_cls_loc_devkit_bad_input(devkit_root: Path, case):
    mutate, fragments, split, kwargs = case
    mutate(devkit_root)
    _fails(lambda: read_cls_loc(devkit_root, split, devkit_ground_truth=GT),
           *(f.format(root=devkit_root) for f in fragments))


def test_cls_loc_os_errors_name_the_path(cls_root: Path, monkeypatch):
    # chmod 000 does not stop root (as in CI containers), so the OSErrors are injected.
    csv_path, val = cls_root / CSV, cls_root / VAL
    real_read_text, real_scandir = Path.read_text, os.scandir

    def read_text(self, *args, **kwargs):
        if self == csv_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    _fails(lambda: read_cls_loc(cls_root, "val"), csv_path, "Permission denied")
    monkeypatch.undo()

    def scandir(path):
        if Path(path) == val:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    _fails(lambda: read_cls_loc(cls_root, "val"), val, "Permission denied")


# ------------------------------------------------------------------------------- ImageFolder


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    # dog/z.jpg before dog/sub/1.png: torchvision walks a folder's files before its sub-folders.
    for rel in ["train/dog/2.jpg", "train/dog/10.JPG", "train/dog/z.jpg", "train/dog/sub/1.png", "train/cat/z.webp",
                "train/cat/a.Jpeg", "val/cat/v1.jpg", "val/dog/v2.bmp"]:
        _image(root / rel)
    (root / "train/cat/labels.csv").write_text("")
    (root / "train/notes.txt").write_text("")  # a file beside the class folders: not a class
    return root


def test_image_folder_with_split_matches_torchvision(folder_root: Path):
    ds = read_image_folder(folder_root, "train")
    assert ds.classes == (ClassInfo("cat", "cat"), ClassInfo("dog", "dog")) and ds.split == "train"
    assert _rel(ds) == [("train/cat/a.Jpeg", 0), ("train/cat/z.webp", 0),
                        ("train/dog/10.JPG", 1), ("train/dog/2.jpg", 1), ("train/dog/z.jpg", 1),
                        ("train/dog/sub/1.png", 1)]
    reference = ImageFolder(str(folder_root / "train"))  # lists only; nothing decoded
    assert reference.classes == ["cat", "dog"]
    assert [(r.path, r.label) for r in ds.records] == reference.samples


def test_image_folder_skips_hidden_files_and_folders(folder_root: Path):
    before = read_image_folder(folder_root, "train")
    _image(folder_root / "train/.thumbs/x.jpg")  # a hidden class folder
    _image(folder_root / "train/cat/.hidden.jpg")
    _image(folder_root / "train/dog/.git/y.jpg")  # a hidden folder inside a class
    assert read_image_folder(folder_root, "train") == before


def test_image_folder_without_split(folder_root: Path):
    ds = read_image_folder(folder_root / "val")
    assert ds.split == "" and ds.root == str(folder_root / "val")
    assert _rel(ds) == [("cat/v1.jpg", 0), ("dog/v2.bmp", 1)]
    assert set(IMG_EXTENSIONS) >= {".jpg", ".bmp"}


def test_image_folder_source(folder_root: Path):
    src = ImageFolderSource(root=str(folder_root), split="val", train_split="train")
    val = src.load("val")
    assert val.split == "val" and val.labels == [0, 1]
    flat = ImageFolderSource(root=str(folder_root / "val"), split="val", train_split="train", split_dir="")
    assert [r.path for r in flat.load("train").records] == [r.path for r in val.records]
    assert flat.load("train").split == "train"


def test_image_folder_source_refuses_split_with_other_classes(folder_root: Path):
    _image(folder_root / "val/emu/e.jpg")
    src = ImageFolderSource(root=str(folder_root), split="val", train_split="train")
    _fails(lambda: src.load("val"), folder_root / "val", folder_root / "train", "'emu'")
    assert len(src.load("train")) == 6


BAD_FOLDER = {
    "root missing": (lambda root: shutil.rmtree(root), "train", ["{root}", "does not exist"]),
    "split folder missing": (lambda root: None, "test", ["{root}/test", "not found"]),
    "split is a file": (lambda root: (root / "test").write_text(""), "test", ["{root}/test", "is a file"]),
    "no class folders": (lambda root: (root / "test").mkdir(), "test", ["{root}/test", "no class folder"]),
    "only hidden folders": (lambda root: (root / "test/.cache").mkdir(parents=True), "test",
                            ["{root}/test", "no class folder"]),
    "class folder without image": (lambda root: (root / "train/emu").mkdir(), "train",
                                   ["{root}/train/emu", "no image"]),
    "class folder with only non-images": (lambda root: ((root / "val/dog/v2.bmp").unlink(),
                                                        (root / "val/dog/a.txt").write_text("")), "val",
                                          ["{root}/val/dog", "no image"]),
}


@pytest.mark.parametrize("case", BAD_FOLDER.values(), ids=BAD_FOLDER.keys())
def test_image_folder_bad_input(folder_root: Path, case):
    mutate, split, fragments = case
    mutate(folder_root)
    _fails(lambda: read_image_folder(folder_root, split), *(f.format(root=folder_root) for f in fragments))
