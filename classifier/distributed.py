"""Data-parallel training helpers over ``torch.distributed`` (torchrun + DDP; gloo on CPU, nccl on CUDA).

The trainers draw one *global* batch per iteration from the iteration's seed, so every
process draws the same batch; process ``rank`` keeps the contiguous slice `shard_batch`
gives it.  DDP averages the gradients of the per-process mean losses, which for equal
slices is the gradient of the global batch's mean loss: N processes follow the same
trajectory as one process with the same global batch (up to float summation order,
dropout masks and batch-norm statistics, which are per process).

Without torchrun's environment (``RANK``/``WORLD_SIZE`` unset) everything here is a no-op
for a single process, so the trainers keep one code path.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from classifier.score import resolve_device
from detect.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``world_size`` processes, ``local_rank`` on
    its machine, and the ``device`` it trains on (``cuda:<local_rank>`` with nccl)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = World()


def init_from_env(device: str = "auto", *, timeout_min: float = 30.0) -> World:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); without those variables, a single process on ``device``.

    Backend: nccl when ``device`` resolves to CUDA (each process then uses GPU ``LOCAL_RANK``
    and makes it the current device, so a plain ``cuda`` means that GPU), gloo otherwise.
    ``timeout_min`` bounds every collective, barriers included.
    """
    dev = resolve_device(device)
    if "WORLD_SIZE" not in os.environ:
        return World(device=str(dev))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"DDP process {rank} has LOCAL_RANK {local_rank} but only "
                              f"{torch.cuda.device_count()} GPUs are visible; use --nproc_per_node <= GPUs")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_min))
    return World(rank=rank, world_size=world_size, local_rank=local_rank, device=str(dev))


def current() -> World:
    """The initialised default process group as a `World` (`SINGLE` when there is none).

    Lets code that is called unchanged under torchrun (``detect.members.train_member``)
    find out it is one of several processes.  ``device`` is left at ``cpu``: callers pass
    their own device.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    rank = dist.get_rank()
    return World(rank=rank, world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def is_main() -> bool:
    """True on rank 0 and in a single process."""
    return current().is_main


def shard_batch(n: int, rank: int, world_size: int) -> slice:
    """Rows ``[rank * n / world_size, (rank + 1) * n / world_size)`` of a global batch of ``n``.

    Equal slices are required: DDP averages the gradients of per-process *mean* losses,
    which is the global mean only when every process holds as many samples.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if n % world_size:
        raise ConfigError(f"a batch of {n} does not split evenly over {world_size} DDP processes; "
                          f"use a multiple of {world_size}")
    per = n // world_size
    return slice(rank * per, (rank + 1) * per)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of process ``rank``'s private draws (dropout): ``seed`` itself on rank 0, so one
    process draws exactly what it drew before DDP existed; independent seeds elsewhere, so
    the processes' slices do not all get the same dropout masks."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), rank]).generate_state(1)[0])


def all_reduce_mean(values: Tensor, world: World) -> Tensor:
    """Mean over processes of ``values`` (any shape; returned as a new tensor). Identity for one process."""
    if not world.distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return out / world.world_size


def barrier(world: World | None = None) -> None:
    """Wait for every process (no-op for one)."""
    if (world or current()).distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first, then the others: for cache-filling work (data generation,
    proposals) that the others then find on disk instead of computing it concurrently."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


def wrap_model(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` itself for one process; else DistributedDataParallel over it (already on ``device``).

    Batch norm: on CUDA the layers become ``SyncBatchNorm`` (statistics over the global
    batch, as one process).  torch has no CPU kernel for it, so on CPU (gloo) each
    process normalises with its own slice's statistics and DDP copies rank 0's running
    statistics to the others at every forward.  The parameters are shared with ``model``
    (the optimiser built on ``model.parameters()`` keeps working); on CUDA ``model`` keeps
    the ``SyncBatchNorm`` layers, which act as plain batch norm in eval mode or outside DDP.
    """
    if not world.distributed:
        return model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device])
    if has_bn and world.is_main:
        log.warning("DDP on CPU: batch norm normalises each process's slice with its own statistics "
                    "(torch's SyncBatchNorm needs CUDA)")
    return nn.parallel.DistributedDataParallel(model)


def sync_buffers(model: nn.Module, world: World) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every process.

    DDP broadcasts them at the start of each forward, but the last forward updates them
    from each process's own slice; after this, every process holds rank 0's model.
    """
    if world.distributed:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "SINGLE",
    "World",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "current",
    "init_from_env",
    "is_main",
    "main_first",
    "rank_seed",
    "shard_batch",
    "sync_buffers",
    "wrap_model",
]
