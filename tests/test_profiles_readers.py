"""Every profile with every reader (issue 17, family 1): the real config composed, checked against the
schema, its reader instantiated and both splits loaded from a tiny hand-made copy of each layout.

A profile's knobs that only one reader has (``data.splits`` of ``data=synthetic``, ...) live in
``conf/profile_data/<reader>/<profile>.yaml`` and are merged only when that reader is chosen, so no
other reader ever receives them (``VocSource.__init__() got an unexpected keyword argument 'splits'``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from detect.schema import validate_config
from real_fixtures import CLASSIFICATION_READERS, DETECTION_READERS

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PROFILES = sorted(p.stem for p in (CONF / "profile").glob("*.yaml"))
SYNTHETIC_ONLY = {"splits", "num_classes", "blacklist_entries", "managed_dir", "regenerate", "seed"}


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    validate_config(cfg, name)
    return cfg


def _load_both(source) -> None:
    train, val = source.load(source.train_split), source.load(source.split)
    assert len(train) >= 1 and len(val) >= 1


def test_every_profile_is_tested() -> None:
    assert {"demo", "paper", "tiny", "cpu_real"} <= set(PROFILES)


@pytest.mark.parametrize("reader", sorted(DETECTION_READERS))
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_runs_with_every_detection_reader(profile: str, reader: str, tmp_path: Path) -> None:
    overrides = DETECTION_READERS[reader](tmp_path / reader)
    for entry in ("config", "proposals_run"):  # python -m detect.run, python -m proposals.run
        cfg = _compose(entry, [f"profile={profile}", *overrides, f"cache_dir={tmp_path / 'cache'}"])
        assert not SYNTHETIC_ONLY & set(cfg.data), f"synthetic-only keys reached data={reader}"
        _load_both(instantiate(cfg.data))


@pytest.mark.parametrize("reader", sorted(DETECTION_READERS))
def test_eval_map_runs_with_every_detection_reader(reader: str, tmp_path: Path) -> None:
    cfg = _compose("eval_map", [*DETECTION_READERS[reader](tmp_path / reader), f"detections={tmp_path / 'd.txt'}"])
    source = instantiate(cfg.data)
    assert len(source.load(cfg.data.split)) >= 1


@pytest.mark.parametrize("reader", sorted(CLASSIFICATION_READERS))
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_runs_with_every_pretraining_reader(profile: str, reader: str, tmp_path: Path) -> None:
    overrides = CLASSIFICATION_READERS[reader](tmp_path / reader)
    for entry in ("pretrain", "config"):  # python -m classifier.pretrain, and detect.run's pretrain stage
        cfg = _compose(entry, [f"profile={profile}", *overrides, f"cache_dir={tmp_path / 'cache'}"])
        assert "images_per_class" not in cfg.pretrain.data and "num_classes" not in cfg.pretrain.data
        _load_both(instantiate(cfg.pretrain.data))


def test_the_tiny_profile_keeps_its_synthetic_sizes(tmp_path: Path) -> None:
    cfg = _compose("config", ["profile=tiny", f"cache_dir={tmp_path}"])
    assert OmegaConf.to_container(cfg.data.splits) == {"train": 24, "val": 12}
    assert (cfg.data.num_classes, cfg.data.blacklist_entries) == (4, 2)
    assert OmegaConf.to_container(cfg.pretrain.data.images_per_class) == {"train": 4, "val": 2}
    assert cfg.pretrain.data.num_classes == 6 and list(cfg.pretrain.data.image_long_side) == [48, 64]
    # Command-line overrides still win over the profile's reader knobs.
    cfg = _compose("config", ["profile=tiny", "data.splits.val=5", f"cache_dir={tmp_path}"])
    assert cfg.data.splits.val == 5 and cfg.data.splits.train == 24
    pre = _compose("pretrain", ["profile=tiny", f"cache_dir={tmp_path}"])
    assert pre.pretrain.data.num_classes == 6 and "data" not in pre  # no stray detection data block


def test_cpu_real_profile_is_set_up_for_real_photos(tmp_path: Path) -> None:
    cfg = _compose("config", ["profile=cpu_real", *DETECTION_READERS["voc"](tmp_path / "voc")])
    demo = _compose("config", ["profile=demo"])
    assert cfg.proposals.ss.resize_short_side == 375 and cfg.proposals.merge.max_per_image >= 1000
    # The demo's networks and pretraining, so the shipped pretrained weights apply unchanged.
    assert cfg.classifier.model == demo.classifier.model and cfg.pretrain == demo.pretrain
