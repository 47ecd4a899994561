"""Classifier checkpoints: exact resume after an interruption, config mismatch errors, RNG states."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from classifier.checkpoint import (
    load_model_weights,
    model_fingerprint,
    rng_state,
    set_rng_state,
)
from classifier.factory import build_classifier
from classifier.sampling import WindowLabeler, WindowSampler, jittered_proposals
from classifier.train import CHECKPOINT_NAME, train_classifier
from classifier.windows import WindowDataset
from detect.data.record import ClassList, DetectionDataset, ImageRecord
from detect.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


# The real Table-1 network at its smallest CPU size: width 0.25, 48 px (47 is the minimum input).
NET = dict(num_classes=3, input_size=48)
WARP = dict(input_size=48, context_pad=3.0, pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225))
TRAIN = dict(lr=0.01, momentum=0.9, weight_decay=0.0005, lr_schedule="step", step_size=2, gamma=0.5, power=1.0,
             aux_weight=0.3, checkpoint_every=3, seed=7, device="cpu", log_every=2)


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> WindowDataset:
    root = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(0)
    records = []
    for i, (label, box) in enumerate([(1, (8, 6, 40, 30)), (2, (20, 10, 56, 44))]):
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        image[box[1]:box[3], box[0]:box[2]] = (200, 40, 40) if label == 1 else (40, 40, 200)
        path = root / f"{i}.png"
        Image.fromarray(image).save(path)
        records.append(ImageRecord(str(i), i + 1, path, 64, 48, np.array([box], np.float32), np.array([label]),
                                   np.zeros(1, bool)))
    dataset = DetectionDataset("toy", "train", root, ClassList(("a", "b"), ("a", "b")), tuple(records))
    proposals = [jittered_proposals(r, 30, np.random.default_rng(r.index)) for r in records]
    return WindowDataset(dataset, proposals, labeler=WindowLabeler(), sampler=WindowSampler(fg_per_batch=2,
                         bg_per_batch=4), **WARP)


def googlenet(width: float = 0.25, init_seed: int = 0):
    torch.manual_seed(init_seed)
    return build_classifier("googlenet", width=width, **NET)


class Interrupted(Exception):
    pass


class InterruptAfter:
    """A window dataset that dies on its ``n + 1``-th batch (a killed job)."""

    def __init__(self, windows: WindowDataset, n: int) -> None:
        self.windows, self.n, self.calls = windows, n, 0
        self.input_size, self.context_pad, self.flip = windows.input_size, windows.context_pad, windows.flip
        self.sampler = windows.sampler

    def sample(self, generator):
        self.calls += 1
        if self.calls > self.n:
            raise Interrupted
        return self.windows.sample(generator)


def test_prefetching_the_next_batch_trains_the_same_weights(windows, tmp_path):
    plain, prefetched = googlenet(), googlenet()
    a = train_classifier(plain, windows, iterations=5, checkpoint_dir=tmp_path / "a", **TRAIN)
    b = train_classifier(prefetched, windows, iterations=5, checkpoint_dir=tmp_path / "b", prefetch=True, **TRAIN)
    assert a["loss"] == b["loss"] and len(a["loss"]) == 5
    ref = plain.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in prefetched.state_dict().items())


@pytest.mark.parametrize("channels_last,prefetch", [(False, False), (True, False), (False, True)])
def test_resume_after_interruption_is_bit_identical(windows, tmp_path, channels_last, prefetch):
    """With prefetch the failing batch is drawn in the background thread; its error still stops the run."""
    train = {**TRAIN, "channels_last": channels_last, "prefetch": prefetch}
    whole = googlenet()
    full = train_classifier(whole, windows, iterations=6, checkpoint_dir=tmp_path / "a", **train)

    first = googlenet()
    with pytest.raises(Interrupted):  # checkpoint at 3, killed during iteration 5
        train_classifier(first, InterruptAfter(windows, 4), iterations=6, checkpoint_dir=tmp_path / "b", **train)
    assert torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["iteration"] == 3
    # A fresh process: other initial weights and other global RNG states, all overwritten by the checkpoint.
    resumed = googlenet(init_seed=123)
    torch.manual_seed(999)
    np.random.seed(999)
    part = train_classifier(resumed, windows, iterations=6, checkpoint_dir=tmp_path / "b", **train)

    ref = whole.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in resumed.state_dict().items())
    assert part["loss"] == full["loss"] and len(full["loss"]) == 6
    # Training a finished checkpoint again changes nothing.
    again = train_classifier(resumed, windows, iterations=6, checkpoint_dir=tmp_path / "b", **train)
    assert again["loss"] == full["loss"]
    assert all(torch.equal(v, ref[k]) for k, v in resumed.state_dict().items())


def test_checkpoint_from_another_config_names_the_key(windows, tmp_path):
    train_classifier(googlenet(0.25), windows, iterations=1, checkpoint_dir=tmp_path, **TRAIN)
    path = tmp_path / CHECKPOINT_NAME
    with pytest.raises(UserError) as err:
        train_classifier(googlenet(0.5), windows, iterations=1, checkpoint_dir=tmp_path, **TRAIN)
    message = str(err.value)
    assert message == f"{path}: checkpoint was trained with width=0.25, config has 0.5"
    with pytest.raises(UserError, match="trained with lr=0.01, config has 0.02"):
        train_classifier(googlenet(0.25), windows, iterations=1, checkpoint_dir=tmp_path, **{**TRAIN, "lr": 0.02})
    # Scoring needs only the model to match: training hyperparameters are not checked.
    assert load_model_weights(path, model=googlenet(0.25, init_seed=5)) == 1
    with pytest.raises(UserError, match="width=0.25, config has 0.5"):
        load_model_weights(path, model=googlenet(0.5))


def test_unreadable_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / CHECKPOINT_NAME
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model_weights(bad, model=googlenet())
    with pytest.raises(UserError, match="checkpoint not found"):
        load_model_weights(tmp_path / "missing.pt", model=googlenet())


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.standard_normal(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_model_fingerprint_reads_the_architecture():
    fp = model_fingerprint(googlenet())
    assert fp == {"arch": "googlenet", "num_classes": 3, "width": 0.25, "input_size": 48, "batch_norm": False,
                  "aux_logits": True}
