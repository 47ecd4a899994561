"""ILSVRC DET reader on a hand-written fixture (not produced by the generator)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MAP_DET, ilsvrc_source as _source, voc_xml as _xml
from detect.data.classes import read_map_det, read_meta_det
from detect.errors import ConfigError, DataError

def test_reads_records_classes_and_blacklist(ilsvrc_root: Path):
    ds = _source(ilsvrc_root).load("val")
    assert [r.image_id for r in ds] == ["val_1", "val_2", "val_3", "val_4"]
    assert [r.index for r in ds] == [1, 2, 3, 4]
    assert ds.classes.names == ("cat", "dog", "traffic light")
    r1 = ds[0]
    assert (r1.width, r1.height) == (40, 30)
    np.testing.assert_array_equal(r1.boxes, [[1, 2, 10, 12], [5, 5, 39, 29]])
    assert r1.boxes.dtype == np.float32 and r1.labels.dtype == np.int64
    np.testing.assert_array_equal(r1.labels, [1, 3])
    assert ds[2].num_objects == 0 and ds[3].num_objects == 0
    assert ds.blacklist == frozenset({(2, 2)})
    assert ds.num_objects == 3


def test_boxes_rescaled_when_xml_size_differs(ilsvrc_root: Path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = _source(ilsvrc_root).load("val")
    # XML says 25x10, image is 50x20: x and y both scale by 2.
    np.testing.assert_array_equal(ds[1].boxes, [[4, 2, 24, 18]])
    assert "1 boxes rescaled" in caplog.text


def test_train_split_with_subfolders_and_per_class_list(ilsvrc_root: Path):
    src = _source(ilsvrc_root)
    train = src.load("train")
    assert train[0].image_id == "ILSVRC2013_train/n01/n01_7" and train[0].num_objects == 1
    per_class = src.load("train_1")
    assert per_class[0].index == 1 and per_class.blacklist == frozenset()


def test_2014_layout_preset(tmp_path: Path):
    root = tmp_path / "ilsvrc2014"
    (root / "ILSVRC2013_DET_val").mkdir(parents=True)
    (root / "ILSVRC2013_DET_bbox_val").mkdir()
    (root / "devkit/data/det_lists").mkdir(parents=True)
    (root / "devkit/data/map_det.txt").write_text(MAP_DET)
    Image.new("RGB", (32, 32)).save(root / "ILSVRC2013_DET_val/a.JPEG", format="JPEG")
    (root / "ILSVRC2013_DET_bbox_val/a.xml").write_text(_xml("a", (32, 32), [("n02", (3, 3, 20, 20))]))
    (root / "devkit/data/det_lists/val.txt").write_text("a 1\n")
    ds = _source(root, images_dir="ILSVRC2013_DET_{split}", annotations_dir="ILSVRC2013_DET_bbox_{split}",
                 split_list="devkit/data/det_lists/{split}.txt").load("val")
    np.testing.assert_array_equal(ds[0].labels, [2])


def test_meta_det_mat_used_when_map_det_missing(tmp_path: Path):
    import scipy.io

    dtype = [("ILSVRC2015_DET_ID", "O"), ("WNID", "O"), ("name", "O")]
    synsets = np.array([(2, "n02", "dog"), (1, "n01", "cat"), (201, "n99", "animal")], dtype=dtype)
    path = tmp_path / "meta_det.mat"
    scipy.io.savemat(path, {"synsets": synsets})
    classes = read_meta_det(path)
    # Ids beyond 200 are WordNet ancestors, not DET classes.
    assert classes.synsets == ("n01", "n02") and classes.names == ("cat", "dog")


def test_bad_boxes_are_clipped_or_skipped_and_counted(ilsvrc_root: Path, caplog):
    (ilsvrc_root / "Annotations/DET/val/val_1.xml").write_text(
        _xml("val_1", (40, 30), [
            ("n01", (10, 2, 5, 12)),     # inverted: skipped
            ("n01", (-5, -3, 50, 40)),   # out of bounds: clipped to the image extent [0, 40] x [0, 30]
            ("n02", (7, 4, 7, 20)),      # zero width: skipped
        ])
    )
    with caplog.at_level(logging.WARNING):
        ds = _source(ilsvrc_root).load("val")
    np.testing.assert_array_equal(ds[0].boxes, [[0, 0, 40, 30]])
    assert "1 inverted boxes" in caplog.text
    assert "1 boxes extending outside the image clipped" in caplog.text
    assert "1 zero-area boxes" in caplog.text


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: (r / "Annotations/DET/val/val_1.xml").write_text("<annotation><object>"), "val_1.xml: malformed XML"),
        (lambda r: (r / "Annotations/DET/val/val_1.xml").write_text(_xml("v", (40, 30), [("n77", (1, 1, 5, 5))])),
         "val_1.xml: unknown class 'n77'"),
        (lambda r: (r / "Annotations/DET/val/val_1.xml").write_text(
            "<annotation><object><name>n01</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax>"
            "</bndbox></object></annotation>"), "val_1.xml: object without <ymax>"),
        (lambda r: (r / "Annotations/DET/val/val_1.xml").write_text(
            "<annotation><object><name>n01</name><bndbox><xmin>a</xmin><ymin>2</ymin><xmax>5</xmax>"
            "<ymax>5</ymax></bndbox></object></annotation>"), "val_1.xml: <xmin> is not a number: 'a'"),
        (lambda r: (r / "devkit/data/map_det.txt").unlink(), "no class list"),
        (lambda r: (r / "ImageSets/DET/val.txt").write_text("val_1 1\nmissing_img 2\n"), "missing_img.JPEG: image listed in"),
        (lambda r: (r / "ImageSets/DET/val.txt").write_text(""), "split 'val' is empty"),
        (lambda r: (r / "ImageSets/DET/val.txt").write_text("val_1 1\nval_1 2\n"), "val.txt:2: duplicate image 'val_1'"),
        (lambda r: (r / "ImageSets/DET/val.txt").write_text("../../etc/passwd 1\n"), "val.txt:1: image name '../../etc/passwd' escapes"),
        (lambda r: (r / "ImageSets/DET/val.txt").write_text("val_1 x\n"), "val.txt:1: second column 'x' is not an integer"),
        (lambda r: (r / "devkit/data/ILSVRC2014_det_validation_blacklist.txt").write_text("9 n01\n"),
         "blacklist.txt: image index 9 is not in split 'val'"),
        (lambda r: (r / "devkit/data/map_det.txt").write_text("n01 1 cat\nn02 3 dog\n"), "class ids must be 1..2"),
        (lambda r: (r / "Data/DET/val/val_1.JPEG").write_bytes(b""), "val_1.JPEG: empty file"),
        (lambda r: (r / "Data/DET/val/val_1.JPEG").write_text("hello, not an image"), "val_1.JPEG: not an image"),
    ],
)
def test_bad_input_one_line_error_naming_the_file(ilsvrc_root: Path, mutate, message):
    mutate(ilsvrc_root)
    with pytest.raises(DataError) as err:
        _source(ilsvrc_root).load("val")
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text


def test_unknown_class_can_be_skipped_with_a_count(ilsvrc_root: Path, caplog):
    (ilsvrc_root / "Annotations/DET/val/val_1.xml").write_text(
        _xml("val_1", (40, 30), [("n77", (1, 1, 5, 5)), ("n01", (1, 1, 9, 9))])
    )
    with caplog.at_level(logging.WARNING):
        ds = _source(ilsvrc_root, unknown_classes="skip").load("val")
    np.testing.assert_array_equal(ds[0].labels, [1])
    assert "1 objects of unknown classes skipped" in caplog.text


def test_invalid_unknown_class_policy_is_a_config_error(ilsvrc_root: Path):
    with pytest.raises(ConfigError, match="data.unknown_classes"):
        _source(ilsvrc_root, unknown_classes="maybe").load("val")


def test_missing_root_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(DataError, match="dataset root does not exist"):
        _source(tmp_path / "nope").load("val")


def test_map_det_names_with_spaces(tmp_path: Path):
    p = tmp_path / "map_det.txt"
    p.write_text(MAP_DET)
    assert read_map_det(p).name_of(3) == "traffic light"
