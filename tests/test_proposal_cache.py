"""Proposal extraction cache: hit, miss on config change, resume after a kill, corrupt chunks, shards."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.data.record import ClassList, DetectionDataset, ImageRecord, empty_annotations
from detect.errors import ConfigError, UserError
from proposals import cache as cache_mod
from proposals.cache import ProposalCache, parse_shard
from proposals.background import BACKGROUND_NICE, extracting_in_background
from proposals.extract import ExtractionCancelled, extract_proposals
from proposals.selective_search import SelectiveSearch

NUM_IMAGES = 10
CHUNK = 3  # chunks: [0,3) [3,6) [6,9) [9,10)


def make_dataset(root: Path, n: int = NUM_IMAGES) -> DetectionDataset:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = cv2.resize((rng.random((14, 17, 3)) * 255).astype(np.uint8), (100, 80), interpolation=cv2.INTER_CUBIC)
        x, y = int(rng.integers(0, 60)), int(rng.integers(0, 40))
        img[y:y + 30, x:x + 35] = rng.integers(0, 256, 3)
        path = root / f"img_{i}.png"
        cv2.imwrite(str(path), img)
        records.append(ImageRecord(f"img_{i}", i + 1, path, 100, 80, *empty_annotations()))
    return DetectionDataset("tiny", "val", root, ClassList(("n01",), ("thing",)), tuple(records))


SS = SelectiveSearch(mode="fast", base_k=50, inc_k=50, sigma=0.8, min_region_size=50, scale=1,
                     resize_short_side=None, max_long_side=None, max_boxes=None, min_size=0)


class Counting:
    """Wraps a source; counts calls and raises after ``fail_after`` calls (a simulated kill)."""

    def __init__(self, source, fail_after: int | None = None, scored: bool = False):
        self.source, self.fail_after, self.scored, self.calls = source, fail_after, scored, 0

    def __call__(self, image):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        boxes = self.source(image)
        return (boxes, np.linspace(1, 0, len(boxes), dtype=np.float32)) if self.scored else boxes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> DetectionDataset:
    return make_dataset(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    return extract_proposals(dataset, SS, source_id=SS.identity(), cache_dir=tmp_path_factory.mktemp("ref"),
                             workers=1, chunk_size=CHUNK, shard=None, progress=False)


def run(dataset, source, cache_dir, *, source_id=None, workers=1, shard=None):
    return extract_proposals(dataset, source, source_id=source_id or SS.identity(), cache_dir=cache_dir,
                             workers=workers, chunk_size=CHUNK, shard=shard, progress=False)


def assert_same(a, b):
    assert a.image_ids == b.image_ids
    assert len(a.boxes) == len(b.boxes)
    for x, y in zip(a.boxes, b.boxes):
        np.testing.assert_array_equal(x, y)


def chunk_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("proposals/*/chunk_*.npz"))


def test_reference_shapes(reference, dataset):
    assert reference.image_ids == tuple(r.image_id for r in dataset.records)
    assert reference.scores is None
    assert all(b.dtype == np.float32 and b.shape[1] == 4 and len(b) > 0 for b in reference.boxes)


def test_hit_does_no_work(dataset, reference, tmp_path):
    first = Counting(SS)
    assert_same(run(dataset, first, tmp_path), reference)
    assert first.calls == NUM_IMAGES
    assert len(chunk_files(tmp_path)) == 4
    second = Counting(SS)
    assert_same(run(dataset, second, tmp_path), reference)
    assert second.calls == 0


def test_config_change_misses(dataset, tmp_path):
    run(dataset, SS, tmp_path)
    other = dataclasses.replace(SS, scale=2)
    counting = Counting(other)
    result = run(dataset, counting, tmp_path, source_id=other.identity())
    assert counting.calls == NUM_IMAGES
    assert len(list(tmp_path.glob("proposals/*/meta.json"))) == 2
    assert sum(len(b) for b in result.boxes) < sum(len(b) for b in run(dataset, SS, tmp_path).boxes)


def test_resume_after_kill(dataset, reference, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(dataset, Counting(SS, fail_after=7), tmp_path)
    # Images 0..6 were computed, but only the complete chunks [0,3) and [3,6) were written.
    assert [p.name for p in chunk_files(tmp_path)] == ["chunk_00000.npz", "chunk_00001.npz"]
    resumed = Counting(SS)
    assert_same(run(dataset, resumed, tmp_path), reference)
    assert resumed.calls == NUM_IMAGES - 2 * CHUNK


def test_corrupt_chunks_are_recomputed_with_a_warning(dataset, reference, tmp_path):
    run(dataset, SS, tmp_path)
    files = chunk_files(tmp_path)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])  # truncated
    data = bytearray(files[2].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the boxes
    files[2].write_bytes(bytes(data))
    counting = Counting(SS)
    with pytest.warns(UserWarning, match="recomputing") as record:
        result = run(dataset, counting, tmp_path)
    warned = {Path(str(w.message).split(":")[0]).name for w in record if issubclass(w.category, UserWarning)}
    assert warned == {files[1].name, files[2].name}
    assert counting.calls == 2 * CHUNK
    assert_same(result, reference)


def test_other_format_version_is_recomputed(dataset, reference, tmp_path, monkeypatch):
    cache = ProposalCache(tmp_path / "c", [r.image_id for r in dataset.records], chunk_size=CHUNK)
    monkeypatch.setattr(cache_mod, "FORMAT_VERSION", 0)
    cache.write_chunk(0, reference.boxes[:CHUNK], None)
    monkeypatch.setattr(cache_mod, "FORMAT_VERSION", 1)
    with pytest.warns(UserWarning, match="format version 0"):
        assert cache.read_chunk(0) is None
    cache.write_chunk(0, reference.boxes[:CHUNK], None)
    assert all(np.array_equal(a, b) for a, b in zip(cache.read_chunk(0)[0], reference.boxes[:CHUNK]))


def test_shard_union_equals_unsharded(dataset, reference, tmp_path):
    assert run(dataset, SS, tmp_path, shard="0/2") is None
    assert [p.name for p in chunk_files(tmp_path)] == ["chunk_00000.npz", "chunk_00002.npz"]
    cache = next(tmp_path.glob("proposals/*"))
    with pytest.raises(UserError, match="2 of 4 proposal chunks are missing"):
        ProposalCache(cache, reference.image_ids, chunk_size=CHUNK).load()
    second = Counting(SS)
    assert run(dataset, second, tmp_path, shard="1/2") is None
    assert second.calls == 3 + 1  # chunks 1 and 3
    union = Counting(SS)
    assert_same(run(dataset, union, tmp_path), reference)
    assert union.calls == 0
    assert_same(ProposalCache(cache, reference.image_ids, chunk_size=CHUNK).load(), reference)


def test_scores_round_trip(dataset, tmp_path):
    scored = run(dataset, Counting(SS, scored=True), tmp_path, source_id={"source": "scored"})
    again = run(dataset, Counting(SS, scored=True), tmp_path, source_id={"source": "scored"})
    assert again.scores is not None
    for b, s, s2 in zip(scored.boxes, scored.scores, again.scores):
        assert s.shape == (len(b),) and s.dtype == np.float32
        np.testing.assert_array_equal(s, s2)


@pytest.mark.parametrize("bad", ["2/2", "a/b", "1", "-1/3"])
def test_bad_shard_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        parse_shard(bad)


def test_parse_shard():
    assert parse_shard(None) is None
    assert parse_shard("1/4") == (1, 4)


@pytest.mark.slow  # spawning workers imports torch and OpenCV in each (~3 s on 2 cores)
def test_worker_processes_give_identical_proposals(dataset, reference, tmp_path):
    assert run(dataset, SS, tmp_path, shard="0/2", workers=2) is None
    # The other shard in this process, into the same folder: workers is not part of the key.
    assert run(dataset, SS, tmp_path, shard="1/2", workers=1) is None
    union = Counting(SS)
    assert_same(run(dataset, union, tmp_path, workers=2), reference)
    assert union.calls == 0


class _FixedSource:
    """A proposal source with an `identity`, as `detect.proposal_stage.split_proposals` expects."""

    def __init__(self, inner):
        self.inner = inner

    def identity(self):
        return {**self.inner.identity(), "wrapped": "fixed"}

    def __call__(self, image):
        return self.inner(image)


def test_split_report_shows_the_capped_set_the_classifier_sees(dataset, reference, tmp_path):
    from detect.proposal_stage import split_proposals

    source = {"ss": _FixedSource(SS)}
    common = dict(cache_dir=tmp_path, workers=1, chunk_size=CHUNK, shard=None, merge_iou=0.9)
    uncapped = split_proposals(dataset, source, max_per_image=None, **common)
    assert set(uncapped.per_source) == {"ss"}  # nothing was cut: ss is what gets classified
    smallest = min(len(b) for b in reference.boxes)
    assert smallest > 5
    capped = split_proposals(dataset, source, max_per_image=5, **common)
    # one source, but the cap cut boxes: "merged" reports the 5 per image that are classified
    assert set(capped.per_source) == {"ss", "merged"}
    assert [len(b) for b in capped.per_source["merged"]] == [5] * len(dataset.records)
    for full, first in zip(reference.boxes, capped.boxes):
        np.testing.assert_array_equal(first, full[:5])


def test_merge_options_enter_the_key_only_when_set(dataset, tmp_path):
    from detect.proposal_stage import split_proposals

    source = {"ss": _FixedSource(SS)}
    common = dict(cache_dir=tmp_path, workers=1, chunk_size=CHUNK, shard=None, merge_iou=0.9, max_per_image=5)
    default = split_proposals(dataset, source, **common).key
    # Leaving the options at their defaults keeps the key caches were written under before they existed.
    assert split_proposals(dataset, source, merge_order="priority", merge_snap_iou=None, **common).key == default
    # One source has nothing to snap onto: the same boxes, the same key.
    assert split_proposals(dataset, source, merge_snap_iou=0.5, **common).key == default
    two = {"other": _OtherSource(SS), "ss": _FixedSource(SS)}
    keys = {split_proposals(dataset, two, merge_snap_iou=t, **common).key for t in (None, 0.5, 0.6)}
    assert len(keys) == 3


class _OtherSource(_FixedSource):
    def identity(self):
        return {**self.inner.identity(), "wrapped": "other"}


# --- extraction in a background thread (proposals.background) -------------------------------------


def test_background_extraction_fills_the_cache_while_the_block_runs(dataset, reference, tmp_path):
    other = make_dataset(tmp_path / "other", n=4)
    source = Counting(SS)
    with extracting_in_background([dataset, other], source, source_id=SS.identity(), cache_dir=tmp_path,
                                  workers=1, chunk_size=CHUNK):
        pass  # the caller's work (MultiBox training in the pipeline)
    assert source.calls == NUM_IMAGES + 4
    idle = Counting(SS)
    assert_same(run(dataset, idle, tmp_path), reference)  # read from the cache, nothing recomputed
    assert len(run(other, idle, tmp_path).boxes) == 4 and idle.calls == 0


def test_background_extraction_error_is_raised_when_the_block_ends(dataset, tmp_path):
    broken = Counting(SS, fail_after=4)  # raises KeyboardInterrupt on the fifth image
    with pytest.raises(KeyboardInterrupt, match="killed"):
        with extracting_in_background([dataset], broken, source_id=SS.identity(), cache_dir=tmp_path,
                                      workers=1, chunk_size=CHUNK):
            pass
    assert len(chunk_files(tmp_path)) == 1  # the chunk finished before the error stays cached


class _Slow:
    """SS that takes a second per image after the first ``free`` ones."""

    def __init__(self, free: int):
        self.free, self.calls = free, 0

    def __call__(self, image):
        self.calls += 1
        if self.calls > self.free:
            time.sleep(1.0)  # the caller's block fails meanwhile
        return SS(image)


def test_background_extraction_is_cancelled_when_the_block_fails(dataset, tmp_path):
    slow = _Slow(free=3)
    with pytest.raises(RuntimeError, match="training failed"):
        with extracting_in_background([dataset], slow, source_id=SS.identity(), cache_dir=tmp_path,
                                      workers=1, chunk_size=CHUNK):
            while slow.calls <= 3:  # the first chunk is done and the fourth image has started
                time.sleep(0.01)
            raise RuntimeError("training failed")
    assert slow.calls < NUM_IMAGES  # stopped instead of finishing the split
    assert len(chunk_files(tmp_path)) == 1
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(ExtractionCancelled, match="selective_search on tiny/val cancelled"):
        extract_proposals(dataset, SS, source_id=SS.identity(), cache_dir=tmp_path / "c", workers=1,
                          chunk_size=CHUNK, shard=None, progress=False, cancel=cancelled)


class _Niceness:
    """A source whose one box reports the niceness of the process that ran it."""

    def identity(self):
        return {"source": "niceness"}

    def __call__(self, image):
        return np.array([[0, 0, 1 + os.nice(0), 1]], np.float32)


def test_background_workers_run_at_a_lower_priority(dataset, tmp_path):
    own = os.nice(0)
    props = extract_proposals(dataset, _Niceness(), source_id=_Niceness().identity(), cache_dir=tmp_path, workers=2,
                              chunk_size=CHUNK, shard=None, progress=False, nice=BACKGROUND_NICE)
    assert {float(b[0, 2]) - 1 for b in props.boxes} == {min(own + BACKGROUND_NICE, 19)}
    assert os.nice(0) == own  # the caller keeps its priority
