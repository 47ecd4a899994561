"""Run a proposal source over a dataset split: parallel processes, chunked cache, resume, shards.

A *proposal source* is any picklable callable ``source(image (H, W, 3) uint8 RGB)``
returning float32 ``(N, 4)`` xyxy boxes in that image's pixels, ranked best first,
or ``(boxes, scores (N,))``: `proposals.selective_search.SelectiveSearch`,
`proposals.multibox.MultiBoxProposer`.  Its ``source_id`` (a JSON-able mapping
of everything that changes its output) keys the cache, see `proposals.cache`.

Workers are spawned processes (``spawn`` is safe with torch and OpenMP state in
the parent, unlike ``fork``); each gets the source once, loads its own images
and runs with OpenCV and torch pinned to one thread, so ``workers`` processes
use ``workers`` cores instead of oversubscribing them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import cv2
import numpy as np
from tqdm import tqdm

from detect.data.image_io import load_rgb
from detect.data.record import DetectionDataset
from detect.errors import ConfigError
from proposals.cache import Chunk, ProposalCache, Proposals, as_boxes_scores, assemble, parse_shard

log = logging.getLogger(__name__)

ProposalSource = Callable[[np.ndarray], Any]


class ExtractionCancelled(Exception):
    """`extract_proposals` stopped because its ``cancel`` event was set."""


_worker_source: ProposalSource | None = None


def propose_file(source: ProposalSource, path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one image file and run ``source`` on it -> ``(boxes (N, 4), scores (N,) or None)``."""
    return as_boxes_scores(source(load_rgb(Path(path))))


def _init_worker(source: ProposalSource, nice: int) -> None:
    import torch

    global _worker_source
    if nice and hasattr(os, "nice"):  # Unix: a background extraction yields the cores to the caller's work
        os.nice(nice)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _worker_source = source


def _worker_propose(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    assert _worker_source is not None, "worker not initialised"
    return propose_file(_worker_source, path)


def _run(source: ProposalSource, paths: list[str], workers: int,
         nice: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Proposals for ``paths``, in order; in this process when ``workers == 1``."""
    if workers <= 1 or len(paths) <= 1:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # one worker = one core, as in the pool
        try:
            for path in paths:
                yield propose_file(source, path)
        finally:
            cv2.setNumThreads(threads)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(paths)), mp_context=ctx, initializer=_init_worker,
                             initargs=(source, nice)) as pool:
        # map() yields in order and cancels what is still queued if the consumer stops (error, kill).
        yield from pool.map(_worker_propose, paths, chunksize=1)


def extract_proposals(
    dataset: DetectionDataset,
    source: ProposalSource,
    *,
    source_id: Mapping[str, Any],
    cache_dir: str | Path,
    workers: int,
    chunk_size: int,
    shard: str | None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    nice: int = 0,
) -> Proposals | None:
    """Proposals for every image of ``dataset``, computed once and cached.

    Args:
        dataset: the split; images are read from ``record.path``.
        source: the proposal source (see the module docstring).
        source_id: what identifies the source's output (e.g. `SelectiveSearch.identity`).
        cache_dir: stage cache root; files go to ``<cache_dir>/proposals/<key>/``.
        workers: processes computing proposals (1: in this process).
        chunk_size: images per cache file (the resume granularity).
        shard: ``"i/n"``: only compute chunks ``c % n == i`` (another process or
            machine runs the other shards into the same folder); None: everything.
        progress: show a tqdm bar.
        cancel: set from another thread to stop after the image in hand: what is queued is
            dropped, finished chunks stay cached, and `ExtractionCancelled` is raised.
        nice: added to the niceness of the worker processes (Unix; ``workers > 1``): a
            background extraction yields the cores to the caller's own work.
    Returns:
        `Proposals` for the whole split, or None when ``shard`` is set (run an
        unsharded call afterwards to load the union; it computes whatever is missing).
    """
    if workers < 1:
        raise ConfigError(f"proposals.workers must be >= 1, got {workers}")
    shard_ = parse_shard(shard)
    cache = ProposalCache.for_split(cache_dir, dataset, source_id=source_id, chunk_size=chunk_size)
    chunks = cache.shard_chunks(shard_)
    done: dict[int, Chunk] = {}
    todo = []
    for c in chunks:
        chunk = cache.read_chunk(c)
        if chunk is None:
            todo.append(c)
        elif shard_ is None:
            done[c] = chunk
    name = source_id.get("source", "proposals")
    log.info("%s on %s/%s: %d of %d chunks cached in %s", name, dataset.name, dataset.split,
             len(chunks) - len(todo), len(chunks), cache.directory)
    if todo:
        positions = [i for c in todo for i in range(*cache.chunk_bounds(c))]
        results = _run(source, [str(dataset.records[i].path) for i in positions], workers, nice)
        with contextlib.closing(results), tqdm(total=len(positions), desc=f"{name} {dataset.split}", unit="img",
                                               disable=not progress) as bar:
            for c in todo:
                start, stop = cache.chunk_bounds(c)
                boxes, scores = [], []
                for _ in range(start, stop):
                    if cancel is not None and cancel.is_set():
                        raise ExtractionCancelled(f"{name} on {dataset.name}/{dataset.split} cancelled")
                    b, s = next(results)
                    boxes.append(b)
                    scores.append(s)
                    bar.update(1)
                scored = [s is not None for s in scores]
                if any(scored) and not all(scored):
                    raise ValueError(f"proposal source {name} returned scores for some images only")
                chunk = (boxes, scores if all(scored) and scores else None)
                cache.write_chunk(c, *chunk)
                if shard_ is None:
                    done[c] = chunk
    if shard_ is not None:
        return None
    return assemble(cache.image_ids, [done[c] for c in range(cache.num_chunks)])
