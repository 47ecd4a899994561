"""Hydra callback that tabulates every run of a multirun sweep.

After ``python -m detect.run -m ...`` finishes, the sweep directory gets
``sweep_summary.csv``, ``sweep_summary.md`` and ``sweep_summary.png``: one row per
job with its overrides, mAP, ensemble members' mean mAP and the proposal
statistics read from that job's ``metrics.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from detect import atomic

log = logging.getLogger(__name__)


def _job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not overrides_file.exists():
            continue
        overrides = " ".join(OmegaConf.load(overrides_file)) or "(defaults)"
        row: dict[str, Any] = {"job": job_dir.name, "overrides": overrides}
        metrics_file = job_dir / "metrics.json"
        if not metrics_file.exists():
            row["status"] = "no metrics.json (failed or still running)"
            rows.append(row)
            continue
        metrics = json.loads(metrics_file.read_text())
        row["status"] = "ok"
        row["mAP"] = metrics.get("mAP")
        members = metrics.get("members_mAP") or []
        row["members_mean_mAP"] = sum(members) / len(members) if members else None
        for source, stats in sorted(metrics.get("proposals", {}).items()):
            row[f"{source}_per_image"] = stats.get("per_image")
            row[f"{source}_coverage"] = stats.get("coverage")
        row["time_s"] = sum(metrics.get("timing_s", {}).values())
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write the CSV, markdown table and plot for the jobs under ``sweep_dir``; return the rows."""
    rows = _job_rows(sweep_dir)
    if not rows:
        log.warning("%s: no finished jobs to summarise", sweep_dir)
        return rows
    columns = _columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(sweep_dir / "sweep_summary.csv", buf.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    atomic.write_text(sweep_dir / "sweep_summary.md", "\n".join(lines) + "\n")
    _plot(rows, sweep_dir / "sweep_summary.png")
    log.info("sweep summary (%d runs):\n%s", len(rows), "\n".join(lines))
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("mAP") is not None]
    if not done:
        return
    labels = [r["overrides"].replace(" ", "\n") for r in done]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(done)), 4.0))
    ax.bar(range(len(done)), [100 * r["mAP"] for r in done], color="tab:blue")
    for i, r in enumerate(done):
        extra = r.get("merged_per_image") or r.get("ss_per_image") or r.get("multibox_per_image")
        text = f"{100 * r['mAP']:.1f}" + (f"\n{extra:.0f} prop/img" if extra else "")
        ax.text(i, 100 * r["mAP"], text, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(done)), labels, fontsize=7)
    ax.set_ylabel("mAP (%)")
    ax.set_title("sweep summary")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class SweepSummary(Callback):
    """Registered under ``hydra.callbacks`` in conf/config.yaml."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(Path(config.hydra.sweep.dir))
