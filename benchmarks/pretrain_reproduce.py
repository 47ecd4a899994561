"""Retrain the demo's shipped pretrained network from scratch and compare it with the shipped file.

    OMP_NUM_THREADS=1 python benchmarks/pretrain_reproduce.py [overrides...]   # ~25 min per network on a 2-core CPU

Runs exactly what produced ``classifier/pretrained/<key>.pt`` (``python -m classifier.pretrain``
with the demo profile, ``OMP_NUM_THREADS=1``, one DataLoader worker) into a fresh cache and
prints top-1/top-5 error of both for every network of ``pretrain.networks``, the largest weight difference and whether the files are
bit-identical (expected on the same CPU type and thread count; elsewhere float rounding
differs, and the errors should agree within about a point).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from classifier.pretrain import SHIPPED_DIR, network_seeds, pretrain_key

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=overrides)
    seeds = network_seeds(cfg.pretrain)
    keys = [pretrain_key(cfg.pretrain, cfg.classifier.model, seed=s) for s in seeds]
    for key in keys:
        if not (SHIPPED_DIR / f"{key}.pt").is_file():
            raise SystemExit(f"no shipped weights for this config (key {key})")
    with tempfile.TemporaryDirectory() as tmp:
        # One command trains every network of pretrain.networks, as the one that shipped them.
        subprocess.run([sys.executable, "-m", "classifier.pretrain", f"cache_dir={tmp}", "pretrain.use_shipped=false",
                        f"hydra.run.dir={tmp}/run", *overrides], cwd=REPO, check=True)
        print(f"{'network':<22} {'top-1 error':>12} {'top-5 error':>12}")
        for seed, key in zip(seeds, keys):
            shipped = SHIPPED_DIR / f"{key}.pt"
            record = json.loads(shipped.with_suffix(".json").read_text())
            trained = Path(tmp) / "pretrain" / key
            metrics = json.loads((trained / "metrics.json").read_text())
            a = torch.load(shipped, weights_only=True)
            b = torch.load(trained / "model.pt", weights_only=True)
            diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
            identical = (trained / "model.pt").read_bytes() == shipped.read_bytes()
            print(f"{f'seed {seed} shipped':<22} {record['top1_error']:12.4f} {record['top5_error']:12.4f}")
            print(f"{f'seed {seed} retrained':<22} {metrics['top1_error']:12.4f} {metrics['top5_error']:12.4f}")
            print(f"  largest weight difference {diff:.3g}; bit-identical file: {identical}")


if __name__ == "__main__":
    main(sys.argv[1:])
