"""``torchrun --nproc_per_node=N -m classifier.train_ddp [overrides]``: train ensemble members data-parallel.

    torchrun --nproc_per_node=2 -m classifier.train_ddp profile=demo                  # 2 CPU processes (gloo)
    torchrun --nproc_per_node=8 -m classifier.train_ddp profile=paper data=ilsvrc \\
        data.root=/data/ILSVRC2015 device=cuda ensemble.members=[0,1]                # 8 GPUs (nccl)
    python -m classifier.train_ddp profile=tiny                                       # one process

Composes the pipeline's own config (``conf/config.yaml`` with the overrides
``python -m detect.run`` takes), loads the training split and its proposals as the
pipeline does, and trains the members it would train (``ensemble.members``) into its
cache (`detect.members.train_member`): ``python -m detect.run`` with the same overrides
then finds them there and skips its training stage.

MultiBox (when ``proposals.sources`` has it) and each member train DDP over all processes
(`proposals.multibox_train.train_multibox`, `classifier.train.train_classifier`); the data
and the proposals are prepared by rank 0 first (cached), then read by the others.  Warp mode
only: the RoI trainer is single-process.  ``proposals.multibox.batch_size`` and the
classifier's ``fg_per_batch + bg_per_batch`` are global batches: they must divide by N.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from classifier import distributed
from detect.cli import HYDRA_USER_ERRORS, check_config, one_line, run_user_errors
from detect.ensemble import EnsembleSettings, member_seed, shared_seed
from detect.errors import ConfigError
from detect.members import train_member
from detect.pretrain_stage import initialise
from detect.proposal_stage import build_sources, merge_arguments, split_proposals

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """The pipeline's config (``conf/config.yaml``) with Hydra command-line ``overrides``.

    An unknown option, a malformed override or a mandatory value left unset is a one-line `ConfigError`.
    """
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        try:
            return compose(config_name="config", overrides=list(overrides))
        except HYDRA_USER_ERRORS as exc:
            raise ConfigError(one_line(exc)) from None


def train_members_ddp(cfg: DictConfig, world: distributed.World) -> dict[int, Path]:
    """Train (or find cached) every member of ``cfg.ensemble``; returns member -> ``model.pt`` path.

    Every process must call this with the same ``cfg``.
    """
    if world.distributed and cfg.classifier.mode != "warp":
        raise ConfigError(f"DDP trains classifier.mode=warp only, got {cfg.classifier.mode!r}; "
                          "run mode=roi in one process")
    settings: EnsembleSettings = instantiate(cfg.ensemble)
    cache_dir = str(cfg.cache_dir)
    # Rank 0 generates the data and extracts the proposals (both cached on disk); the
    # others then load them instead of racing it to write the same cache files.  MultiBox
    # (in build_sources) trains data-parallel on every process, like the members.
    with distributed.main_first(world):
        source = instantiate(cfg.data)
        train = source.load(source.train_split)
    # Every process: pretraining (when the weights are neither shipped nor cached) is data-parallel too.
    init = initialise(cfg, device=world.device)
    sources = build_sources(cfg.proposals, train, cache_dir=cache_dir, seed=int(cfg.seed), init_weights=init.weights)
    with distributed.main_first(world):
        proposals = split_proposals(train, sources, cache_dir=cache_dir, workers=cfg.proposals.workers,
                                    chunk_size=cfg.proposals.chunk_size, shard=None,
                                    **merge_arguments(cfg.proposals.merge))
    paths = {}
    for k in settings.member_ids:
        _, key = train_member(init.for_member(k), train=train, proposals=proposals.boxes, proposals_key=proposals.key,
                              shared_seed=shared_seed(int(cfg.seed)),
                              seed=member_seed(int(cfg.seed), k), cache_dir=cache_dir, device=world.device)
        paths[k] = Path(cache_dir) / "members" / key / "model.pt"
    return paths


@run_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m classifier.train_ddp", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml, as for detect.run")
    parser.add_argument("--timeout-min", type=float, default=30.0,
                        help="longest wait in a collective, e.g. for rank 0 to extract missing proposals")
    args = parser.parse_args(argv)
    cfg = compose_config(args.overrides)
    check_config(cfg, "config")  # the typed schema, before any work (detect.schema)
    world = distributed.init_from_env(str(cfg.device), timeout_min=args.timeout_min)
    # Rank 0 speaks for the job; the others only report problems.
    logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING,
                        format=f"[%(asctime)s][rank {world.rank}][%(name)s][%(levelname)s] - %(message)s")
    try:
        paths = train_members_ddp(cfg, world)
        if world.is_main:
            for k, path in paths.items():
                print(f"member {k}: {path}", flush=True)
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main()
