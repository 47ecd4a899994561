"""The proposal stage of the pipeline: Selective Search and/or MultiBox, merged, cached, measured."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from detect.data.record import DetectionDataset
from detect.fingerprint import config_hash
from eval.proposal_metrics import proposal_metrics
from proposals.background import extracting_in_background
from proposals.extract import extract_proposals
from proposals.merge import merge_split
from detect.errors import ConfigError
from proposals.multibox_stage import build_multibox_proposer

log = logging.getLogger(__name__)


@dataclass
class SplitProposals:
    """Per-image proposals of one split used downstream, plus what produced them."""

    boxes: list[np.ndarray]  # float32 (P_i, 4) xyxy, aligned with dataset.records
    key: str  # cache identity of these proposals (keys downstream caches)
    per_source: dict[str, list[np.ndarray]]  # "ss" / "multibox" / "merged" -> per-image boxes
    max_per_image: int | None = None  # the cap that made "merged" (proposals.merge.max_per_image)


SOURCES = ("ss", "multibox")


def build_sources(cfg: DictConfig, train: DetectionDataset, *, cache_dir: str, seed: int,
                  init_weights: Path | None = None) -> dict[str, Any]:
    """Instantiate the proposal sources named in ``cfg.sources``, MultiBox first (its boxes are scored).

    Blocks of sources not listed are ignored: a profile may tune ``proposals.ss`` or
    ``proposals.multibox`` whichever proposals option is chosen.  ``init_weights``: the
    pretrained network MultiBox starts from (``proposals.multibox.init=pretrained``).
    """
    unknown = set(cfg.sources) - set(SOURCES)
    if unknown or not cfg.sources:
        raise ConfigError(f"proposals.sources must be a non-empty subset of {list(SOURCES)}, got {list(cfg.sources)}")
    sources: dict[str, Any] = {}
    if "multibox" in cfg.sources:
        proposer = build_multibox_proposer(train, cache_dir=cache_dir, seed=seed, init_weights=init_weights,
                                           **cfg.multibox)
        if proposer is not None:
            sources["multibox"] = proposer
    if "ss" in cfg.sources:
        sources["ss"] = instantiate(cfg.ss)
    if not sources:
        raise ConfigError("no proposal source is on (proposals.sources=[multibox] with proposals.multibox.top_k=0)")
    return sources


@contextlib.contextmanager
def selective_search_meanwhile(cfg: DictConfig, datasets: Sequence[DetectionDataset], *,
                               cache_dir: str) -> Iterator[None]:
    """Selective Search of ``datasets`` extracted into its cache (``cfg.workers`` processes, in the
    background, `proposals.background`) while the block trains MultiBox and runs it.

    Only when both sources are on; otherwise the block just runs.  The pipeline's later
    `split_proposals` calls then read SS from the cache.
    """
    if "ss" not in cfg.sources or "multibox" not in cfg.sources or not cfg.multibox.top_k:
        yield
        return
    ss = instantiate(cfg.ss)
    with extracting_in_background(datasets, ss, source_id=ss.identity(), cache_dir=cache_dir, workers=cfg.workers,
                                  chunk_size=cfg.chunk_size):
        yield


def merge_arguments(merge: Any) -> dict[str, Any]:
    """`split_proposals`'s merge keywords from the ``proposals.merge`` config block."""
    return dict(merge_iou=merge.iou, max_per_image=merge.max_per_image, merge_order=merge.order,
                merge_snap_iou=merge.snap_iou)


def split_proposals(
    dataset: DetectionDataset, sources: dict[str, Any], *, cache_dir: str, workers: int, chunk_size: int,
    shard: str | None, merge_iou: float, max_per_image: int | None, merge_order: str = "priority",
    merge_snap_iou: float | None = None,
) -> SplitProposals | None:
    """Extract (or load) every source's proposals on ``dataset`` and merge them.

    Returns None when ``shard`` is set (only that shard was computed).
    """
    per_source: dict[str, list[np.ndarray]] = {}
    ids = []
    for name, source in sources.items():
        props = extract_proposals(dataset, source, source_id=source.identity(), cache_dir=cache_dir,
                                  workers=workers, chunk_size=chunk_size, shard=shard)
        if props is None:
            continue
        per_source[name] = props.boxes
        ids.append(source.identity())
    if shard is not None:
        return None
    if len(per_source) < 2:
        merge_snap_iou = None  # nothing to snap onto: the same set, so the same key as without the option
    merged = merge_split(list(per_source.values()), iou_threshold=merge_iou, max_boxes=max_per_image,
                         order=merge_order, snap_iou=merge_snap_iou)
    # "merged" is what the classifier sees; with one source it differs only when the cap cut boxes,
    # and then reporting the uncapped source alone would overstate the classified set's coverage.
    capped = sum(map(len, merged)) < sum(len(b) for boxes in per_source.values() for b in boxes)
    if len(per_source) > 1 or capped:
        per_source["merged"] = merged
    # The defaults keep the key they had before the options existed (caches stay valid).
    extra = ([merge_order] if merge_order != "priority" else []) + ([merge_snap_iou] if merge_snap_iou is not None else [])
    key = config_hash("proposals", ids, merge_iou, max_per_image, *extra)
    return SplitProposals(boxes=merged, key=key, per_source=per_source, max_per_image=max_per_image)


# A capped merged set covering this much less than its best uncapped source gets a warning: on real
# 500x375 photos the demo's 250-region cap covered 7-26% of the objects while SS alone covered 83-100%.
CAP_COVERAGE_DROP = 0.10


def proposal_report(dataset: DetectionDataset, proposals: SplitProposals) -> dict[str, dict]:
    """``metrics.json``'s ``proposals`` entry: per source, ``per_image``, ``coverage``, recall, ABO, curve.

    Logs a warning when ``proposals.merge.max_per_image`` cuts the coverage of the classified
    (merged) set more than `CAP_COVERAGE_DROP` below the best uncapped source's.
    """
    report = {name: proposal_metrics(dataset.records, boxes).summary() for name, boxes in proposals.per_source.items()}
    warn_if_cap_cuts_coverage(report, proposals.max_per_image, split=dataset.split)
    return report


def warn_if_cap_cuts_coverage(report: dict[str, dict], max_per_image: int | None, *, split: str = "") -> bool:
    """Warn (and return True) when the capped ``merged`` coverage is far below an uncapped source's."""
    merged = report.get("merged")
    sources = {k: v for k, v in report.items() if k in SOURCES}
    if max_per_image is None or merged is None or not sources:
        return False
    best, best_name = max((v["coverage"], k) for k, v in sources.items())
    if merged["coverage"] >= best - CAP_COVERAGE_DROP:
        return False
    log.warning("proposals.merge.max_per_image=%d cuts coverage%s: the %.0f regions per image classified cover "
                "%.1f%% of the objects, %s alone (uncapped, %.0f per image) covers %.1f%%; raise the cap or set "
                "proposals.merge.max_per_image=null (profile=cpu_real is meant for real photos on a CPU)",
                max_per_image, f" on split {split!r}" if split else "", merged["per_image"], 100 * merged["coverage"],
                best_name, sources[best_name]["per_image"], 100 * best)
    return True
