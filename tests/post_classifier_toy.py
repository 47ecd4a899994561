"""Tiny ILSVRC-layout images and a width-0.125 GoogLeNet at 48 px, for the SVM / box-regression tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classifier.factory import build_classifier
from classifier.sampling import jittered_proposals
from classifier.score import score_dataset
from conftest import ilsvrc_source, voc_xml
from detect.data.record import DetectionDataset

COLOURS = {"n01": (220, 30, 30), "n02": (30, 30, 220)}  # class 1 red, class 2 blue
SCENES = [  # (width, height), objects (synset, xyxy)
    ((64, 48), [("n01", (4, 4, 28, 30))]),
    ((64, 48), [("n02", (30, 10, 60, 40))]),
    ((64, 48), [("n01", (34, 2, 60, 22)), ("n02", (2, 20, 26, 46))]),
    ((64, 48), []),
]
WARP = dict(input_size=48, context_pad=3.0, pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25))


def toy_dataset(tmp_path: Path) -> DetectionDataset:
    """Four JPEGs in the ILSVRC layout (grey, with filled class-coloured rectangles), read by the real reader."""
    root = tmp_path / "ILSVRC"
    for d in ("Data/DET/val", "Annotations/DET/val", "ImageSets/DET", "devkit/data"):
        (root / d).mkdir(parents=True)
    (root / "devkit/data/map_det.txt").write_text("n01 1 red\nn02 2 blue\n")
    lines = []
    for k, (size, objects) in enumerate(SCENES, start=1):
        image = np.full((size[1], size[0], 3), 128, np.uint8)
        for synset, (x1, y1, x2, y2) in objects:
            image[y1:y2, x1:x2] = COLOURS[synset]
        Image.fromarray(image).save(root / f"Data/DET/val/val_{k}.JPEG", format="JPEG", quality=95)
        (root / f"Annotations/DET/val/val_{k}.xml").write_text(voc_xml(f"val_{k}", size, objects))
        lines.append(f"val_{k} {k}")
    (root / "ImageSets/DET/val.txt").write_text("\n".join(lines) + "\n")
    return ilsvrc_source(root).load("val")


def toy_proposals(dataset: DetectionDataset, n: int = 24, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [jittered_proposals(rec, n, rng) for rec in dataset.records]


def tiny_extract(num_classes: int = 3):
    """``(extract, model)``: `score_dataset` of a freshly initialised (seeded) tiny GoogLeNet, features on."""
    torch.manual_seed(0)
    model = build_classifier("googlenet", num_classes=num_classes, width=0.125, input_size=48)
    return functools.partial(score_dataset, model, batch_size=64, features=True, **WARP), model
