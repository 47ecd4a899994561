"""Where MultiBox loses recall: the prior grid, the regression, or the ranking.

    python benchmarks/multibox_recall.py [overrides...]     # e.g. proposals.multibox.centres_per_cell=2

Loads (or trains) the configured MultiBox network like ``detect.run`` and prints, for the
val and train splits, count / coverage / recall@0.5 / recall@0.7 / average best overlap of:
every raw prior, every decoded box, the ``top_k`` after NMS at ``nms_iou`` (the proposals)
and after NMS 0.7.  Raw priors bound what matching can reach; decoded boxes bound what
ranking can reach; the gap from there to the top ``top_k`` is the confidence ranking.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from detect.data.image_io import load_rgb
from detect.pretrain_stage import multibox_init_weights
from detect.proposal_stage import build_sources
from eval.proposal_metrics import proposal_metrics


def box_sets(proposer, dataset) -> dict[str, list[np.ndarray]]:
    """Per image: raw priors, decoded boxes, the proposals and the top_k after NMS 0.7 (float (P, 4) xyxy pixels)."""
    top = f"top {proposer.top_k}, NMS {proposer.nms_iou}"
    sets: dict[str, list[np.ndarray]] = {"raw priors": [], "decoded boxes": [], top: [], f"top {proposer.top_k}, NMS 0.7": []}
    priors = torch.from_numpy(proposer.priors)
    for record in dataset.records:
        image = load_rgb(record.path)
        h, w = image.shape[:2]
        boxes, scores = proposer.decode(image)
        sets["raw priors"].append((priors * torch.tensor([w, h, w, h], dtype=torch.float32)).numpy())
        sets["decoded boxes"].append(boxes.numpy())
        sets[top].append(proposer.select(boxes, scores)[0].numpy())
        sets[f"top {proposer.top_k}, NMS 0.7"].append(proposer.select(boxes, scores, nms_iou=0.7)[0].numpy())
    return sets


def main(overrides: list[str]) -> None:
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["proposals=multibox", *overrides])
    source = instantiate(cfg.data)
    train, val = source.load(source.train_split), source.load(source.split)
    proposer = build_sources(cfg.proposals, train, cache_dir=str(cfg.cache_dir), seed=int(cfg.seed),
                             init_weights=multibox_init_weights(cfg, device=str(cfg.device)))["multibox"]
    print(f"{'split':<6} {'set':<20} {'per_image':>9} {'coverage':>9} {'recall@.5':>9} {'recall@.7':>9} {'ABO':>6}")
    for name, dataset in (("val", val), ("train", train)):
        for label, boxes in box_sets(proposer, dataset).items():
            m = proposal_metrics(dataset.records, boxes)
            print(f"{name:<6} {label:<20} {m.per_image:9.1f} {m.coverage:9.4f} {m.recall_50:9.4f} "
                  f"{m.recall_70:9.4f} {m.average_best_overlap:6.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
