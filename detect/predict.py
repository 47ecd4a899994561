"""``python -m detect.predict``: run a trained detector on new images or on an unannotated split.

    python -m detect.predict images=photos/ from_run=outputs/2026-12-01/10-00-00-123-abcd
    python -m detect.predict images='shots/**/*.jpg' detector=my_detector      # an exported folder
    python -m detect.predict images=list.txt detector=my_detector predict.score_threshold=0.3
    python -m detect.predict data=ilsvrc data.root=/data/ILSVRC2015 data.split=test from_run=RUN_DIR

Writes into its run folder (``outputs/predict/<date>/<time>-<id>/``): ``predictions.json``
(``{"images": [{"file", "width", "height", "detections": [{"class", "class_id", "score",
"box": [x1, y1, x2, y2]}]}], "skipped": [{"file", "error"}], "seconds_per_image"}``), ``drawn/``
(every image read, with its detections scoring at least ``predict.score_threshold``) and, for a
split, ``detections.txt`` (the ILSVRC submission; image indices from the split list).  Each image
goes through `detect.inference.detect_image`, the per-image code ``detect.run``'s ensemble uses,
and the split-level cap of ``detect.run`` follows, so predicting on a run's own val split gives
that run's ``detections.txt`` byte for byte.

Files that do not decode (corrupt, truncated, empty, not an image) are skipped, each named with
its reason in the log and in ``predictions.json``; the run exits 0 while at least one image was
read.  No image at all, a missing path, a run folder that did not finish, or an exported folder
with a missing or changed file is one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from detect import atomic
from detect.cli import run_cli, run_user_errors
from detect.data.image_io import load_rgb
from detect.detector import Detector
from detect.draw import draw_detections, save_drawn
from detect.errors import ConfigError, DataError, UserError
from detect.image_inputs import collect_images
from detect.inference import ImageResult, source_proposals, split_detections
from eval.submission import write_submission

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputImage:
    file: str  # as reported in predictions.json
    path: Path
    index: int  # 1-based: the split list's image index, or the position among the inputs
    drawn: str  # path under drawn/


def image_inputs(images: str | Sequence[str]) -> list[InputImage]:
    """`detect.image_inputs.collect_images`, with the ``drawn/`` name of each (its path below the
    inputs' common folder, ``.jpg``; a clash gets ``-2``, ``-3``, ...)."""
    paths = collect_images(images)
    absolute = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    taken: set[str] = set()
    out = []
    for i, (path, a) in enumerate(zip(paths, absolute), 1):
        stem = a.relative_to(root).with_suffix("").as_posix()
        name, n = f"{stem}.jpg", 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}.jpg"
        taken.add(name)
        out.append(InputImage(str(path), path, i, name))
    return out


def split_inputs(data: DictConfig) -> tuple[list[InputImage], Any]:
    """The records of ``data``'s evaluated split (``data.split``) as inputs, and the dataset."""
    source = instantiate(data)
    dataset = source.load(source.split)
    if not len(dataset):
        raise UserError(f"data split {dataset.split!r} of {dataset.root} lists no image")
    return [InputImage(str(r.path), r.path, r.index, f"{r.image_id}.jpg") for r in dataset.records], dataset


# --------------------------------------------------------------------------- proposals in worker processes

_WORKER_SOURCES: dict[str, Any] | None = None


def _init_worker(sources: dict[str, Any]) -> None:
    import cv2
    import torch

    global _WORKER_SOURCES
    cv2.setNumThreads(1)  # one worker = one core, as in proposals.extract
    torch.set_num_threads(1)
    _WORKER_SOURCES = sources


def _worker_proposals(path: str) -> tuple[dict[str, np.ndarray] | None, dict[str, float], str | None]:
    assert _WORKER_SOURCES is not None, "worker not initialised"
    try:
        image = load_rgb(Path(path))
    except DataError as exc:
        return None, {}, str(exc)
    seconds: dict[str, float] = {}
    return source_proposals(image, _WORKER_SOURCES, seconds), seconds, None


def _proposal_stream(paths: list[str], sources: dict[str, Any], workers: int) -> Iterator[tuple]:
    """`_worker_proposals` of each path, in order, computed ``workers`` processes ahead of the consumer."""
    ctx = multiprocessing.get_context("spawn")  # safe with torch/OpenMP state in the parent
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(sources,)) as pool:
        pending: list[Future] = []
        ahead = 2 * workers
        it = iter(paths)
        for path in it:
            pending.append(pool.submit(_worker_proposals, path))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_worker_proposals, nxt))
            yield result


# --------------------------------------------------------------------------- the run

