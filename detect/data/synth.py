"""Embedded default dataset: a seeded generator that writes a small ILSVRC DET dataset.

The output uses the ILSVRC 2015 DET layout, so `detect.data.ilsvrc.IlsvrcSource`
(the real reader) is what reads it::

    Data/DET/<split>/<name>.JPEG           images
    Annotations/DET/<split>/<name>.xml     VOC-style XML, <name> is the synset
    ImageSets/DET/<split>.txt              lines '<name> <index>' (1-based)
    devkit/data/map_det.txt                lines '<synset> <class_id> <name>'
    devkit/data/ILSVRC2014_det_validation_blacklist.txt   lines '<index> <synset>'
    manifest.json                          knobs and statistics
    DONE                                   written last: generator id and knob hash

What makes it a detection problem rather than a colour lookup
-------------------------------------------------------------
Each class is a (shape family, texture) pair (`CLASSES`): every shape belongs
to at most two classes, every texture to three, and the class colour is a hue
drawn around a class mean with a spread (``hue_std``) wider than the spacing of
the means, so neither shape, texture nor colour alone names the class.
Distractors (not annotated) use the same textures and colours on other shapes,
and "hard" distractors put a class shape under a texture no class pairs with
it.  Backgrounds carry gradients, low-frequency colour noise, translucent
blobs, lines and textured patches (so texture alone does not mark an object).
Objects range from ~5% to ~70% of the short image side (log-uniform, so small
objects are common, as in ILSVRC), with varied aspect ratio, rotation and
shear; later objects occlude earlier ones and some cross the image border.

Annotation follows ILSVRC: the box covers the whole object (its pixel extent
before occlusion), clipped to the image; integer 0-based pixel indices with
``xmax``/``ymax`` the last covered pixel.  An object is never placed so that
less than ``min_visible_fraction`` of its area stays visible (occlusion and
truncation together): a heavily hidden object would be neither findable nor
fair to count as a miss.

Determinism: every image draws from its own ``numpy`` Generator seeded by
``(seed, split, index)``, so the same knobs give byte-identical files
(PIL JPEG encoding with fixed settings, no timestamps anywhere).

Atomicity: the dataset is written into ``<root>.tmp-<pid>`` and renamed onto
``root`` when complete, with the ``DONE`` marker (holding the knob hash)
written last; `SyntheticSource` regenerates when the marker is missing or its
hash differs.  A SIGKILLed run may leave a ``<root>.tmp-<pid>`` folder behind,
which is safe to delete.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from detect.cli import run_cli, run_user_errors
from detect.data.ilsvrc import IlsvrcSource
from detect.data.record import DetectionDataset
from detect.data.synth_scene import CLASSES, ObjectClass, Sample, SampleObject, render_sample
from detect.errors import ConfigError, DataError, config_float, config_int
from detect.fingerprint import config_hash

log = logging.getLogger(__name__)

# Bump when the pictures or annotations change for the same knobs: cached copies are regenerated.
GENERATOR_VERSION = 1
GENERATOR_ID = "detect.data.synth"

# The layout the generator writes and hands to IlsvrcSource (the 2015 preset of conf/data/ilsvrc.yaml).
IMAGES_DIR = "Data/DET/{split}"
ANNOTATIONS_DIR = "Annotations/DET/{split}"
SPLIT_LIST = "ImageSets/DET/{split}.txt"
CLASS_LIST = "devkit/data/map_det.txt"
BLACKLIST = "devkit/data/ILSVRC2014_det_validation_blacklist.txt"
IMAGE_EXT = ".JPEG"
DONE = "DONE"
MANIFEST = "manifest.json"

# Relative object size sqrt(box area / image area): bucket edges of the printed histogram.
SIZE_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)

# --------------------------------------------------------------------------- knobs

def _range(name: str, value, cast=float, low=None, high=None, *, group: str = "data") -> tuple:
    try:
        lo, hi = (cast(x) for x in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{group}.{name} must be a [min, max] pair, got {value!r}") from None
    if lo > hi or (low is not None and lo < low) or (high is not None and hi > high):
        raise ConfigError(f"{group}.{name} must satisfy {low} <= min <= max <= {high}, got {[lo, hi]}")
    return lo, hi


@dataclass(frozen=True)
class GeneratorParams:
    """Every knob of the generator (conf/data/synthetic.yaml documents each one).

    Ranges are ``(min, max)`` pairs drawn uniformly unless stated otherwise.
    """

    seed: int
    splits: dict[str, int]
    num_classes: int
    image_long_side: tuple[int, int]
    image_aspect: tuple[float, float]
    portrait_prob: float
    negative_fraction: float
    missing_xml_fraction: float
    objects_per_image: tuple[float, ...]
    object_scale: tuple[float, float]
    max_aspect: float
    max_rotation: float
    max_shear: float
    hue_std: float
    truncation_prob: float
    min_visible_fraction: float
    min_box_side: int
    placement_tries: int
    distractors: tuple[int, int]
    hard_distractor_prob: float
    clutter_blobs: tuple[int, int]
    clutter_lines: tuple[int, int]
    clutter_textures: tuple[int, int]
    noise_std: tuple[float, float]
    blur_prob: float
    jpeg_quality: int
    blacklist_split: str | None
    blacklist_entries: int

    def __post_init__(self) -> None:
        # Hydra hands DictConfig/ListConfig: normalise to plain values (hashable, JSON-able).
        fix = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        try:
            splits = {str(k): v for k, v in dict(self.splits).items()}
        except (TypeError, ValueError):
            raise ConfigError(f"data.splits must map split names to image counts, got {self.splits!r}") from None
        if not splits:
            raise ConfigError("data.splits needs at least one split, each with >= 1 image, got {}")
        splits = {name: config_int(f"data.splits.{name}", n, low=1) for name, n in splits.items()}
        for name in splits:
            if not name or "/" in name or name.startswith("."):
                raise ConfigError(f"data.splits: {name!r} is not a usable split name")
        fix("splits", splits)
        fix("seed", config_int("data.seed", self.seed, low=0))  # numpy seeds are non-negative
        if not 1 <= config_int("data.num_classes", self.num_classes) <= len(CLASSES):
            raise ConfigError(f"data.num_classes must be in 1..{len(CLASSES)}, got {self.num_classes}")
        fix("num_classes", int(self.num_classes))
        fix("image_long_side", _range("image_long_side", self.image_long_side, int, 16, 4096))
        fix("image_aspect", _range("image_aspect", self.image_aspect, float, 0.1, 1.0))
        fix("object_scale", _range("object_scale", self.object_scale, float, 1e-3, 2.0))
        fix("distractors", _range("distractors", self.distractors, int, 0))
        fix("clutter_blobs", _range("clutter_blobs", self.clutter_blobs, int, 0))
        fix("clutter_lines", _range("clutter_lines", self.clutter_lines, int, 0))
        fix("clutter_textures", _range("clutter_textures", self.clutter_textures, int, 0))
        fix("noise_std", _range("noise_std", self.noise_std, float, 0.0))
        weights = tuple(config_float(f"data.objects_per_image[{i}]", w)
                        for i, w in enumerate(self.objects_per_image))
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"data.objects_per_image must be non-negative weights for 1..N objects, got {weights}")
        fix("objects_per_image", weights)
        for key in ("portrait_prob", "negative_fraction", "missing_xml_fraction", "truncation_prob",
                    "min_visible_fraction", "hard_distractor_prob", "blur_prob"):
            value = config_float(f"data.{key}", getattr(self, key))
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1], got {value}")
            fix(key, value)
        for key, low in (("max_aspect", 1.0), ("max_rotation", 0.0), ("max_shear", 0.0), ("hue_std", 0.0)):
            fix(key, config_float(f"data.{key}", getattr(self, key), low=low))
        for key, low in (("min_box_side", 1), ("placement_tries", 1), ("blacklist_entries", 0)):
            fix(key, config_int(f"data.{key}", getattr(self, key), low=low))
        if not 1 <= config_int("data.jpeg_quality", self.jpeg_quality) <= 100:
            raise ConfigError(f"data.jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        fix("jpeg_quality", int(self.jpeg_quality))
        if self.blacklist_split is not None:
            fix("blacklist_split", str(self.blacklist_split))
        if self.blacklist_split is not None and self.blacklist_split not in splits:
            raise ConfigError(f"data.blacklist_split {self.blacklist_split!r} is not one of data.splits {list(splits)}")

    def knobs(self) -> dict[str, Any]:
        """The generator knobs as plain JSON values."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(GeneratorParams)}

    def knob_hash(self) -> str:
        return config_hash(GENERATOR_ID, GENERATOR_VERSION, self.knobs())


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    return value


