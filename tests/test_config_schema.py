"""The typed config schema (`detect.schema`): every shipped config passes it, and it knows every yaml key.

The first test composes every entry point's config with every profile, reader and option and validates
it: a key added to a yaml file without a line in the schema fails here, loudly ("unknown config key"),
as does a schema key no yaml file has any more ("... is missing").  The bad-input cases (wrong types,
ranges, unknown keys, in the real entry points) are rows of `test_bad_input_boundary.BOUNDARY`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detect import schema
from detect.errors import ConfigError
from detect.schema import ENTRIES, validate_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Values for the ??? keys (paths only: nothing is read here).
SET = {"data.root": "/data/x", "pretrain.data.root": "/data/y", "detections": "/d.txt", "from_run": "/run",
       "out": "/out"}


def _combinations() -> list[tuple[str, list[str]]]:
    profiles, readers = _options("profile"), _options("data")
    combos: list[tuple[str, list[str]]] = []
    for profile in profiles:
        for reader in readers:
            combos += [("config", [f"profile={profile}", f"data={reader}"]),
                       ("proposals_run", [f"profile={profile}", f"data={reader}"])]
        for proposals in _options("proposals"):
            combos.append(("config", [f"profile={profile}", f"proposals={proposals}"]))
        for reader in _options("pretrain/data"):
            combos += [("config", [f"profile={profile}", f"pretrain/data={reader}"]),
                       ("pretrain", [f"profile={profile}", f"pretrain/data={reader}"])]
    combos += [("eval_map", [f"data={reader}"]) for reader in readers]
    combos += [("predict", []), ("predict", ["data=synthetic"]), ("export", []), ("synth", [])]
    return [(name, o) for name, o in combos if (CONF / f"{name}.yaml").exists()]


def _compose(name: str, overrides: list[str]):
    cfg = compose(config_name=name, overrides=overrides)
    for key, value in SET.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is not None and leaf in node.keys() and OmegaConf.is_missing(node, leaf):
            OmegaConf.update(cfg, key, value)
    return cfg


def test_every_primary_config_has_a_schema_entry() -> None:
    primary = {p.stem for p in CONF.glob("*.yaml")}
    assert primary <= set(ENTRIES), f"conf/*.yaml without a detect.schema entry: {sorted(primary - set(ENTRIES))}"


def test_every_config_profile_reader_and_option_passes_the_schema() -> None:
    """The schema knows every key of every shipped combination (and needs no key they lack)."""
    failures = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name, overrides in _combinations():
            try:
                validate_config(_compose(name, overrides), name)
            except ConfigError as exc:
                failures.append(f"{name} {' '.join(overrides)}: {exc}")
    assert not failures, "\n".join(failures)


def test_a_new_yaml_key_without_a_schema_line_fails_loudly() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _compose("config", ["profile=tiny", "+classifier.train.warmup_iterations=100"])
    with pytest.raises(ConfigError, match=r"^unknown config key 'classifier\.train\.warmup_iterations'"):
        validate_config(cfg, "config")


def test_every_problem_is_counted_on_the_one_line() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _compose("config", ["profile=tiny", "seed=abc", "proposals.ss.scale=two", "ensemble.size=0"])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, "config")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("proposals.ss.scale must be a number > 0, got 'two' (and 2 more: ")
    assert "ensemble.size must be an integer >= 1, got 0" in message and "seed must be an integer >= 0" in message


def test_interpolations_are_checked_resolved_and_bad_ones_are_named() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _compose("config", ["profile=demo", "classifier.model.width=0.25"])
        validate_config(cfg, "config")  # proposals.multibox.width: ${classifier.model.width}
        bad = _compose("config", ["profile=demo", "classifier.model.width=wide"])
        unresolvable = _compose("config", ["profile=tiny", "data.root=${nowhere}"])
    with pytest.raises(ConfigError, match=r"^proposals\.multibox\.width must be a number > 0, got 'wide' \(and 1 more: "
                                          r"classifier\.model\.width must be"):  # the interpolation, resolved
        validate_config(bad, "config")
    with pytest.raises(ConfigError, match=r"^data\.root: cannot resolve '\$\{nowhere\}'"):
        validate_config(unresolvable, "config")


def test_option_lists_are_the_codes_own() -> None:
    from classifier.cls_batches import INTERPOLATIONS
    from classifier.factory import ARCHS
    from classifier.googlenet import TRUNK_LAYERS
    from classifier.train import LR_SCHEDULES
    from detect.data.synth import CLASSES
    from detect.data.synth_cls import CLS_CLASSES
    from detect.ensemble import SCORE_KINDS
    from detect.members import MODES, RUNTIMES
    from detect.pretrain_stage import INITS
    from detect.proposal_stage import SOURCES
    from proposals.merge import ORDERS
    from proposals.multibox import CONFIDENCE_LOSSES, OFFSET_UNITS
    from proposals.selective_search import MODES as SS_MODES

    assert schema.SS_MODES == SS_MODES and schema.MERGE_ORDERS == ORDERS and schema.SOURCES == SOURCES
    assert schema.ARCHS == ARCHS and schema.TRUNK_LAYERS == TRUNK_LAYERS and schema.INITS == INITS
    assert schema.MODES == MODES and schema.RUNTIMES == RUNTIMES and schema.LR_SCHEDULES == LR_SCHEDULES
    assert schema.SCORE_KINDS == SCORE_KINDS and schema.INTERPOLATIONS == tuple(INTERPOLATIONS)
    assert schema.OFFSET_UNITS == OFFSET_UNITS and schema.CONFIDENCE_LOSSES == CONFIDENCE_LOSSES
    assert schema.SYNTH_CLASSES == len(CLASSES) and schema.SYNTH_CLS_CLASSES == len(CLS_CLASSES)


@pytest.mark.parametrize("key, value, allowed", [
    ("proposals.ss.max_boxes", "0", "an integer >= 1 or null"),
    ("proposals.multibox.nms_iou", "0", "a number in (0, 1]"),
    ("proposals.merge.snap_iou", "1.5", "a number in (0, 1] or null"),
    ("classifier.model.dropout", "1.0", "a number in [0, 1)"),
    ("classifier.model.batch_norm", "maybe", "true or false or null"),
    ("pretrain.augment.crop_scale", "[0.5,0.1]", "a [min, max] pair of numbers in (0, 1] with min <= max"),
    ("classifier.windows.pixel_std", "[0.2,0.2]", "a list of 3 numbers > 0"),
    ("ensemble.members", "[0,0]", "a list of integers >= 0 (no repeats) or null"),
    ("data.image_long_side", "[64]", "a [min, max] pair of integers in 16..4096 with min <= max"),
    ("data.num_classes", "13", "an integer in 1..12"),
    ("proposals.shard", "2/2", "null or 'i/n' with 0 <= i < n (e.g. 0/4)"),
    ("classifier.train.iterations", "1e4", "an integer >= 1"),
])
def test_what_is_allowed_is_said(key: str, value: str, allowed: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _compose("config", ["profile=tiny", f"{key}={value}"])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, "config")
    assert str(info.value).startswith(f"{key} must be {allowed}, got "), str(info.value)


def test_a_cuda_device_without_cuda_is_refused_before_any_stage(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _compose("config", ["profile=tiny", "device=cuda:1"])
    with pytest.raises(ConfigError, match=r"^device=cuda:1 but CUDA is not available on this machine; use device=cpu"):
        validate_config(cfg, "config")
