"""Safe loading (issue "Reliability", item 5): no file we read can run code or point outside its dataset.

* every ``torch.load`` in the package passes ``weights_only=True``, every ``np.load``
  ``allow_pickle=False``, and nothing unpickles by other means (checked on the source tree);
* a checkpoint or cache file carrying pickled code is refused (and the code never runs);
* ONNX exports and proposal cache chunks are validated before use, and recomputed when bad;
* image paths from split lists and COCO json stay inside the dataset root (XML ``<filename>``
  and ``<path>`` are never used).
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import MAP_DET, ilsvrc_source, voc_xml
from classifier.weights import read_state_dict
from detect.checkpoint import read_checkpoint
from detect.data.coco import CocoSource
from detect.data.record import ClassList, DetectionDataset, ImageRecord, empty_annotations
from detect.data.voc import VocSource
from detect.errors import DataError, UserError
from proposals.extract import extract_proposals

REPO = Path(__file__).resolve().parents[1]
# The code that ships or runs on users' files (tests write and read their own files).
SOURCE_DIRS = ("detect", "classifier", "proposals", "eval", "benchmarks", "hydra_plugins")
UNSAFE_CALLS = {  # unpickle (or run code from) a file whatever the arguments
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "dill.load", "dill.loads",
    "joblib.load", "cloudpickle.load", "cloudpickle.loads", "marshal.load", "marshal.loads", "shelve.open",
    "torch.jit.load", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "pandas.read_pickle", "pd.read_pickle",
}


def _source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS if (REPO / d).is_dir() for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20, "the scan found no source tree"
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword_is(call: ast.Call, name: str, value: bool) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


def _load_problems(path: Path, root: Path = REPO) -> tuple[list[str], int]:
    """``(problems "FILE:LINE: ...", number of torch.load calls)`` of one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = lambda node: f"{path.relative_to(root)}:{node.lineno}"  # noqa: E731
    problems, torch_loads, called = [], 0, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization", "numpy", "pickle"):
            if any(alias.name in ("load", "loads") for alias in node.names):
                problems.append(f"{where(node)}: 'from {node.module} import load' hides the call from this check")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        called.add(id(node.func))
        if name in ("torch.load", "torch.serialization.load"):
            torch_loads += 1
            if not _keyword_is(node, "weights_only", True):
                problems.append(f"{where(node)}: {name}(...) without weights_only=True")
        elif name in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False):
            problems.append(f"{where(node)}: {name}(...) without allow_pickle=False")
        elif name in UNSAFE_CALLS:
            problems.append(f"{where(node)}: {name}(...) can run code from the file")
    for node in ast.walk(tree):  # torch.load passed around (e.g. `loader = torch.load`) escapes the check
        if isinstance(node, ast.Attribute) and _dotted(node) in ("torch.load", "np.load") and id(node) not in called:
            problems.append(f"{where(node)}: {_dotted(node)} used without being called here")
    return sorted(problems, key=lambda p: int(p.split(":")[1])), torch_loads


def test_every_load_in_the_source_tree_is_safe():
    problems, torch_loads = [], 0
    for path in _source_files():
        found, n = _load_problems(path)
        problems += found
        torch_loads += n
    assert not problems, "\n".join(problems)
    assert torch_loads >= 2  # detect.checkpoint and classifier.weights (every cached model goes through them)


def test_the_scan_catches_unsafe_loads(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch, numpy as np, pickle\nfrom torch import load\n"
                   "a = torch.load('x')\nb = torch.load('x', weights_only=False)\nc = np.load('y')\n"
                   "d = pickle.load(open('z', 'rb'))\nf = torch.load\ng = torch.load('x', weights_only=True)\n")
    problems, n = _load_problems(bad, root=tmp_path)
    assert n == 3
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "5", "6", "7"], problems


# --------------------------------------------------------------------------- pickled code is refused

class _Touch:
    """Unpickling this creates ``marker``: proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"fingerprint": {}, "model": {"w": torch.zeros(2)}, "payload": _Touch(marker)}, path)
    with pytest.raises(UserError) as err:
        read_checkpoint(path)
    assert str(err.value).startswith(f"{path}: not a readable checkpoint (it pickles ")
    assert str(err.value).endswith("; weights_only loading accepts only tensors and plain values)")
    with pytest.raises(UserError, match=r"checkpoint\.pt: cannot read weights file \(UnpicklingError"):
        read_state_dict(path)  # classifier.model.weights=PATH
    assert not marker.exists()


def _two_image_dataset(tmp_path: Path) -> DetectionDataset:
    records = []
    for i in range(2):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (8, 6), (i, 2, 3)).save(path)
        records.append(ImageRecord(f"im{i}", i + 1, path, 8, 6, *empty_annotations()))
    return DetectionDataset("safe", "val", tmp_path, ClassList(("n1",), ("thing",)), tuple(records))


def _whole_image(image: np.ndarray) -> np.ndarray:
    return np.array([[0, 0, image.shape[1] - 1, image.shape[0] - 1]], np.float32)


def test_proposal_chunk_carrying_code_is_recomputed_never_unpickled(tmp_path):
    dataset = _two_image_dataset(tmp_path)
    kwargs = dict(source_id={"source": "whole"}, cache_dir=tmp_path / "cache", workers=1, chunk_size=1, shard=None,
                  progress=False)
    first = extract_proposals(dataset, _whole_image, **kwargs)
    chunk = next((tmp_path / "cache/proposals").glob("*/chunk_00000.npz"))
    marker = tmp_path / "code_ran"
    with np.load(chunk, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["boxes"] = np.array([_Touch(marker)], dtype=object)  # np.savez pickles object arrays
    np.savez(chunk, **arrays)
    with pytest.warns(UserWarning, match=r"chunk_00000\.npz: proposal cache chunk unreadable \(ValueError: "
                                         r"Object arrays cannot be loaded when allow_pickle=False\); recomputing it"):
        again = extract_proposals(dataset, _whole_image, **kwargs)
    assert not marker.exists()
    np.testing.assert_array_equal(again.boxes[0], first.boxes[0])


# --------------------------------------------------------------------------- ONNX exports

class _Tiny(nn.Module):
    """(N, 3, 8, 8) -> (N, 3) logits; enough for export + validation."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 3, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.conv(x))