# --------------------------------------------------------------------------- files

def _jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    # Fixed encoder settings and no metadata: same pixels -> same bytes.
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False,
                                progressive=False)
    return buf.getvalue()


def annotation_xml(name: str, split: str, width: int, height: int, objects: list[SampleObject],
                   classes: tuple[ObjectClass, ...]) -> str:
    """VOC-style ILSVRC XML; ``<truncated>``/``<occluded>`` are extra (the reader ignores them)."""
    lines = ["<annotation>", f"\t<folder>{escape(split)}</folder>", f"\t<filename>{escape(name)}</filename>",
             "\t<source>", "\t\t<database>synthetic</database>", "\t</source>",
             "\t<size>", f"\t\t<width>{width}</width>", f"\t\t<height>{height}</height>", "\t</size>"]
    for obj in objects:
        x1, y1, x2, y2 = obj.box
        lines += ["\t<object>", f"\t\t<name>{escape(classes[obj.class_index].synset)}</name>",
                  "\t\t<bndbox>", f"\t\t\t<xmin>{x1}</xmin>", f"\t\t\t<ymin>{y1}</ymin>",
                  f"\t\t\t<xmax>{x2}</xmax>", f"\t\t\t<ymax>{y2}</ymax>", "\t\t</bndbox>",
                  f"\t\t<truncated>{int(obj.truncated)}</truncated>", f"\t\t<occluded>{int(obj.occluded)}</occluded>",
                  "\t</object>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def _size_bucket_labels() -> list[str]:
    e = SIZE_BUCKETS
    return [f"{100 * e[i]:g}-{100 * e[i + 1]:g}%" for i in range(len(e) - 1)]


class _SplitStats:
    def __init__(self, classes: tuple[ObjectClass, ...]):
        self.classes = classes
        self.images = self.negatives = self.without_xml = self.objects = 0
        self.truncated = self.occluded = self.distractors = 0
        self.per_class = [0] * len(classes)
        self.sizes = [0] * (len(SIZE_BUCKETS) - 1)

    def add(self, sample: Sample) -> None:
        h, w = sample.image.shape[:2]
        self.images += 1
        self.negatives += not sample.objects
        self.without_xml += not sample.write_xml
        self.distractors += sample.distractors
        for obj in sample.objects:
            self.objects += 1
            self.per_class[obj.class_index] += 1
            self.truncated += obj.truncated
            self.occluded += obj.occluded
            x1, y1, x2, y2 = obj.box
            rel = math.sqrt((x2 - x1 + 1) * (y2 - y1 + 1) / (w * h))
            bucket = int(np.searchsorted(SIZE_BUCKETS, rel, side="right")) - 1
            self.sizes[min(max(bucket, 0), len(self.sizes) - 1)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images, "negative_images": self.negatives, "images_without_xml": self.without_xml,
            "objects": self.objects, "truncated": self.truncated, "occluded": self.occluded,
            "distractors": self.distractors,
            "per_class": {c.name: n for c, n in zip(self.classes, self.per_class)},
            "relative_size_histogram": dict(zip(_size_bucket_labels(), self.sizes)),
        }


def _render_files(p: GeneratorParams, split: str, classes, index: int) -> tuple[Sample, bytes, str | None]:
    """Image ``index`` of ``split``: its sample, JPEG bytes and annotation XML (None: no file)."""
    sample = render_sample(p, split, index)
    name = f"synthetic_{split}_{index:06d}"
    xml = None
    if sample.write_xml:
        h, w = sample.image.shape[:2]
        xml = annotation_xml(name, split, w, h, sample.objects, classes)
    return sample, _jpeg_bytes(sample.image, p.jpeg_quality), xml


def _write_split(tmp: Path, split: str, count: int, p: GeneratorParams, classes, progress: bool, workers: int):
    images_dir = tmp / IMAGES_DIR.format(split=split)
    ann_dir = tmp / ANNOTATIONS_DIR.format(split=split)
    images_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    stats = _SplitStats(classes)
    names, present = [], []
    render = partial(_render_files, p, split, classes)
    with contextlib.ExitStack() as stack:
        if workers > 1 and count > 1:
            # Every image is a pure function of (knobs, split, index): any number of processes writes the same files.
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers,
                                                           mp_context=multiprocessing.get_context("spawn")))
            rendered = pool.map(render, range(1, count + 1), chunksize=8)
        else:
            rendered = map(render, range(1, count + 1))
        for index, (sample, jpeg, xml) in enumerate(tqdm(rendered, total=count, desc=f"synthetic {split}", unit="img",
                                                         disable=not progress, leave=False), 1):
            name = f"synthetic_{split}_{index:06d}"
            names.append(name)
            (images_dir / f"{name}{IMAGE_EXT}").write_bytes(jpeg)
            if xml is not None:
                (ann_dir / f"{name}.xml").write_text(xml, encoding="utf-8")
            stats.add(sample)
            present.extend(sorted({(index, o.class_index) for o in sample.objects}))
    list_path = tmp / SPLIT_LIST.format(split=split)
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("".join(f"{n} {i}\n" for i, n in enumerate(names, 1)), encoding="utf-8")
    return stats, present


