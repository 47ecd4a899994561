"""Train and score ensemble members side by side in worker processes (``ensemble.workers``).

Why processes and not threads per member: the demo's tiny networks make poor use of a
second intra-op thread (member 0 trains at 1,107 windows/s on one thread and 1,169 on two,
benchmarks/member_speed.py), so two members on one core each finish in about the time one
takes on two.  The cores (``torch.get_num_threads()`` of this process) are shared out
evenly, OpenCV's too.

Workers only fill the cache (``members/<key>/model.pt``, ``scores/<key>.npz``, fitted
post-classifiers): the pipeline then loads what they wrote as it loads any cached member,
so the outputs are those of the cache, and a killed run resumes each member from its own
checkpoint.  Results are deterministic for a given thread count; one thread per worker
rounds differently from two threads in one process, as two machines do (on the tiny test
profile the members' mAPs moved by up to 0.0016).  Each worker's log and progress bars go
to ``<log_dir>/member_<k>.log``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from detect.data.record import DetectionDataset
from detect.members import (fit_post_classifiers, score_member, train_member, trained_model_path,
                            uses_shared_network)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberJob:
    """Everything one member's training and scoring needs (picklable, for a worker process).

    ``classifier``: the member's resolved ``classifier`` group (`Initialisation.for_member`);
    proposals are per-image float32 ``(R_i, 4)`` xyxy with their cache keys.
    """

    member: int
    classifier: dict[str, Any]
    seed: int
    shared_seed: int
    train: DetectionDataset
    train_proposals: list[np.ndarray]
    train_proposals_key: str
    val: DetectionDataset
    val_proposals: list[np.ndarray]
    val_proposals_key: str
    cache_dir: str
    device: str

    def config(self) -> DictConfig:
        return OmegaConf.create(self.classifier)

    def is_trained(self) -> bool:
        return trained_model_path(self.config(), train=self.train, proposals_key=self.train_proposals_key,
                                  seed=self.seed, shared_seed=self.shared_seed, cache_dir=self.cache_dir).exists()


def run_member(job: MemberJob, *, timer: Callable[[str], ContextManager] | None = None,
               ) -> tuple[list[np.ndarray], list[np.ndarray] | None, str]:
    """Train (or load) one member, fit its post-classifiers, score the val regions; all cached.

    ``timer(stage)``: a context manager timing the ``train`` and ``score`` parts (the pipeline's).
    Returns ``(scores per image (R_i, C + 1), refined boxes per image (R_i, C, 4) or None, member key)``.
    """
    timer = timer or (lambda stage: contextlib.nullcontext())
    cfg = job.config()
    with timer("train"):
        model, key = train_member(cfg, train=job.train, proposals=job.train_proposals,
                                  proposals_key=job.train_proposals_key, seed=job.seed, shared_seed=job.shared_seed,
                                  cache_dir=job.cache_dir, device=job.device)
        svm, bbox_reg = fit_post_classifiers(model, cfg, member_key=key, train=job.train,
                                             proposals=job.train_proposals, seed=job.seed, cache_dir=job.cache_dir,
                                             device=job.device)
    with timer("score"):
        scores, refined = score_member(model, cfg, member_key=key, dataset=job.val, proposals=job.val_proposals,
                                       proposals_key=job.val_proposals_key, cache_dir=job.cache_dir,
                                       device=job.device, svm=svm, bbox_reg=bbox_reg)
    return scores, refined, key


def prepare_members(jobs: list[MemberJob], *, workers: int, log_dir: Path) -> None:
    """Train and score, ``workers`` at a time, every job whose network is not in the cache yet.

    With fewer than two such jobs (or ``workers == 1``) nothing runs here: the caller's
    sequential loop does the work in its own process.  With ``classifier.shared.iterations``
    the first job runs alone, so that one worker trains the network the others start from.
    Errors in a worker are raised here, after the jobs already running have finished (their
    members stay cached).
    """
    todo = [job for job in jobs if not job.is_trained()]
    if workers < 2 or len(todo) < 2:
        return
    workers = min(workers, len(todo))
    threads = max(1, torch.get_num_threads() // workers)
    log_dir.mkdir(parents=True, exist_ok=True)
    shared = uses_shared_network(todo[0].config())
    log.info("members: %d to train in %d worker processes (%d thread%s each; logs in %s)", len(todo), workers,
             threads, "" if threads == 1 else "s", log_dir)
    context = multiprocessing.get_context("spawn")  # no fork of a process holding OpenMP and torch threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool, \
            tqdm(total=len(todo), desc=f"members ({workers} workers)", unit="member") as bar:
        queue = list(todo)
        running: dict[Future, tuple[MemberJob, float]] = {}
        failure: BaseException | None = None
        while queue or running:
            # The shared network first: hold the other jobs back until the first one is done.
            limit = 1 if shared and bar.n == 0 else workers
            while queue and failure is None and len(running) < limit:
                job = queue.pop(0)
                running[pool.submit(_logged_run, job, log_dir / f"member_{job.member}.log")] = (job, time.perf_counter())
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job, t0 = running.pop(future)
                try:
                    key = future.result()
                except BaseException as exc:  # noqa: BLE001 -- re-raised once the running jobs end
                    failure = failure or exc
                    log.error("member %d failed (log: %s)", job.member, log_dir / f"member_{job.member}.log")
                    continue
                bar.update(1)
                log.info("member %d (%s): trained and scored in %.1f s", job.member, key, time.perf_counter() - t0)
        if failure is not None:
            raise failure


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _logged_run(job: MemberJob, log_path: Path) -> str:
    with _log_to(log_path):
        return run_member(job)[2]


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Send this worker's log records and its stderr (progress bars) to ``path`` for one job."""
    root = logging.getLogger()
    with open(path, "a", encoding="utf-8") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        stderr, sys.stderr = sys.stderr, stream
        try:
            yield
        finally:
            sys.stderr = stderr
            root.removeHandler(handler)
            root.setLevel(level)


__all__ = ["MemberJob", "prepare_members", "run_member"]
