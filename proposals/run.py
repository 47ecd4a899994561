"""``python -m proposals.run``: extract a split's proposals (cached) and measure them.

    python -m proposals.run                                  # SS (2x superpixels) + MultiBox-200, val split
    python -m proposals.run proposals=ss proposals.ss.scale=1   # R-CNN's Selective Search
    python -m proposals.run -m proposals.shard=0/4,1/4,2/4,3/4  # shards (e.g. on a cluster), then once unsharded

Writes ``metrics.json`` (``proposals.<source>.{per_image, coverage, recall_50,
recall_70, average_best_overlap, curve}`` and ``timing_s``) and
``recall_vs_proposals.png`` to the run directory.  With MultiBox, also reports
``random_priors``: ``top_k`` priors drawn at random per image, the baseline a
learned MultiBox must beat.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from detect import atomic
from detect.cli import run_cli, run_user_errors
from detect.data.record import DetectionDataset
from detect.pretrain_stage import multibox_init_weights
from detect.proposal_stage import build_sources, merge_arguments, proposal_report, split_proposals
from eval.plots import plot_recall_curves
from eval.proposal_metrics import proposal_metrics

log = logging.getLogger(__name__)


def random_prior_boxes(dataset: DetectionDataset, priors: np.ndarray, *, count: int, seed: int) -> list[np.ndarray]:
    """Per image, ``count`` priors (normalised ``(K, 4)`` xyxy) drawn without replacement, in pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for rec in dataset.records:
        pick = rng.choice(len(priors), size=min(count, len(priors)), replace=False)
        out.append((priors[pick] * np.array([rec.width, rec.height, rec.width, rec.height])).astype(np.float32))
    return out


def measure_proposals(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """Extract and score proposals of ``cfg.data.split``; None when only a shard was computed."""
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    source = instantiate(cfg.data)
    split = source.load(source.split)
    timing["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    needs_train = "multibox" in cfg.proposals.sources and cfg.proposals.multibox.top_k > 0
    train = source.load(source.train_split) if needs_train else split
    sources = build_sources(cfg.proposals, train, cache_dir=str(cfg.cache_dir), seed=int(cfg.seed),
                            init_weights=multibox_init_weights(cfg, device=str(cfg.device)))
    timing["build_sources"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    props = split_proposals(split, sources, cache_dir=str(cfg.cache_dir), workers=cfg.proposals.workers,
                            chunk_size=cfg.proposals.chunk_size, shard=cfg.proposals.shard,
                            **merge_arguments(cfg.proposals.merge))
    timing["extract"] = time.perf_counter() - t0
    if props is None:
        log.info("shard %s done; run once without proposals.shard to load the union", cfg.proposals.shard)
        return None
    t0 = time.perf_counter()
    report = proposal_report(split, props)
    if "multibox" in sources:
        mb = sources["multibox"]
        baseline = random_prior_boxes(split, mb.priors, count=mb.top_k, seed=int(cfg.seed))
        report["random_priors"] = proposal_metrics(split.records, baseline).summary()
    timing["evaluate"] = time.perf_counter() - t0
    plot_recall_curves(out_dir / "recall_vs_proposals.png", {k: v["curve"] for k, v in report.items()})
    return {"proposals": report, "timing_s": timing, "split": split.split, "num_images": len(split)}


def format_report(metrics: dict[str, Any]) -> str:
    lines = [f"{'source':>14} {'per_image':>10} {'coverage':>9} {'recall@.5':>10} {'recall@.7':>10} {'ABO':>6}"]
    for name, p in metrics["proposals"].items():
        lines.append(f"{name:>14} {p['per_image']:10.1f} {p['coverage']:9.4f} {p['recall_50']:10.4f} "
                     f"{p['recall_70']:10.4f} {p['average_best_overlap']:6.3f}")
    return "\n".join(lines)


@run_user_errors
def _main(cfg: DictConfig) -> float | None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = measure_proposals(cfg, out_dir)
    if metrics is None:
        return None
    atomic.write_json(out_dir / "metrics.json", metrics)
    print(format_report(metrics))
    print(f"metrics: {out_dir / 'metrics.json'}", flush=True)
    merged = metrics["proposals"].get("merged") or next(iter(metrics["proposals"].values()))
    return merged["coverage"]


@hydra.main(version_base="1.3", config_path="../conf", config_name="proposals_run")
def main(cfg: DictConfig) -> float | None:
    return _main(cfg)


if __name__ == "__main__":
    run_cli(main)
