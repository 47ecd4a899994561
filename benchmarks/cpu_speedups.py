"""The demo's CPU speed-ups of 2026-12-04, each measured side by side against what it replaced.

    python benchmarks/cpu_speedups.py [overrides...]

Needs a cache with the demo's data (``python -m detect.run`` first, or any run that generated
``${cache_dir}/synthetic``); trains nothing that is cached.  One torch thread unless said, as
the demo's member workers run.  Prints, best of 3 alternating rounds each:

* ``sample``: a member's training batch (128 windows from ~115 images): the old way (decoded
  uint8 images cached, each normalised whole again for its one or two windows, `warp_regions`
  per image) against `WindowDataset.sample` now (normalised images cached, `warp_windows`),
  and whether the batches are identical;
* ``score``: the member network's forward pass on 64 px windows, batch norm as trained
  against folded into the convolutions (`classifier.fuse.fold_batch_norm`), and the largest
  logit difference;
* ``multibox``: MultiBox training iterations (the demo's net, 32 images of 128 px, forward,
  loss-free backward and an SGD step): contiguous on 2 threads (before) against channels-last
  on 1 and on 2 threads.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from classifier.fuse import fold_batch_norm
from classifier.warp import warp_regions
from classifier.windows import WindowDataset
from detect.members import build_model
from proposals.multibox import MultiBoxNet


def best_rate(fn, count: int, rounds: int = 3) -> float:
    """Items per second of ``fn()`` (which handles ``count`` items), best of ``rounds``."""
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = max(best, count / (time.perf_counter() - t0))
    return best


def sample_old_way(windows: WindowDataset, generator: torch.Generator) -> torch.Tensor:
    """A batch as `WindowDataset.sample` made it before: per image, decode + normalise + warp."""
    fg, bg = windows.sampler.sample(windows._positive, windows._background, generator)
    idx = torch.cat([fg, bg])
    flipped = torch.rand(len(idx), generator=generator) < 0.5
    s = windows.input_size
    hwc = np.empty((len(idx), s, s, 3), np.float32)
    image_index, boxes = windows.image_index[idx], windows.boxes[idx]
    for i in torch.unique(image_index).tolist():
        rows = torch.nonzero(image_index == i).flatten().numpy()
        warped = warp_regions(windows.image(i), boxes[rows].numpy(), input_size=s,
                              context_pad=windows.context_pad, pixel_mean=windows.pixel_mean,
                              pixel_std=windows.pixel_std, flip=flipped[rows].numpy())
        hwc[rows] = warped.permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()


def main(overrides: list[str]) -> None:
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    torch.set_num_threads(1)
    source = instantiate(cfg.data)
    train = source.load(source.train_split)
    c = cfg.classifier
    rng = np.random.default_rng(0)
    # Jittered ground truth plus random boxes: the window pool's make-up, without running the proposals stage.
    proposals = []
    for rec in train.records:
        jitter = rec.boxes + rng.normal(0, 3, rec.boxes.shape) if rec.num_objects else np.zeros((0, 4))
        x1 = rng.uniform(0, rec.width - 8, 200)
        y1 = rng.uniform(0, rec.height - 8, 200)
        rand = np.stack([x1, y1, x1 + rng.uniform(6, rec.width / 2, 200), y1 + rng.uniform(6, rec.height / 2, 200)], 1)
        proposals.append(np.concatenate([jitter, rand]).astype(np.float32))
    windows = WindowDataset(train, proposals, labeler=instantiate(c.labeler), sampler=instantiate(c.sampler),
                            input_size=c.model.input_size, **{**c.windows, "image_cache": 2 * len(train)})
    for i in range(len(train)):  # both caches full, as in a long run: decoding is not timed
        windows.normalised_image(i)
        windows.image(i)
    batch, n = windows.sampler.batch_size, 20
    old = best_rate(lambda: [sample_old_way(windows, torch.Generator().manual_seed(k)) for k in range(n)], n * batch)
    new = best_rate(lambda: [windows.sample(torch.Generator().manual_seed(k)) for k in range(n)], n * batch)
    same = all(torch.equal(sample_old_way(windows, torch.Generator().manual_seed(k)),
                           windows.sample(torch.Generator().manual_seed(k)).images) for k in range(5))
    print(f"sample: {old:.0f} -> {new:.0f} windows/s ({new / old:.2f}x); identical batches: {same}")

    torch.manual_seed(0)
    model = build_model(c, len(train.classes)).eval()
    with torch.no_grad():  # batch-norm statistics away from the initial (0, 1), as after training
        model.train()
        for k in range(3):
            model(windows.sample(torch.Generator().manual_seed(100 + k)).images)
        model.eval()
    folded = fold_batch_norm(model)
    x = torch.cat([windows.sample(torch.Generator().manual_seed(k)).images for k in range(4)])
    x = x.contiguous(memory_format=torch.channels_last)
    plain_net, folded_net = (m.to(memory_format=torch.channels_last) for m in (model, folded))
    with torch.inference_mode():
        plain = best_rate(lambda: plain_net(x), len(x))
        fast = best_rate(lambda: folded_net(x), len(x))
        diff = float((plain_net(x) - folded_net(x)).abs().max())
    print(f"score: {plain:.0f} -> {fast:.0f} windows/s ({fast / plain:.2f}x) with batch norm folded; "
          f"max logit difference {diff:.1e}")

    mb = cfg.proposals.multibox

    def multibox_rate(threads: int, channels_last: bool) -> float:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = MultiBoxNet(num_shapes=mb.num_shapes, width=mb.width, input_size=mb.input_size,
                          batch_norm=mb.batch_norm, feature_layer=mb.feature_layer)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net.to(memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        images = torch.randn(mb.batch_size, 3, mb.input_size, mb.input_size).contiguous(memory_format=fmt)

        def step() -> None:
            for _ in range(5):
                offsets, logits = net(images)
                (offsets.square().mean() + logits.square().mean()).backward()
                opt.step()
                opt.zero_grad()

        step()  # warm-up
        rate = best_rate(step, 5)
        torch.set_num_threads(1)
        return rate

    before = multibox_rate(2, False)
    one, two = multibox_rate(1, True), multibox_rate(2, True)
    print(f"multibox: contiguous 2 threads {before:.2f} it/s; channels-last 1 thread {one:.2f} it/s "
          f"({one / before:.2f}x), 2 threads {two:.2f} it/s ({two / before:.2f}x)")


if __name__ == "__main__":
    main(sys.argv[1:])
