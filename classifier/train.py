"""Fine-tune the region classifier on R-CNN windows: SGD with momentum, aux losses, resumable.

Every random draw of iteration ``t`` (the window batch, the flips, dropout) comes from
seeds derived from ``(seed, t)``, so a run resumed from a checkpoint at iteration ``k``
continues exactly as the uninterrupted run would (bit-identical weights on CPU; the
checkpoint also restores the global RNG states for any other code drawing from them).

Data-parallel (``torchrun``, `classifier.distributed`): every process draws the same
global batch and trains DDP on its slice of it; rank 0 alone writes checkpoints, logs and
shows progress, and the recorded losses are the global batch's (averaged over processes).
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from classifier import distributed
from classifier.checkpoint import load_training_state, model_fingerprint, save_training_state
from classifier.score import resolve_device
from classifier.windows import WindowBatch, WindowDataset
from detect.errors import ConfigError
from detect.work_estimate import LongRunCheck

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LR_SCHEDULES = ("step", "poly")


def iteration_seeds(seed: int, iteration: int) -> tuple[int, int]:
    """Independent seeds of iteration ``iteration``: ``(window sampling, dropout)``."""
    a, b = np.random.SeedSequence([seed, iteration]).generate_state(2)
    return int(a), int(b)


def classifier_loss(output: Tensor | tuple, labels: Tensor, *, aux_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, main, aux)`` cross-entropy losses of a train-mode output.

    ``output`` is the logits ``(B, K)`` or ``(logits, (aux_1, ...))`` (`classifier.googlenet.ClassifierOutput`);
    ``total = main + aux_weight * sum(aux losses)`` (paper: 0.3 per auxiliary head).
    """
    if isinstance(output, Tensor):
        logits, aux = output, ()
    else:
        logits, aux = output[0], tuple(output[1])
    main = F.cross_entropy(logits, labels)
    aux_loss = sum((F.cross_entropy(a, labels) for a in aux), torch.zeros((), device=main.device))
    return main + aux_weight * aux_loss, main, aux_loss


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, lr_schedule: str, iterations: int, step_size: int, gamma: float, power: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """``step``: lr x ``gamma`` every ``step_size`` iterations (R-CNN); ``poly``: lr x (1 - t/T)^``power``."""
    if lr_schedule == "step":
        if step_size < 1:
            raise ConfigError(f"classifier train step_size must be >= 1, got {step_size}")
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if lr_schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=iterations, power=power)
    raise ConfigError(f"unknown classifier lr_schedule {lr_schedule!r}; expected one of {LR_SCHEDULES}")


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Use deterministic kernels (warning where none exists) inside the block, then restore the setting."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_before = torch.backends.cudnn.benchmark
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.backends.cudnn.benchmark = cudnn_before


