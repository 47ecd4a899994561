"""``python -m eval.map``: score an ILSVRC submission file against a data split.

    python -m eval.map data=ilsvrc data.root=/data/ILSVRC data.split=val detections=dets.txt

Prints a per-class AP table and, as its last line, ``mAP: 0.xxxx``; writes
``metrics.json``, ``pr_curves.png`` and ``per_class_ap.png`` to the run directory.
"""

from __future__ import annotations

import logging
import math
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
from detect.errors import require_file
from eval.ilsvrc_ap import GroundTruth, evaluate_ilsvrc
from eval.plots import plot_per_class_ap, plot_pr_curves
from eval.submission import Submission, read_submission, validate_submission

log = logging.getLogger(__name__)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def evaluate_detections(
    dataset: DetectionDataset,
    submission: Submission,
    *,
    source: str,
    out_dir: Path | None,
    coco: bool,
    coco_max_dets: int | None,
    plots: bool,
) -> dict[str, Any]:
    """ILSVRC mAP of ``submission`` on ``dataset`` (+ COCO stats); writes plots into ``out_dir``.

    Returns the ``metrics.json`` dict: ``mAP``, ``per_class_ap`` (class name -> AP,
    None for classes without ground truth), ``n_detections``, ``n_ground_truth``,
    ``warnings`` counts and, with ``coco``, ``coco`` stats and ``coco_max_dets`` (None: no limit).
    """
    sizes = np.zeros((max((r.index for r in dataset.records), default=0), 2), np.int64)
    listed = np.zeros(len(sizes), bool)
    for r in dataset.records:
        sizes[r.index - 1] = (r.width, r.height)
        listed[r.index - 1] = True
    warnings = validate_submission(submission, path=source, num_images=len(sizes),
                                   num_classes=len(dataset.classes), image_sizes=sizes, listed=listed)
    gt = GroundTruth.from_dataset(dataset)
    result = evaluate_ilsvrc(gt, submission.image_index, submission.class_id, submission.score, submission.boxes)
    names = dataset.classes.names
    metrics: dict[str, Any] = {
        "mAP": _json_float(result.mean_ap),
        "per_class_ap": {name: _json_float(ap) for name, ap in zip(names, result.ap)},
        "n_detections": int(len(submission)),
        "n_ground_truth": int(result.num_positives.sum()),
        "warnings": warnings,
    }
    if coco:
        from eval.coco_eval import check_max_dets, coco_evaluate, warn_images_over_max_dets

        coco_max_dets = check_max_dets(coco_max_dets)
        warnings["coco_images_over_max_dets"] = warn_images_over_max_dets(dataset, coco_max_dets)
        metrics["coco"] = coco_evaluate(dataset, submission.image_index, submission.class_id, submission.score,
                                        submission.boxes, max_dets=coco_max_dets)
        metrics["coco_max_dets"] = coco_max_dets
    if plots and out_dir is not None:
        plot_pr_curves(Path(out_dir) / "pr_curves.png", names, result.ap, result.precision, result.recall)
        plot_per_class_ap(Path(out_dir) / "per_class_ap.png",
                          {n: a for n, a in zip(names, result.ap) if not math.isnan(a)})
    return metrics


def evaluate_submission(
    dataset: DetectionDataset,
    submission_path: Path | str,
    *,
    out_dir: Path | None,
    coco: bool,
    coco_max_dets: int | None,
    plots: bool,
) -> dict[str, Any]:
    """Read, validate and score an ILSVRC submission file: `evaluate_detections` on its contents.

    Raises `UserError` ("FILE:LINE: problem") for a missing file or a bad line.
    """
    return evaluate_detections(dataset, read_submission(submission_path), source=str(submission_path),
                               out_dir=out_dir, coco=coco, coco_max_dets=coco_max_dets, plots=plots)


def format_ap_table(metrics: dict[str, Any]) -> str:
    """Per-class AP table; the caller prints ``mAP: ...`` after it."""
    width = max([len(n) for n in metrics["per_class_ap"]] + [5])
    lines = [f"{'class':<{width}}  AP"]
    for name, ap in metrics["per_class_ap"].items():
        lines.append(f"{name:<{width}}  {'n/a (no ground truth)' if ap is None else f'{ap:.4f}'}")
    if "coco" in metrics:
        limit = metrics.get("coco_max_dets")
        scope = "every detection" if limit is None else f"top {limit} detections per image"
        lines.append(f"COCO ({scope}): " + "  ".join(f"{k} {v:.4f}" for k, v in metrics["coco"].items()))
    lines.append(f"detections: {metrics['n_detections']}  ground truth: {metrics['n_ground_truth']}")
    return "\n".join(lines)


@run_user_errors
def _main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    require_file(cfg.detections, "submission file")  # before a long dataset load
    source = instantiate(cfg.data)
    dataset = source.load(cfg.data.split)
    metrics = evaluate_submission(dataset, cfg.detections, out_dir=out_dir, **cfg.eval)
    atomic.write_json(out_dir / "metrics.json", metrics)
    print(format_ap_table(metrics))
    print(f"metrics: {out_dir / 'metrics.json'}")
    mean_ap = metrics["mAP"] if metrics["mAP"] is not None else float("nan")
    print(f"mAP: {mean_ap:.4f}", flush=True)
    return mean_ap


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_map")
def main(cfg: DictConfig) -> float:
    return _main(cfg)


if __name__ == "__main__":
    run_cli(main)
