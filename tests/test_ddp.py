"""DDP training (`classifier.distributed`): 2 real gloo processes match 1 process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate

import classifier.train as train_mod
from classifier import distributed
from classifier.factory import build_classifier
from classifier.sampling import WindowSampler
from classifier.train import iteration_seeds, train_classifier
from classifier.train_ddp import compose_config
from classifier.windows import WindowBatch
from detect.ensemble import member_seed
from detect.errors import ConfigError
from detect.members import member_key
from detect.pretrain_stage import initialise
from detect.proposal_stage import build_sources, merge_arguments, split_proposals

REPO = Path(__file__).resolve().parents[1]
SIZE, FG, BG = 48, 4, 4  # 48 px: the smallest input with a non-empty stride-32 map; global batch of 8
ITERATIONS = 4
TRAIN = dict(iterations=ITERATIONS, lr=0.05, momentum=0.9, weight_decay=0.0005, lr_schedule="poly", step_size=1,
             gamma=0.1, power=1.0, aux_weight=0.3, checkpoint_every=2, seed=3, device="cpu", log_every=10)


class SyntheticWindows:
    """Stand-in for `WindowDataset`: a batch of random images and labels drawn from the generator.

    ``fail_at``: raise on that sample call (1-based), to leave an interrupted run's checkpoint.
    """

    input_size, context_pad, flip = SIZE, 0.0, False

    def __init__(self, fail_at: int | None = None) -> None:
        self.sampler = WindowSampler(fg_per_batch=FG, bg_per_batch=BG)
        self.fail_at, self.calls = fail_at, 0

    def sample(self, generator: torch.Generator) -> WindowBatch:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("interrupted")
        n = FG + BG
        images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
        labels = torch.cat([torch.randint(1, 3, (FG,), generator=generator), torch.zeros(BG, dtype=torch.int64)])
        where = dict(image_index=torch.zeros(n, dtype=torch.int64), boxes=torch.zeros(n, 4),
                     flipped=torch.zeros(n, dtype=torch.bool))
        return WindowBatch(images, labels, **where)


def tiny_model() -> torch.nn.Module:
    # No dropout and no batch norm: the only per-process randomness/statistics DDP cannot make global.
    torch.manual_seed(0)
    return build_classifier("googlenet", num_classes=3, width=0.125, input_size=SIZE, batch_norm=False,
                            dropout=0.0, aux_dropout=0.0)


def _join(rank: int, world_size: int, port: int) -> distributed.World:
    """Set the variables torchrun would set for ``rank`` and join the gloo group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return distributed.init_from_env("cpu")


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One torchrun-like process: fresh DDP run in ``out/fresh``, then resume the checkpoint in ``out/resume``."""
    world = _join(rank, world_size, port)
    try:
        saves: list[int] = []
        real_save = train_mod.save_training_state
        train_mod.save_training_state = lambda *a, **kw: saves.append(kw["iteration"]) or real_save(*a, **kw)
        seen: list[tuple[int, float]] = []  # (windows, their sum) of every forward pass on this rank
        results = {}
        for run in ("fresh", "resume"):
            model = tiny_model()
            hook = model.register_forward_pre_hook(lambda m, args: seen.append(
                (args[0].shape[0], float(args[0].double().sum()))))
            hist = train_classifier(model, SyntheticWindows(), checkpoint_dir=Path(out) / run, **TRAIN)
            hook.remove()
            results[run] = {"loss": hist["loss"], "state": model.state_dict()}
        torch.save({"world": world, "results": results, "saves": saves, "seen": seen}, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_two_gloo_processes_follow_the_single_process_trajectory(tmp_path):
    # Reference: one process, whole global batch, 4 iterations uninterrupted.
    single = tiny_model()
    ref = train_classifier(single, SyntheticWindows(), checkpoint_dir=tmp_path / "single", **TRAIN)
    # One process interrupted during iteration 3: its checkpoint (after 2) is what the DDP run resumes.
    with pytest.raises(KeyboardInterrupt):
        train_classifier(tiny_model(), SyntheticWindows(fail_at=3), checkpoint_dir=tmp_path / "resume", **TRAIN)

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    assert [r["world"] for r in ranks] == [distributed.World(0, 2, 0, "cpu"), distributed.World(1, 2, 1, "cpu")]
    # Each rank ran its half of every global batch, and the halves make up the batch.
    for it, (a, b) in enumerate(zip(ranks[0]["seen"][:ITERATIONS], ranks[1]["seen"][:ITERATIONS])):
        batch = SyntheticWindows().sample(torch.Generator().manual_seed(iteration_seeds(TRAIN["seed"], it)[0]))
        assert a[0] == b[0] == 4
        assert a[1] + b[1] == pytest.approx(float(batch.images.double().sum()), rel=1e-9, abs=1e-6)
        assert a[1] == pytest.approx(float(batch.images[:4].double().sum()), rel=1e-9, abs=1e-6)
    assert len(ranks[0]["seen"]) == ITERATIONS + 2  # the resumed run did iterations 2 and 3 only
    # Rank 0 alone wrote checkpoints: after 2 and 4 iterations (fresh), after 4 (resumed).
    assert ranks[0]["saves"] == [2, 4, 4] and ranks[1]["saves"] == []

    for run in ("fresh", "resume"):
        r0, r1 = ranks[0]["results"][run], ranks[1]["results"][run]
        # Recorded losses are the global batch's mean, the same on both ranks...
        assert r0["loss"] == r1["loss"]
        # ...and follow the single-process trajectory (only the summation order differs).
        np.testing.assert_allclose(r0["loss"], ref["loss"], rtol=1e-4)
        for key, value in single.state_dict().items():
            assert torch.equal(r0["state"][key], r1["state"][key]), key  # DDP kept the replicas in sync
            np.testing.assert_allclose(r0["state"][key].numpy(), value.numpy(), rtol=1e-4, atol=1e-6, err_msg=key)
    # The checkpoint rank 0 wrote holds the DDP weights.
    saved = torch.load(tmp_path / "fresh" / "checkpoint.pt", weights_only=True)
    assert saved["iteration"] == ITERATIONS
    assert all(torch.equal(saved["model"][k], v) for k, v in ranks[0]["results"]["fresh"]["state"].items())


def test_shard_batch_gives_equal_contiguous_slices():
    assert distributed.shard_batch(8, 0, 1) == slice(0, 8)
    assert [distributed.shard_batch(128, r, 4) for r in range(4)] == [slice(0, 32), slice(32, 64), slice(64, 96),
                                                                       slice(96, 128)]
    with pytest.raises(ConfigError, match="a batch of 9 does not split evenly over 2 DDP processes"):
        distributed.shard_batch(9, 0, 2)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        distributed.shard_batch(8, 2, 2)


def test_global_batch_must_divide_by_the_process_count():
    # Checked before any collective call, so no process group is needed.
    three = distributed.World(rank=0, world_size=3)
    with pytest.raises(ConfigError, match=r"fg_per_batch \+ bg_per_batch = 8 must be a multiple of the 3 DDP"):
        train_classifier(tiny_model(), SyntheticWindows(), checkpoint_dir=None, world=three,
                         **{**TRAIN, "iterations": 1})


def test_without_torchrun_environment_everything_is_one_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    world = distributed.init_from_env("cpu")
    assert world == distributed.World(0, 1, 0, "cpu") and world.is_main and not world.distributed
    assert distributed.current() == distributed.SINGLE and distributed.is_main()
    assert distributed.rank_seed(1234, 0) == 1234 and distributed.rank_seed(1234, 1) != 1234
    values = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(values, world) is values
    distributed.barrier(world)  # no-op
    distributed.cleanup()  # no-op


@pytest.mark.slow
def test_torchrun_entry_point_trains_the_member_the_pipeline_reuses(tmp_path):
    overrides = ["profile=tiny", f"cache_dir={tmp_path / 'cache'}", "ensemble.size=1", "data.splits.train=8",
                 "data.splits.val=2"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "classifier.train_ddp", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("member ")]
    assert len(lines) == 1  # rank 0 alone reports
    model_path = Path(lines[0].split(": ", 1)[1])
    checkpoint = torch.load(model_path.parent / "checkpoint.pt", weights_only=True)
    assert model_path.exists() and checkpoint["iteration"] == 4 and len(checkpoint["history"]["loss"]) == 4

    # The pipeline's own training stage, with the same overrides, finds that member in its cache.
    cfg = compose_config(overrides)
    source = instantiate(cfg.data)
    train = source.load(source.train_split)
    init = initialise(cfg, device="cpu")  # the pretrained network torchrun's ranks started from (cached)
    props = split_proposals(train, build_sources(cfg.proposals, train, cache_dir=str(cfg.cache_dir), seed=0,
                                                 init_weights=init.weights),
                            cache_dir=str(cfg.cache_dir), workers=1, chunk_size=cfg.proposals.chunk_size,
                            shard=None, **merge_arguments(cfg.proposals.merge))
    key = member_key(init.classifier, train=train, proposals_key=props.key, seed=member_seed(0, 0))
    assert model_path == Path(cfg.cache_dir) / "members" / key / "model.pt"


# --------------------------------------------------------------------------- MultiBox under DDP

def _multibox_run(out: Path, world: distributed.World | None) -> tuple[list[float], dict]:
    from proposals.multibox import MultiBoxNet, grid_priors, kmeans_shapes
    from proposals.multibox_train import train_multibox

    rng = np.random.default_rng(0)
    images = np.full((8, 64, 64, 3), 40, np.uint8)
    boxes = []
    for i in range(8):  # one object per image: every image matches exactly one prior (no extra matches)
        x0, y0 = rng.integers(4, 28, 2)
        images[i, y0:y0 + 24, x0:x0 + 24] = 220
        boxes.append(np.array([[x0, y0, x0 + 24, y0 + 24]], np.float32) / 64)
    torch.manual_seed(0)
    model = MultiBoxNet(num_shapes=2, width=0.125, input_size=64, batch_norm=False, feature_layer="inception4e")
    priors = grid_priors(kmeans_shapes(np.concatenate(boxes), num_shapes=2, seed=0), model.grid)
    losses = train_multibox(model, priors, images, boxes, iterations=4, batch_size=4, lr=0.05, momentum=0.9,
                            weight_decay=0.0, alpha=0.3, extra_match_iou=None, offset_units="image",
                            confidence_loss="logistic", pos_weight=1.0, focal_alpha=0.25, focal_gamma=2.0,
                            pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25), seed=1,
                            checkpoint_path=out / "multibox.pt", checkpoint_every=2, fingerprint={}, world=world)
    return losses, model.state_dict()


def _multibox_worker(rank: int, world_size: int, port: int, out: str) -> None:
    world = _join(rank, world_size, port)
    try:
        losses, state = _multibox_run(Path(out), world)
        torch.save({"losses": losses, "state": state}, Path(out) / f"mb_rank{rank}.pt")
    finally:
        distributed.cleanup()


def test_multibox_two_gloo_processes_follow_the_single_process_trajectory(tmp_path):
    (tmp_path / "single").mkdir()
    ref_losses, ref_state = _multibox_run(tmp_path / "single", distributed.SINGLE)
    mp.spawn(_multibox_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"mb_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the global batch's loss, on every rank
    # With one match per image, the mean of the two halves' losses is the whole batch's loss.
    np.testing.assert_allclose(ranks[0]["losses"], ref_losses, rtol=1e-4)
    for key, value in ref_state.items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
        np.testing.assert_allclose(ranks[0]["state"][key].numpy(), value.numpy(), rtol=1e-4, atol=1e-6, err_msg=key)
    saved = torch.load(tmp_path / "multibox.pt", weights_only=True)  # written by rank 0 alone
    assert saved["iteration"] == 4
