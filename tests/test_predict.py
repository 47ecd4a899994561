"""``python -m detect.predict``, ``python -m detect.export`` and ``detect.Detector`` on a tiny run.

One tiny ``detect.run`` (a subprocess, ~15 s) trains the detector every test uses; everything
else runs in-process (`entry` turns an entry point's exit 2 into a `CliFailure`, as the
bad-input harness does) except the few rows that check a real command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detect.cli import run_user_errors
from detect.detector import MANIFEST, Detector, sha256_file
from detect.export import export_detector
from detect.predict import predict, run_data_config

REPO = Path(__file__).resolve().parents[1]
# Tiny networks gain nothing from a second OpenMP thread and stall on a shared 2-core machine (conftest).
pytestmark = pytest.mark.usefixtures("one_torch_thread")
# Tiny and then some: scratch networks (no pretraining stage), 12 + 6 small images; MultiBox boxes
# snapped onto SS boxes as in the demo, so the Detector's merge is checked against the pipeline's.
RUN_OVERRIDES = ["profile=tiny", "classifier.init=scratch", "proposals.multibox.init=scratch",
                 "data.splits.train=12", "data.splits.val=6", "data.image_long_side=[96,128]",
                 "proposals.merge.snap_iou=0.5"]
PREDICTION_KEYS = {"images", "skipped", "seconds_per_image"}


class CliFailure(Exception):
    def __init__(self, code: int, stderr: str):
        super().__init__(f"exit {code}: {stderr}")
        self.code, self.stderr = code, stderr

    @property
    def line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def entry(fn):
    """``fn()`` as an entry point (`run_user_errors`), in-process: exit 2 -> `CliFailure`."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return run_user_errors(lambda *_: fn())(None)
    except SystemExit as exc:
        raise CliFailure(int(exc.code), err.getvalue()) from None


def expect_error(fn, *patterns: str) -> str:
    with pytest.raises(CliFailure) as info:
        entry(fn)
    assert info.value.code == 2
    line = info.value.line
    assert line.startswith("error: ") and "Traceback" not in info.value.stderr, info.value.stderr
    for p in patterns:
        assert p in line, (p, line)
    return line


