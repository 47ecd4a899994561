"""The whole pipeline as a plain function: data -> proposals -> members -> scores -> ensemble -> eval.

`run_pipeline(cfg, out_dir)` is what ``python -m detect.run`` calls; it returns the
``metrics.json`` dict.  Every expensive stage is cached under ``cfg.cache_dir`` by a
hash of what determines it (see `detect.proposal_stage`, `detect.members`), so an
identical second run only re-does the ensemble, NMS and evaluation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from classifier.pretrain import network_summaries
from detect import atomic
from detect.ensemble import EnsembleSettings, member_seed, shared_seed
from detect.errors import ConfigError
from detect.member_pool import MemberJob, prepare_members, run_member
from detect.members import build_model
from detect.outputs import draw_examples, summary_text, write_coco_results
from detect.inference import region_detections, split_detections
from detect.postprocess import image_detections
from detect.pretrain_stage import check_init, initialise
from detect.proposal_stage import (
    build_sources,
    merge_arguments,
    proposal_report,
    selective_search_meanwhile,
    split_proposals,
)
from eval.map import evaluate_detections
from eval.plots import plot_recall_curves
from eval.submission import Submission, write_submission
from proposals.extract import extract_proposals

log = logging.getLogger(__name__)


class StageTimer:
    """Wall-clock seconds per stage, for ``metrics.json``'s ``timing_s``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        log.info("==== %s ====", stage)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def detections(
    proposals: list[np.ndarray], scores: list[np.ndarray], image_indices: list[int], settings: EnsembleSettings,
) -> Submission:
    """Class-wise NMS per image, then the per-class cap over the split, as one `Submission`.

    ``proposals[i]`` is ``(R_i, 4)`` xyxy, or ``(R_i, C, 4)`` per-class boxes after box regression.
    """
    per_image = [image_detections(boxes, s, nms_iou=settings.nms_iou, score_threshold=settings.score_threshold,
                                  max_per_image=settings.max_per_image, box_voting_iou=settings.box_voting_iou)
                 for boxes, s in zip(proposals, scores)]
    return split_detections(per_image, image_indices, max_per_class=settings.max_per_class)


def random_scores(scores: list[np.ndarray], *, seed: int) -> list[np.ndarray]:
    """Untrained-classifier baseline: per region, a random point of the probability simplex.

    ``scores[i]`` is ``(R_i, K)``; the result has the same shapes, drawn from Dirichlet(1, ..., 1)
    so that the values look like softmax outputs (non-negative, rows summing to 1) and pass
    through the same score threshold, NMS and caps as the real scores.
    """
    rng = np.random.default_rng(seed)
    return [rng.dirichlet(np.ones(s.shape[1]), size=len(s)).astype(np.float32) for s in scores]


