"""Embedded synthetic dataset: determinism, the real ILSVRC reader on its output, atomic regeneration."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import detect.data.synth as synth
from detect.data.synth import SyntheticSource, generate, read_manifest
from detect.data.synth_scene import CLASSES, class_mask
from detect.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parents[1] / "conf"


def tiny_knobs(**overrides) -> dict:
    """The shipped knobs (conf/data/synthetic.yaml) with 6 + 6 small images."""
    cfg = OmegaConf.load(CONF / "data/synthetic.yaml")
    knobs = {k: v for k, v in OmegaConf.to_container(cfg).items()
             if k not in ("_target_", "root", "split", "train_split", "managed_dir", "regenerate", "workers")}
    knobs.update(splits={"train": 6, "val": 6}, image_long_side=[96, 128], blacklist_entries=3,
                 # Seed 0 with these fractions yields negatives both with and without an XML file.
                 negative_fraction=0.3, missing_xml_fraction=0.5)
    knobs.update(overrides)
    return knobs


def source(root: Path, managed_dir: Path | None = None, regenerate: bool = False, **overrides) -> SyntheticSource:
    return SyntheticSource(root=str(root), split="val", train_split="train", **tiny_knobs(**overrides),
                           managed_dir=None if managed_dir is None else str(managed_dir), regenerate=regenerate)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path):
    generate(tmp_path / "a", progress=False, **tiny_knobs())
    generate(tmp_path / "b", progress=False, workers=2, **tiny_knobs())  # rendered by two processes
    generate(tmp_path / "c", progress=False, **tiny_knobs(seed=1))
    a, b, c = (file_hashes(tmp_path / d) for d in "abc")
    assert len(a) > 12 and a == b  # manifest and statistics included
    images = [k for k in a if k.endswith(".JPEG")]
    assert len(images) == 12 and all(a[k] != c[k] for k in images)
    # Image i depends on (seed, split, i) only, not on how many images the split has.
    generate(tmp_path / "d", progress=False, **tiny_knobs(splits={"val": 3}, blacklist_entries=0))
    d = file_hashes(tmp_path / "d")
    assert all(d[k] == a[k] for k in d if k.startswith("Data/DET/val/"))


def test_real_reader_reads_the_layout(tmp_path: Path, caplog):
    src = source(tmp_path / "synth")
    val = src.load("val")
    train = src.load("train")
    manifest = read_manifest(tmp_path / "synth")
    assert "WARNING" not in caplog.text  # no clipped, rescaled or skipped boxes
    assert len(val) == 6 and len(train) == 6
    assert [r.index for r in val] == list(range(1, 7))
    assert val.num_objects == manifest["splits"]["val"]["objects"]
    assert train.num_objects == manifest["splits"]["train"]["objects"]
    assert len(val.classes) == len(CLASSES) >= 10
    assert val.classes.names[0] == "striped_disc"
    for rec in itertools.chain(val, train):
        b = rec.boxes
        assert ((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= rec.width - 1) & (b[:, 3] <= rec.height - 1)).all()
        assert ((b[:, 0] < b[:, 2]) & (b[:, 1] < b[:, 3])).all()
        assert ((1 <= rec.labels) & (rec.labels <= len(CLASSES))).all()
        assert 96 <= max(rec.width, rec.height) <= 128


def test_negatives_with_and_without_xml_and_val_blacklist(tmp_path: Path):
    src = source(tmp_path / "synth")
    val, train = src.load("val"), src.load("train")
    root = tmp_path / "synth"
    negatives = [r for r in itertools.chain(val, train) if r.num_objects == 0]
    with_xml = [r for r in negatives if (root / f"Annotations/DET/{r.path.parent.name}/{r.image_id}.xml").exists()]
    assert 0 < len(with_xml) < len(negatives)  # both kinds of negative occur
    assert len(val.blacklist) == 3 and train.blacklist == frozenset()
    # Blacklisted pairs are drawn from the classes present in those images.
    by_index = {r.index: set(r.labels.tolist()) for r in val}
    assert all(c in by_index[i] for i, c in val.blacklist)


def test_classes_differ_by_shape_texture_and_overlap_in_colour():
    assert len(CLASSES) >= 10
    pairs = {(c.shape, c.texture) for c in CLASSES}
    assert len(pairs) == len(CLASSES)  # no two classes share both shape and texture
    assert max(sum(c.shape == s for c in CLASSES) for s in {c.shape for c in CLASSES}) <= 2
    masks = [class_mask(i) for i in range(len(CLASSES))]
    for i, j in itertools.combinations(range(len(CLASSES)), 2):
        iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
        if CLASSES[i].shape != CLASSES[j].shape:
            assert iou < 0.9, (CLASSES[i].name, CLASSES[j].name, iou)
        else:
            assert iou == 1.0
    # Colour alone does not separate: every class has a neighbour whose mean hue is within one
    # hue_std (30 degrees in the shipped config) of its own.
    hues = np.array([c.hue for c in CLASSES])
    gap = np.abs((hues[:, None] - hues[None, :] + 180) % 360 - 180) + np.eye(len(hues)) * 360
    assert gap.min(1).max() <= 30


def test_killed_generation_is_regenerated_not_read(tmp_path: Path, monkeypatch):
    root = tmp_path / "synth"
    calls = []
    real = synth._jpeg_bytes

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # in the middle of the val split
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "_jpeg_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        source(root).load("val")
    assert not root.exists()  # nothing half-written ...
    assert [p.name for p in tmp_path.iterdir()] == [".synth.lock"]  # ... and no temporary folder left behind
    monkeypatch.setattr(synth, "_jpeg_bytes", real)
    val = source(root).load("val")
    assert len(val) == 6 and (root / "DONE").exists()


def test_changed_knobs_regenerate_and_foreign_folders_are_never_overwritten(tmp_path: Path):
    cache = tmp_path / "cache"
    root = cache / "synth"
    source(root, cache).load("val")
    hashes = file_hashes(root)
    source(root, cache).load("val")  # same knobs: nothing rewritten
    assert file_hashes(root) == hashes
    source(root, cache, seed=7).load("val")  # inside the cache folder: regenerated
    assert read_manifest(root)["knobs"]["seed"] == 7
    regenerated = file_hashes(root)
    images = [k for k in hashes if k.endswith(".JPEG")]
    assert all(regenerated[k] != hashes[k] for k in images)
    foreign = tmp_path / "my_ilsvrc_copy"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a generated synthetic dataset"):
        source(foreign).load("val")
    assert (foreign / "important.txt").read_text() == "keep me"


def test_a_generated_dataset_outside_the_cache_is_rewritten_only_when_asked(tmp_path: Path):
    copy = tmp_path / "my_copy"  # e.g. a generated dataset the user keeps (and meant to read with data=ilsvrc)
    source(copy).load("val")
    hashes = file_hashes(copy)
    for managed in (None, tmp_path / "cache"):
        with pytest.raises(DataError, match=r"my_copy: holds a synthetic dataset generated with other knobs "
                                            r"\(seed 0 -> 3\) outside the cache folder.*data\.regenerate=true"):
            source(copy, managed, seed=3).load("val")
    assert file_hashes(copy) == hashes
    assert len(source(copy).load("val")) == 6  # its own knobs: read as it is
    source(copy, regenerate=True, seed=3).load("val")
    assert read_manifest(copy)["knobs"]["seed"] == 3


def test_cli_refuses_to_rewrite_a_dataset_made_with_other_knobs(tmp_path: Path, capsys):
    from hydra import compose, initialize_config_dir

    root = tmp_path / "mine"
    knobs = ["splits={train: 1, val: 2}", "image_long_side=[64,64]", "blacklist_entries=0"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        first = compose(config_name="synth", overrides=[f"root={root}", f"cache_dir={tmp_path / 'cache'}", *knobs])
        other = compose(config_name="synth", overrides=[f"root={root}", f"cache_dir={tmp_path / 'cache'}", *knobs,
                                                        "seed=5"])
        asked = compose(config_name="synth", overrides=[f"root={root}", *knobs, "seed=5", "regenerate=true"])
    synth._main(first)
    hashes = file_hashes(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        synth._main(other)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {root}: holds a synthetic dataset generated with other knobs (seed 0 -> 5)")
    assert "regenerate=true" in err and file_hashes(root) == hashes
    synth._main(asked)
    assert read_manifest(root)["knobs"]["seed"] == 5


def test_bad_knobs_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="data.object_scale"):
        source(tmp_path, object_scale=[0.7, 0.05])
    with pytest.raises(ConfigError, match="data.split 'test'"):
        SyntheticSource(root=str(tmp_path), split="test", train_split="train", **tiny_knobs())
    with pytest.raises(ConfigError, match="data.blacklist_split"):
        source(tmp_path, blacklist_split="val2")


def test_cli_composes_the_shipped_config_and_prints_statistics(tmp_path: Path, capsys):
    from hydra import compose, initialize_config_dir

    root = tmp_path / "cli"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="synth", overrides=[
            f"root={root}", "splits={train: 2, val: 3}", "image_long_side=[64,80]", "blacklist_entries=1"])
    manifest = synth._main(cfg)
    out = capsys.readouterr().out
    assert manifest["splits"]["val"]["images"] == 3 and (root / "DONE").exists()
    assert "per class:" in out and "striped_disc" in out and "relative size" in out
    synth._main(cfg)
    assert "already generated" in capsys.readouterr().out


def test_cli_bad_knob_is_one_line_error(tmp_path: Path, capsys):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="synth", overrides=[f"root={tmp_path / 'x'}", "object_scale=[0.7,0.1]"])
    with pytest.raises(SystemExit) as exc:
        synth._main(cfg)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: data.object_scale must satisfy 0.001 <= min <= max <= 2.0, got [0.7, 0.1]")
