"""`python -m eval.map` end to end on the hand-written ILSVRC fixture, in a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detect.cli import run_user_errors
from detect.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _run(root: Path, detections: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eval.map", "data=ilsvrc", f"data.root={root}", "data.split=val",
         f"detections={detections}", f"hydra.run.dir={out}", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_eval_map_cli(ilsvrc_root: Path, tmp_path: Path):
    dets = tmp_path / "dets.txt"
    # val_1: cat [1,2,10,12] found exactly, traffic light [5,5,39,29] found exactly;
    # val_2's dog is blacklisted (its detection is ignored) -> dog has no ground truth.
    # One false cat on val_3 with a lower score: cat AP stays 1.
    dets.write_text("1 1 0.9 1 2 10 12\n1 3 0.8 5 5 39 29\n2 2 0.7 4 2 24 18\n3 1 0.1 0 0 5 5\n")
    out = tmp_path / "run"
    proc = _run(ilsvrc_root, dets, out, "eval.coco=true")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "mAP: 1.0000"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mAP"] == 1.0
    assert metrics["per_class_ap"] == {"cat": 1.0, "dog": None, "traffic light": 1.0}
    assert metrics["n_detections"] == 4 and metrics["n_ground_truth"] == 2
    assert set(metrics["coco"]) == {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"}
    assert (out / "pr_curves.png").stat().st_size > 0 and (out / "per_class_ap.png").stat().st_size > 0


def test_eval_map_bad_line_is_one_line_error(ilsvrc_root: Path, tmp_path: Path):
    dets = tmp_path / "dets.txt"
    dets.write_text("1 1 0.9 1 2 10 12\n9 1 0.5 1 2 10 12\n")
    out = tmp_path / "run"
    proc = _run(ilsvrc_root, dets, out)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {dets}:2: image index 9 is out of range 1..4"
    assert not (out / "metrics.json").exists()


def test_run_user_errors_prints_one_line_or_the_traceback(monkeypatch, capsys):
    @run_user_errors
    def entry():
        raise UserError("dets.txt:3: confidence is NaN or infinite")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("DETECT_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: dets.txt:3: confidence is NaN or infinite\n"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError):
        entry()
