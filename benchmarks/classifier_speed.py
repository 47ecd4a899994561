"""Region classifier speed on the CPU, ratios measured side by side in one run.

    python benchmarks/classifier_speed.py                # demo- and paper-sized networks, 1 thread
    python benchmarks/classifier_speed.py --threads 2    # torch and ONNX Runtime on 2 threads
    python benchmarks/classifier_speed.py --quick        # fewer regions and repeats (a smoke run)

1. FLOP bound: the machine's float32 GFLOP/s from a large matmul, divided by the
   network's FLOPs per 224 px crop (2 x the multiply-adds `classifier.summary` counts).
2. Forward pass on pre-warped 224 px windows, full width: eager torch vs ONNX Runtime
   (`classifier.onnx_runtime`), crops/s and the share of the FLOP bound.
3. Batched region scoring (`classifier.score.score_regions`, one warp call and one
   forward pass per batch) vs a per-region loop (one window per call).
4. RoI mode (`classifier.roi.score_regions_roi`) vs warp mode on the same proposals.

Each timing is the best of ``--repeats`` runs, the runs of the two sides of a ratio
interleaved, so a burst of load from other processes hits both alike.  The default is
one thread for torch, ONNX Runtime and the matmul: on a machine shared with other jobs,
multi-threaded kernels wait for each other's preempted threads and times swing by
several x, while one thread gives stable numbers (and the FLOP bound is then one core's).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from classifier.factory import build_classifier
from classifier.roi import RoIClassifier, score_regions_roi
from classifier.score import score_regions
from classifier.summary import summarize_model

NORM = dict(pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225))
NUM_CLASSES = 201  # ILSVRC DET: 200 classes + background


def side_by_side(repeats: int, *fns: Callable[[], object], warm_up: bool = True) -> list[float]:
    """Best-of-``repeats`` seconds of each function, the runs interleaved (after one warm-up call each)."""
    for fn in fns if warm_up else ():
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    (t,) = side_by_side(repeats, lambda: a @ b)
    return 2 * n**3 / t / 1e9


def random_boxes(n: int, width: int, height: int, seed: int) -> np.ndarray:
    """``(n, 4)`` xyxy boxes with sides 5-100% of the image's, inside the image (Selective Search-like sizes)."""
    rng = np.random.default_rng(seed)
    side = rng.uniform(0.05, 1.0, (n, 2)) * [width, height]
    x1y1 = rng.uniform(0.0, 1.0, (n, 2)) * ([width, height] - side)
    return np.concatenate([x1y1, x1y1 + side], axis=1)


def classifier(width: float, input_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier("googlenet", num_classes=NUM_CLASSES, width=width, input_size=input_size,
                            aux_logits=False).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer regions and repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch, ONNX Runtime and matmul threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--regions", type=int, default=200, help="proposals per image, demo network")
    parser.add_argument("--paper-regions", type=int, default=100, help="proposals per image, paper network")
    parser.add_argument("--demo-width", type=float, default=0.25)
    parser.add_argument("--demo-input-size", type=int, default=64)
    parser.add_argument("--demo-image-size", type=int, default=128, help="RoI mode's short side, demo network")
    args = parser.parse_args()
    repeats, regions, paper_regions = (1, 40, 16) if args.quick else (args.repeats, args.regions, args.paper_regions)
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} intra-op threads; load average {os.getloadavg()[0]:.2f} at start")

    # 1. FLOP bound
    paper = classifier(1.0, 224)
    macs = summarize_model(paper, arch="googlenet", input_size=224).total.ops
    gflops = matmul_gflops()  # measured again at the end; the larger (less disturbed) one is used
    bound = gflops * 1e9 / (2 * macs)
    print(f"\n[1] matmul 2048^3: {gflops:.1f} GFLOP/s -> FLOP bound {bound:.1f} crops/s "
          f"({macs / 1e9:.3f} G multiply-adds = {2 * macs / 1e9:.2f} GFLOP per 224 px crop)")

    # 2. eager torch vs ONNX Runtime, full width, 224 px, pre-warped windows
    from classifier.onnx_runtime import OnnxScorer

    windows = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint = Path(tmp) / "checkpoint.pt"
        torch.save(paper.state_dict(), checkpoint)
        onnx = OnnxScorer(paper, checkpoint=checkpoint, intra_op_threads=threads, atol=1e-3).model
        paper_cl = classifier(1.0, 224).to(memory_format=torch.channels_last)
        windows_cl = windows.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            t_torch, t_cl, t_onnx = side_by_side(repeats, lambda: paper(windows), lambda: paper_cl(windows_cl),
                                                 lambda: onnx(windows))
    n = args.batch_size
    crops = {"torch eager (NCHW, the default)": n / t_torch, "torch eager channels-last": n / t_cl,
             "ONNX Runtime": n / t_onnx}

    image = np.random.default_rng(1).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    boxes = random_boxes(max(regions, paper_regions), 500, 375, seed=2)
    configs = [
        ("demo", args.demo_width, args.demo_input_size, args.demo_image_size),
        ("paper", 1.0, 224, 375),  # the 500x375 image at its own size (no resize)
    ]
    for name, width, size, image_size in configs:
        model = paper if name == "paper" else classifier(width, size)
        warp = dict(input_size=size, context_pad=16.0 * size / 227, **NORM)
        n_regions = paper_regions if name == "paper" else regions
        # 3. batched vs one region per call (fewer regions in the slow loop at 224 px)
        loop_boxes = boxes[:16] if name == "paper" else boxes[:n_regions]
        k = len(loop_boxes)

        def batched():
            score_regions(model, image, loop_boxes, batch_size=args.batch_size, **warp)

        def per_region():
            for b in loop_boxes:
                score_regions(model, image, b[None], batch_size=1, **warp)

        t_batch, t_loop = side_by_side(repeats, batched, per_region)
        print(f"\n[3] {name} (width {width:g}, {size} px), {k} regions: batched {k / t_batch:.1f} regions/s, "
              f"per-region loop {k / t_loop:.1f} regions/s: batched / loop = {t_loop / t_batch:.1f}x")

        # 4. RoI mode vs warp mode, same proposals
        roi = RoIClassifier(model)
        proposals = boxes[:n_regions]
        t_warp, t_roi = side_by_side(
            repeats,
            lambda: score_regions(model, image, proposals, batch_size=args.batch_size, **warp),
            lambda: score_regions_roi(roi, image, proposals, batch_size=args.batch_size * 4, image_size=image_size,
                                      max_size=None, context_pad=warp["context_pad"], **NORM),
            warm_up=name != "paper",  # the paper network's code paths are warm from [2] and [3]
        )
        print(f"[4] {name}: {n_regions} proposals on a 500x375 image: warp {t_warp * 1000:.0f} ms, "
              f"roi (short side {image_size}, pool {roi.pool_size}) {t_roi * 1000:.0f} ms: "
              f"roi / warp = {t_warp / t_roi:.1f}x")

    gflops = max(gflops, matmul_gflops())
    bound = gflops * 1e9 / (2 * macs)
    print(f"\n[1] matmul 2048^3, best of start and end: {gflops:.1f} GFLOP/s -> FLOP bound {bound:.1f} crops/s")
    print(f"[2] forward, width 1, 224 px, batch {n}, pre-warped windows:")
    for label, rate in crops.items():
        print(f"    {label:34s} {rate:6.1f} crops/s  ({rate / bound:.0%} of the FLOP bound)")
    print(f"    ONNX Runtime / torch eager = {t_torch / t_onnx:.2f}x  (/ channels-last torch = {t_cl / t_onnx:.2f}x)")
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
