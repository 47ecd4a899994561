"""Prediction speed of an exported detector on 500x375 images, by stage, warp vs roi vs ONNX Runtime.

    python -m detect.export from_run=RUN_DIR out=DET onnx=true
    python benchmarks/predict_speed.py --detector DET [--images 6] [--workers 2] [--threads 1]

Images: the embedded generator (`detect.data.synth`, default knobs) at 500x375 like ILSVRC,
decoded once.  Each image goes through `detect.Detector.detect` (= `detect.inference.detect_image`,
what ``python -m detect.predict`` runs) three times, side by side so the ratios share the
machine's load: the exported settings (warp mode), ``mode=roi`` (the same weights: warp and roi
members are interchangeable) and ``runtime=onnx`` (the folder's ONNX exports; written on first
use otherwise).  The proposals are computed once per image (by the first) and handed to the
other two, so SS and MultiBox appear once.  The first image warms every detector up and is not
counted.  Then the proposals of the same images through ``predict.workers`` processes
(`detect.predict._proposal_stream`) against one process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from detect.data.image_io import load_rgb  # noqa: E402
from detect.detector import Detector  # noqa: E402
from detect.inference import source_proposals  # noqa: E402
from detect.predict import _proposal_stream  # noqa: E402
from proposals_speed import synthetic_dataset  # noqa: E402

MODES = {"warp": {}, "roi": {"mode": "roi"}, "onnx": {"runtime": "onnx"}}


def per_stage(detectors: dict[str, Detector], images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean seconds per image by stage for each detector (first image = warm-up, not counted)."""
    totals: dict[str, dict[str, float]] = {name: defaultdict(float) for name in detectors}
    for i, image in enumerate(images):
        per_source = None
        for name, det in detectors.items():
            seconds: dict[str, float] = {}
            if per_source is None:
                per_source = source_proposals(image, det.sources, seconds)
            result = det.detect(image, per_source=per_source, seconds=seconds)
            if i == 0:
                continue
            for k, v in result.seconds.items():
                totals[name][k] += v
    n = max(1, len(images) - 1)
    return {name: {k: v / n for k, v in t.items()} for name, t in totals.items()}


def proposal_workers(detector: Detector, paths: list[str], workers: int) -> dict[str, float]:
    """Wall seconds per image of the proposals of ``paths``: one process, and ``workers`` processes
    (with and without their start-up: spawn, import, unpickling the sources)."""
    t = time.perf_counter()
    for p in paths:
        source_proposals(load_rgb(Path(p)), detector.sources)
    one = (time.perf_counter() - t) / len(paths)
    t = time.perf_counter()
    stream = _proposal_stream(paths, detector.sources, workers)
    first = None
    for _ in stream:
        first = first or time.perf_counter()
    end = time.perf_counter()
    return {"one": one, "pool_total": (end - t) / len(paths), "startup": first - t,
            "pool_steady": (end - first) / max(1, len(paths) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", required=True, help="an exported detector folder (python -m detect.export)")
    parser.add_argument("--images", type=int, default=6, help="500x375 images (the first is a warm-up)")
    parser.add_argument("--workers", type=int, default=2, help="proposal processes to compare with one")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 measures the per-core cost)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        dataset = synthetic_dataset(Path(tmp) / "synthetic", args.images, size=(500, 375))
        paths = [str(r.path) for r in dataset.records]
        images = [load_rgb(Path(p)) for p in paths]
        detectors = {name: Detector.load(args.detector, device="cpu", **kw) for name, kw in MODES.items()}
        warp = detectors["warp"]
        n_members = len(warp.members)
        print(f"{len(images)} synthetic {images[0].shape[1]}x{images[0].shape[0]} images (first = warm-up); "
              f"{n_members} members; torch threads {torch.get_num_threads()}; cpu_count {os.cpu_count()}; "
              f"load average before {load:.2f}")
        print(f"proposals: {list(warp.sources)}, merged cap {warp.merge.max_per_image}; "
              f"classifier input {warp.models[0].input_size} px")
        stages = per_stage(detectors, images)
        counts = [len(warp.detect(im).scores) for im in images[:1]]
        workers = proposal_workers(warp, paths, args.workers) if args.workers > 1 else None

    members = [m.name for m in warp.members]
    shared = [k for k in ("ss", "multibox", "merge") if k in stages["warp"]]
    print("\nseconds per image by stage (proposals computed once, shared by the three rows):")
    header = f"{'':6}" + "".join(f"{k:>10}" for k in shared + members) + f"{'ensemble':>10}{'members':>10}{'total':>10}"
    print(header)
    totals = {}
    for name, s in stages.items():
        member_sum = sum(s.get(m, 0.0) for m in members)
        proposals = sum(stages["warp"].get(k, 0.0) for k in shared)
        totals[name] = proposals + member_sum + s.get("ensemble", 0.0)
        print(f"{name:6}" + "".join(f"{stages['warp'].get(k, 0.0):10.3f}" for k in shared)
              + "".join(f"{s.get(m, 0.0):10.3f}" for m in members)
              + f"{s.get('ensemble', 0.0):10.3f}{member_sum:10.3f}{totals[name]:10.3f}")
    ss = stages["warp"].get("ss", 0.0)
    print("\nratios (same images, same load):")
    for name in ("roi", "onnx"):
        m_warp = sum(stages["warp"].get(m, 0.0) for m in members)
        m_this = sum(stages[name].get(m, 0.0) for m in members)
        print(f"  {name} / warp: members {m_this / m_warp:.2f}x, total {totals[name] / totals['warp']:.2f}x")
    for name, total in totals.items():
        print(f"  SS share of the total, {name}: {ss / total:.0%}")
    print(f"  {n_members}-member ensemble, roi mode, including proposals: {totals['roi']:.2f} s/image "
          f"(target <= 2 s; R-CNN: 53 s/image on a CPU); first image: {counts[0]} detections")
    if workers is not None:
        print(f"\nproposals ({'+'.join(shared[:-1] if shared[-1] == 'merge' else shared)}) of the same "
              f"{len(paths)} images, wall seconds per image:")
        print(f"  1 process:      {workers['one']:.3f}")
        print(f"  {args.workers} processes:    {workers['pool_total']:.3f} with start-up ({workers['startup']:.1f} s), "
              f"{workers['pool_steady']:.3f} once running: {workers['one'] / workers['pool_steady']:.2f}x")
    print(f"\nload average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
