"""On-disk proposal cache: one folder per (proposal source config, dataset split), filled chunk by chunk.

Layout of ``<cache_dir>/proposals/<key>/``::

    meta.json          what produced the folder (for people; not read back)
    chunk_00000.npz    images [0, chunk_size) of the split, in split order
    chunk_00001.npz    images [chunk_size, 2 chunk_size) ...

``key`` hashes the format version, the source's identity (every parameter that
changes its output, not ``workers`` or ``shard``), the dataset identity (name,
split, image ids, decoded sizes and file sizes; file sizes rather than
modification times so a byte-identical regenerated or copied dataset keeps its
cache, and not the root path so a moved dataset does too) and ``chunk_size``.

Each chunk is one ``np.savez`` file, written atomically (temp file + rename),
holding ``format_version``, ``image_ids``, ``counts`` (boxes per image), the
concatenated ``boxes`` float32 ``(M, 4)`` xyxy, ``scores`` float32 ``(M,)``
when the source gives them, and ``checksum`` (sha256 over all of those).  A
chunk that is missing is computed; one that fails to load, fails its checksum,
holds other images or another format version is recomputed with a warning.
Because chunks are independent files, a killed extraction resumes with the chunks
still missing, and shard ``i/n`` (chunks ``c`` with ``c % n == i``) can run in
another process or machine into the same folder.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from detect import atomic
from detect.data.record import DetectionDataset
from detect.errors import ConfigError, UserError

# Bump when the chunk format or the meaning of cached boxes changes: old caches are then recomputed.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Proposals:
    """Proposals of a whole split, aligned with ``dataset.records``.

    ``boxes[i]``: float32 ``(N_i, 4)`` xyxy in image ``i``'s original pixels, ranked
    (best first); ``scores[i]``: float32 ``(N_i,)``, or ``scores is None`` when the
    source does not score its boxes (Selective Search).
    """

    image_ids: tuple[str, ...]
    boxes: list[np.ndarray]
    scores: list[np.ndarray] | None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def per_image(self) -> float:
        """Mean number of boxes per image."""
        return float(np.mean([len(b) for b in self.boxes])) if self.boxes else 0.0


Chunk = tuple[list[np.ndarray], list[np.ndarray] | None]  # (boxes per image, scores per image or None)


def assemble(image_ids: Sequence[str], chunks: Sequence[Chunk]) -> Proposals:
    """`Proposals` from consecutive chunks (scores only when every chunk has them)."""
    boxes = [b for chunk in chunks for b in chunk[0]]
    scored = all(chunk[1] is not None for chunk in chunks)
    scores = [s for chunk in chunks for s in chunk[1]] if scored else None
    if len(boxes) != len(image_ids):
        raise ValueError(f"{len(boxes)} box arrays for {len(image_ids)} images")
    return Proposals(tuple(image_ids), boxes, scores)


def as_boxes_scores(output: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise a proposal source's output: ``boxes`` or ``(boxes, scores)`` -> float32 arrays.

    Raises ValueError for shapes that are not ``(N, 4)`` / ``(N,)``.
    """
    scores = None
    if isinstance(output, tuple):
        output, scores = output
    boxes = np.asarray(output, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"a proposal source must return (N, 4) boxes, got shape {boxes.shape}")
    if scores is not None:
        scores = np.asarray(scores, np.float32)
        if scores.shape != (len(boxes),):
            raise ValueError(f"scores shape {scores.shape} does not match {len(boxes)} boxes")
    return boxes, scores


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 <= i < n) -> ``(i, n)``; None -> None."""
    if shard is None:
        return None
    parts = str(shard).split("/")
    try:
        i, n = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"proposals.shard must look like 'i/n' (e.g. 0/4), got {shard!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"proposals.shard {shard!r}: need 0 <= i < n")
    return i, n


def dataset_identity(dataset: DetectionDataset) -> dict[str, Any]:
    """Name, split, image count and a hash of every image's id, decoded size and file size."""
    h = hashlib.sha256()
    for rec in dataset.records:
        try:
            size = rec.path.stat().st_size
        except OSError:
            size = -1
        h.update(f"{rec.image_id}|{rec.width}x{rec.height}|{size}\n".encode())
    return {"name": dataset.name, "split": dataset.split, "images": len(dataset.records), "hash": h.hexdigest()}


