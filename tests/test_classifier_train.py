"""Window dataset, training loop (a tiny stand-in model overfits a handful of windows) and batched scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import classifier.windows as windows_mod
from classifier.factory import build_classifier
from classifier.googlenet import ClassifierOutput
from classifier.sampling import WindowLabeler, WindowSampler
from classifier.score import score_dataset, score_regions
from classifier.train import classifier_loss, train_classifier
from classifier.warp import normalise_image, warp_regions
from classifier.windows import WindowDataset
from detect.data.record import ClassList, DetectionDataset, ImageRecord
from detect.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


WARP = dict(input_size=24, context_pad=2.0, pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25))
COLOURS = {1: (220, 30, 30), 2: (30, 30, 220)}  # class 1 red, class 2 blue


class TinyNet(nn.Module):
    """Stand-in with the classifier's contract: train mode -> (logits, (aux,)), eval -> logits (N, C + 1)."""

    def __init__(self, num_classes: int = 3, input_size: int = 24, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.input_size, self.width, self.aux_logits = num_classes, input_size, width, True
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dropout = nn.Dropout(0.2)
        self.aux = nn.Linear(8, num_classes)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        a = F.relu(self.conv1(x))
        logits = self.fc(self.dropout(F.relu(self.conv2(a)).mean((2, 3))))
        return ClassifierOutput(logits, (self.aux(a.mean((2, 3))),)) if self.training else logits


def make_dataset(root: Path, objects: list[list[tuple[int, tuple[int, int, int, int]]]], size=(48, 40)):
    """PNG images (grey, with filled class-coloured rectangles) and their records."""
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i, objs in enumerate(objects):
        image = np.full((size[1], size[0], 3), 128, np.uint8)
        for label, (x1, y1, x2, y2) in objs:
            image[y1:y2, x1:x2] = COLOURS[label]
        path = root / f"img{i}.png"
        Image.fromarray(image).save(path)
        boxes = np.array([b for _, b in objs], np.float32).reshape(-1, 4)
        labels = np.array([c for c, _ in objs], np.int64)
        records.append(ImageRecord(f"img{i}", i + 1, path, size[0], size[1], boxes, labels, np.zeros(len(objs), bool)))
    return DetectionDataset("toy", "train", root, ClassList(("n1", "n2"), ("red", "blue")), tuple(records))


@pytest.fixture
def toy(tmp_path):
    dataset = make_dataset(tmp_path / "toy", [[(1, (4, 4, 20, 20))], [(2, (24, 10, 44, 34))], [(1, (26, 2, 42, 18))]])
    # A handful of windows: the ground truth (added by the dataset) plus two object-free boxes per image.
    proposals = [np.array([[28, 24, 46, 38], [0, 24, 16, 38]], np.float32),
                 np.array([[2, 2, 18, 18], [0, 0, 10, 38]], np.float32),
                 np.array([[2, 24, 20, 38], [0, 0, 12, 12]], np.float32)]
    return dataset, proposals


def make_windows(dataset, proposals, fg=4, bg=6, **kw) -> WindowDataset:
    return WindowDataset(dataset, proposals, labeler=WindowLabeler(), sampler=WindowSampler(fg_per_batch=fg,
                         bg_per_batch=bg), **WARP, **kw)


TRAIN = dict(momentum=0.9, weight_decay=0.0, lr_schedule="poly", step_size=1, gamma=0.1, power=1.0,
             aux_weight=0.3, checkpoint_dir=None, checkpoint_every=1000, device="cpu", log_every=10)


def test_window_pool_labels_skips_and_ignores(tmp_path):
    dataset = make_dataset(tmp_path / "d", [[(1, (4, 4, 20, 20))]])
    proposals = [np.array([
        [4, 4, 20, 20],  # IoU 1 -> class 1
        [4, 4, 20, 12],  # 128 / 256 = 0.5 -> class 1
        [4, 4, 20, 10],  # 96 / 256 = 0.375 -> ignored with bg_iou 0.3
        [30, 24, 40, 34],  # 0 -> background
        [5, 5, 5, 9],  # zero width: skipped
        [100, 100, 120, 120],  # outside the 48x40 image: skipped
    ], np.float32)]
    win = WindowDataset(dataset, proposals, labeler=WindowLabeler(bg_iou=0.3), sampler=WindowSampler(), **WARP)
    # + the ground-truth box itself (class 1)
    assert win.stats == {"images": 1, "positive": 3, "background": 1, "ignored": 1, "skipped_degenerate": 2}
    assert sorted(win.labels.tolist()) == [0, 1, 1, 1]
    with pytest.raises(DataError, match="proposals for 2 images, dataset has 1"):
        WindowDataset(dataset, proposals * 2, labeler=WindowLabeler(), sampler=WindowSampler(), **WARP)


def test_batches_are_deterministic_warped_and_load_each_image_once(toy, monkeypatch):
    dataset, proposals = toy
    loads = []
    real_load = windows_mod.load_rgb
    monkeypatch.setattr(windows_mod, "load_rgb", lambda p: loads.append(p) or real_load(p))
    win = make_windows(dataset, proposals, fg=3, bg=4, image_cache=0)
    batch = win.sample(torch.Generator().manual_seed(5))
    assert batch.images.shape == (7, 3, 24, 24) and len(batch) == 7
    assert (batch.labels[:3] > 0).all() and (batch.labels[3:] == 0).all()
    assert len(loads) == len(torch.unique(batch.image_index))  # one decode per image per batch
    again = win.sample(torch.Generator().manual_seed(5))
    assert torch.equal(batch.images, again.images) and torch.equal(batch.labels, again.labels)
    # each window is exactly the warp of its box (mirrored when flipped)
    for k in range(len(batch)):
        i = int(batch.image_index[k])
        ref = warp_regions(real_load(dataset[i].path), batch.boxes[k : k + 1].numpy(), **WARP,
                           flip=batch.flipped[k : k + 1].numpy())
        assert torch.equal(batch.images[k], ref[0])
    flips = torch.cat([win.sample(torch.Generator().manual_seed(s)).flipped for s in range(10)])
    assert 0 < int(flips.sum()) < len(flips)


def test_cached_normalised_images_give_the_same_batches_with_one_decode_per_image(toy, monkeypatch):
    dataset, proposals = toy
    uncached = make_windows(dataset, proposals, fg=3, bg=4, image_cache=0)
    expected = [uncached.sample(torch.Generator().manual_seed(seed)) for seed in range(4)]
    loads = []
    real_load = windows_mod.load_rgb
    monkeypatch.setattr(windows_mod, "load_rgb", lambda p: loads.append(p) or real_load(p))
    cached = make_windows(dataset, proposals, fg=3, bg=4, image_cache=10)
    for seed, b in enumerate(expected):
        a = cached.sample(torch.Generator().manual_seed(seed))
        assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    assert len(loads) == len(set(loads)) == len(dataset)  # each image decoded once in 4 batches
    # warp mode caches the normalised float image, roi mode the decoded uint8 one; each is what its name says
    raw, norm = cached.image(0), cached.normalised_image(0)
    assert raw.dtype == np.uint8 and norm.dtype == np.float32
    np.testing.assert_array_equal(norm, normalise_image(real_load(dataset[0].path), pixel_mean=WARP["pixel_mean"],
                                                        pixel_std=WARP["pixel_std"]))


def test_image_size_mismatch_is_a_data_error(tmp_path):
    dataset = make_dataset(tmp_path / "d", [[(1, (4, 4, 20, 20))]])
    rec = dataset[0]
    wrong = ImageRecord(rec.image_id, 1, rec.path, 50, 40, rec.boxes, rec.labels, rec.difficult)
    bad = DetectionDataset("toy", "train", dataset.root, dataset.classes, (wrong,))
    win = make_windows(bad, [np.zeros((0, 4), np.float32)])
    with pytest.raises(DataError, match="decoded image is 48x40, annotation says 50x40"):
        win.sample(torch.Generator().manual_seed(0))


def test_tiny_model_overfits_a_handful_of_windows(toy):
    dataset, proposals = toy
    win = make_windows(dataset, proposals)  # 3 positives + 6 backgrounds: the whole pool every batch
    assert len(win) == 9
    torch.manual_seed(0)
    model = TinyNet()
    hist = train_classifier(model, win, iterations=50, lr=0.05, seed=0, **TRAIN)
    assert len(hist["loss"]) == 50 and hist["windows_per_s"][0] > 0
    first, last = np.mean(hist["loss"][:5]), np.mean(hist["loss"][-5:])
    assert last < 0.25 * first, (first, last)
    assert hist["lr"][0] == pytest.approx(0.05) and hist["lr"][-1] == pytest.approx(0.05 / 50)  # poly, power 1
    assert not model.training
    scores = score_regions(model, np.asarray(Image.open(dataset[1].path)), dataset[1].boxes, batch_size=4, **WARP)
    assert scores.argmax(1).tolist() == [2]


def test_same_seed_same_weights_and_step_schedule(toy):
    dataset, proposals = toy
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = TinyNet()
        hist = train_classifier(model, make_windows(dataset, proposals), iterations=5, lr=0.1, seed=seed,
                                **{**TRAIN, "lr_schedule": "step", "step_size": 2})
        runs.append((model.state_dict(), hist))
    assert all(torch.equal(v, runs[1][0][k]) for k, v in runs[0][0].items())
    assert not all(torch.equal(v, runs[2][0][k]) for k, v in runs[0][0].items())
    np.testing.assert_allclose(runs[0][1]["lr"], [0.1, 0.1, 0.01, 0.01, 0.001])


def test_aux_losses_are_weighted():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    aux = torch.tensor([[0.0, 0.0], [0.0, 0.0]])  # cross entropy ln 2 each
    labels = torch.tensor([0, 1])
    total, main, aux_loss = classifier_loss(ClassifierOutput(logits, (aux, aux)), labels, aux_weight=0.3)
    assert float(aux_loss) == pytest.approx(2 * np.log(2))
    assert float(total) == pytest.approx(float(main) + 0.3 * 2 * np.log(2))
    assert float(classifier_loss(logits, labels, aux_weight=0.3)[0]) == pytest.approx(float(main))


def test_scoring_is_batch_size_invariant_and_skips_degenerate_boxes(toy):
    dataset, proposals = toy
    torch.manual_seed(0)
    model = TinyNet().train()
    image = np.asarray(Image.open(dataset[0].path))
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 30, (11, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(3, 18, (11, 2))], axis=1)
    boxes[4] = [5, 5, 5, 20]  # zero width
    boxes[7] = [60, 0, 70, 10]  # outside
    one = score_regions(model, image, boxes, batch_size=2, **WARP)
    many = score_regions(model, image, boxes, batch_size=64, **WARP)
    assert one.shape == (11, 3) and one.dtype == np.float32
    np.testing.assert_allclose(one, many, atol=1e-6)
    np.testing.assert_allclose(one.sum(1), 1.0, atol=1e-6)
    assert one[4].tolist() == [1.0, 0.0, 0.0] and one[7].tolist() == [1.0, 0.0, 0.0]
    assert model.training  # mode restored
    assert score_regions(model, image, np.zeros((0, 4)), batch_size=4, **WARP).shape == (0, 3)


