"""Cache keys: a short hash of everything that determines a stage's result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from detect.data.record import DetectionDataset

# Bump when a stage's on-disk format or semantics change: old caches are then ignored.
CACHE_VERSION = 1


def config_hash(*parts: Any) -> str:
    """16 hex chars of sha256 over canonical JSON of ``parts`` (dicts with sorted keys)."""
    text = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(path) -> str:
    """16 hex chars of the sha256 of a file's bytes (weights are identified by content, not by path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def weights_identity(path) -> str:
    """What starting weights are, for the cache keys of the stages that fine-tune them.

    Weights made by the pretraining stage (its cache folder ``pretrain/<key>/model.pt`` with
    ``metrics.json``, a shipped ``<key>.pt`` with ``<key>.json``, or the app's copies of both)
    are named by the key of the config that made them: like every other stage, the key says
    what determines the result, so a run whose pretraining was done by another process (one
    thread, not two: other float rounding) still finds the same members.  Any other file is
    named by the hash of its bytes.
    """
    from pathlib import Path

    path = Path(path)
    candidates = [(path.with_suffix(".json"), lambda key: key == path.stem)]
    if path.name == "model.pt":
        candidates.append((path.parent / "metrics.json", lambda key: True))
    for meta, fits in candidates:
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        key = record.get("key") if isinstance(record, dict) else None
        if isinstance(key, str) and key and "top1_error" in record and fits(key):
            return f"pretrain:{key}"
    return file_digest(path)


def dataset_fingerprint(dataset: DetectionDataset) -> str:
    """Identity of a split's content: image ids, file sizes, sizes, boxes and labels.

    File sizes (not modification times) are used, so a byte-identical regenerated
    dataset keeps its caches while any edit to an image or annotation invalidates them.
    """
    h = hashlib.sha256()
    h.update(f"{dataset.name}|{dataset.split}|{len(dataset.classes)}|{sorted(dataset.blacklist)}".encode())
    for rec in dataset.records:
        try:
            size = rec.path.stat().st_size
        except OSError:
            size = -1
        h.update(f"|{rec.image_id}|{rec.index}|{size}|{rec.width}x{rec.height}|".encode())
        h.update(np.ascontiguousarray(rec.boxes, np.float32).tobytes())
        h.update(np.ascontiguousarray(rec.labels, np.int64).tobytes())
    return h.hexdigest()[:16]
