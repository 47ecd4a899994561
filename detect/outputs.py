"""Run outputs people can read: drawn detections, COCO results json, the end-of-run summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from detect import atomic
from detect.data.image_io import load_rgb
from detect.data.record import DetectionDataset
from eval.coco_eval import coco_results


def write_coco_results(path: Path, image_index, class_id, score, boxes) -> None:
    """The detections as a COCO results json (image id = ILSVRC image index, xywh boxes)."""
    atomic.write_text(path, json.dumps(coco_results(image_index, class_id, score, boxes)))


def draw_examples(
    out_dir: Path, dataset: DetectionDataset, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray,
    boxes: np.ndarray, *, num_images: int, per_image: int, min_score: float,
) -> list[Path]:
    """PNGs of the first ``num_images`` images with objects: ground truth (green) and top detections (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    paths = []
    for rec in [r for r in dataset.records if r.num_objects][:num_images]:
        fig, ax = plt.subplots(figsize=(5, 5 * rec.height / max(rec.width, 1)))
        ax.imshow(load_rgb(rec.path))
        for b, label in zip(rec.boxes, rec.labels):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1.5))
            ax.text(b[0], b[3], dataset.classes.name_of(int(label)), color="lime", fontsize=6, va="top")
        mine = np.flatnonzero((image_index == rec.index) & (score >= min_score))
        for j in mine[np.argsort(-score[mine], kind="stable")][:per_image]:
            b = boxes[j]
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="red", lw=1.0, ls="--"))
            ax.text(b[0], b[1], f"{dataset.classes.name_of(int(class_id[j]))} {score[j]:.2f}", color="red",
                    fontsize=6, va="bottom")
        ax.set_axis_off()
        ax.set_title(f"{rec.image_id}: ground truth (green), detections (red)", fontsize=7)
        fig.tight_layout()
        path = out_dir / "examples" / f"{rec.index:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def summary_text(metrics: dict[str, Any], out_dir: Path) -> str:
    """The short human-readable summary printed at the end of `python -m detect.run`."""
    lines = ["", "=" * 60]
    members = metrics.get("members_mAP") or []
    m = metrics.get("mAP")
    lines.append(f"ensemble mAP: {m:.4f}" if m is not None else "ensemble mAP: n/a")
    if members:
        best = max(members)
        lines.append(f"members mAP:  {', '.join(f'{x:.4f}' for x in members)} "
                     f"(best {best:.4f}; ensemble gain {m - best:+.4f})")
    if metrics.get("random_scores_mAP") is not None:
        lines.append(f"random-score baseline mAP: {metrics['random_scores_mAP']:.4f} (same proposals, no classifier)")
    if metrics.get("pretrain"):
        pre = metrics["pretrain"]
        networks = pre.get("networks") or [pre]
        for j, net in enumerate(networks):
            name = "pretrained network" + (f" {j}" if len(networks) > 1 else "")
            lines.append(f"{name} ({net['source']}): top-1 error {net['top1_error']:.4f}, "
                         f"top-5 error {net['top5_error']:.4f} (classification val)")
    for source, p in metrics.get("proposals", {}).items():
        lines.append(f"proposals {source:>9}: {p['per_image']:7.1f}/image, coverage {p['coverage']:.3f}, "
                     f"recall@0.5 {p['recall_50']:.3f}")
    timing = metrics.get("timing_s", {})
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timing.items()) +
                 f" (total {sum(timing.values()):.1f}s)")
    lines.append(f"outputs: {out_dir} (detections.txt, metrics.json, *.png, examples/)")
    lines.append("=" * 60)
    return "\n".join(lines)