def test_score_dataset_streams_in_record_order(toy):
    dataset, proposals = toy
    model = TinyNet()
    props = [proposals[0], np.array([[1, 1, 1, 5]], np.float32), proposals[2]]
    out = list(score_dataset(model, dataset, props, batch_size=3, **WARP))
    assert [o.index for o in out] == [0, 1, 2]
    assert [o.scores.shape for o in out] == [(2, 3), (1, 3), (2, 3)]
    assert [o.skipped for o in out] == [0, 1, 0] and out[0].features is None


def test_pooled_features_of_the_real_network_come_with_the_same_scores(toy):
    dataset, _ = toy
    torch.manual_seed(0)
    model = build_classifier("googlenet", num_classes=3, width=0.25, input_size=48)
    image = np.asarray(Image.open(dataset[0].path))
    boxes = np.array([[4, 4, 20, 20], [0, 0, 48, 40], [3, 3, 3, 9]], np.float32)  # the last is degenerate
    warp = {**WARP, "input_size": 48}
    plain = score_regions(model, image, boxes, batch_size=2, **warp)
    scores, feats = score_regions(model, image, boxes, batch_size=2, features=True, **warp)
    np.testing.assert_allclose(scores, plain, atol=1e-6)
    assert feats.shape == (3, model.feature_dim) and (feats[2] == 0).all() and (feats[:2] != 0).any()
    # the pooled vector is what the final linear layer sees (eval mode: dropout is the identity)
    logits = model.fc(torch.from_numpy(feats[:2]))
    np.testing.assert_allclose(torch.softmax(logits, 1).detach().numpy(), scores[:2], atol=1e-5)


def test_model_and_windows_must_agree_on_the_input_size(toy):
    dataset, proposals = toy
    with pytest.raises(ConfigError, match="model takes 32 px windows, the windows are 24 px"):
        train_classifier(TinyNet(input_size=32), make_windows(dataset, proposals), iterations=1, lr=0.1, seed=0,
                         **TRAIN)
