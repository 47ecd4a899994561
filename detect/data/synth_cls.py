"""Synthetic classification set for pretraining, written in the ILSVRC CLS-LOC layout.

The detection generator (`detect.data.synth`) draws scenes of its 12 (shape, texture)
classes; this one draws *one dominant object per image* over the same cluttered
backgrounds, as ILSVRC CLS-LOC does for ImageNet, from a larger class set: every
(shape, texture) pair of the generator's shape families (the 12 DET classes first,
then the pairs the DET set uses only as distractors or not at all), so that, as in
ILSVRC where 1000 CLS classes cover the 200 DET categories, the CLS classes contain
the DET classes and more, and top-5 error means something.

Images draw from generators seeded by ``(seed, "cls", split, index)``: a different
seed sequence from every DET image's ``(seed, split, index)``, so no image and no
object is shared with the detection splits.

Layout (the Kaggle ImageNet-LOC layout, read by `detect.data.cls_loc.read_cls_loc`)::

    Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    Data/CLS-LOC/<split>/<name>.JPEG        other splits (val)
    LOC_synset_mapping.txt                  '<wnid> <name>' per class, label order
    LOC_<split>_solution.csv                ImageId,PredictionString ('<wnid> x1 y1 x2 y2')
    DONE                                    written last: generator id and knob hash
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detect.data.classification import ClassificationDataset
from detect.data.synth import _exclusive, _is_generated, _jpeg_bytes, _range, staging_folder
from detect.data.synth_scene import (CLASSES, SHAPES, TEXTURES, ObjectClass, _affine, _background, _colour_pair,
                                     _crop, _extent, _paint, _polygons, _rasterize)
from detect.errors import ConfigError, config_float, config_int
from detect.fingerprint import config_hash

log = logging.getLogger(__name__)

GENERATOR_ID = "detect.data.synth_cls"
GENERATOR_VERSION = 1
TRAIN_DIR = "Data/CLS-LOC/train"
SPLIT_DIR = "Data/CLS-LOC/{split}"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
SOLUTION = "LOC_{split}_solution.csv"
DONE = "DONE"

_TEXTURE_ADJECTIVE = {"stripes": "striped", "checker": "checkered", "dots": "dotted", "shaded": "shaded"}


def _all_classes() -> tuple[ObjectClass, ...]:
    """The 12 DET classes (same synsets), then every other (shape, texture) pair, hue means 30 degrees apart."""
    used = {(c.shape, c.texture) for c in CLASSES}
    shapes = list(dict.fromkeys([c.shape for c in CLASSES] + [s for s in SHAPES] + ["blob"]))
    extra = [(s, t) for s in shapes for t in TEXTURES if (s, t) not in used]
    return CLASSES + tuple(
        ObjectClass(f"n91{i + 1:06d}", f"{_TEXTURE_ADJECTIVE[t]}_{s}", s, t, (15.0 + 30.0 * i) % 360.0)
        for i, (s, t) in enumerate(extra))


CLS_CLASSES: tuple[ObjectClass, ...] = _all_classes()  # 48: 12 DET + 36 more


@dataclass(frozen=True)
class ClsGeneratorParams:
    """Knobs of the classification generator (conf/pretrain/data/synthetic.yaml documents each)."""

    seed: int
    images_per_class: dict[str, int]
    num_classes: int
    image_long_side: tuple[int, int]
    image_aspect: tuple[float, float]
    object_scale: tuple[float, float]
    center_jitter: float
    max_aspect: float
    max_rotation: float
    max_shear: float
    hue_std: float
    clutter_blobs: tuple[int, int]
    clutter_lines: tuple[int, int]
    clutter_textures: tuple[int, int]
    noise_std: tuple[float, float]
    blur_prob: float
    jpeg_quality: int

    def __post_init__(self) -> None:
        fix = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        splits = {str(k): config_int(f"pretrain.data.images_per_class.{k}", v, low=1)
                  for k, v in dict(self.images_per_class).items()}
        if "train" not in splits:
            raise ConfigError(f"pretrain.data.images_per_class needs a 'train' split, got {list(splits)}")
        fix("images_per_class", splits)
        fix("seed", config_int("pretrain.data.seed", self.seed, low=0))
        n = config_int("pretrain.data.num_classes", self.num_classes, low=1)
        if n > len(CLS_CLASSES):
            raise ConfigError(f"pretrain.data.num_classes must be in 1..{len(CLS_CLASSES)}, got {n}")
        for key, cast, low, high in (("image_long_side", int, 16, 4096), ("image_aspect", float, 0.1, 1.0),
                                     ("object_scale", float, 0.01, 1.5), ("clutter_blobs", int, 0, None),
                                     ("clutter_lines", int, 0, None), ("clutter_textures", int, 0, None),
                                     ("noise_std", float, 0.0, None)):
            fix(key, _range(key, getattr(self, key), cast, low, high, group="pretrain.data"))
        for key, low in (("center_jitter", 0.0), ("max_aspect", 1.0), ("max_rotation", 0.0), ("max_shear", 0.0),
                         ("hue_std", 0.0), ("blur_prob", 0.0)):
            fix(key, config_float(f"pretrain.data.{key}", getattr(self, key), low=low))
        if not 1 <= config_int("pretrain.data.jpeg_quality", self.jpeg_quality) <= 100:
            raise ConfigError(f"pretrain.data.jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    def knobs(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(ClsGeneratorParams)}

    def knob_hash(self) -> str:
        return config_hash(GENERATOR_ID, GENERATOR_VERSION, self.knobs())


def render_cls_image(p: ClsGeneratorParams, split: str, index: int, class_index: int
                     ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Image ``index`` (0-based) of ``split`` showing class ``class_index``: ``(H, W, 3)`` uint8 RGB and its
    object's inclusive xyxy pixel box."""
    rng = np.random.default_rng(np.random.SeedSequence(
        [p.seed, zlib.crc32(b"cls"), zlib.crc32(split.encode("utf-8")), index]))
    long_side = int(rng.integers(p.image_long_side[0], p.image_long_side[1] + 1))
    short_side = max(8, int(round(long_side * rng.uniform(*p.image_aspect))))
    width, height = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    image = _background(rng, p, height, width)
    cls = CLS_CLASSES[class_index]
    colours = _colour_pair(rng, cls.hue + rng.normal(0.0, p.hue_std))
    polys = _polygons(cls.shape, rng)
    size = math.exp(rng.uniform(math.log(p.object_scale[0]), math.log(p.object_scale[1]))) * min(width, height)
    aspect = math.exp(rng.uniform(-math.log(p.max_aspect), math.log(p.max_aspect)))
    a = _affine(size * math.sqrt(aspect) / 2, size / math.sqrt(aspect) / 2,
                rng.uniform(-p.max_rotation, p.max_rotation), rng.uniform(-p.max_shear, p.max_shear))
    x_lo, y_lo, x_hi, y_hi = _extent(polys, a)
    centre = np.array([width / 2 - (x_lo + x_hi) / 2, height / 2 - (y_lo + y_hi) / 2])
    centre += rng.uniform(-p.center_jitter, p.center_jitter, 2) * (width, height)
    alpha, x0, y0 = _rasterize(polys, a, centre)
    crop = _crop(alpha, x0, y0, height, width)
    _paint(image, crop, a, centre, cls.texture, colours, 1.0, rng)
    rows, cols = np.nonzero(crop.alpha >= 0.5)
    box = (crop.cols.start + int(cols.min()), crop.rows.start + int(rows.min()),
           crop.cols.start + int(cols.max()), crop.rows.start + int(rows.max()))
    image += rng.normal(0.0, 1.0, image.shape).astype(np.float32) * rng.uniform(*p.noise_std)
    if rng.random() < p.blur_prob:
        import cv2

        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.0))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), box


