"""Figures people would rather look at than read: PR curves, per-class AP bars, recall curves."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from detect import atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_pr_curves(path: Path, names: Sequence[str], ap: np.ndarray,
                   precision: Sequence[np.ndarray], recall: Sequence[np.ndarray], *, max_curves: int = 8) -> None:
    """Precision-recall curves of the best, median and worst classes (by AP)."""
    plt = _pyplot()
    valid = np.flatnonzero(~np.isnan(ap))
    ranked = valid[np.argsort(-ap[valid], kind="stable")]
    if len(ranked) > max_curves:
        picks = np.unique(np.linspace(0, len(ranked) - 1, max_curves).round().astype(int))
        ranked = ranked[picks]
    fig, ax = plt.subplots(figsize=(6, 5))
    for c in ranked:
        if len(recall[c]):
            ax.step(np.r_[0, recall[c]], np.r_[1, precision[c]], where="post", label=f"{names[c]} ({ap[c]:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall (mAP {np.nanmean(ap) if len(valid) else float('nan'):.3f})")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_per_class_ap(path: Path, per_class_ap: Mapping[str, float]) -> None:
    """Horizontal bar chart of AP per class, sorted."""
    plt = _pyplot()
    items = sorted(((v, k) for k, v in per_class_ap.items() if v == v), reverse=True)
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.22 * len(items) + 1)))
    ax.barh([k for _, k in items][::-1], [v for v, _ in items][::-1], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("AP")
    mean = np.mean([v for v, _ in items]) if items else float("nan")
    ax.axvline(mean, color="tab:red", ls="--", label=f"mAP {mean:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_recall_curves(path: Path, curves: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
    """Coverage vs number of proposals per image, one line per proposal source."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for source, curve in curves.items():
        ax.plot(curve["counts"], curve["coverage"], marker="o", ms=3, label=source)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("proposals per image (top k)")
    ax.set_ylabel("coverage (ILSVRC threshold)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