def _reason(message: str, path: Path) -> str:
    """A DataError message without its leading ``<path>: `` (predictions.json names the file)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _above(result_scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.flatnonzero(np.asarray(result_scores) >= threshold)


def predict(
    *, out_dir: str | Path, images: str | Sequence[str] | None = None, data: DictConfig | None = None,
    from_run: str | None = None, detector: str | None = None, cache_dir: str = ".cache", device: str = "cpu",
    score_threshold: float = 0.5, draw: bool = True, workers: int | None = None, mode: str | None = None,
    runtime: str | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Detect objects in ``images`` (or in ``data``'s split) with a run's or an exported detector.

    Args:
        out_dir: where predictions.json, drawn/ and (for a split) detections.txt go.
        images: an image file, a folder (recursive), a glob or a list file (`detect.image_inputs`).
        data: a data-source config (``data=...``); its ``split`` is predicted instead of ``images``.
        from_run: a finished ``detect.run`` folder (its detector is read from ``cache_dir``).
        detector: an exported detector folder (``python -m detect.export``); one of the two.
        device: where the members run (auto | cpu | cuda | cuda:N).
        score_threshold: detections drawn in drawn/ score at least this (predictions.json keeps
            all of the ensemble's, down to ``ensemble.score_threshold``).
        draw: write drawn/.
        workers: processes computing proposals ahead of the classifier (null: the detector's
            ``proposals.workers``; 1: in this process).
        mode, runtime: override the detector's ``classifier.mode`` / ``classifier.runtime``.
    Returns:
        The summary: images, detections, skipped, seconds per image and per stage.
    """
    out_dir = Path(out_dir)
    if (from_run is None) == (detector is None):
        raise ConfigError("set from_run=<detect.run folder> or detector=<exported folder> (one of them)")
    if (images is None) == (data is None):
        raise ConfigError("set images=<file|folder|glob|list.txt> or data=<source> data.split=<split> (one of them)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"predict.workers must be null or an integer >= 1, got {workers!r}")
    dataset = None
    if images is not None:
        items = image_inputs(images)  # before the model: a wrong path fails at once
    else:
        items, dataset = split_inputs(data)
    t_load = time.perf_counter()
    model = (Detector.from_run(from_run, cache_dir=cache_dir, device=device, mode=mode, runtime=runtime)
             if from_run is not None else Detector.load(detector, device=device, mode=mode, runtime=runtime))
    load_s = time.perf_counter() - t_load
    if dataset is not None and tuple(dataset.classes.synsets) != tuple(model.classes.synsets):
        raise UserError(f"data split {dataset.split!r} of {dataset.root} has {len(dataset.classes)} classes "
                        f"({', '.join(dataset.classes.synsets[:3])}, ...), the detector "
                        f"{from_run or detector} has {len(model.classes)} ({', '.join(model.classes.synsets[:3])}, ...)")
    workers = model.workers if workers is None else workers
    stream = None
    if workers > 1 and len(items) > 1:
        stream = _proposal_stream([str(i.path) for i in items], model.sources, workers)

    seconds: dict[str, float] = defaultdict(float)
    results: list[tuple[InputImage, tuple[int, int], ImageResult]] = []
    skipped: list[dict[str, str]] = []
    drawn_counts: dict[int, int] = {}
    draw_s = 0.0
    t0 = time.perf_counter()
    for item in tqdm(items, desc="predict", unit="img", disable=not progress):
        pre = next(stream) if stream is not None else None
        if pre is not None and pre[2] is not None:
            error = pre[2]
        else:
            try:
                t_decode = time.perf_counter()
                image = load_rgb(item.path)
                seconds["decode"] += time.perf_counter() - t_decode
                error = None
            except DataError as exc:
                error = str(exc)
        if error is not None:
            skipped.append({"file": item.file, "error": _reason(error, item.path)})
            log.warning("skipped %s: %s", item.file, skipped[-1]["error"])
            continue
        result = model.detect(image, per_source=None if pre is None else pre[0],
                              seconds=None if pre is None else pre[1])
        for stage, s in result.seconds.items():
            seconds[stage] += s
        results.append((item, (image.shape[1], image.shape[0]), result))
        if draw:
            t_draw = time.perf_counter()
            keep = _above(result.scores, score_threshold)
            save_drawn(out_dir / "drawn" / item.drawn, draw_detections(
                image, result.boxes[keep], result.scores[keep], result.labels[keep], model.class_names))
            drawn_counts[item.index] = len(keep)
            draw_s += time.perf_counter() - t_draw
    wall = time.perf_counter() - t0 - draw_s
    if not results:
        first = f"; first: {skipped[0]['file']}: {skipped[0]['error']}" if skipped else ""
        raise UserError(f"no input image could be read ({len(skipped)} skipped{first})")

    # detect.run's split-level step: each class keeps its max_per_class best detections.
    sub = split_detections([(r.boxes, r.scores, r.labels) for _, _, r in results], [i.index for i, _, _ in results],
                           max_per_class=model.settings.max_per_class)
    by_image: dict[int, list[int]] = defaultdict(list)
    for j, index in enumerate(sub.image_index):
        by_image[int(index)].append(j)
    entries = []
    for item, (width, height), _ in results:
        rows = by_image.get(item.index, [])
        entries.append({"file": item.file, "width": int(width), "height": int(height), "detections": [
            {"class": model.class_names[int(sub.class_id[j]) - 1], "class_id": int(sub.class_id[j]),
             "score": round(float(sub.score[j]), 6), "box": [round(float(v), 2) for v in sub.boxes[j]]}
            for j in rows]})
        if draw and len(sub) < sum(len(r.scores) for _, _, r in results):
            keep = [j for j in rows if sub.score[j] >= score_threshold]
            if len(keep) != drawn_counts.get(item.index):  # the cap removed a drawn box: draw again
                save_drawn(out_dir / "drawn" / item.drawn, draw_detections(
                    load_rgb(item.path), sub.boxes[keep], sub.score[keep], sub.class_id[keep], model.class_names))
    if dataset is not None:
        write_submission(out_dir / "detections.txt", sub.image_index, sub.class_id, sub.score, sub.boxes)
    per_image = wall / len(results)
    write_predictions(out_dir / "predictions.json", entries, skipped, per_image)
    stages = {k: v / len(results) for k, v in seconds.items()}
    summary = {"images": len(results), "detections": len(sub), "skipped": len(skipped),
               "drawn_detections": int(np.sum(sub.score >= score_threshold)), "seconds_per_image": per_image,
               "stage_seconds_per_image": stages, "load_seconds": load_s, "workers": workers}
    print(summary_text(summary, skipped, out_dir, split=dataset is not None, score_threshold=score_threshold,
                       drawn=draw), flush=True)
    return summary


def write_predictions(path: Path, entries: list[dict], skipped: list[dict], seconds_per_image: float) -> None:
    """predictions.json, atomically: one line per image (a split can hold tens of thousands)."""
    def lines(items: list[dict]) -> str:
        return "[]" if not items else "[\n" + ",\n".join("    " + json.dumps(e) for e in items) + "\n  ]"

    atomic.write_text(path, f'{{\n  "images": {lines(entries)},\n  "skipped": {lines(skipped)},\n'
                            f'  "seconds_per_image": {json.dumps(seconds_per_image)}\n}}\n')


STAGE_ORDER = ("decode", "multibox", "ss", "merge")


def summary_text(summary: dict[str, Any], skipped: list[dict[str, str]], out_dir: Path, *, split: bool,
                 score_threshold: float, drawn: bool) -> str:
    """The summary printed at the end: images, detections, skipped files, seconds per image by stage."""
    stages = summary["stage_seconds_per_image"]
    workers = f" (proposals in {summary['workers']} processes)" if summary["workers"] > 1 else ""
    ordered = [k for k in STAGE_ORDER if k in stages] + sorted(k for k in stages if k.startswith("member")) + \
        [k for k in stages if k not in STAGE_ORDER and not k.startswith("member")]
    lines = ["", "=" * 60,
             f"images: {summary['images']} read, {summary['skipped']} skipped; detections: {summary['detections']} "
             f"({summary['drawn_detections']} scoring >= {score_threshold:g}{', drawn' if drawn else ''})",
             f"seconds per image: {summary['seconds_per_image']:.3f} wall{workers}; by stage: "
             + ", ".join(f"{k} {stages[k]:.3f}" for k in ordered)]
    for s in skipped[:10]:
        lines.append(f"skipped: {s['file']}: {s['error']}")
    if len(skipped) > 10:
        lines.append(f"skipped: ... {len(skipped) - 10} more (predictions.json lists them all)")
    outputs = ["predictions.json"] + (["drawn/"] if drawn else []) + (["detections.txt"] if split else [])
    lines.append(f"outputs: {out_dir} ({', '.join(outputs)})")
    lines.append("=" * 60)
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point

def run_data_config(from_run: str, *, choice: str | None, overrides: Sequence[str], cache_dir: str) -> DictConfig | None:
    """With ``from_run`` and the run's own ``data`` option: the run's data settings (its sizes, classes,
    roots) with this command line's ``data.*`` overrides on top; None for another data option."""
    run = Path(from_run)
    try:
        hydra_cfg = OmegaConf.load(run / ".hydra" / "hydra.yaml")
        run_choice = OmegaConf.select(hydra_cfg, "hydra.runtime.choices.data")
        run_cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    except Exception:  # not a run folder: Detector.from_run names the problem
        return None
    if run_choice is None or run_choice != choice or "data" not in run_cfg:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    run_cfg.cache_dir = cache_dir
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key.startswith("data.") and not override.is_delete():
            OmegaConf.update(run_cfg, key, override.value(), merge=True, force_add=True)
    return run_cfg.data


@run_user_errors
def _main(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.select(cfg, "data", default=None)
    if data is not None and cfg.from_run is not None:
        hydra_cfg = HydraConfig.get()
        data = run_data_config(str(cfg.from_run), choice=hydra_cfg.runtime.choices.get("data"),
                               overrides=hydra_cfg.overrides.task, cache_dir=str(cfg.cache_dir)) or data
    images = cfg.images
    if images is not None and not isinstance(images, str):
        images = [str(i) for i in images]
    return predict(out_dir=Path(HydraConfig.get().runtime.output_dir), images=images, data=data,
                   from_run=None if cfg.from_run is None else str(cfg.from_run),
                   detector=None if cfg.detector is None else str(cfg.detector), cache_dir=str(cfg.cache_dir),
                   device=str(cfg.device), **cfg.predict)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> dict[str, Any]:
    return _main(cfg)


if __name__ == "__main__":
    run_cli(main)
