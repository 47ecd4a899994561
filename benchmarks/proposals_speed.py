"""Proposal speed: Selective Search 2 workers vs 1, scale 2 vs scale 1, and MultiBox inference.

    python benchmarks/proposals_speed.py [--images 24] [--workers 2] [--images-from synthetic|shapes]
    python benchmarks/proposals_speed.py --images 24 --multibox-only   # MultiBox images/s only

Images: by default the embedded generator (`detect.data.synth`, knobs of
conf/data/synthetic.yaml) with the image size set to 500x375 like ILSVRC;
``--images-from shapes`` uses a simpler textured-shapes generator instead.  They
run through the real extraction path (`proposals.extract.extract_proposals`:
file decoding, worker processes, chunked cache writes) with a fresh cache each
time, with the SS settings of conf/proposals/ss.yaml.  ``--demo N`` also counts
boxes at scale 1 and 2 on N images of the default embedded dataset at its own
size (160-240 px, as the demo profile runs SS).  MultiBox: images/s of
`proposals.multibox.MultiBoxProposer` (resize, network, decode, NMS, top 200; the
weights are random, which does not change the cost) at the demo settings and at the
paper's (conf/proposals/multibox.yaml, conf/profile/paper.yaml), one image at a time as
the extraction runs it, on decoded images.  Everything is measured in one run so the
ratios share the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detect.data.record import ClassList, DetectionDataset, ImageRecord, empty_annotations  # noqa: E402
from proposals.extract import _init_worker, extract_proposals  # noqa: E402
from proposals.selective_search import SelectiveSearch  # noqa: E402


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sum of upsampled random colour fields at several scales, float (h, w, 3) in [0, 255]."""
    out = np.zeros((h, w, 3), np.float64)
    for cell, weight in ((64, 0.5), (16, 0.3), (4, 0.2)):
        field = rng.random((max(2, h // cell), max(2, w // cell), 3))
        out += weight * cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    base = rng.random(3)
    return np.clip(255 * (0.5 * base + 0.5 * out), 0, 255)


def textured_image(seed: int, width: int = 500, height: int = 375, objects: int = 10) -> np.ndarray:
    """A cluttered RGB uint8 image: textured background, textured shapes at varied scales, sensor noise."""
    rng = np.random.default_rng(seed)
    img = _texture(rng, height, width)
    for _ in range(objects):
        mask = np.zeros((height, width), np.uint8)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(15, min(width, height) // 2))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(mask, (cx - size, cy - size // 2), (cx + size, cy + size // 2), 1, -1)
        elif kind == 1:
            cv2.ellipse(mask, (cx, cy), (size, int(size * rng.uniform(0.3, 1.0))), float(rng.uniform(0, 180)),
                        0, 360, 1, -1)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, 6))
            radii = size * rng.uniform(0.5, 1.0, 6)
            pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
            cv2.fillPoly(mask, [pts], 1)
        colour = rng.random(3) * 255
        obj = 0.7 * colour + 0.3 * _texture(rng, height, width)
        img[mask.astype(bool)] = obj[mask.astype(bool)]
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, n: int, width: int, height: int) -> DetectionDataset:
    records = []
    for i in range(n):
        path = root / f"bench_{i:04d}.jpg"
        cv2.imwrite(str(path), textured_image(i, width, height)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        records.append(ImageRecord(path.stem, i + 1, path, width, height, *empty_annotations()))
    return DetectionDataset("bench", "val", root, ClassList(("n0",), ("object",)), tuple(records))


def mean_superpixel_area(dataset: DetectionDataset, *, k: float, min_region_size: int, sigma: float) -> float:
    """Mean region area (pixels) of OpenCV's graph segmentation of the HSV images (SS's first segmentation)."""
    gs = cv2.ximgproc.segmentation.createGraphSegmentation(sigma, float(k), int(min_region_size))
    areas = []
    for rec in dataset.records:
        hsv = cv2.cvtColor(cv2.imread(str(rec.path)), cv2.COLOR_BGR2HSV)
        areas.append(hsv.shape[0] * hsv.shape[1] / (gs.processImage(hsv).max() + 1))
    return float(np.mean(areas))


def synthetic_dataset(root: Path, n: int, *, size: tuple[int, int] | None) -> DetectionDataset:
    """``n`` val images of the embedded generator (conf/data/synthetic.yaml), optionally at a fixed size."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/data/synthetic.yaml")
    cfg.root = str(root)
    cfg.splits = {"train": 1, "val": n}
    cfg.blacklist_entries = 0
    if size is not None:
        cfg.image_long_side = [max(size), max(size)]
        cfg.image_aspect = [min(size) / max(size)] * 2
        cfg.portrait_prob = 0.0
    source = instantiate(cfg)
    source.ensure(progress=False)
    return source.reader().load("val")


def _noop(_: int) -> int:
    return os.getpid()


def pool_startup_s(source: SelectiveSearch, workers: int) -> float:
    """Seconds to spawn ``workers`` initialised processes and get one answer from each."""
    t = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(source,)) as pool:
        list(pool.map(_noop, range(workers)))
    return time.perf_counter() - t


def _cpu_s() -> float:
    """CPU seconds of this process plus its finished children (pool workers count once the pool is shut down)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_extract(dataset, source, workers: int, cache_root: Path, cpu: list | None = None):
    """Wall seconds and proposals of a fresh extraction; appends its CPU seconds to ``cpu`` if given."""
    cache_dir = Path(tempfile.mkdtemp(dir=cache_root))
    t, c = time.perf_counter(), _cpu_s()
    props = extract_proposals(dataset, source, source_id=source.identity(), cache_dir=cache_dir, workers=workers,
                              chunk_size=8, shard=None, progress=False)
    if cpu is not None:
        cpu.append(_cpu_s() - c)
    return time.perf_counter() - t, props


def multibox_images_per_s(images: list[np.ndarray], **net) -> float:
    """Images/s of a `MultiBoxProposer` (random weights) over ``images`` (best of 2 passes, after a warm-up)."""
    import torch

    from proposals.multibox import MultiBoxNet, MultiBoxProposer, grid_priors

    torch.manual_seed(0)
    model = MultiBoxNet(batch_norm=True, **net).eval()
    shapes = np.random.default_rng(0).uniform(0.1, 0.9, (net["num_shapes"], 2))
    proposer = MultiBoxProposer(model=model, priors=grid_priors(shapes, model.grid).astype(np.float32),
                                network_key="benchmark", offset_units="prior", top_k=200, nms_iou=0.7, min_size=2,
                                pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225))
    proposer(images[0])
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for image in images:
            proposer(image)
        best = min(best, time.perf_counter() - t0)
    return len(images) / best


def report_multibox(dataset) -> None:
    from detect.data.image_io import load_rgb

    images = [load_rgb(r.path) for r in dataset.records]
    print(f"\nMultiBox inference, one image at a time, {len(images)} decoded images, "
          f"{torch_threads()} torch threads:")
    demo = multibox_images_per_s(images, num_shapes=11, width=0.25, input_size=96, feature_layer="inception3b")
    print(f"  demo  (width 0.25, 96 px, inception3b, 1584 priors):  {demo:7.1f} images/s")
    paper = multibox_images_per_s(images[:8], num_shapes=11, width=1.0, input_size=224,
                                  feature_layer="inception4e")
    print(f"  paper (width 1, 224 px, inception4e, 2156 priors):    {paper:7.1f} images/s")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--images-from", choices=("synthetic", "shapes"), default="synthetic")
    ap.add_argument("--demo", type=int, default=0, help="also count boxes on N default embedded images")
    ap.add_argument("--quality", action="store_true", help="also time quality mode at scale 1")
    ap.add_argument("--multibox-only", action="store_true", help="only time MultiBox inference")
    args = ap.parse_args()

    # conf/proposals/ss.yaml
    ss1 = SelectiveSearch(mode="fast", base_k=50, inc_k=50, sigma=0.8, min_region_size=50, scale=1,
                          resize_short_side=375, max_long_side=1000, max_boxes=None, min_size=2)
    ss2 = dataclasses.replace(ss1, scale=2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.images_from == "synthetic":
            dataset = synthetic_dataset(tmp / "synthetic", args.images, size=(args.width, args.height))
        else:
            (tmp / "images").mkdir()
            dataset = make_dataset(tmp / "images", args.images, args.width, args.height)
        print(f"{args.images} {args.images_from} {args.width}x{args.height} JPEG images; "
              f"cpu_count={os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
        if args.multibox_only:
            report_multibox(dataset)
            return

        cpu: list[float] = []
        t1, p1 = timed_extract(dataset, ss1, 1, tmp, cpu)
        tw, pw = timed_extract(dataset, ss1, args.workers, tmp, cpu)
        startup = pool_startup_s(ss1, args.workers)
        same = all(np.array_equal(a, b) for a, b in zip(p1.boxes, pw.boxes))
        print("\nSelective Search fast, scale 1, whole extraction (decode + SS + cache write):")
        print(f"  1 worker:  {t1:7.2f} s  ({t1 / args.images:.3f} s/img)")
        print(f"  {args.workers} workers: {tw:7.2f} s  ({tw / args.images:.3f} s/img)   identical boxes: {same}")
        print(f"  speed-up {t1 / tw:.2f}x; pool start-up (spawn + import torch/cv2) {startup:.2f} s; "
              f"speed-up without start-up {t1 / max(tw - startup, 1e-9):.2f}x")
        print(f"  CPU seconds: 1 worker {cpu[0]:.1f}, {args.workers} workers {cpu[1]:.1f} in all "
              f"(the wall-clock speed-up is capped by the cores other processes leave free)")

        t2, p2 = timed_extract(dataset, ss2, 1, tmp)
        n1, n2 = p1.per_image, p2.per_image
        print("\nscale 2 vs scale 1 (1 worker):")
        print(f"  scale 1: {t1 / args.images:.3f} s/img  {n1:7.1f} boxes/img")
        print(f"  scale 2: {t2 / args.images:.3f} s/img  {n2:7.1f} boxes/img")
        print(f"  ratio scale2/scale1: time {t2 / t1:.2f}, boxes {n2 / n1:.2f}")
        k1, _, m1 = ss1.scaled
        k2, _, m2 = ss2.scaled
        a1 = mean_superpixel_area(dataset, k=k1, min_region_size=m1, sigma=ss1.sigma)
        a2 = mean_superpixel_area(dataset, k=k2, min_region_size=m2, sigma=ss1.sigma)
        a2k = mean_superpixel_area(dataset, k=k2, min_region_size=m1, sigma=ss1.sigma)
        print(f"  mean superpixel area (HSV, k={k1}): {a1:.0f} px; scale 2 (k={k2}, floor {m2}): {a2:.0f} px "
              f"= {a2 / a1:.2f}x; k alone doubled (floor {m1}): {a2k:.0f} px = {a2k / a1:.2f}x")
        # The alternative design: scale k only, keep the superpixel floor (what OpenCV's API alone allows).
        k_only = dataclasses.replace(ss1, base_k=2 * ss1.base_k, inc_k=2 * ss1.inc_k)
        tk, pk = timed_extract(dataset, k_only, 1, tmp)
        print(f"  k alone doubled: {tk / args.images:.3f} s/img  {pk.per_image:7.1f} boxes/img "
              f"(ratio {pk.per_image / n1:.2f})")
        if args.quality:
            ssq = dataclasses.replace(ss1, mode="quality")
            tq, pq = timed_extract(dataset, ssq, 1, tmp)
            print(f"  quality scale 1: {tq / args.images:.3f} s/img  {pq.per_image:7.1f} boxes/img")
        if args.demo:
            demo = synthetic_dataset(tmp / "demo", args.demo, size=None)
            native = [dataclasses.replace(ss, resize_short_side=None) for ss in (ss1, ss2)]  # conf/profile/demo.yaml
            (d1, q1), (d2, q2) = (timed_extract(demo, ss, 1, tmp) for ss in native)
            sides = sorted({(r.width, r.height) for r in demo.records}, key=lambda wh: wh[0] * wh[1])
            print(f"\n{args.demo} default embedded images ({sides[0][0]}x{sides[0][1]} .. "
                  f"{sides[-1][0]}x{sides[-1][1]}), SS at their own size:")
            print(f"  scale 1: {d1 / args.demo:.3f} s/img  {q1.per_image:7.1f} boxes/img")
            print(f"  scale 2: {d2 / args.demo:.3f} s/img  {q2.per_image:7.1f} boxes/img   "
                  f"ratio {q2.per_image / q1.per_image:.2f}")
        report_multibox(dataset)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
