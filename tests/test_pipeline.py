"""`python -m detect.run` end to end on the tiny profile, in real subprocesses.

Checks the output contract (SPEC section 9), that a second identical run reuses
every cached stage, and that a two-point multirun writes a two-row summary.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eval.submission import read_submission

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str, multirun: bool = False, timeout: int = 600, threads: int | None = None,
         ) -> subprocess.CompletedProcess:
    flags = ["-m"] if multirun else []
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "detect.run", *flags, "profile=tiny", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    out = tmp / "run1"
    _run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={out}")
    return tmp, out


def test_output_contract(first_run):
    _, out = first_run
    for name in ("detections.txt", "metrics.json", "detections_coco.json", "pr_curves.png", "per_class_ap.png",
                 "recall_vs_proposals.png", ".hydra/config.yaml"):
        assert (out / name).exists(), name
    assert list((out / "examples").glob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["mAP"], float) and 0.0 <= metrics["mAP"] <= 1.0
    assert set(metrics["per_class_ap"]) == {"striped_disc", "checkered_disc", "dotted_ring", "shaded_ring"}
    assert len(metrics["members_mAP"]) == 2 and all(isinstance(m, float) for m in metrics["members_mAP"])
    assert isinstance(metrics["random_scores_mAP"], float) and 0.0 <= metrics["random_scores_mAP"] <= 1.0
    assert set(metrics["proposals"]) == {"ss", "multibox", "merged"}
    for stats in metrics["proposals"].values():
        assert isinstance(stats["per_image"], float) and 0.0 <= stats["coverage"] <= 1.0
    assert {"data", "proposals", "train", "score", "ensemble", "eval"} <= set(metrics["timing_s"])
    sub = read_submission(out / "detections.txt")
    assert len(sub) > 0 and sub.image_index.min() >= 1 and sub.image_index.max() <= 12
    assert sub.class_id.min() >= 1 and sub.class_id.max() <= 4


def test_second_run_reuses_every_stage(first_run):
    tmp, out = first_run
    proc = _run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'run2'}")
    log = proc.stdout + proc.stderr
    assert "cached weights" in log and "classifier: train" not in log
    first = json.loads((out / "metrics.json").read_text())
    second = json.loads((tmp / "run2" / "metrics.json").read_text())
    assert second["mAP"] == first["mAP"] and second["members_mAP"] == first["members_mAP"]
    assert (tmp / "run2" / "detections.txt").read_bytes() == (out / "detections.txt").read_bytes()


def test_two_point_multirun_summary(first_run):
    tmp, _ = first_run
    sweep = tmp / "sweep"
    _run("ensemble.nms_iou=0.3,0.5", f"cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={sweep}", multirun=True)
    rows = list(csv.DictReader((sweep / "sweep_summary.csv").open()))
    assert [r["overrides"].split()[1] for r in rows] == ["ensemble.nms_iou=0.3", "ensemble.nms_iou=0.5"]
    for r in rows:
        job = json.loads((sweep / r["job"] / "metrics.json").read_text())
        assert float(r["mAP"]) == pytest.approx(job["mAP"])
    assert (sweep / "sweep_summary.md").exists() and (sweep / "sweep_summary.png").exists()


def test_proposals_run_reports_every_source(first_run):
    tmp, _ = first_run
    out = tmp / "proposals"
    proc = subprocess.run([sys.executable, "-m", "proposals.run", "profile=tiny", f"cache_dir={tmp / 'cache'}",
                           "proposals.merge.max_per_image=null", f"hydra.run.dir={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())["proposals"]
    assert set(report) == {"ss", "multibox", "merged", "random_priors"}
    # Uncapped merge: MultiBox boxes first, then SS boxes not duplicating them.
    assert report["merged"]["per_image"] <= report["ss"]["per_image"] + report["multibox"]["per_image"]
    assert report["merged"]["coverage"] >= report["ss"]["coverage"]
    assert (out / "recall_vs_proposals.png").exists()


def test_svm_and_box_regression_options_run_end_to_end(first_run):
    tmp, _ = first_run
    out = tmp / "svm"
    _run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={out}", "classifier.svm.enabled=true",
         "classifier.svm.fit.C=1.0", "ensemble.score=svm", "ensemble.score_threshold=-1.0",
         "classifier.bbox_reg.enabled=true")
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["mAP"], float) and len(metrics["members_mAP"]) == 2
    assert len(list((tmp / "cache" / "members").glob("*/svm_*.npz"))) == 2
    assert len(list((tmp / "cache" / "members").glob("*/bbox_reg_*.npz"))) == 2


def test_inconsistent_svm_settings_are_a_one_line_error(first_run):
    tmp, _ = first_run
    proc = subprocess.run([sys.executable, "-m", "detect.run", "profile=tiny", f"cache_dir={tmp / 'cache'}",
                           f"hydra.run.dir={tmp / 'bad'}", "ensemble.score=svm"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: ensemble.score=svm needs classifier.svm.enabled=true, and the other way round")
    assert not (tmp / "bad" / "metrics.json").exists()


@pytest.mark.parametrize("overrides", [["classifier.mode=roi", "classifier.roi.image_size=64"],
                                       ["classifier.runtime=onnx"]])
def test_roi_mode_and_onnx_runtime_run_end_to_end(first_run, overrides):
    tmp, out = first_run
    run = tmp / ("run_" + overrides[0].split("=")[1])
    proc = _run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={run}", *overrides)
    metrics = json.loads((run / "metrics.json").read_text())
    assert isinstance(metrics["mAP"], float) and len(metrics["members_mAP"]) == 2
    if overrides[0] == "classifier.mode=roi":
        # classifier.roi.init_from_warp: each roi member fine-tunes the first run's cached warp member
        log = proc.stdout + proc.stderr
        assert log.count("cached weights") == 2 and log.count("roi training starts from warp member") == 2
        assert set(metrics["members"]).isdisjoint(json.loads((out / "metrics.json").read_text())["members"])
    if overrides == ["classifier.runtime=onnx"]:
        # Same weights, ONNX Runtime instead of torch: the same detections up to float noise.
        baseline = json.loads((out / "metrics.json").read_text())
        assert metrics["members"] == baseline["members"]
        assert metrics["mAP"] == pytest.approx(baseline["mAP"], abs=1e-3)
        assert list((tmp / "cache" / "members").glob("*/model.*.onnx"))


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())


def test_member_jobs_then_ensemble_equal_the_in_process_run(first_run):
    """Members trained as separate submitit processes; the ensemble run then only loads them."""
    tmp, out = first_run
    cache, sweep = tmp / "jobs_cache", tmp / "member_jobs"
    _run("hydra/launcher=local_jobs", "ensemble.member=0,1", f"cache_dir={cache}", f"hydra.sweep.dir={sweep}",
         multirun=True)
    jobs = _job_dirs(sweep)
    assert len(jobs) == 2
    job_metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert all(len(m["members"]) == 1 for m in job_metrics)
    proc = _run(f"cache_dir={cache}", f"hydra.run.dir={tmp / 'after_jobs'}")
    log = proc.stdout + proc.stderr
    assert log.count("cached weights") == 2 and "classifier: train" not in log
    reference = json.loads((out / "metrics.json").read_text())
    ensemble = json.loads((tmp / "after_jobs" / "metrics.json").read_text())
    # Same seeds and configs -> the same cache keys, members and detections as one in-process run.
    assert ensemble["members"] == reference["members"] == [m["members"][0] for m in job_metrics]
    assert ensemble["mAP"] == pytest.approx(reference["mAP"], abs=1e-6)
    assert ensemble["members_mAP"] == pytest.approx([m["mAP"] for m in job_metrics], abs=1e-6)
    ours, theirs = read_submission(tmp / "after_jobs" / "detections.txt"), read_submission(out / "detections.txt")
    assert len(ours) == len(theirs)
    assert ours.score == pytest.approx(theirs.score, abs=1e-5)


def test_member_workers_train_side_by_side_and_equal_the_in_process_run(first_run):
    """ensemble.workers=2: both members train and score in two worker processes, each logging to
    <run>/members/member_<k>.log; the run then reads them from the cache like any cached member.
    Two threads shared out give each worker one, so an in-process run on one thread is the exact reference."""
    tmp, _ = first_run
    caches = []
    for name in ("workers_cache", "one_thread_cache"):  # the first run's data and proposals, none of its members
        caches.append(tmp / name)
        shutil.copytree(tmp / "cache", caches[-1], ignore=shutil.ignore_patterns("members", "scores"))
    run, reference_run = tmp / "run_workers", tmp / "run_one_thread"
    proc = _run(f"cache_dir={caches[0]}", f"hydra.run.dir={run}", "ensemble.workers=2", threads=2)
    _run(f"cache_dir={caches[1]}", f"hydra.run.dir={reference_run}", threads=1)
    log = proc.stdout + proc.stderr
    assert "members: 2 to train in 2 worker processes (1 thread each" in log
    assert log.count("cached weights") == 2 and "classifier: train" not in log  # the loop found what they trained
    for k in (0, 1):
        member_log = (run / "members" / f"member_{k}.log").read_text()
        assert "classifier: iteration" in member_log and "classifier: score" in member_log
    reference = json.loads((reference_run / "metrics.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert "members" in metrics["timing_s"] and "members" not in reference["timing_s"]
    assert metrics["members"] == reference["members"]
    assert metrics["members_mAP"] == reference["members_mAP"] and metrics["mAP"] == reference["mAP"]
    assert (run / "detections.txt").read_bytes() == (reference_run / "detections.txt").read_bytes()


def test_proposal_shards_as_separate_jobs_equal_the_unsharded_result(first_run):
    tmp, _ = first_run

    def proposals_run(*args: str, multirun: bool = False) -> subprocess.CompletedProcess:
        flags = ["-m"] if multirun else []
        proc = subprocess.run([sys.executable, "-m", "proposals.run", *flags, "profile=tiny", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    proposals_run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'unsharded'}")
    shard_cache = tmp / "shard_cache"
    proposals_run("hydra/launcher=local_jobs", "proposals.shard=0/2,1/2", f"cache_dir={shard_cache}",
                  f"hydra.sweep.dir={tmp / 'shards'}", multirun=True)
    chunks = sorted(p.name for p in (shard_cache / "proposals").rglob("*.npz"))
    assert chunks, "the shard jobs wrote no cache chunks"
    proc = proposals_run(f"cache_dir={shard_cache}", f"hydra.run.dir={tmp / 'union'}")
    assert sorted(p.name for p in (shard_cache / "proposals").rglob("*.npz")) == chunks  # nothing recomputed
    union = json.loads((tmp / "union" / "metrics.json").read_text())["proposals"]
    unsharded = json.loads((tmp / "unsharded" / "metrics.json").read_text())["proposals"]
    assert union == unsharded


def test_killed_in_every_stage_then_resumed_equals_the_uninterrupted_run(first_run):
    """SIGKILL inside each stage in turn (tests/kill_at.py), each rerun resuming the last one's work.

    Every run uses one fresh cache: run k is killed in stage k after resuming stage k-1's
    partial work, so each stage's resume path is exercised once.  The final run's results
    must equal the uninterrupted run's byte for byte (same seed): this also proves that a
    fresh cache in other processes reproduces ``detections.txt`` exactly.
    """
    tmp, out = first_run
    cache = tmp / "kill_cache"
    resumed = {"multibox": "multibox: resuming", "train": "classifier: resuming from"}
    previous = None
    for stage in ("multibox", "proposals", "train", "score", "eval"):
        run_dir = tmp / f"killed_{stage}"
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "kill_at.py"), stage, "profile=tiny",
                               f"cache_dir={cache}", f"hydra.run.dir={run_dir}"],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        assert proc.returncode == -signal.SIGKILL, f"{stage}: rc {proc.returncode}\n{log[-3000:]}"
        assert not (run_dir / "metrics.json").exists()  # nothing looks complete
        if previous in resumed:
            assert resumed[previous] in log, f"{previous} did not resume:\n{log[-3000:]}"
        if previous == "proposals":
            assert re.search(r" [1-9]\d* of \d+ chunks cached", log), f"proposals did not resume:\n{log[-3000:]}"
        previous = stage
    assert not list(cache.rglob("*.tmp*")), "a temporary file was left behind as if it were a result"

    final = tmp / "after_kills"
    proc = _run(f"cache_dir={cache}", f"hydra.run.dir={final}")
    log = proc.stdout + proc.stderr
    assert log.count("cached weights") == 2 and "classifier: train" not in log

    def without_timing(path: Path) -> dict:
        metrics = json.loads(path.read_text())
        metrics.pop("timing_s")
        metrics["pretrain"].pop("source")  # "trained" by the first run, "cache" after the kills
        for network in metrics["pretrain"]["networks"]:
            network.pop("source")
        return metrics

    assert without_timing(final / "metrics.json") == without_timing(out / "metrics.json")
    assert (final / "detections.txt").read_bytes() == (out / "detections.txt").read_bytes()


def test_members_start_from_the_pretrained_network_or_from_scratch(first_run):
    tmp, out = first_run
    metrics = json.loads((out / "metrics.json").read_text())
    # The default: a pretrain stage (tiny profile: trained here, cached), reported in the metrics.
    assert metrics["init"] == "pretrained" and "pretrain" in metrics["timing_s"]
    assert 0.0 <= metrics["pretrain"]["top5_error"] <= metrics["pretrain"]["top1_error"] <= 1.0
    assert list((tmp / "cache" / "pretrain").glob("*/model.pt"))
    run = tmp / "run_scratch"
    _run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={run}", "classifier.init=scratch",
         "proposals.multibox.init=scratch")
    scratch = json.loads((run / "metrics.json").read_text())
    assert "pretrain" not in scratch and scratch["init"] == "scratch"
    assert set(scratch["members"]).isdisjoint(metrics["members"])


def test_shared_fine_tuning_is_trained_once_and_members_still_differ(first_run):
    tmp, _ = first_run
    run = tmp / "run_shared"
    proc = _run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={run}", "classifier.shared.iterations=4")
    log = proc.stdout + proc.stderr
    assert log.count("starts from the shared fine-tuned network") == 2
    shared_keys = set(re.findall(r"starts from the shared fine-tuned network (\w+)", log))
    assert len(shared_keys) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(set(metrics["members"])) == 2 and shared_keys.isdisjoint(metrics["members"])


def test_members_alternate_between_separately_pretrained_networks(first_run):
    """pretrain.networks=2: two pretrained networks (seeds 0 and 1); member 0 fine-tunes network 0 as before
    (the same cached member), member 1 fine-tunes network 1 (a new member)."""
    tmp, out = first_run
    base = json.loads((out / "metrics.json").read_text())
    run = tmp / "run_two_networks"
    _run(f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={run}", "pretrain.networks=2")
    metrics = json.loads((run / "metrics.json").read_text())
    networks = metrics["pretrain"]["networks"]
    assert len(networks) == 2 and networks[0]["key"] == base["pretrain"]["key"] != networks[1]["key"]
    assert networks[0]["source"] == "cache" and networks[1]["source"] == "trained"
    assert metrics["members"][0] == base["members"][0] and metrics["members"][1] != base["members"][1]
    assert (tmp / "cache" / "pretrain" / networks[1]["key"] / "model.pt").is_file()
    # MultiBox starts from network 0 either way: the same proposals.
    assert metrics["multibox"] == base["multibox"]
