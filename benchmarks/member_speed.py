"""Where a warp-mode member's training time goes, and what prefetching the next batch buys.

    python benchmarks/member_speed.py [overrides...]     # e.g. classifier.train.iterations=60

Builds member 0 of the configured run from the cache (data, pretrained network, the train
split's merged proposals: run ``python -m detect.run`` first), then measures in one process:

* ``sample``: ``WindowDataset.sample`` alone (choose, warp, flip and normalise a batch);
* ``train``: ``classifier.train.train_classifier`` for ``classifier.train.iterations``
  iterations with ``classifier.train.prefetch`` off and on, alternately, twice each, from the
  same initial weights, and checks that both end with identical weights (prefetching
  must not change what is trained).

Prints windows/s of each and the ratio prefetch-on / off.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from classifier.train import train_classifier
from classifier.windows import WindowDataset
from detect.members import build_model
from detect.pretrain_stage import initialise
from detect.proposal_stage import build_sources, merge_arguments, split_proposals


def main(overrides: list[str]) -> None:
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["classifier.train.iterations=60", *overrides])
    cache_dir = str(cfg.cache_dir)
    source = instantiate(cfg.data)
    train = source.load(source.train_split)
    init = initialise(cfg, device="cpu")
    sources = build_sources(cfg.proposals, train, cache_dir=cache_dir, seed=int(cfg.seed), init_weights=init.weights)
    props = split_proposals(train, sources, cache_dir=cache_dir, workers=cfg.proposals.workers,
                            chunk_size=cfg.proposals.chunk_size, shard=None, **merge_arguments(cfg.proposals.merge))
    member = init.for_member(0)
    torch.manual_seed(0)
    start = build_model(member, len(train.classes))
    windows = WindowDataset(train, props.boxes, labeler=instantiate(member.labeler),
                            sampler=instantiate(member.sampler), input_size=member.model.input_size, **member.windows)
    batch = windows.sampler.batch_size
    for i in range(len(train)):  # decode and normalise every image once, as a long run's cache holds them
        windows.normalised_image(i)

    n = 30
    t0 = time.perf_counter()
    for it in range(n):
        windows.sample(torch.Generator().manual_seed(it))
    sample_rate = n * batch / (time.perf_counter() - t0)

    train_args = OmegaConf.to_container(member.train, resolve=True)
    iterations = int(train_args["iterations"])
    rates: dict[bool, list[float]] = {False: [], True: []}
    weights: dict[bool, dict] = {}
    for prefetch in (False, True, False, True):
        model = copy.deepcopy(start)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train_classifier(model, windows, checkpoint_dir=tmp, seed=0, device="cpu",
                             **{**train_args, "prefetch": prefetch, "log_every": iterations})
            rates[prefetch].append(iterations * batch / (time.perf_counter() - t0))
        weights[prefetch] = model.state_dict()
    identical = all(torch.equal(weights[False][k], weights[True][k]) for k in weights[False])
    off, on = max(rates[False]), max(rates[True])
    print(f"windows/s: sample alone {sample_rate:.0f}; train (best of 2, {iterations} iterations of {batch}): "
          f"prefetch off {off:.0f}, on {on:.0f}; ratio on/off {on / off:.2f}; identical weights: {identical}")


if __name__ == "__main__":
    main(sys.argv[1:])