def _is_generated(root: Path, generator: str = GENERATOR_ID) -> dict | None:
    """The DONE marker's content when ``root`` holds a complete dataset written by ``generator``, else None."""
    try:
        marker = json.loads((root / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == generator else None


def staging_folder(root: Path, *, generator: str, what: str, key: str) -> Path:
    """The empty ``<root>.tmp-<pid>`` folder a generator writes into before renaming it onto ``root``.

    `DataError` when ``root`` exists and is neither empty nor a dataset ``generator`` wrote
    (it is never overwritten).
    """
    if root.exists() and not (root.is_dir() and (_is_generated(root, generator) or not any(root.iterdir()))):
        raise DataError(f"{root}: exists and is not a generated {what} (no {DONE} marker); "
                        f"refusing to overwrite it: choose another {key} or delete it")
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def generate(root: str | Path, *, progress: bool = True, workers: int = 1, **knobs: Any) -> dict[str, Any]:
    """Write the dataset for ``knobs`` (exactly the fields of `GeneratorParams`) into ``root``.

    ``workers``: processes rendering the images (the files are the same with any number).

    Written into ``<root>.tmp-<pid>`` and renamed onto ``root`` when complete
    (``DONE`` last), so a killed run never leaves a half-written ``root``.
    An existing ``root`` is replaced only when it is a generated dataset (has our
    ``DONE`` marker) or empty; anything else is refused with a `DataError`.

    Returns the manifest (also written to ``root/manifest.json``): knobs, hash,
    classes and per-split statistics.
    """
    p = GeneratorParams(**knobs)
    root = Path(root)
    tmp = staging_folder(root, generator=GENERATOR_ID, what="synthetic dataset", key="data.root")
    classes = CLASSES[:p.num_classes]
    old = None
    try:
        (tmp / CLASS_LIST).parent.mkdir(parents=True)
        (tmp / CLASS_LIST).write_text("".join(f"{c.synset} {i} {c.name}\n" for i, c in enumerate(classes, 1)),
                                      encoding="utf-8")
        split_stats, blacklist = {}, []
        for split, count in p.splits.items():
            stats, present = _write_split(tmp, split, count, p, classes, progress,
                                          config_int("data.workers", workers, low=1))
            split_stats[split] = stats.as_dict()
            if split == p.blacklist_split and p.blacklist_entries and present:
                rng = np.random.default_rng(np.random.SeedSequence([p.seed, zlib.crc32(b"blacklist")]))
                chosen = rng.choice(len(present), min(p.blacklist_entries, len(present)), replace=False)
                blacklist = sorted(present[i] for i in chosen)
                split_stats[split]["blacklist_entries"] = len(blacklist)
        (tmp / BLACKLIST).write_text("".join(f"{i} {classes[c].synset}\n" for i, c in blacklist), encoding="utf-8")
        manifest = {
            "generator": GENERATOR_ID,
            "generator_version": GENERATOR_VERSION,
            "hash": p.knob_hash(),
            "knobs": p.knobs(),
            "classes": [dict(id=i, **asdict(c)) for i, c in enumerate(classes, 1)],
            "splits": split_stats,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (tmp / DONE).write_text(json.dumps({"generator": GENERATOR_ID, "hash": p.knob_hash()}) + "\n",
                                encoding="utf-8")
        marker = _is_generated(root)
        if marker is not None and marker.get("hash") == p.knob_hash():
            # Another process finished this very dataset meanwhile: keep its copy, which readers may hold.
            return manifest
        if root.exists():
            old = root.parent / f"{root.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process finished the same dataset first: keep its copy if it is the one we want.
            marker = _is_generated(root)
            if marker is None or marker.get("hash") != p.knob_hash():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return manifest


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent first use may generate twice, still atomically
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(root: str | Path) -> dict[str, Any]:
    return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))


def _is_inside(path: Path, folder: str | os.PathLike | None) -> bool:
    if folder is None or not str(folder):
        return False
    return path.resolve().is_relative_to(Path(folder).resolve())


def _knob_changes(root: Path, p: GeneratorParams) -> str:
    """``seed 0 -> 7, splits ...``: the knobs that differ from ``root``'s manifest (a few)."""
    try:
        old = read_manifest(root).get("knobs", {})
    except (OSError, ValueError, AttributeError):
        return "unknown knobs"
    new = p.knobs()
    changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    if not changed:
        return "same knobs, another generator version"
    return ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")


def refuse_to_regenerate(root: Path, p: GeneratorParams, *, managed_dir: str | None, allowed: bool,
                         key: str) -> None:
    """A `DataError` when regenerating ``root`` would rewrite a dataset nobody asked to rewrite.

    ``root`` holds a generated dataset made with other knobs, it is not inside the cache folder
    ``managed_dir``, and ``allowed`` (``key``) is false.  It may be a user's own copy (read with
    the wrong ``data=``), so it is never rewritten in place silently.
    """
    marker = _is_generated(root)
    if allowed or marker is None or marker.get("hash") == p.knob_hash() or _is_inside(root, managed_dir):
        return
    raise DataError(f"{root}: holds a synthetic dataset generated with other knobs ({_knob_changes(root, p)}) "
                    f"outside the cache folder, so it is not regenerated: read it as it is with data=ilsvrc, "
                    f"rewrite it with {key}=true, or choose another data.root")


# --------------------------------------------------------------------------- dataset source

@dataclass(frozen=True, kw_only=True)
class SyntheticSource(GeneratorParams):
    """Dataset source for ``data=synthetic``: generates into ``root`` on first use, then reads it
    with `IlsvrcSource` (2015 layout), so the real ILSVRC reader is what runs.

    Generates when ``root`` is missing or empty.  When ``root`` holds a generated dataset made
    with other knobs, it is regenerated only where that cannot destroy a user's data: inside the
    cache's own folder (``managed_dir``, the run's ``cache_dir``), or when asked with
    ``regenerate=true``; elsewhere it is a `DataError` (`refuse_to_regenerate`).

    Args:
        root: dataset folder (``${cache_dir}/synthetic``).
        split: evaluated split; train_split: training split (both keys of ``splits``).
        managed_dir: the cache folder (``cache_dir``); None: none (only ``regenerate`` allows it).
        regenerate: rewrite ``root`` even outside ``managed_dir`` when its knobs differ.
        workers: processes rendering the images when generating (not a knob either).
        other args: the generator knobs of `GeneratorParams` (``managed_dir`` and ``regenerate``
            are not knobs: they never change the dataset's hash).
    """

    root: str
    split: str
    train_split: str
    managed_dir: str | None = None
    regenerate: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not str(self.root):
            raise ConfigError("data.root is empty")
        if not isinstance(self.regenerate, bool):
            raise ConfigError(f"data.regenerate must be true or false, got {self.regenerate!r}")
        for key in ("split", "train_split"):
            if getattr(self, key) not in self.splits:
                raise ConfigError(f"data.{key} {getattr(self, key)!r} is not one of data.splits {list(self.splits)}")

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(GeneratorParams)}

    def ensure(self, progress: bool = True) -> Path:
        """Generate unless ``root`` already holds this exact dataset; returns ``root``."""
        root = Path(self.root)
        if self._is_current(root):
            return root
        refuse_to_regenerate(root, self, managed_dir=self.managed_dir, allowed=self.regenerate,
                             key="data.regenerate")
        # Parallel jobs (a Hydra multirun) share the cache: one generates, the others wait and reuse it.
        with _exclusive(root.parent / f".{root.name}.lock"):
            if not self._is_current(root):
                refuse_to_regenerate(root, self, managed_dir=self.managed_dir, allowed=self.regenerate,
                                     key="data.regenerate")
                log.info("generating the synthetic dataset into %s (%s)", root,
                         "no complete copy" if _is_generated(root) is None else "knobs changed")
                start = time.perf_counter()
                generate(root, progress=progress, workers=self.workers, **self.params())
                log.info("generated %s in %.1f s", root, time.perf_counter() - start)
        return root

    def _is_current(self, root: Path) -> bool:
        marker = _is_generated(root)
        return marker is not None and marker.get("hash") == self.knob_hash()

    def reader(self) -> IlsvrcSource:
        return IlsvrcSource(
            root=str(self.root), split=self.split, train_split=self.train_split,
            images_dir=IMAGES_DIR, annotations_dir=ANNOTATIONS_DIR, split_list=SPLIT_LIST,
            image_ext=IMAGE_EXT, class_list=CLASS_LIST, meta_det=None, blacklist=BLACKLIST,
            blacklist_split=self.blacklist_split, unknown_classes="error", check_image_size=True,
            folder_of_split={},
        )

    def load(self, split: str) -> DetectionDataset:
        self.ensure()
        return self.reader().load(split)


