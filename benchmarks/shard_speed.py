"""Sharded proposal extraction as separate jobs: 2 submitit_local jobs vs 1, in one run.

    python benchmarks/shard_speed.py                  # 400 val images (the demo split), best of 2 rounds
    python benchmarks/shard_speed.py --images 100 --rounds 1   # a smoke run

Both set-ups run the real command a cluster user runs, through the same launcher
(`conf/hydra/launcher/local_jobs.yaml`: hydra-submitit-launcher's ``submitit_local``,
each job a separate process with one CPU's worth of threads)::

    python -m proposals.run -m hydra/launcher=local_jobs proposals=ss proposals.shard=0/1
    python -m proposals.run -m hydra/launcher=local_jobs proposals=ss proposals.shard=0/2,1/2

each into a fresh cache (the synthetic data is generated once, before timing, and
shared).  Wall time covers the whole multirun: job start-up (a Python process that
imports torch and OpenCV), Selective Search (demo settings: scale 2, fast mode) and
the cache writes.  Afterwards an unsharded run loads the shards' union and the
benchmark checks that it computed nothing (every chunk was cached).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def proposals_run(*args: str, multirun: bool) -> float:
    """Wall seconds of one ``python -m proposals.run`` command (raises if it fails)."""
    flags = ["-m"] if multirun else []
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "proposals.run", *flags, *args], cwd=REPO, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"proposals.run {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="val images to extract (data.splits.val)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"
        common = ["proposals=ss", f"data.splits.val={args.images}", f"data.root={data_root}",
                  "proposals.workers=1", "hydra/launcher=local_jobs"]
        # Generate the dataset once (a 1-image shard run also writes it) so no job times it.
        proposals_run(*common, f"cache_dir={tmp}/warm", "proposals.shard=0/1000", f"hydra.sweep.dir={tmp}/warm_sweep",
                      multirun=True)
        best: dict[int, float] = {}
        for r in range(args.rounds):
            for jobs in (1, 2):
                shards = ",".join(f"{i}/{jobs}" for i in range(jobs))
                cache = Path(tmp) / f"cache_{r}_{jobs}"
                seconds = proposals_run(*common, f"cache_dir={cache}", f"proposals.shard={shards}",
                                        f"hydra.sweep.dir={tmp}/sweep_{r}_{jobs}", multirun=True)
                best[jobs] = min(seconds, best.get(jobs, float("inf")))
                print(f"round {r}: {jobs} job(s): {seconds:.1f} s", flush=True)
                if jobs == 2:
                    chunks = sorted(p.name for p in (cache / "proposals").rglob("*.npz"))
                    union = proposals_run(*common[:-1], f"cache_dir={cache}", f"hydra.run.dir={tmp}/union_{r}",
                                          multirun=False)
                    after = sorted(p.name for p in (cache / "proposals").rglob("*.npz"))
                    assert after == chunks, "the unsharded run recomputed chunks the shards had written"
                    print(f"  unsharded run over the 2 shards' cache: {union:.1f} s, nothing recomputed", flush=True)
        load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
        print(f"\n{args.images} val images, Selective Search (demo settings), submitit_local jobs, "
              f"best of {args.rounds} rounds, {os.cpu_count()} CPUs{load}")
        print(f"  1 job:  {best[1]:.1f} s")
        print(f"  2 jobs: {best[2]:.1f} s")
        print(f"  speed-up 2 jobs / 1 job: {best[1] / best[2]:.2f}x")


if __name__ == "__main__":
    main()