def generate_cls(root: str | Path, *, progress: bool = True, **knobs: Any) -> None:
    """Write the classification set for ``knobs`` (the fields of `ClsGeneratorParams`) into ``root``.

    Written into ``<root>.tmp-<pid>`` and renamed into place, ``DONE`` last; an existing
    ``root`` is replaced only when it is a generated set (our ``DONE``) or empty.
    """
    p = ClsGeneratorParams(**knobs)
    root = Path(root)
    tmp = staging_folder(root, generator=GENERATOR_ID, what="synthetic classification set", key="pretrain.data.root")
    classes = CLS_CLASSES[:p.num_classes]
    try:
        tmp.mkdir(parents=True)
        (tmp / SYNSET_MAPPING).write_text("".join(f"{c.synset} {c.name}\n" for c in classes), encoding="utf-8")
        for split, per_class in p.images_per_class.items():
            total = per_class * len(classes)
            folder = tmp / (TRAIN_DIR if split == "train" else SPLIT_DIR.format(split=split))
            solution = ["ImageId,PredictionString"]
            for index in tqdm(range(total), desc=f"synthetic cls {split}", unit="img", disable=not progress,
                              leave=False):
                label = index % len(classes)
                image, box = render_cls_image(p, split, index, label)
                synset = classes[label].synset
                if split == "train":
                    name = f"{synset}_{index // len(classes) + 1}"
                    path = folder / synset / f"{name}.JPEG"
                else:
                    name = f"synthetic_cls_{split}_{index + 1:08d}"
                    path = folder / f"{name}.JPEG"
                    solution.append(f"{name},{synset} {box[0]} {box[1]} {box[2]} {box[3]}")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_jpeg_bytes(image, p.jpeg_quality))
            if split != "train":
                (tmp / SOLUTION.format(split=split)).write_text("\n".join(solution) + "\n", encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps({"generator": GENERATOR_ID, "knobs": p.knobs(),
                                                       "classes": [c.name for c in classes]}, indent=2) + "\n")
        (tmp / DONE).write_text(json.dumps({"generator": GENERATOR_ID, "hash": p.knob_hash()}) + "\n")
        marker = _is_generated_cls(root)
        if marker is not None and marker.get("hash") == p.knob_hash():
            return
        if root.exists():
            shutil.rmtree(root)
        os.rename(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_generated_cls(root: Path) -> dict | None:
    return _is_generated(root, GENERATOR_ID)


@dataclass(frozen=True, kw_only=True)
class SyntheticClsSource(ClsGeneratorParams):
    """``pretrain.data`` for the synthetic set: generates into ``root`` on first use, then reads it with the
    real CLS-LOC reader.  ``split``: the evaluated split; ``train_split``: the training split."""

    root: str
    split: str
    train_split: str

    def ensure(self, progress: bool = True) -> Path:
        root = Path(self.root)
        current = lambda: (_is_generated_cls(root) or {}).get("hash") == self.knob_hash()  # noqa: E731
        if not current():
            with _exclusive(root.parent / f".{root.name}.lock"):
                if not current():
                    log.info("generating the synthetic classification set into %s", root)
                    start = time.perf_counter()
                    generate_cls(root, progress=progress, **{f.name: getattr(self, f.name)
                                                              for f in fields(ClsGeneratorParams)})
                    log.info("generated %s in %.1f s", root, time.perf_counter() - start)
        return root

    def load(self, split: str) -> ClassificationDataset:
        from detect.data.cls_loc import read_cls_loc

        self.ensure()
        return read_cls_loc(self.root, split)