def cache_key(source_id: Mapping[str, Any], identity: Mapping[str, Any], *, chunk_size: int) -> str:
    """16 hex chars of sha256 over canonical JSON of everything that determines the cached files."""
    text = json.dumps({"format": FORMAT_VERSION, "source": source_id, "dataset": identity, "chunk_size": chunk_size},
                      sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _checksum(version: int, image_ids: np.ndarray, counts: np.ndarray, boxes: np.ndarray,
              scores: np.ndarray | None) -> str:
    h = hashlib.sha256()
    h.update(f"v{int(version)}\n".encode())
    h.update("\n".join(str(i) for i in image_ids).encode())
    h.update(np.ascontiguousarray(counts, "<i8").tobytes())
    h.update(np.ascontiguousarray(boxes, "<f4").tobytes())
    if scores is not None:
        h.update(b"scores")
        h.update(np.ascontiguousarray(scores, "<f4").tobytes())
    return h.hexdigest()


class CorruptChunk(Exception):
    """A chunk file that exists but cannot be used (internal: turned into a warning)."""


class ProposalCache:
    """The chunk files of one (source, split) cache folder.

    Args:
        directory: the folder (created on first write).
        image_ids: the split's image ids in order.
        chunk_size: images per chunk file.
    """

    def __init__(self, directory: str | Path, image_ids: Sequence[str], *, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ConfigError(f"proposals.chunk_size must be >= 1, got {chunk_size}")
        self.directory = Path(directory)
        self.image_ids = tuple(image_ids)
        self.chunk_size = chunk_size

    @classmethod
    def for_split(cls, cache_dir: str | Path, dataset: DetectionDataset, *, source_id: Mapping[str, Any],
                  chunk_size: int) -> ProposalCache:
        """The cache folder of ``dataset`` under ``<cache_dir>/proposals/<key>/``; writes ``meta.json``."""
        identity = dataset_identity(dataset)
        key = cache_key(source_id, identity, chunk_size=chunk_size)
        cache = cls(Path(cache_dir) / "proposals" / key, [r.image_id for r in dataset.records],
                    chunk_size=chunk_size)
        meta = cache.directory / "meta.json"
        if not meta.exists():
            atomic.write_json(meta, {"format_version": FORMAT_VERSION, "source": dict(source_id),
                                     "dataset": {**identity, "root": str(dataset.root)},
                                     "chunk_size": chunk_size, "num_chunks": cache.num_chunks})
        return cache

    @property
    def num_chunks(self) -> int:
        return -(-len(self.image_ids) // self.chunk_size)

    def chunk_bounds(self, c: int) -> tuple[int, int]:
        """``[start, stop)`` positions of chunk ``c``'s images in the split."""
        return c * self.chunk_size, min((c + 1) * self.chunk_size, len(self.image_ids))

    def chunk_path(self, c: int) -> Path:
        return self.directory / f"chunk_{c:05d}.npz"

    def shard_chunks(self, shard: tuple[int, int] | None) -> list[int]:
        """Chunks of shard ``(i, n)``: ``c % n == i`` (round robin balances the shards); None: all."""
        chunks = range(self.num_chunks)
        return list(chunks) if shard is None else [c for c in chunks if c % shard[1] == shard[0]]

    def write_chunk(self, c: int, boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray] | None) -> None:
        """Store chunk ``c``: one float32 ``(N_i, 4)`` array (and ``(N_i,)`` scores) per image of the chunk."""
        start, stop = self.chunk_bounds(c)
        if len(boxes) != stop - start or (scores is not None and len(scores) != len(boxes)):
            raise ValueError(f"chunk {c} holds {stop - start} images, got {len(boxes)} box arrays")
        ids = np.array(self.image_ids[start:stop], dtype=str)
        counts = np.array([len(b) for b in boxes], np.int64)
        flat = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]) if len(boxes) else \
            np.zeros((0, 4), np.float32)
        arrays = dict(format_version=np.array(FORMAT_VERSION, np.int64), image_ids=ids, counts=counts, boxes=flat)
        flat_scores = None
        if scores is not None:
            flat_scores = np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in scores]) if len(scores) \
                else np.zeros((0,), np.float32)
            arrays["scores"] = flat_scores
        arrays["checksum"] = np.array(_checksum(FORMAT_VERSION, ids, counts, flat, flat_scores))
        atomic.save_npz(self.chunk_path(c), **arrays)

    def _read(self, c: int) -> Chunk:
        path = self.chunk_path(c)
        start, stop = self.chunk_bounds(c)
        try:
            # Our own file handle: np.load leaks the one it opens when the zip is broken.
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise CorruptChunk(f"unreadable ({type(exc).__name__}: {exc})") from None
        try:
            version = int(data["format_version"])
            ids, counts, boxes = data["image_ids"], data["counts"], data["boxes"]
            scores = data.get("scores")
            checksum = str(data["checksum"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptChunk(f"missing or malformed field ({exc})") from None
        if version != FORMAT_VERSION:
            raise CorruptChunk(f"written by format version {version}, this code reads {FORMAT_VERSION}")
        if checksum != _checksum(version, ids, counts, boxes, scores):
            raise CorruptChunk("checksum mismatch")
        if tuple(ids.tolist()) != self.image_ids[start:stop]:
            raise CorruptChunk("holds other images than the split's")
        if boxes.ndim != 2 or boxes.shape[1] != 4 or counts.sum() != len(boxes):
            raise CorruptChunk(f"boxes {boxes.shape} disagree with counts (sum {counts.sum()})")
        splits = np.cumsum(counts)[:-1]
        per_image_scores = None if scores is None else list(np.split(scores, splits))
        return list(np.split(boxes, splits)), per_image_scores

    def read_chunk(self, c: int) -> Chunk | None:
        """Chunk ``c`` as ``(boxes per image, scores per image or None)``; None when missing or unusable.

        An unusable file (truncated, corrupt, another format version, other images)
        gives a warning naming it; the caller recomputes the chunk.
        """
        path = self.chunk_path(c)
        if not path.exists():
            return None
        try:
            return self._read(c)
        except CorruptChunk as exc:
            warnings.warn(f"{path}: proposal cache chunk {exc}; recomputing it", stacklevel=2)
            return None

    def load(self) -> Proposals:
        """The whole split; raises `UserError` naming the missing chunks when some are not cached."""
        chunks = [self.read_chunk(c) for c in range(self.num_chunks)]
        missing = [c for c, chunk in enumerate(chunks) if chunk is None]
        if missing:
            raise UserError(f"{self.directory}: {len(missing)} of {self.num_chunks} proposal chunks are missing "
                            f"(first: {missing[0]}); run the remaining shards or an unsharded extraction")
        return assemble(self.image_ids, chunks)