def run_pipeline(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run every stage; write ``detections.txt``, ``metrics.json``, plots and examples to ``out_dir``."""
    out_dir = Path(out_dir)
    timer = StageTimer()
    cache_dir = str(cfg.cache_dir)
    settings: EnsembleSettings = instantiate(cfg.ensemble)
    check_init(cfg.classifier)
    # Checks classifier.model now, not after the proposals (the weights file is checked when it is used).
    build_model(OmegaConf.merge(cfg.classifier, {"model": {"weights": None}}), num_classes=1)
    if (settings.score == "svm") != bool(cfg.classifier.svm.enabled):
        raise ConfigError("ensemble.score=svm needs classifier.svm.enabled=true, and the other way round")

    with timer("data"):
        source = instantiate(cfg.data)
        train = source.load(source.train_split)
        val = source.load(source.split)

    with timer("pretrain"):
        init = initialise(cfg, device=str(cfg.device))
    classifier_cfg = init.classifier

    with timer("proposals"):
        common = dict(cache_dir=cache_dir, workers=cfg.proposals.workers, chunk_size=cfg.proposals.chunk_size,
                      shard=None, **merge_arguments(cfg.proposals.merge))
        # Selective Search fills its cache beside MultiBox's training and its proposals: they share the cores.
        with selective_search_meanwhile(cfg.proposals, (train, val), cache_dir=cache_dir):
            sources = build_sources(cfg.proposals, train, cache_dir=cache_dir, seed=int(cfg.seed),
                                    init_weights=init.weights)
            if "multibox" in sources:  # its proposals while SS finishes (split_proposals below reads both caches)
                multibox = sources["multibox"]
                for split in (train, val):
                    extract_proposals(split, multibox, source_id=multibox.identity(), cache_dir=cache_dir,
                                      workers=cfg.proposals.workers, chunk_size=cfg.proposals.chunk_size, shard=None)
        train_props = split_proposals(train, sources, **common)
        val_props = split_proposals(val, sources, **common)
        report = proposal_report(val, val_props)
        plot_recall_curves(out_dir / "recall_vs_proposals.png", {k: v["curve"] for k, v in report.items()})

    jobs = [MemberJob(member=k, classifier=OmegaConf.to_container(init.for_member(k), resolve=True),
                      seed=member_seed(int(cfg.seed), k), shared_seed=shared_seed(int(cfg.seed)), train=train,
                      train_proposals=train_props.boxes, train_proposals_key=train_props.key, val=val,
                      val_proposals=val_props.boxes, val_proposals_key=val_props.key, cache_dir=cache_dir,
                      device=str(cfg.device))
            for k in settings.member_ids]  # member k fine-tunes pretrained network k mod pretrain.networks
    if settings.workers > 1:
        with timer("members"):  # train + score side by side; the loop below then reads the cache
            prepare_members(jobs, workers=settings.workers, log_dir=out_dir / "members")

    member_scores: list[list[np.ndarray]] = []
    member_boxes: list[list[np.ndarray]] = []
    member_keys: list[str] = []
    for job in jobs:
        scores, refined, key = run_member(job, timer=timer)
        member_scores.append(scores)
        member_boxes.append(refined if refined is not None else val_props.boxes)
        member_keys.append(key)

    indices = [r.index for r in val.records]
    with timer("ensemble"):
        # The per-image step detect.predict runs too (detect.inference): average, then class-wise NMS.
        ensemble = split_detections([region_detections([m[i] for m in member_boxes], [m[i] for m in member_scores],
                                                       settings) for i in range(len(val))],
                                    indices, max_per_class=settings.max_per_class)
        write_submission(out_dir / "detections.txt", ensemble.image_index, ensemble.class_id, ensemble.score,
                         ensemble.boxes)
        write_coco_results(out_dir / "detections_coco.json", ensemble.image_index, ensemble.class_id,
                           ensemble.score, ensemble.boxes)

    with timer("eval"):
        metrics = evaluate_detections(val, ensemble, source=str(out_dir / "detections.txt"), out_dir=out_dir,
                                      **cfg.eval)
        members_map = []
        for scores, boxes in zip(member_scores, member_boxes):
            member_metrics = evaluate_detections(val, detections(boxes, scores, indices, settings),
                                                 source="member", out_dir=None, coco=False, coco_max_dets=0,
                                                 plots=False)
            members_map.append(member_metrics["mAP"])
        random_map = evaluate_detections(
            val, detections(member_boxes[0], random_scores(member_scores[0], seed=int(cfg.seed)), indices, settings),
            source="random scores", out_dir=None, coco=False, coco_max_dets=0, plots=False)["mAP"]
        draw_examples(out_dir, val, ensemble.image_index, ensemble.class_id, ensemble.score, ensemble.boxes,
                      num_images=6, per_image=5, min_score=0.3)

    metrics = {
        "mAP": metrics["mAP"],
        "per_class_ap": metrics["per_class_ap"],
        "members_mAP": members_map,
        "random_scores_mAP": random_map,
        "proposals": report,
        # Network 0's key, source and errors (the one MultiBox starts from), and every network's.
        **({"pretrain": {**network_summaries(init.pretrained)[0], "networks": network_summaries(init.pretrained)}}
           if init.pretrained else {}),
        "init": str(cfg.classifier.init),
        "timing_s": timer.seconds,
        "n_detections": metrics["n_detections"],
        "n_ground_truth": metrics["n_ground_truth"],
        **({"coco": metrics["coco"]} if "coco" in metrics else {}),
        "members": member_keys,
        # What detect.predict / detect.export need to find this run's detector in the cache.
        "multibox": sources["multibox"].network_key if "multibox" in sources else None,
        "classes": {"synsets": list(val.classes.synsets), "names": list(val.classes.names)},
        "num_images": {"train": len(train), "val": len(val)},
    }
    atomic.write_json(out_dir / "metrics.json", metrics)
    print(summary_text(metrics, out_dir), flush=True)
    return metrics
