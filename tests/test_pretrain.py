"""Pretraining: the synthetic classification set, the training loop (resume, averaging), top-k errors,
and fine-tuning from the result (members and MultiBox)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from classifier.cls_batches import IterationBatchSampler, epoch_order
from classifier.factory import build_classifier
from classifier.googlenet import GoogLeNet
from classifier.pretrain import predict_probs, topk_errors, train_pretrain
from classifier.weights import load_trunk_weights
from detect.data.cls_loc import read_cls_loc
from detect.data.synth import SyntheticSource
from detect.data.synth_cls import CLS_CLASSES, SyntheticClsSource, render_cls_image
from detect.data.synth_scene import CLASSES
from detect.errors import UserError
from proposals.multibox import MultiBoxNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

KNOBS = dict(seed=0, num_classes=4, image_long_side=(40, 56), image_aspect=(0.75, 1.0), object_scale=(0.4, 0.85),
             center_jitter=0.1, max_aspect=2.0, max_rotation=30, max_shear=0.2, hue_std=20, clutter_blobs=(1, 3),
             clutter_lines=(0, 2), clutter_textures=(0, 1), noise_std=(2.0, 4.0), blur_prob=0.0, jpeg_quality=90)
AUGMENT = dict(crop_scale=(0.5, 1.0), crop_ratio=(0.75, 1.3333), interpolations=["nearest", "bilinear"],
               brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, flip=True)
TRAIN = dict(batch_size=8, momentum=0.9, weight_decay=0.0, lr_step_epochs=1.0, lr_gamma=0.9, aux_weight=0.3,
             polyak_start_epoch=0.0, workers=0, checkpoint_every=3, log_every=5)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cls") / "synthetic_cls"
    SyntheticClsSource(root=str(root), split="val", train_split="train", images_per_class={"train": 6, "val": 3},
                       **KNOBS).ensure(progress=False)
    return root


def tiny_net(num_classes: int, width: float = 0.125) -> GoogLeNet:
    torch.manual_seed(0)
    return GoogLeNet(num_classes, width=width, input_size=48, batch_norm=True)


def test_class_set_contains_the_det_classes_and_more():
    assert CLS_CLASSES[:len(CLASSES)] == CLASSES
    pairs = [(c.shape, c.texture) for c in CLS_CLASSES]
    assert len(CLS_CLASSES) == 48 and len(set(pairs)) == 48 and len({c.synset for c in CLS_CLASSES}) == 48


def test_generated_set_is_read_by_the_cls_loc_reader(cls_root):
    train, val = read_cls_loc(cls_root, "train"), read_cls_loc(cls_root, "val")
    assert len(train) == 24 and len(val) == 12
    assert [c.wnid for c in train.classes] == [c.synset for c in CLS_CLASSES[:4]]
    assert np.bincount(train.labels).tolist() == [6, 6, 6, 6]
    assert np.bincount(val.labels).tolist() == [3, 3, 3, 3]


def test_cls_images_are_deterministic_and_never_det_images():
    p = SyntheticClsSource(root="unused", split="val", train_split="train", images_per_class={"train": 1},
                           **KNOBS)
    a, box_a = render_cls_image(p, "train", 3, 1)
    b, box_b = render_cls_image(p, "train", 3, 1)
    assert np.array_equal(a, b) and box_a == box_b
    x1, y1, x2, y2 = box_a
    assert 0 <= x1 < x2 < a.shape[1] and 0 <= y1 < y2 < a.shape[0]
    # One dominant object: its box spans a good part of the image.
    assert (x2 - x1 + 1) * (y2 - y1 + 1) >= 0.1 * a.shape[0] * a.shape[1]
    # The DET generator seeds image (seed, split, index); the CLS one adds a "cls" stream: different pixels.
    from detect.data.synth_scene import render_sample

    det = SyntheticSource(root="unused", split="train", train_split="train", splits={"train": 4}, seed=0,
                          num_classes=4, image_long_side=[40, 56], image_aspect=[0.75, 1.0], portrait_prob=0.2,
                          negative_fraction=0.0, missing_xml_fraction=0.0, objects_per_image=[1.0],
                          object_scale=[0.3, 0.6], max_aspect=2.0, max_rotation=30, max_shear=0.2, hue_std=20,
                          truncation_prob=0.0, min_visible_fraction=0.3, min_box_side=4, placement_tries=5,
                          distractors=[0, 0], hard_distractor_prob=0.0, clutter_blobs=[1, 3], clutter_lines=[0, 2],
                          clutter_textures=[0, 1], noise_std=[2.0, 4.0], blur_prob=0.0, jpeg_quality=90,
                          blacklist_split=None, blacklist_entries=0)
    d = render_sample(det, "train", 3).image
    assert d.shape != a.shape or not np.array_equal(d, a)


def test_topk_errors_on_a_hand_made_case():
    probs = np.array([[0.1, 0.6, 0.3],    # label 1: top-1 right
                      [0.5, 0.2, 0.3],    # label 2: top-1 wrong, top-2 right
                      [0.2, 0.3, 0.5]])   # label 0: wrong at top-1 and top-2
    labels = np.array([1, 2, 0])
    errors = topk_errors(probs, labels, ks=(1, 2, 3))
    assert errors == {1: pytest.approx(2 / 3), 2: pytest.approx(1 / 3), 3: 0.0}
    # Ties go to the lower class index (stable sort): [0.5, 0.5, 0] ranks class 0 first.
    assert topk_errors(np.array([[0.5, 0.5, 0.0]]), np.array([1]), ks=(1,))[1] == 1.0


def test_batches_follow_epochs_and_resume_where_they_stopped():
    full = IterationBatchSampler(10, batch_size=4, seed=3, start=0, iterations=5)
    batches = list(full)
    flat = [i for b in batches for i, _ in b]
    assert flat[:10] == epoch_order(3, 0, 10).tolist() and flat[10:20] == epoch_order(3, 1, 10).tolist()
    resumed = list(IterationBatchSampler(10, batch_size=4, seed=3, start=2, iterations=5))
    assert resumed == batches[2:]
    halves = [IterationBatchSampler(10, batch_size=4, seed=3, start=0, iterations=5, rank=r, world_size=2).batch(1)
              for r in (0, 1)]
    assert halves[0] + halves[1] == batches[1]


def _train(cls_root, checkpoint_dir, epochs=3.0, lr=0.05, **kw):
    train = read_cls_loc(cls_root, "train")
    model = tiny_net(train.num_classes)
    averaged, history = train_pretrain(model, train, input_size=48, pixel_mean=MEAN, pixel_std=STD,
                                       augment=AUGMENT, epochs=epochs, lr=lr, polyak_decay=kw.pop("polyak_decay", 0.5),
                                       checkpoint_dir=checkpoint_dir, seed=0, **{**TRAIN, **kw})
    return averaged, history


def test_loss_decreases_on_a_handful_of_images(cls_root):
    # 8 images (2 per class), one batch per epoch, mild crops: 40 iterations must fit them.
    train = read_cls_loc(cls_root, "train")
    small = dataclasses.replace(train, records=train.records[::3])
    augment = dict(AUGMENT, crop_scale=(0.9, 1.0), brightness=0.0, contrast=0.0, saturation=0.0)
    _, history = train_pretrain(tiny_net(4), small, input_size=48, pixel_mean=MEAN, pixel_std=STD, augment=augment,
                                epochs=40, lr=0.01, polyak_decay=None, checkpoint_dir=None, seed=0,
                                **dict(TRAIN, lr_gamma=1.0))
    assert len(history["main"]) == 40
    assert np.mean(history["main"][:5]) > 1.2 and np.mean(history["main"][-5:]) < 0.3


def test_resume_is_bit_identical(cls_root, tmp_path, monkeypatch):
    straight, h1 = _train(cls_root, tmp_path / "a")  # 9 iterations, checkpoints at 3, 6 and the end
    import classifier.pretrain as pretrain

    real_loss, calls = pretrain.classifier_loss, []

    def killed_at_iteration_7(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # as a kill after the checkpoint at 6
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(pretrain, "classifier_loss", killed_at_iteration_7)
    with pytest.raises(KeyboardInterrupt):
        _train(cls_root, tmp_path / "b")
    monkeypatch.setattr(pretrain, "classifier_loss", real_loss)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["iteration"] == 6
    resumed, h2 = _train(cls_root, tmp_path / "b")
    assert h1["loss"] == h2["loss"]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_polyak_average_differs_from_the_last_iterate_and_is_usable(cls_root):
    train = read_cls_loc(cls_root, "train")
    model = tiny_net(train.num_classes)
    averaged, _ = train_pretrain(model, train, input_size=48, pixel_mean=MEAN, pixel_std=STD, augment=AUGMENT,
                                 epochs=2.0, lr=0.05, polyak_decay=0.9, checkpoint_dir=None, seed=0, **TRAIN)
    assert not torch.equal(averaged.fc.weight, model.fc.weight)
    probs = predict_probs(averaged, read_cls_loc(cls_root, "val"), input_size=48, resize_ratio=1.14,
                          pixel_mean=MEAN, pixel_std=STD, batch_size=5, workers=0, device="cpu")
    assert probs.shape == (12, 4) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_finetuning_loads_the_trunk_and_reinitialises_the_head(tmp_path):
    pretrained = tiny_net(48)
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.state_dict(), path)
    torch.manual_seed(1)
    member = build_classifier("googlenet", num_classes=13, width=0.125, input_size=48, batch_norm=True,
                              weights=str(path))
    assert member.fc.weight.shape == (13, pretrained.fc.weight.shape[1])
    assert torch.equal(member.inception4e.branch1.conv.weight, pretrained.inception4e.branch1.conv.weight)
    assert torch.equal(member.stem.conv1.conv.weight, pretrained.stem.conv1.conv.weight)
    assert member.aux1.fc2.weight.shape[0] == 13
    # MultiBox: the trunk up to its feature layer comes from the file, its box head does not.
    mb = MultiBoxNet(num_shapes=2, width=0.125, input_size=64, batch_norm=True, feature_layer="inception3b")
    load_trunk_weights(mb.backbone, path, until="inception3b")
    assert torch.equal(mb.backbone.inception3b.branch2[0].conv.weight, pretrained.inception3b.branch2[0].conv.weight)


def test_weights_of_another_width_or_arch_are_a_one_line_error(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(tiny_net(48, width=0.25).state_dict(), path)
    with pytest.raises(UserError) as err:
        build_classifier("googlenet", num_classes=13, width=0.125, input_size=48, batch_norm=True, weights=str(path))
    message = str(err.value)
    assert str(path) in message and "stem.conv1" in message and "\n" not in message
    mb = MultiBoxNet(num_shapes=2, width=0.125, input_size=64, batch_norm=True, feature_layer="inception3b")
    with pytest.raises(UserError, match="stem.conv1"):
        load_trunk_weights(mb.backbone, path, until="inception3b")
    other = tmp_path / "other.pt"
    torch.save({"features.0.weight": torch.zeros(3)}, other)
    with pytest.raises(UserError, match=str(other)):
        build_classifier("googlenet", num_classes=13, width=0.125, input_size=48, batch_norm=True, weights=str(other))


def test_shipped_weights_match_their_record():
    """Every shipped file has its metrics record, and its sha256 is the one recorded at shipping."""
    from classifier.pretrain import SHIPPED_DIR
    from detect.fingerprint import file_digest

    shipped = sorted(SHIPPED_DIR.glob("*.pt"))
    assert shipped, "no pretrained weights shipped"
    for path in shipped:
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["key"] == path.stem
        assert record["sha256_16"] == file_digest(path)
        assert 0.0 <= record["top5_error"] <= record["top1_error"] <= 1.0


def test_the_default_run_uses_the_shipped_weights():
    """The shipped files are the ones the demo config asks for, one per pretrained network: same keys (the config
    that made them), and nothing else is shipped."""
    from hydra import compose, initialize_config_dir

    from classifier.pretrain import SHIPPED_DIR, network_seeds, pretrain_key

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="config")
    keys = {pretrain_key(cfg.pretrain, cfg.classifier.model, seed=s) for s in network_seeds(cfg.pretrain)}
    assert cfg.pretrain.use_shipped and cfg.classifier.init == "pretrained"
    assert keys == {path.stem for path in SHIPPED_DIR.glob("*.pt")}


@pytest.mark.slow
def test_shipped_weights_reproduce_their_recorded_errors(tmp_path):
    """Each shipped network, evaluated on the regenerated synthetic CLS val split, gives exactly its recorded
    top-1/top-5 errors (retraining them is benchmarks/pretrain_reproduce.py: ~25 min per network)."""
    from hydra import compose, initialize_config_dir

    from classifier.pretrain import network_seeds, pretrain_key

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[f"cache_dir={tmp_path}"])
    source = SyntheticClsSource(**{k: v for k, v in OmegaConf.to_container(cfg.pretrain.data, resolve=True).items()
                                   if k != "_target_"} | {"images_per_class": {"val": 50, "train": 1}})
    val = source.load("val")
    for seed in network_seeds(cfg.pretrain):
        _check_recorded_errors(pretrain_key(cfg.pretrain, cfg.classifier.model, seed=seed), val, cfg)


def _check_recorded_errors(key, val, cfg):
    from classifier.pretrain import SHIPPED_DIR

    record = json.loads((SHIPPED_DIR / f"{key}.json").read_text())
    model = build_classifier("googlenet", num_classes=val.num_classes, width=cfg.classifier.model.width,
                             input_size=cfg.classifier.model.input_size, batch_norm=True,
                             weights=str(SHIPPED_DIR / f"{key}.pt"))
    probs = predict_probs(model, val, input_size=cfg.classifier.model.input_size,
                          resize_ratio=cfg.pretrain.eval.resize_ratio, pixel_mean=MEAN, pixel_std=STD,
                          batch_size=256, workers=0, device="cpu")
    errors = topk_errors(probs, np.asarray(val.labels))
    assert errors[1] == pytest.approx(record["top1_error"], abs=1e-9)
    assert errors[5] == pytest.approx(record["top5_error"], abs=1e-9)
    # Far better than chance on 48 classes (top-1 error 0.979, top-5 0.896).
    assert record["top1_error"] < 0.75 and record["top5_error"] < 0.3


@pytest.mark.slow
def test_the_app_trains_every_network_of_pretrain_networks(tmp_path):
    """`python -m classifier.pretrain pretrain.networks=2`: two networks (seeds 0 and 1), both cached, written
    as model.pt / model_1.pt, and both listed in metrics.json."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "classifier.pretrain", "profile=tiny", "pretrain.networks=2",
                           f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    keys = [n["key"] for n in metrics["networks"]]
    assert len(set(keys)) == 2 and metrics["key"] == keys[0]
    assert all((tmp_path / "cache" / "pretrain" / k / "model.pt").is_file() for k in keys)
    first, second = (torch.load(run / name, weights_only=True) for name in ("model.pt", "model_1.pt"))
    assert first.keys() == second.keys() and not torch.equal(first["fc.weight"], second["fc.weight"])
    assert "pretrain.seed=1" in proc.stdout


def test_shipping_already_shipped_weights_again_keeps_them(monkeypatch, tmp_path):
    """`ship=true` on a config whose networks are partly shipped already: those stay as they are, the new
    ones are copied in with their record."""
    from classifier import pretrain

    monkeypatch.setattr(pretrain, "SHIPPED_DIR", tmp_path / "pretrained")
    (tmp_path / "pretrained").mkdir()
    shipped = tmp_path / "pretrained" / "aaaa.pt"
    torch.save({"w": torch.zeros(2)}, shipped)
    before = shipped.read_bytes()
    metrics = {"top1_error": 0.5, "top5_error": 0.1, "key": "aaaa"}
    assert pretrain.ship(pretrain.PretrainResult(shipped, "aaaa", metrics, "shipped")) == shipped
    assert shipped.read_bytes() == before
    cached = tmp_path / "cache_model.pt"
    torch.save({"w": torch.ones(2)}, cached)
    new = pretrain.ship(pretrain.PretrainResult(cached, "bbbb", {**metrics, "key": "bbbb"}, "cache"))
    assert new.read_bytes() == cached.read_bytes()
    assert json.loads(new.with_suffix(".json").read_text())["key"] == "bbbb"
