"""Classifier training throughput: one process vs 2-process DDP on the CPU (gloo), in one run.

    python benchmarks/ddp_speed.py                   # demo network, 30 timed iterations, best of 2 rounds
    python benchmarks/ddp_speed.py --iterations 10 --rounds 1    # a smoke run

The demo profile's member training (``profile=demo``: GoogLeNet width 0.125, 64 px
windows, batch norm, channels-last, 32 + 96 = 128 windows per batch) on a generated
synthetic training split, with stand-in proposals (`classifier.sampling.jittered_proposals`)
so no Selective Search runs.  Three set-ups, each in a fresh process:

* 1 process, 1 thread; 1 process, ``--processes`` threads (same cores as DDP);
* ``--processes`` DDP processes of 1 thread each (`classifier.distributed`, gloo),
  each training on its slice of the same global batch of 128.

Each run first trains 3 warm-up iterations (and decodes every image into the window
cache), then times ``--iterations`` iterations of `classifier.train.train_classifier`;
windows/s counts global-batch windows; windows/CPU-s divides them by the CPU time of
all the run's processes (every thread), a measure of the work DDP adds that load from
other jobs on a shared machine distorts far less than wall time: with N idle cores,
DDP's windows/s would be about N x its windows/CPU-s.  Also printed: the time one process spends
drawing and warping one global batch (`WindowDataset.sample`), which every DDP process
pays in full although it trains on 1/N of it.  Rounds interleave the set-ups so load
from other jobs hits all alike; the best of each is kept.
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate

from classifier import distributed
from classifier.sampling import jittered_proposals
from classifier.train import train_classifier
from classifier.train_ddp import compose_config
from classifier.windows import WindowDataset
from detect.members import build_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, threads: int, port: int, overrides: list[str], iterations: int,
            out: str) -> None:
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    distributed.init_from_env("cpu")  # joins the gloo group when WORLD_SIZE is set
    try:
        cfg = compose_config(overrides)
        source = instantiate(cfg.data)
        train = source.load(source.train_split)
        rng = np.random.default_rng(0)
        proposals = [jittered_proposals(rec, cfg.proposals.merge.max_per_image, rng) for rec in train.records]
        c = cfg.classifier
        windows = WindowDataset(train, proposals, labeler=instantiate(c.labeler), sampler=instantiate(c.sampler),
                                input_size=c.model.input_size, **c.windows)
        for i in range(len(train)):  # decoded once, before any timing
            windows.normalised_image(i)
        t0 = time.perf_counter()
        for s in range(5):
            windows.sample(torch.Generator().manual_seed(s))
        sample_s = (time.perf_counter() - t0) / 5
        torch.manual_seed(0)
        model = build_model(c, len(train.classes))
        args = {**c.train, "log_every": 10**6, "checkpoint_every": 10**6}
        train_classifier(copy.deepcopy(model), windows, checkpoint_dir=None, seed=1, device="cpu",
                         **{**args, "iterations": 3})  # warm-up: allocator, thread pool, gloo buffers
        cpu0 = time.process_time()  # all of this process's threads (OpenMP, gloo)
        hist = train_classifier(model, windows, checkpoint_dir=None, seed=0, device="cpu",
                                **{**args, "iterations": iterations})
        cpu_s = time.process_time() - cpu0
        torch.save({"windows_per_s": hist["windows_per_s"][0], "sample_s": sample_s, "cpu_s": cpu_s,
                    "windows": iterations * windows.sampler.batch_size, "batch": windows.sampler.batch_size},
                   f"{out}.rank{rank}")
    finally:
        distributed.cleanup()


def run(world_size: int, threads: int, overrides: list[str], iterations: int, out: Path) -> dict:
    """Rank 0's results, with ``windows_per_cpu_s``: global windows per CPU-second of all processes."""
    mp.spawn(_worker, args=(world_size, threads, _free_port(), overrides, iterations, str(out)), nprocs=world_size)
    ranks = [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(world_size)]
    return {**ranks[0], "windows_per_cpu_s": ranks[0]["windows"] / sum(r["cpu_s"] for r in ranks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=60, help="generated synthetic training images")
    args = parser.parse_args()
    n = args.processes
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["profile=demo", f"cache_dir={tmp}", f"data.splits.train={args.train_images}",
                     "data.splits.val=4"]
        instantiate(compose_config(overrides).data).ensure(progress=False)  # generate once, before the workers
        setups = {"1 process x 1 thread": (1, 1), f"1 process x {n} threads": (1, n),
                  f"{n} DDP processes x 1 thread": (n, 1)}
        best: dict[str, dict] = {}
        for r in range(args.rounds):
            for name, (world_size, threads) in setups.items():
                res = run(world_size, threads, overrides, args.iterations, Path(tmp) / f"{r}_{world_size}_{threads}")
                # best of the rounds, per measure
                best[name] = {k: (min if k == "sample_s" else max)(v, best.get(name, res)[k]) for k, v in res.items()}
        batch = next(iter(best.values()))["batch"]
        print(f"demo classifier (GoogLeNet width 0.125, 64 px, batch norm, channels-last), global batch {batch}, "
              f"{args.iterations} timed iterations, best of {args.rounds} rounds, {os.cpu_count()} CPUs")
        for name, res in best.items():
            print(f"  {name:28s} {res['windows_per_s']:7.1f} windows/s  {res['windows_per_cpu_s']:6.1f} windows/CPU-s  "
                  f"(drawing + warping one global batch: {1000 * res['sample_s']:.0f} ms)")
        ddp = best[f"{n} DDP processes x 1 thread"]
        for other in ("1 process x 1 thread", f"1 process x {n} threads"):
            print(f"DDP / {other}: {ddp['windows_per_s'] / best[other]['windows_per_s']:.2f}x windows/s, "
                  f"{ddp['windows_per_cpu_s'] / best[other]['windows_per_cpu_s']:.2f}x windows/CPU-s")
        if hasattr(os, "getloadavg"):
            print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
