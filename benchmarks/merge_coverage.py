"""Coverage of the classified proposal set for each way of merging the sources, at a per-image cap.

    python benchmarks/merge_coverage.py [overrides...]      # e.g. proposals.merge.max_per_image=250

Loads (or computes) the cached Selective Search (scale 1 and the configured scale) and
MultiBox proposals of ``data.split`` and prints count and coverage for: SS(1) alone,
SS(scale) alone, the MultiBox top_k alone, and the merged set in ``priority`` and
``interleave`` order, each uncapped and at the cap.  The paper's claim: merged
coverage >= SS(1)'s at ~60% of its count (92% -> 93%).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from detect.pretrain_stage import multibox_init_weights
from detect.proposal_stage import build_sources
from eval.proposal_metrics import proposal_metrics
from proposals.extract import extract_proposals
from proposals.merge import merge_split


def main(overrides: list[str]) -> None:
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    cache_dir = str(cfg.cache_dir)
    source = instantiate(cfg.data)
    train, val = source.load(source.train_split), source.load(source.split)
    sources = build_sources(cfg.proposals, train, cache_dir=cache_dir, seed=int(cfg.seed),
                            init_weights=multibox_init_weights(cfg, device=str(cfg.device)))
    ss1 = instantiate(OmegaConf.merge(cfg.proposals.ss, {"scale": 1}))
    boxes = {}
    for name, src in [("ss1", ss1), *sources.items()]:
        boxes[name] = extract_proposals(val, src, source_id=src.identity(), cache_dir=cache_dir,
                                        workers=cfg.proposals.workers, chunk_size=cfg.proposals.chunk_size,
                                        shard=None).boxes
    cap = cfg.proposals.merge.max_per_image
    iou = cfg.proposals.merge.iou
    rows = []

    def row(label, per_image_boxes):
        m = proposal_metrics(val.records, per_image_boxes)
        rows.append((label, m.per_image, m.coverage, m.recall_50, m.recall_70))

    row("ss scale 1", boxes["ss1"])
    row(f"ss scale 1, first {cap}", [b[:cap] for b in boxes["ss1"]])
    row(f"ss scale {cfg.proposals.ss.scale}", boxes["ss"])
    row(f"ss scale {cfg.proposals.ss.scale}, first {cap}", [b[:cap] for b in boxes["ss"]])
    if "multibox" in boxes:
        row(f"multibox top {cfg.proposals.multibox.top_k}", boxes["multibox"])
        for order in ("priority", "interleave"):
            for limit in (None, cap):
                merged = merge_split([boxes["multibox"], boxes["ss"]], iou_threshold=iou, max_boxes=limit, order=order)
                row(f"merged, {order}, cap {limit}", merged)
    ss1_count = rows[0][1]
    print(f"{'set':<34} {'per_image':>9} {'x SS(1)':>8} {'coverage':>9} {'recall@.5':>9} {'recall@.7':>9}")
    for label, n, cov, r5, r7 in rows:
        print(f"{label:<34} {n:9.1f} {n / ss1_count:8.2f} {cov:9.4f} {r5:9.4f} {r7:9.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