# --------------------------------------------------------------------------- entry point

def format_statistics(manifest: dict[str, Any]) -> str:
    """Human-readable per-split statistics of a manifest."""
    names = [c["name"] for c in manifest["classes"]]
    splits = manifest["splits"]
    width = max(len(n) for n in names + ["relative size"]) + 2
    col = lambda s: f"{s:>9}"  # noqa: E731
    lines = [f"{'':<{width}}" + "".join(col(s) for s in splits)]

    def row(label, values):
        lines.append(f"{label:<{width}}" + "".join(col(v) for v in values))

    for key in ("images", "negative_images", "images_without_xml", "objects", "truncated", "occluded",
                "distractors", "blacklist_entries"):
        row(key, [s.get(key, 0) for s in splits.values()])
    row("objects/image", [f"{s['objects'] / s['images']:.2f}" for s in splits.values()])
    lines.append("per class:")
    for name in names:
        row(f"  {name}", [s["per_class"][name] for s in splits.values()])
    lines.append("relative size sqrt(box area / image area):")
    for label in _size_bucket_labels():
        row(f"  {label}", [s["relative_size_histogram"][label] for s in splits.values()])
    return "\n".join(lines)


def _disk_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


@run_user_errors
def _main(cfg: DictConfig) -> dict[str, Any]:
    settings = OmegaConf.to_container(cfg, resolve=True)
    force = bool(settings.pop("force"))
    settings.pop("cache_dir", None)
    settings.pop("_target_")
    # Built directly, not with hydra's instantiate, which would wrap a ConfigError into its own exception.
    source = SyntheticSource(**settings)
    root = Path(source.root)
    marker = _is_generated(root)
    start = time.perf_counter()
    refuse_to_regenerate(root, source, managed_dir=source.managed_dir, allowed=force or source.regenerate,
                         key="regenerate")
    if force or marker is None or marker.get("hash") != source.knob_hash():
        manifest = generate(root, workers=source.workers, **source.params())
        print(f"generated {root} in {time.perf_counter() - start:.1f} s")
    else:
        manifest = read_manifest(root)
        print(f"{root} is already generated with these knobs (hash {marker['hash']}); force=true regenerates")
    print(f"disk size: {_disk_size(root) / 2**20:.1f} MiB")
    print(format_statistics(manifest), flush=True)
    return manifest


@hydra.main(version_base="1.3", config_path="../../conf", config_name="synth")
def main(cfg: DictConfig) -> None:
    _main(cfg)


if __name__ == "__main__":
    run_cli(main)