def _cli(module: str, *args: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETECT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``(run folder, cache)`` of a finished tiny detect.run."""
    tmp = tmp_path_factory.mktemp("predict")
    out, cache = tmp / "run", tmp / "cache"
    proc = _cli("detect.run", *RUN_OVERRIDES, f"hydra.run.dir={out}", cache=cache)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out, cache


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out, cache = run
    return export_detector(from_run=str(out), out=str(tmp_path_factory.mktemp("exp") / "detector"),
                           cache_dir=str(cache))


@pytest.fixture(scope="module")
def val_images(run):
    return run[1] / "synthetic" / "Data" / "DET" / "val"


def _predict(out_dir: Path, **kwargs):
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("progress", False)
    return entry(lambda: predict(out_dir=out_dir, **kwargs))


def _read(out_dir: Path) -> dict:
    return json.loads((out_dir / "predictions.json").read_text())


# --------------------------------------------------------------------------- the same detections as detect.run

@pytest.mark.slow
def test_predict_on_val_split_equals_the_runs_detections(run, tmp_path):
    """A real command line: data=synthetic data.split=val takes the run's data settings (tiny sizes)."""
    out, cache = run
    pred = tmp_path / "pred"
    proc = _cli("detect.predict", f"from_run={out}", "data=synthetic", "data.split=val", f"hydra.run.dir={pred}",
                "predict.progress=false", cache=cache)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (pred / "detections.txt").read_bytes() == (out / "detections.txt").read_bytes()
    assert len((pred / "detections.txt").read_text().splitlines()) > 0
    result = _read(pred)
    assert set(result) == PREDICTION_KEYS and result["skipped"] == [] and result["seconds_per_image"] > 0
    assert len(result["images"]) == 6 and len(list((pred / "drawn").glob("*.jpg"))) == 6
    for image in result["images"]:
        assert set(image) == {"file", "width", "height", "detections"}
        for d in image["detections"]:
            assert set(d) == {"class", "class_id", "score", "box"} and len(d["box"]) == 4
    n = sum(len(i["detections"]) for i in result["images"])
    assert n == len((out / "detections.txt").read_text().splitlines())
    assert "s/image" not in proc.stdout and "by stage: decode" in proc.stdout and "ss " in proc.stdout


def test_run_data_config_keeps_the_runs_data_settings(run):
    out, cache = run
    data = run_data_config(str(out), choice="synthetic", overrides=["data=synthetic", "data.split=train"],
                           cache_dir=str(cache))
    assert data.split == "train" and data.splits.val == 6 and data.num_classes == 4
    assert run_data_config(str(out), choice="ilsvrc", overrides=[], cache_dir=str(cache)) is None


@pytest.mark.slow
def test_export_then_load_in_a_fresh_cache_gives_identical_predictions(run, exported, val_images, tmp_path):
    out, cache = run
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    images = [str(p) for p in sorted(val_images.iterdir())[:3]]
    _predict(tmp_path / "a", images=images, from_run=str(out), cache_dir=str(cache), draw=False)
    _predict(tmp_path / "b", images=images, detector=str(exported), cache_dir=str(empty), draw=False)
    assert len(_read(tmp_path / "a")["images"]) == 3
    assert _read(tmp_path / "a")["images"] == _read(tmp_path / "b")["images"]
    assert list(empty.iterdir()) == []  # nothing needed, nothing written there
    manifest = json.loads((exported / MANIFEST).read_text())
    assert manifest["package_version"] and {"classes.json", "settings.json", "members/member_0.pt",
                                            "members/member_1.pt", "multibox/model.pt",
                                            "multibox/priors.npy"} <= set(manifest["files"])
    for name, entry_ in manifest["files"].items():
        assert sha256_file(exported / name) == entry_["sha256"]
    classes = json.loads((exported / "classes.json").read_text())
    assert classes["ids"] == [1, 2, 3, 4] and len(classes["synsets"]) == len(classes["names"]) == 4
    assert not list(exported.parent.glob(".*tmp"))


@pytest.mark.slow
def test_proposal_workers_give_the_same_predictions(exported, val_images, tmp_path):
    images = [str(p) for p in sorted(val_images.iterdir())[:3]]
    _predict(tmp_path / "one", images=images, detector=str(exported), workers=1, draw=False)
    _predict(tmp_path / "two", images=images, detector=str(exported), workers=2, draw=False)
    assert _read(tmp_path / "one")["images"] == _read(tmp_path / "two")["images"]


def test_run_without_recorded_keys_rebuilds_them_from_the_cache(run, val_images, tmp_path):
    """A run folder from before metrics.json named the MultiBox key and the classes."""
    out, cache = run
    old = tmp_path / "old_run"
    shutil.copytree(out, old)
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["multibox"], metrics["classes"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    one = sorted(val_images.iterdir())[0]
    a = Detector.from_run(out, cache_dir=cache)(one)
    b = Detector.from_run(old, cache_dir=cache)(one)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- the Python API

def test_api_output_types_and_shapes(exported, val_images):
    detector = Detector.load(exported)
    assert detector.class_names == ["striped_disc", "checkered_disc", "dotted_ring", "shaded_ring"]
    path = sorted(val_images.iterdir())[0]
    out = detector(path)
    assert set(out) == {"boxes", "scores", "labels"}
    n = len(out["scores"])
    assert n > 0
    assert out["boxes"].dtype == torch.float32 and out["boxes"].shape == (n, 4)
    assert out["scores"].dtype == torch.float32 and out["scores"].shape == (n,)
    assert out["labels"].dtype == torch.int64 and out["labels"].shape == (n,)
    assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) <= 4
    assert bool((out["boxes"][:, 2] >= out["boxes"][:, 0]).all() and (out["boxes"][:, 3] >= out["boxes"][:, 1]).all())
    assert bool((out["scores"][:-1] >= out["scores"][1:]).all())  # best first
    array = np.asarray(Image.open(path).convert("RGB"))
    same = detector(array)
    assert all(torch.equal(out[k], same[k]) for k in out)
    blank = detector(np.zeros((30, 40, 3), np.uint8))  # an image with nothing in it still gives typed tensors
    assert blank["boxes"].shape[1:] == (4,) and blank["labels"].dtype == torch.int64
    for bad in (np.zeros((30, 40), np.uint8), np.zeros((30, 40, 3), np.float32), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
            detector(bad)


def test_import_detect_stays_light():
    code = "import sys, detect; assert 'detect.detector' not in sys.modules and 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from detect import Detector as Lazy

    assert Lazy is Detector


# --------------------------------------------------------------------------- inputs: good, odd and broken

def _odd_images(folder: Path, source: Path) -> dict[str, tuple[int, int]]:
    """Images in the modes the readers accept, written from one val image; name -> decoded (w, h)."""
    rgb = Image.open(source).convert("RGB")
    w, h = rgb.size
    folder.mkdir(parents=True, exist_ok=True)
    rgb.convert("CMYK").save(folder / "cmyk.jpg", format="JPEG")
    rgb.convert("L").save(folder / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    gray16 = (np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: width and height swap
    rgb.save(folder / "rotated.jpg", format="JPEG", exif=exif.tobytes())
    (folder / "sub").mkdir(exist_ok=True)
    shutil.copyfile(source, folder / "sub" / "plain.JPEG")
    return {"cmyk.jpg": (w, h), "gray.png": (w, h), "alpha.png": (w, h), "deep16.png": (w, h),
            "rotated.jpg": (h, w), "sub/plain.JPEG": (w, h)}


def _broken_files(folder: Path, source: Path) -> dict[str, str]:
    """Broken inputs; name -> a word of the skip reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    data = source.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image at all\n")  # in a folder, not a list: an input
    (folder / "header_only.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return {"empty.jpg": "empty", "truncated.jpg": "truncated", "notes.txt": "not an image",
            "header_only.png": ""}


@pytest.mark.slow
def test_a_folder_mixing_good_odd_and_broken_files(exported, val_images, tmp_path):
    folder = tmp_path / "inputs"
    source = sorted(val_images.iterdir())[0]
    good = _odd_images(folder, source)
    broken = _broken_files(folder, source)
    (folder / ".hidden.jpg").write_bytes(source.read_bytes())  # hidden files are not inputs
    out = tmp_path / "pred"
    summary = _predict(out, images=str(folder), detector=str(exported))
    result = _read(out)
    read = {Path(i["file"]).relative_to(folder).as_posix(): (i["width"], i["height"]) for i in result["images"]}
    assert read == good
    skipped = {Path(s["file"]).relative_to(folder).as_posix(): s["error"] for s in result["skipped"]}
    assert set(skipped) == set(broken)
    for name, word in broken.items():
        assert word in skipped[name] and str(folder) not in skipped[name]
    assert summary["images"] == len(good) and summary["skipped"] == len(broken)
    drawn = sorted(p.relative_to(out / "drawn").as_posix() for p in (out / "drawn").rglob("*.jpg"))
    assert drawn == sorted(str(Path(n).with_suffix(".jpg").as_posix()) for n in good)


def test_glob_and_list_inputs(exported, val_images, tmp_path):
    files = sorted(val_images.iterdir())[:2]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{files[0]}\n\n{files[1]}\n{tmp_path / 'gone.jpg'}\n")
    _predict(tmp_path / "list", images=str(listing), detector=str(exported), draw=False)
    result = _read(tmp_path / "list")
    assert [i["file"] for i in result["images"]] == [str(f) for f in files]
    assert [s["file"] for s in result["skipped"]] == [str(tmp_path / "gone.jpg")]
    assert "not found" in result["skipped"][0]["error"]
    _predict(tmp_path / "glob", images=str(val_images / "*_00000[12].JPEG"), detector=str(exported), draw=False)
    assert [i["file"] for i in _read(tmp_path / "glob")["images"]] == [str(f) for f in files]


# --------------------------------------------------------------------------- bad input: one line, exit 2

def test_no_usable_input_is_a_one_line_error_and_writes_nothing(exported, val_images, tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    expect_error(lambda: predict(out_dir=tmp_path / "o1", images=str(empty), detector=str(exported)),
                 str(empty), "no files")
    broken = tmp_path / "broken"
    _broken_files(broken, sorted(val_images.iterdir())[0])
    expect_error(lambda: predict(out_dir=tmp_path / "o2", images=str(broken), detector=str(exported),
                                 progress=False), "no input image could be read", "4 skipped")
    expect_error(lambda: predict(out_dir=tmp_path / "o3", images=str(tmp_path / "missing.jpg"),
                                 detector=str(exported)), str(tmp_path / "missing.jpg"), "no such file")
    expect_error(lambda: predict(out_dir=tmp_path / "o4", images=str(tmp_path / "*.nothing"),
                                 detector=str(exported)), "no file matches")
    for o in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / o / "predictions.json").exists() and not (tmp_path / o / "drawn").exists()


def test_model_choice_errors(exported, val_images, tmp_path):
    image = str(sorted(val_images.iterdir())[0])
    expect_error(lambda: predict(out_dir=tmp_path, images=image), "from_run", "detector")
    expect_error(lambda: predict(out_dir=tmp_path, images=image, detector=str(exported), from_run=str(tmp_path)),
                 "one of them")
    expect_error(lambda: predict(out_dir=tmp_path, detector=str(exported)), "images=")


def test_from_run_that_is_not_a_finished_run(run, val_images, tmp_path):
    out, cache = run
    image = str(sorted(val_images.iterdir())[0])
    unfinished = tmp_path / "unfinished"
    shutil.copytree(out / ".hydra", unfinished / ".hydra")
    expect_error(lambda: predict(out_dir=tmp_path / "o", images=image, from_run=str(unfinished),
                                 cache_dir=str(cache)), str(unfinished / "metrics.json"), "not a finished")
    no_hydra = tmp_path / "no_hydra"
    no_hydra.mkdir()
    (no_hydra / "metrics.json").write_text("{}")
    expect_error(lambda: predict(out_dir=tmp_path / "o", images=image, from_run=str(no_hydra),
                                 cache_dir=str(cache)), str(no_hydra / ".hydra" / "config.yaml"))
    expect_error(lambda: predict(out_dir=tmp_path / "o", images=image, from_run=str(tmp_path / "nope"),
                                 cache_dir=str(cache)), "no such run folder")
    # The run, but another (empty) cache: the member weights are not there.
    expect_error(lambda: predict(out_dir=tmp_path / "o", images=image, from_run=str(out),
                                 cache_dir=str(tmp_path / "other_cache")), "model.pt", "member 0")
    expect_error(lambda: export_detector(from_run=str(unfinished), out=str(tmp_path / "exp"), cache_dir=str(cache)),
                 "metrics.json")
    assert not (tmp_path / "exp").exists() and not list(tmp_path.glob(".exp*"))


def _copy(exported: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(exported, dst)
    return dst


def _rewrite_checksum(folder: Path, name: str) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    path = folder / name
    manifest["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated", "no_manifest", "bad_manifest"])
def test_exported_folder_with_a_missing_or_corrupt_file(exported, tmp_path, damage):
    folder = _copy(exported, tmp_path)
    target = folder / "members" / "member_1.pt"
    if damage == "missing":
        target.unlink()
    elif damage == "corrupt":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "no_manifest":
        (folder / MANIFEST).unlink()
        target = folder / MANIFEST
    else:
        (folder / MANIFEST).write_text("{not json")
        target = folder / MANIFEST
    line = expect_error(lambda: Detector.load(folder), str(target))
    assert {"missing": "missing", "corrupt": "checksum", "truncated": "checksum", "no_manifest": "missing",
            "bad_manifest": "not valid JSON"}[damage] in line


def test_weights_of_another_architecture_are_refused(exported, tmp_path):
    from classifier.factory import build_classifier

    folder = _copy(exported, tmp_path)
    other = build_classifier("googlenet", num_classes=5, width=0.25, input_size=48, batch_norm=True)
    torch.save(other.state_dict(), folder / "members" / "member_0.pt")
    _rewrite_checksum(folder, "members/member_0.pt")  # a consistent folder, but the wrong network
    expect_error(lambda: Detector.load(folder), str(folder / "members" / "member_0.pt"), "do not fit")
    # A pickle that would run code is refused by weights_only loading.
    (folder / "members" / "member_0.pt").write_bytes(b"")
    torch.save({"x": Path("a")}, folder / "members" / "member_0.pt")
    _rewrite_checksum(folder, "members/member_0.pt")
    expect_error(lambda: Detector.load(folder), str(folder / "members" / "member_0.pt"))


def test_settings_cannot_name_arbitrary_code(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    settings = json.loads((folder / "settings.json").read_text())
    settings["proposals"]["ss"]["_target_"] = "os.system"
    (folder / "settings.json").write_text(json.dumps(settings))
    _rewrite_checksum(folder, "settings.json")
    expect_error(lambda: Detector.load(folder), "proposals.ss._target_", "os.system")


def test_export_refuses_an_existing_out_and_leaves_nothing_half_written(run, exported, tmp_path):
    out, cache = run
    expect_error(lambda: export_detector(from_run=str(out), out=str(exported), cache_dir=str(cache)),
                 str(exported), "already exists")
    empty = tmp_path / "empty_cache"
    expect_error(lambda: export_detector(from_run=str(out), out=str(tmp_path / "new"), cache_dir=str(empty)),
                 "model.pt")
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))


def test_cli_errors_are_one_line_with_exit_status_2(exported, tmp_path):
    proc = _cli("detect.predict", f"images={tmp_path / 'missing'}", f"detector={exported}",
                f"hydra.run.dir={tmp_path / 'pred'}", cache=tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing'}: no such file or folder (images=)"
    assert "Traceback" not in proc.stderr and not (tmp_path / "pred" / "predictions.json").exists()