def test_onnx_export_is_validated_before_use(tmp_path):
    pytest.importorskip("onnxruntime")
    from classifier.onnx_runtime import cached_export

    model = _Tiny(0).eval()
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        path = cached_export(checkpoint, model, input_size=8, atol=1e-5)
        assert cached_export(checkpoint, model, input_size=8, atol=1e-5) == path  # valid: reused silently
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.warns(UserWarning, match=r"\.onnx: cached ONNX export is invalid \(unreadable .*\); exporting again"):
        assert cached_export(checkpoint, model, input_size=8, atol=1e-5) == path
    assert path.read_bytes() == good
    other_checkpoint = tmp_path / "other.pt"  # an export of other weights, sitting at this checkpoint's path
    other_checkpoint.write_bytes(b"other weights")
    path.write_bytes(cached_export(other_checkpoint, _Tiny(1).eval(), input_size=8, atol=1e-5).read_bytes())
    with pytest.warns(UserWarning, match=r"cached ONNX export is invalid \(outputs differ from torch's by "):
        cached_export(checkpoint, model, input_size=8, atol=1e-5)
    assert path.read_bytes() == good


# --------------------------------------------------------------------------- paths stay inside the dataset

def _ilsvrc(root: Path) -> Path:
    for d in ("Data/DET/val", "Annotations/DET/val", "ImageSets/DET", "devkit/data"):
        (root / d).mkdir(parents=True)
    (root / "devkit/data/map_det.txt").write_text(MAP_DET)
    Image.new("RGB", (40, 30)).save(root / "Data/DET/val/val_1.JPEG", format="JPEG")
    (root / "Annotations/DET/val/val_1.xml").write_text(voc_xml("val_1", (40, 30), [("n01", (1, 2, 10, 12))]))
    (root / "ImageSets/DET/val.txt").write_text("val_1 1\n")
    return root


@pytest.mark.parametrize("list_name, line, name", [
    ("val", "../../etc/passwd 2", "../../etc/passwd"),
    ("val", "/etc/passwd 2", "/etc/passwd"),
    ("val", "val_1/../../../../etc/passwd 2", "val_1/../../../../etc/passwd"),
    ("val", "bad\x00name 2", "bad\x00name"),
    ("train_1", "../../etc/passwd 1", "../../etc/passwd"),  # per-class lists (label column)
])
def test_ilsvrc_split_list_names_cannot_leave_the_root(tmp_path, list_name, line, name):
    root = _ilsvrc(tmp_path / "ILSVRC")
    (root / f"ImageSets/DET/{list_name}.txt").write_text(f"val_1 1\n{line}\n")
    with pytest.raises(DataError) as err:
        ilsvrc_source(root, folder_of_split={"train_*": "val"}).load(list_name)
    assert str(err.value) == f"{root}/ImageSets/DET/{list_name}.txt:2: image name {name!r} escapes the dataset root"


def test_voc_split_list_names_cannot_leave_the_root(tmp_path):
    root = tmp_path / "VOC2007"
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/test.txt").write_text("000001\n../../../etc/passwd\n")
    source = VocSource(root=str(root), split="test", train_split="trainval", classes=["cat"], image_ext=".jpg",
                       unknown_classes="error", check_image_size=False)
    with pytest.raises(DataError) as err:
        source.load("test")
    assert str(err.value) == (f"{root}/ImageSets/Main/test.txt:2: image name '../../../etc/passwd' "
                              f"escapes the dataset root")


@pytest.mark.parametrize("file_name", ["../../etc/passwd", "/etc/passwd"])
def test_coco_file_names_cannot_leave_the_root(tmp_path, file_name):
    (tmp_path / "annotations").mkdir()
    ann = tmp_path / "annotations/instances_val.json"
    ann.write_text(json.dumps({"images": [{"id": 3, "file_name": "ok.jpg", "width": 9, "height": 9},
                                          {"id": 7, "file_name": file_name, "width": 9, "height": 9}],
                               "annotations": [], "categories": [{"id": 1, "name": "cat"}]}))
    source = CocoSource(root=str(tmp_path), split="val", train_split="train",
                        annotations="annotations/instances_{split}.json", images_dir="{split}")
    with pytest.raises(DataError) as err:
        source.load("val")
    assert str(err.value) == f"{ann}: image id 7: file_name {file_name!r} escapes the dataset root"


def test_xml_filename_and_path_are_never_used_to_open_files(tmp_path):
    root = _ilsvrc(tmp_path / "ILSVRC")
    xml = root / "Annotations/DET/val/val_1.xml"
    xml.write_text(xml.read_text().replace("<filename>val_1</filename>",
                                           "<filename>../../../etc/passwd</filename><path>/etc/passwd</path>"))
    dataset = ilsvrc_source(root).load("val")
    assert dataset[0].path == root / "Data/DET/val/val_1.JPEG"
    assert all(r.path.resolve().is_relative_to(root.resolve()) for r in dataset)
