"""Coverage of the classified proposal set for each way of merging the sources, at a per-image cap.

    python benchmarks/merge_coverage.py [overrides...]      # e.g. proposals.merge.max_per_image=250

Loads (or computes) the cached proposals of ``data.split``: R-CNN's Selective Search
(``proposals=ss`` at scale 1, its own floor), the configured SS and the MultiBox top_k.  Prints
count and coverage for each alone and for the merged set in ``priority`` and ``interleave``
order, each uncapped and at the cap (and, when ``proposals.merge.snap_iou`` is set, the same
with MultiBox boxes snapped onto SS boxes).  The paper's claim: merged coverage >= SS(1)'s at
~60% of its count (92% -> 93%).  Last, coverage by object size (square root of the box area,
pixels) of SS(1), SS(scale), MultiBox and the uncapped interleaved merge (snapped as
configured), and how many objects SS(1) covers that the merge misses: where the enlarged
superpixels lose objects.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from detect.pretrain_stage import multibox_init_weights
from detect.proposal_stage import build_sources
from eval.ilsvrc_ap import devkit_iou, size_thresholds
from eval.proposal_metrics import proposal_metrics
from proposals.extract import extract_proposals
from proposals.merge import merge_split


def main(overrides: list[str]) -> None:
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
        # The reference is R-CNN's Selective Search (`proposals=ss` at scale 1, its own floor),
        # not the configured SS at scale 1: ss+multibox may lower the superpixel floor.
        rcnn = compose(config_name="config", overrides=[o for o in overrides if not o.startswith("proposals")]
                       + ["proposals=ss", "proposals.ss.scale=1"])
    cache_dir = str(cfg.cache_dir)
    source = instantiate(cfg.data)
    train, val = source.load(source.train_split), source.load(source.split)
    sources = build_sources(cfg.proposals, train, cache_dir=cache_dir, seed=int(cfg.seed),
                            init_weights=multibox_init_weights(cfg, device=str(cfg.device)))
    ss1 = instantiate(rcnn.proposals.ss)
    boxes = {}
    for name, src in [("ss1", ss1), *sources.items()]:
        boxes[name] = extract_proposals(val, src, source_id=src.identity(), cache_dir=cache_dir,
                                        workers=cfg.proposals.workers, chunk_size=cfg.proposals.chunk_size,
                                        shard=None).boxes
    cap = cfg.proposals.merge.max_per_image
    iou = cfg.proposals.merge.iou
    snap_iou = cfg.proposals.merge.snap_iou
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
        for snap in dict.fromkeys([None, snap_iou]):
            for order in ("priority", "interleave"):
                for limit in (None, cap):
                    merged = merge_split([boxes["multibox"], boxes["ss"]], iou_threshold=iou, max_boxes=limit,
                                         order=order, snap_iou=snap)
                    row(f"merged, {order}, cap {limit}" + (f", snap {snap}" if snap is not None else ""), merged)
    ss1_count = rows[0][1]
    print(f"{'set':<40} {'per_image':>9} {'x SS(1)':>8} {'coverage':>9} {'recall@.5':>9} {'recall@.7':>9}")
    for label, n, cov, r5, r7 in rows:
        print(f"{label:<40} {n:9.1f} {n / ss1_count:8.2f} {cov:9.4f} {r5:9.4f} {r7:9.4f}")
    if "multibox" not in boxes:
        return
    merged = merge_split([boxes["multibox"], boxes["ss"]], iou_threshold=iou, max_boxes=None, order="interleave",
                         snap_iou=snap_iou)
    sets = {"ss1": boxes["ss1"], f"ss{cfg.proposals.ss.scale}": boxes["ss"], "multibox": boxes["multibox"],
            "merged": merged}
    side, hit = object_coverage(val.records, sets)
    print("\ncoverage by object size (sqrt area, px), uncapped; lost = covered by ss1, not by merged")
    print(f"{'size':<10} {'objects':>7} " + " ".join(f"{name:>9}" for name in sets) + f" {'lost':>5}")
    for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        m = (side >= low) & (side < high)
        label = f"[{low}, {high})" if np.isfinite(high) else f">= {low}"
        print(f"{label:<10} {int(m.sum()):7d} " + " ".join(f"{hit[name][m].mean():9.3f}" for name in sets)
              + f" {int((hit['ss1'] & ~hit['merged'])[m].sum()):5d}")


SIZE_BINS = (0, 16, 24, 32, 48, 64, np.inf)


def object_coverage(records, sets: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per non-difficult ground-truth box: its size ``sqrt(w h)`` and, per proposal set, whether a
    proposal reaches its ILSVRC threshold (`eval.proposal_metrics`'s coverage, object by object)."""
    sides, hits = [], {name: [] for name in sets}
    for i, rec in enumerate(records):
        gt = rec.boxes[~rec.difficult].astype(np.float64)
        if not len(gt):
            continue
        sides.append(np.sqrt((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])))
        for name, per_image in sets.items():
            props = np.asarray(per_image[i], np.float64).reshape(-1, 4)
            best = devkit_iou(props, gt).max(0) if len(props) else np.zeros(len(gt))
            hits[name].append(best >= size_thresholds(gt))
    return np.concatenate(sides), {name: np.concatenate(v) for name, v in hits.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
