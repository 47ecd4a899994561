"""Which proposal source do a run's detections come from, and how good is each part?

    python benchmarks/proposal_origin.py outputs/2026-12-01/03-17-29     # a finished detect.run dir

Re-composes the run's config from its ``.hydra/overrides.yaml``, loads the proposals,
members and region scores from the cache (computing whatever is missing, as
``detect.run`` would) and, for every member, evaluates the ILSVRC mAP of detections
made from the boxes of each source alone (MultiBox-origin vs SS-origin boxes of the
merged set, scores unchanged), plus what the top-scoring detections of the whole set
are made of: share from each source and share that hit a ground-truth box of their
class at IoU >= 0.5 and >= 0.7.  This is the evidence behind README's explanation of
the single-model ``ss+multibox`` vs ``ss`` result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.ops import box_iou

from detect.ensemble import member_seed, shared_seed
from detect.members import score_member, train_member
from detect.pipeline import detections
from detect.pretrain_stage import initialise
from detect.proposal_stage import build_sources, merge_arguments, split_proposals
from eval.map import evaluate_detections
from proposals.merge import merge_proposals

REPO = Path(__file__).resolve().parents[1]


def _map(val, boxes, scores, indices, settings) -> float:
    sub = detections(boxes, scores, indices, settings)
    return evaluate_detections(val, sub, source="origin", out_dir=None, coco=False, coco_max_dets=0,
                               plots=False)["mAP"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--top", type=int, default=2000, help="top-scoring detections to inspect")
    args = parser.parse_args()
    overrides_file = args.run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise SystemExit(f"error: {overrides_file}: not found; pass the directory of a finished detect.run")
    overrides = OmegaConf.load(overrides_file)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    cache_dir = str(cfg.cache_dir)
    settings = instantiate(cfg.ensemble)
    source = instantiate(cfg.data)
    train, val = source.load(source.train_split), source.load(source.split)
    init = initialise(cfg, device=str(cfg.device))  # the pretrained networks, as detect.run starts from them
    sources = build_sources(cfg.proposals, train, cache_dir=cache_dir, seed=int(cfg.seed), init_weights=init.weights)
    if len(sources) < 2:
        raise SystemExit("this run has one proposal source; nothing to split")
    common = dict(cache_dir=cache_dir, workers=cfg.proposals.workers, chunk_size=cfg.proposals.chunk_size, shard=None,
                  **merge_arguments(cfg.proposals.merge))
    train_props, val_props = split_proposals(train, sources, **common), split_proposals(val, sources, **common)
    names = [n for n in val_props.per_source if n != "merged"]
    origin = []
    for i in range(len(val)):
        merged, o = merge_proposals([val_props.per_source[n][i] for n in names], iou_threshold=common["merge_iou"],
                                    max_boxes=common["max_per_image"], order=common["merge_order"],
                                    snap_iou=common["merge_snap_iou"])
        assert np.array_equal(merged, val_props.boxes[i])
        origin.append(o)
    indices = [r.index for r in val.records]
    print(f"{args.run_dir}: {len(val)} val images, sources {names} (merge order), "
          f"{np.mean([len(b) for b in val_props.boxes]):.1f} regions/image, "
          + ", ".join(f"{n} {np.mean([np.sum(o == k) for o in origin]):.1f}" for k, n in enumerate(names)))
    for k in settings.member_ids:
        seed = member_seed(int(cfg.seed), k)
        member_cfg = init.for_member(k)  # pretrained network k mod pretrain.networks
        model, key = train_member(member_cfg, train=train, proposals=train_props.boxes,
                                  shared_seed=shared_seed(int(cfg.seed)),
                                  proposals_key=train_props.key, seed=seed, cache_dir=cache_dir, device="cpu")
        scores, _ = score_member(model, member_cfg, member_key=key, dataset=val, proposals=val_props.boxes,
                                 proposals_key=val_props.key, cache_dir=cache_dir, device="cpu")
        line = [f"member {k}: mAP all {100 * _map(val, val_props.boxes, scores, indices, settings):.2f}%"]
        for j, n in enumerate(names):
            keep = [o == j for o in origin]
            only = _map(val, [b[m] for b, m in zip(val_props.boxes, keep)], [s[m] for s, m in zip(scores, keep)],
                        indices, settings)
            line.append(f"{n} boxes only {100 * only:.2f}%")
        print("  " + "; ".join(line))
        # The top detections of the whole set (best foreground class per region, before NMS).
        rows = []
        for i, (b, s, o) in enumerate(zip(val_props.boxes, scores, origin)):
            cls = s[:, 1:].argmax(1) + 1
            rec = val.records[i]
            iou = np.zeros(len(b))
            if len(rec.boxes) and len(b):
                ious = box_iou(torch.as_tensor(b, dtype=torch.float64), torch.as_tensor(rec.boxes, dtype=torch.float64))
                same = torch.as_tensor(cls[:, None] == rec.labels[None, :])
                iou = torch.where(same, ious, torch.zeros_like(ious)).max(1).values.numpy()
            rows.append(np.stack([s[np.arange(len(s)), cls], o, iou], 1))
        table = np.concatenate(rows)
        top = table[np.argsort(-table[:, 0], kind="stable")[: args.top]]
        for j, n in enumerate(names):
            part = top[top[:, 1] == j]
            hit50 = float(np.mean(part[:, 2] >= 0.5)) if len(part) else float("nan")
            hit70 = float(np.mean(part[:, 2] >= 0.7)) if len(part) else float("nan")
            print(f"    top {args.top} regions: {n} {len(part) / len(top):.0%} of them; "
                  f"IoU>=0.5 with a box of their class {hit50:.0%}, >=0.7 {hit70:.0%}")


if __name__ == "__main__":
    main()
