"""Proposals extracted in a background thread while the caller's thread does other work.

The pipeline uses it to run Selective Search over the train and val splits while MultiBox
trains: on a 2-core CPU the MultiBox network (tiny, one torch thread) and two SS worker
processes share the cores instead of taking turns (README, "Measured results": the
demo's proposal stage 287 s -> 216 s).  The extraction writes the usual chunked cache, so the
later `extract_proposals` calls of the pipeline read it instead of computing it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

from detect.data.record import DetectionDataset
from proposals.extract import ExtractionCancelled, ProposalSource, extract_proposals

log = logging.getLogger(__name__)

# The extraction's processes yield to the caller's thread: MultiBox trains on one thread, so
# at equal priority 2 SS processes and it shared 2 cores three ways and its training, the
# longer job, set the pace (0.20 s per iteration; 0.147 s with the SS processes at nice 10).
BACKGROUND_NICE = 10


@contextlib.contextmanager
def extracting_in_background(
    datasets: Sequence[DetectionDataset],
    source: ProposalSource,
    *,
    source_id: Mapping[str, Any],
    cache_dir: str,
    workers: int,
    chunk_size: int,
) -> Iterator[None]:
    """Extract ``source``'s proposals of each of ``datasets`` into the cache while the block runs.

    A background thread runs `extract_proposals` (``workers`` processes at niceness
    `BACKGROUND_NICE`, no progress bar) on each dataset in turn.  Leaving the block waits for
    it and raises its error, if it had one.  If the block raises, the extraction is cancelled (finished chunks stay cached, the
    images queued are dropped) and the block's error propagates.
    """
    if not datasets:
        yield
        return
    cancel = threading.Event()
    errors: list[BaseException] = []
    name = source_id.get("source", "proposals")

    def work() -> None:
        try:
            for dataset in datasets:
                t0 = time.perf_counter()
                extract_proposals(dataset, source, source_id=source_id, cache_dir=cache_dir, workers=workers,
                                  chunk_size=chunk_size, shard=None, progress=False, cancel=cancel,
                                  nice=BACKGROUND_NICE)
                log.info("%s on %s/%s: done in the background in %.0f s", name, dataset.name, dataset.split,
                         time.perf_counter() - t0)
        except ExtractionCancelled:
            pass
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"{name}-background", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        cancel.set()
        thread.join()
        raise
    if thread.is_alive():
        log.info("waiting for %s in the background to finish", name)
    thread.join()
    if errors:
        raise errors[0]


__all__ = ["extracting_in_background"]
