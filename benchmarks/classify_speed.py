"""144-crop classification speed on the CPU (``python -m classifier.evaluate evaluate.crops=[144]``):
torch eager vs ONNX Runtime against the FLOP bound, ratios measured side by side in one run.

    python benchmarks/classify_speed.py                      # the demo network (width 0.125, 64 px), 1 thread
    python benchmarks/classify_speed.py --threads 2
    python benchmarks/classify_speed.py --width 1 --input-size 224 --images 2   # the paper's network

1. FLOP bound: the machine's float32 multiply-adds per second from a large matmul, divided by
   144 x the multiply-adds of one crop (`classifier.summary`'s count, Table 1's "ops") = the
   most images per second any implementation of the 144-crop test could reach here.
2. The network alone on the 144 prepared crops of each image (one image's crops per forward
   pass, as `classifier.evaluate` batches them): eager torch (channels-last, eval mode) vs
   ONNX Runtime (`classifier.onnx_runtime`'s export and session), images/s and share of the bound.
3. The whole evaluation (`classifier.evaluate.score_split`: decode, 4 resizes, 144 crops,
   normalise, forward, softmax, average) for both runtimes, and the crop preparation alone.

Images are the synthetic classification set's val images (demo knobs, written to a temporary
folder).  Each timing is the best of ``--repeats`` runs, the runs of the two sides of a ratio
interleaved, so a burst of load from other processes hits both alike (as
`benchmarks/classifier_speed.py`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from classifier.evaluate import CropSet, score_split
from classifier.factory import build_classifier
from classifier.onnx_runtime import OnnxClassifier, export_onnx, make_session
from classifier.pretrain import SHIPPED_DIR
from classifier.summary import summarize_model
from detect.data.classification import ClassificationDataset, ClassificationRecord, ClassInfo
from detect.data.synth_cls import CLS_CLASSES, ClsGeneratorParams, _jpeg_bytes, render_cls_image

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NUM_CLASSES = 48


def side_by_side(repeats: int, *fns) -> list[float]:
    """Best-of-``repeats`` seconds of each function, the runs interleaved (after one warm-up call each)."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def matmul_macs_per_s(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    (t,) = side_by_side(repeats, lambda: a @ b)
    return n**3 / t


def val_images(folder: Path, count: int) -> ClassificationDataset:
    """The first ``count`` val images of the synthetic classification set (conf/pretrain/data/synthetic.yaml)."""
    knobs = OmegaConf.to_container(OmegaConf.load(REPO / "conf/pretrain/data/synthetic.yaml"))
    params = ClsGeneratorParams(**{k: v for k, v in knobs.items() if k not in ("_target_", "root", "split",
                                                                                "train_split")})
    records = []
    for i in range(count):
        label = i % params.num_classes
        image, _ = render_cls_image(params, "val", i, label)
        path = folder / f"val_{i:04d}.JPEG"
        path.write_bytes(_jpeg_bytes(image, params.jpeg_quality))
        records.append(ClassificationRecord(str(path), label))
    classes = tuple(ClassInfo(c.synset, c.name) for c in CLS_CLASSES[:params.num_classes])
    return ClassificationDataset(str(folder), "val", classes, tuple(records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    model = build_classifier("googlenet", num_classes=NUM_CLASSES, width=args.width, input_size=args.input_size,
                             batch_norm=True)
    shipped = sorted(SHIPPED_DIR.glob("*.pt"))
    note = "random weights (speed does not depend on them)"
    if args.width == 0.125 and args.input_size == 64 and shipped:
        model.load_state_dict(torch.load(shipped[0], weights_only=True))
        note = f"shipped weights {shipped[0].name}"
    macs = summarize_model(model, arch="googlenet", input_size=args.input_size).total.ops
    model.eval()
    peak = matmul_macs_per_s()
    bound = peak / (144 * macs)

    with tempfile.TemporaryDirectory() as tmp:
        dataset = val_images(Path(tmp), args.images)
        onnx_path = Path(tmp) / "net.onnx"
        export_onnx(model, onnx_path, input_size=args.input_size)
        onnx_model = OnnxClassifier(make_session(onnx_path, intra_op_threads=args.threads),
                                    num_classes=NUM_CLASSES, input_size=args.input_size)
        torch_model = model.to(memory_format=torch.channels_last)
        crop_set = CropSet(dataset, schemes=[144], input_size=args.input_size, pixel_mean=MEAN, pixel_std=STD)
        batches = [crop_set[i]["crops"] for i in range(len(dataset))]

        @torch.inference_mode()
        def net_torch():
            for x in batches:
                torch.softmax(torch_model(x.contiguous(memory_format=torch.channels_last)), 1)

        @torch.inference_mode()
        def net_onnx():
            for x in batches:
                torch.softmax(onnx_model(x), 1)

        def prepare():
            for i in range(len(dataset)):
                crop_set[i]

        def full(net, channels_last):
            return lambda: score_split([net], dataset, schemes=[144], input_size=args.input_size, pixel_mean=MEAN,
                                       pixel_std=STD, batch_size=144, workers=0, channels_last=channels_last)

        t_net_torch, t_net_onnx = side_by_side(args.repeats, net_torch, net_onnx)
        t_full_torch, t_full_onnx, t_prep = side_by_side(args.repeats, full(torch_model, True),
                                                         full(onnx_model, False), prepare)
        p_torch = score_split([torch_model], dataset, schemes=[144], input_size=args.input_size, pixel_mean=MEAN,
                              pixel_std=STD, batch_size=144)[0][0][144]
        p_onnx = score_split([onnx_model], dataset, schemes=[144], input_size=args.input_size, pixel_mean=MEAN,
                             pixel_std=STD, batch_size=144, channels_last=False)[0][0][144]
    n = len(dataset)
    print(f"144-crop classification, GoogLeNet width {args.width}, {args.input_size} px, {NUM_CLASSES} classes, "
          f"{note}; {n} synthetic val images; torch and onnxruntime threads {args.threads}; cpu_count "
          f"{os.cpu_count()}; load average before {load_before:.2f}")
    print(f"multiply-adds per crop {macs / 1e6:.2f} M (classifier.summary), per image x144 {144 * macs / 1e6:.0f} M")
    print(f"matmul 2048^3: {peak / 1e9:.1f} G multiply-adds/s -> FLOP bound {bound:.1f} images/s "
          f"({bound * 144:.0f} crops/s)\n")
    rows = [("network only, torch eager", n / t_net_torch), ("network only, ONNX Runtime", n / t_net_onnx),
            ("whole evaluation, torch eager", n / t_full_torch), ("whole evaluation, ONNX Runtime", n / t_full_onnx),
            ("crop preparation alone", n / t_prep)]
    print(f"{'':32s} {'images/s':>9s} {'crops/s':>9s} {'of bound':>9s}")
    for name, ips in rows:
        share = f"{100 * ips / bound:8.1f}%" if "network" in name or "evaluation" in name else f"{'-':>9s}"
        print(f"{name:32s} {ips:9.2f} {144 * ips:9.0f} {share}")
    print(f"\nratios: ONNX Runtime / torch: network {t_net_torch / t_net_onnx:.2f}x, whole evaluation "
          f"{t_full_torch / t_full_onnx:.2f}x; crop preparation share of the torch evaluation "
          f"{100 * t_prep / t_full_torch:.0f}%")
    print(f"largest probability difference torch vs ONNX Runtime: {np.abs(p_torch - p_onnx).max():.2e}")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