def train_classifier(
    model: nn.Module,
    windows: WindowDataset,
    *,
    iterations: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    lr_schedule: str,
    step_size: int,
    gamma: float,
    power: float,
    aux_weight: float,
    checkpoint_dir: str | Path | None,
    checkpoint_every: int,
    seed: int,
    device: str = "cpu",
    log_every: int = 20,
    deterministic: bool = True,
    channels_last: bool = False,
    amp: bool = False,
    prefetch: bool = False,
    world: distributed.World | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` in place on batches of ``windows``; returns the per-iteration history.

    Args:
        model: train mode returns logits or ``(logits, aux_logits)``; eval mode logits ``(B, C + 1)``.
        windows: the labelled window pool (`classifier.windows.WindowDataset`).
        iterations: total SGD iterations (a resumed run continues to this count).
        lr, momentum, weight_decay: SGD (paper: momentum 0.9; R-CNN fine-tuning: lr 0.001, wd 0.0005).
        lr_schedule: ``step`` (uses ``step_size``, ``gamma``) or ``poly`` (uses ``power``).
        aux_weight: weight of each auxiliary head's loss (paper: 0.3).
        checkpoint_dir: where ``checkpoint.pt`` is written every ``checkpoint_every`` iterations
            and at the end; training resumes from it when it exists (its fingerprint must match:
            model arch/width/input size/classes and these hyperparameters).  None: no checkpoints.
        seed: seeds the window batches, flips and dropout of every iteration.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        log_every: log the mean loss every this many iterations.
        deterministic: ``torch.use_deterministic_algorithms`` (warn-only) during training.
        channels_last: run convolutions in channels-last memory format (measured on CPU with
            one thread: 1.34x the windows/s of GoogLeNet at width 0.25 / 64 px, 1.13x at
            width 1 / 224 px; on CUDA it enables tensor-core layouts).  Results stay
            deterministic, but not bit-identical to the other format.
        amp: CUDA only: float16 autocast for the forward pass with a dynamic loss scale
            (`torch.amp.GradScaler`); ignored on CPU.  The scale is not checkpointed: a resumed
            run starts it afresh (it re-adapts within a few iterations).
        prefetch: warp iteration ``t + 1``'s batch in a background thread while iteration
            ``t`` trains (OpenCV and PyTorch release the GIL).  Every batch is still drawn
            from its own seed, so the weights are bit-identical with or without it
            (benchmarks/member_speed.py measures both).
        world: the DDP process group (`classifier.distributed.World`); None = the initialised
            default group under torchrun, else one process.  With N processes each trains on
            its 1/N slice of every global batch (``fg_per_batch + bg_per_batch`` must divide
            by N), so the run matches one process with the same batch up to float rounding,
            dropout masks and batch-norm statistics (per process on CPU).  All processes
            resume from the same checkpoint; only rank 0 writes it.

    Returns:
        ``{"loss": [...], "main": [...], "aux": [...], "lr": [...]}``, one float per iteration
        since iteration 0 (restored from the checkpoint on resume), plus
        ``"windows_per_s"``: ``[throughput of this call's iterations]``.
    """
    if iterations < 0 or checkpoint_every < 1 or log_every < 1:
        raise ConfigError(
            f"classifier train needs iterations >= 0, checkpoint_every >= 1 and log_every >= 1, "
            f"got {iterations}, {checkpoint_every}, {log_every}"
        )
    model_size = getattr(model, "input_size", None)
    if model_size is not None and model_size != windows.input_size:
        raise ConfigError(f"classifier input_size: the model takes {model_size} px windows, the windows are "
                          f"{windows.input_size} px")
    world = world if world is not None else distributed.current()
    if world.distributed and windows.sampler.batch_size % world.world_size:
        raise ConfigError(f"classifier sampler: fg_per_batch + bg_per_batch = {windows.sampler.batch_size} "
                          f"must be a multiple of the {world.world_size} DDP processes")
    dev = resolve_device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = make_scheduler(
        optimizer, lr_schedule=lr_schedule, iterations=iterations, step_size=step_size, gamma=gamma, power=power
    )
    schedule_keys = {"step_size": step_size, "gamma": gamma} if lr_schedule == "step" else {"power": power}
    fingerprint: dict[str, Any] = {
        **model_fingerprint(model),
        "context_pad": float(windows.context_pad),
        "flip": windows.flip,
        "fg_per_batch": windows.sampler.fg_per_batch,
        "bg_per_batch": windows.sampler.bg_per_batch,
        "iterations": iterations,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "lr_schedule": lr_schedule,
        **schedule_keys,
        "aux_weight": aux_weight,
        "seed": seed,
    }
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start = 0
    history: dict[str, list[float]] = {"loss": [], "main": [], "aux": [], "lr": []}
    if path is not None and path.exists():
        start, history = load_training_state(
            path, fingerprint=fingerprint, model=model, optimizer=optimizer, scheduler=scheduler
        )
        log.info("classifier: resuming from %s at iteration %d", path, start)

    net = distributed.wrap_model(model, world, dev)  # after the load: DDP starts from rank 0's state
    use_amp = amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
    pin = dev.type == "cuda"  # page-locked batches copy to the GPU asynchronously

    def save(iteration: int) -> None:
        if path is not None and world.is_main:
            save_training_state(path, fingerprint=fingerprint, model=model, optimizer=optimizer,
                                scheduler=scheduler, iteration=iteration, history=history)

    def draw(it: int) -> WindowBatch:  # the global batch of iteration ``it``
        return windows.sample(torch.Generator().manual_seed(iteration_seeds(seed, it)[0]))

    executor = ThreadPoolExecutor(1, thread_name_prefix="windows") if prefetch else None
    pending: dict[int, Future] = {}

    def batch_of(it: int) -> WindowBatch:
        future = pending.pop(it, None)
        batch = future.result() if future is not None else draw(it)
        if executor is not None and it + 1 < iterations:
            pending[it + 1] = executor.submit(draw, it + 1)
        return batch

    def step(it: int) -> tuple[dict[str, Tensor], int]:
        dropout_seed = iteration_seeds(seed, it)[1]
        batch = batch_of(it)
        torch.manual_seed(distributed.rank_seed(dropout_seed, world.rank))
        rows = distributed.shard_batch(len(batch), world.rank, world.world_size)
        images, labels = batch.images[rows], batch.labels[rows]
        if pin:
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(dev, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(dev, non_blocking=True)
        with autocast:  # cross_entropy autocasts back to float32
            loss, main, aux = classifier_loss(net(images), labels, aux_weight=aux_weight)
        return {"loss": loss, "main": main, "aux": aux}, len(batch)

    model.train()
    try:
        rate = sgd_loop(step, optimizer=optimizer, scheduler=scheduler, history=history, start=start,
                        iterations=iterations, save=save, log_every=log_every, checkpoint_every=checkpoint_every,
                        deterministic=deterministic, name="classifier", unit="windows", world=world, scaler=scaler)
    finally:
        if executor is not None:  # an interrupted run leaves no thread warping behind it
            executor.shutdown(wait=True, cancel_futures=True)
    distributed.sync_buffers(model, world)  # every process ends with the model rank 0 saves
    if start < iterations or (path is not None and not path.exists()):
        save(iterations)
    distributed.barrier(world)  # on return the final checkpoint exists, whichever rank returns
    model.eval()
    return {**history, "windows_per_s": [rate]}


def sgd_loop(
    step: Callable[[int], tuple[dict[str, Tensor], int]],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    history: dict[str, list[float]],
    start: int,
    iterations: int,
    save: Callable[[int], None],
    log_every: int,
    checkpoint_every: int,
    deterministic: bool,
    name: str,
    unit: str,
    world: distributed.World = distributed.SINGLE,
    scaler: torch.amp.GradScaler | None = None,
    after_step: Callable[[int], None] | None = None,
) -> float:
    """Iterations ``start .. iterations - 1`` of SGD, shared by the warp and roi trainers.

    ``step(it)`` draws iteration ``it``'s batch from its own seeds, runs the forward pass
    and returns ``({"loss": optimised loss, other named terms...}, samples in the batch)``.
    Every term and the learning rate are appended to ``history``; ``save(iteration)`` is
    called every ``checkpoint_every`` iterations (the caller saves the final state).
    Returns the throughput of this call, in ``unit`` per second.

    With several DDP processes (``world``), ``step`` returns this process's loss on its
    slice and the *global* batch size; the history records each term averaged over the
    processes (the global batch's mean), and only rank 0 saves, logs and shows the bar.
    ``scaler``: mixed precision's loss scaling (None: plain float32 backward and step).
    ``after_step(it)``: called after iteration ``it``'s optimiser and scheduler steps (weight averaging).
    """
    seen, t0 = 0, time.perf_counter()
    bar = tqdm(range(start, iterations), desc=f"{name}: train", unit="it", initial=start, total=iterations,
               disable=not world.is_main)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # Says how long the rest takes on this device after a few iterations (asks first when long).
    eta = LongRunCheck(name, start=start, iterations=iterations, device=str(params[0].device) if params else "",
                       can_ask=not world.distributed)
    with deterministic_algorithms(deterministic):
        for it in bar:
            terms, count = step(it)
            optimizer.zero_grad(set_to_none=True)
            history["lr"].append(optimizer.param_groups[0]["lr"])
            if scaler is None:
                terms["loss"].backward()
                optimizer.step()
            else:
                scaler.scale(terms["loss"]).backward()
                scaler.step(optimizer)  # skipped when the scaled gradients overflowed
                scaler.update()
            scheduler.step()
            if after_step is not None:
                after_step(it)
            if world.distributed:  # one all-reduce for all terms
                means = distributed.all_reduce_mean(torch.stack([v.detach().float() for v in terms.values()]), world)
                terms = dict(zip(terms, means.cpu()))
            for key, value in terms.items():
                history[key].append(float(value.detach()))
            seen += count
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", **{f"{unit}_s": f"{rate:.0f}"}, refresh=False)
            done = it + 1
            if world.is_main:
                eta.after_iteration(done)
            if done % log_every == 0 and world.is_main:
                recent = history["loss"][-log_every:]
                log.info("%s: iteration %d/%d loss %.4f lr %.3g %.0f %s/s",
                         name, done, iterations, sum(recent) / len(recent), history["lr"][-1], rate, unit)
            if done % checkpoint_every == 0 and done != iterations and world.is_main:
                save(done)
    elapsed = time.perf_counter() - t0
    return seen / elapsed if seen else 0.0


__all__ = ["classifier_loss", "iteration_seeds", "make_scheduler", "sgd_loop", "train_classifier"]
