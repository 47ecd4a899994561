"""The up-front estimate of long trainings (`detect.work_estimate`), wired into the real training loops.

The training loops time their own first iterations, say how long the rest takes on this device and,
above `ASK_ABOVE_S` on a terminal, ask before going on (the bad-input rows ``real:paper-multibox-*``
of `test_bad_input_boundary` check the messages on a fake clock).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from classifier.train import sgd_loop
from detect import work_estimate
from detect.errors import UserError
from detect.work_estimate import LongRunCheck, format_duration


def _loop(iterations: int) -> list[int]:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 100)
    seen: list[int] = []

    def step(it: int):
        seen.append(it)
        return {"loss": model(torch.ones(1, 2)).pow(2).sum()}, 1

    sgd_loop(step, optimizer=optimizer, scheduler=scheduler, history={"loss": [], "lr": []}, start=0,
             iterations=iterations, save=lambda i: None, log_every=1000, checkpoint_every=1000, deterministic=False,
             name="classifier", unit="windows")
    return seen


@pytest.fixture
def long_and_interactive(monkeypatch):
    """Every training counts as long, and a person is at the terminal answering ``answers``."""
    answers: list[str] = []
    monkeypatch.setattr(work_estimate, "ASK_ABOVE_S", 0.0)
    monkeypatch.setattr(work_estimate, "interactive", lambda: True)
    monkeypatch.setattr(work_estimate, "_input", lambda prompt: answers.pop(0))
    monkeypatch.setattr(work_estimate, "_CONFIRMED", set())
    return answers


def test_a_no_stops_the_training_loop_after_the_timed_iterations(long_and_interactive):
    long_and_interactive.append("n")
    with pytest.raises(UserError, match=r"^classifier: stopped at your request after iteration 4 of 50 "
                                        r"\(the rest would take about \d+ s on cpu\); a rerun resumes"):
        _loop(50)


def test_a_yes_goes_on_and_is_not_asked_again(long_and_interactive, caplog):
    long_and_interactive.append("y")
    with caplog.at_level(logging.WARNING):
        assert _loop(20) == list(range(20))
        assert _loop(20) == list(range(20))  # a second member: no second question (the answer list is empty)
    assert "classifier: 16 iterations to go at" in caplog.text and "lower classifier.train.iterations" in caplog.text


def test_without_a_terminal_it_only_warns(monkeypatch, caplog):
    monkeypatch.setattr(work_estimate, "ASK_ABOVE_S", 0.0)
    monkeypatch.setattr(work_estimate, "interactive", lambda: False)  # a test, a sweep job, a cluster job
    monkeypatch.setattr(work_estimate, "_input", lambda prompt: pytest.fail("asked without a terminal"))
    with caplog.at_level(logging.WARNING):
        assert _loop(10) == list(range(10))
    assert "classifier: 6 iterations to go" in caplog.text


def test_short_or_resumed_runs_are_not_timed():
    check = LongRunCheck("classifier", start=0, iterations=4, ask=lambda p: pytest.fail("asked"))
    for done in range(1, 5):
        check.after_iteration(done)
    assert check.estimate_s is None  # 4 iterations: nothing worth measuring
    times = iter([10.0, 16.0])
    check = LongRunCheck("classifier", start=90, iterations=100, clock=lambda: next(times))
    for done in range(91, 101):
        check.after_iteration(done)
    assert check.estimate_s == pytest.approx(2.0 * 6)  # timed 92..94 after resuming at 90: 2 s each, 6 left


def test_multibox_training_is_estimated_too(long_and_interactive, tmp_path):
    from proposals.multibox import MultiBoxNet, grid_priors, kmeans_shapes
    from proposals.multibox_train import train_multibox

    images = np.full((4, 64, 64, 3), 40, np.uint8)
    boxes = [np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)] * 4
    model = MultiBoxNet(num_shapes=1, width=0.125, input_size=64, batch_norm=True, feature_layer="inception3b")
    priors = grid_priors(kmeans_shapes(np.concatenate(boxes), num_shapes=1, seed=0), model.grid)
    long_and_interactive.append("no")
    with pytest.raises(UserError, match=r"^multibox: stopped at your request after iteration 4 of 8 "):
        train_multibox(model, priors, images, boxes, iterations=8, batch_size=2, lr=0.01, momentum=0.9,
                       weight_decay=0.0, alpha=0.3, extra_match_iou=None, offset_units="image",
                            confidence_loss="logistic", pos_weight=1.0, focal_alpha=0.25, focal_gamma=2.0,
                       pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25), seed=0,
                       checkpoint_path=tmp_path / "mb.pt", checkpoint_every=100, fingerprint={})


@pytest.mark.parametrize("seconds, text", [(42, "42 s"), (720, "12 min"), (3.5 * 3600, "3.5 h"),
                                           (2.1 * 86400, "2.1 days")])
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text
