"""``python -m classifier.pretrain``: supervised pre-training of the Table-1 GoogLeNet on a classification set.

R-CNN's recipe, and the 2014 entry's: train the network on image classification first
(ILSVRC CLS), then fine-tune it on detection windows.  This stage trains the network
that ``classifier.model`` describes on ``pretrain.data`` (the synthetic CLS-LOC set by
default; ILSVRC CLS-LOC or a class-per-folder tree for real data) with the paper's
options: SGD with momentum 0.9, the learning rate x ``lr_gamma`` every
``lr_step_epochs`` epochs (paper: 0.96 every 8), Polyak-averaged final weights
(`torch.optim.swa_utils.AveragedModel`), auxiliary losses x 0.3 and the augmentation of
`classifier.cls_batches`.

Outputs: ``<cache_dir>/pretrain/<key>/model.pt`` (a plain state dict of the averaged
weights, usable as ``classifier.model.weights``), ``metrics.json`` (``top1_error``,
``top5_error`` on ``pretrain.data.split``, one centre crop; ``timing_s``) and
``training_curve.png``; the key hashes the data knobs, the network and every training
option.  A killed run resumes exactly from its last checkpoint.  The app copies the
three files into its run directory.

``pretrain.use_shipped`` (default true): when the weights shipped in
``classifier/pretrained/`` were made by exactly this configuration (same key), they are
used instead of training, as torchvision ships weights with their recipes;
``pretrain.use_shipped=false`` retrains them (``benchmarks/pretrain_reproduce.py``
checks that doing so reproduces the shipped numbers).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from classifier import distributed
from classifier.checkpoint import model_fingerprint, rng_state, set_rng_state
from classifier.cls_batches import ClassificationSamples, IterationBatchSampler, eval_transform, train_transform
from classifier.score import resolve_device
from classifier.train import classifier_loss, deterministic_algorithms, sgd_loop
from detect import atomic
from detect.checkpoint import load_checkpoint, save_checkpoint
from detect.data.classification import ClassificationDataset
from detect.errors import ConfigError, config_float, config_int
from detect.fingerprint import config_hash, file_digest

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.pt"
METRICS_NAME = "metrics.json"
CURVE_NAME = "training_curve.png"
SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained"


# --------------------------------------------------------------------------- metrics

def topk_errors(probs: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Top-k error of ``(N, K)`` scores against ``(N,)`` labels: the share of rows whose label is not among
    their k highest scores (ties broken towards the lower class index, as a stable argsort)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if len(probs) == 0:
        raise ValueError("top-k error of no images")
    order = np.argsort(-probs, axis=1, kind="stable")
    return {k: float(1.0 - (order[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


@torch.no_grad()
def predict_probs(model: nn.Module, dataset: ClassificationDataset, *, input_size: int, resize_ratio: float,
                  pixel_mean, pixel_std, batch_size: int, workers: int, device: str) -> np.ndarray:
    """Softmax probabilities float32 ``(N, K)`` of one centre crop per image, in record order."""
    dev = resolve_device(device)
    model.to(dev).eval()
    samples = ClassificationSamples(dataset, eval_transform(input_size=input_size, resize_ratio=resize_ratio,
                                                            pixel_mean=pixel_mean, pixel_std=pixel_std))
    loader = DataLoader(_KeyList(samples, [(i, 0) for i in range(len(dataset))]), batch_size=batch_size,
                        num_workers=workers)
    out = [torch.softmax(model(x.to(dev)), dim=1).float().cpu() for x, _ in loader]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


class _KeyList(torch.utils.data.Dataset):
    def __init__(self, samples: ClassificationSamples, keys: list[tuple[int, int]]):
        self.samples, self.keys = samples, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        return self.samples[self.keys[i]]


# --------------------------------------------------------------------------- training

@dataclass(frozen=True)
class PretrainResult:
    """Where the pretrained weights are, what produced them (``key``) and their metrics."""

    weights: Path
    key: str
    metrics: dict[str, Any]
    source: str  # "shipped", "cache" or "trained"


def iterations_for(epochs: float, *, images: int, batch_size: int) -> int:
    return max(1, int(round(epochs * images / batch_size)))


def train_pretrain(
    model: nn.Module, train: ClassificationDataset, *, input_size: int, pixel_mean, pixel_std, augment: dict,
    epochs: float, batch_size: int, lr: float, momentum: float, weight_decay: float, lr_step_epochs: float,
    lr_gamma: float, aux_weight: float, polyak_start_epoch: float, polyak_decay: float | None, workers: int,
    checkpoint_dir: Path | None, checkpoint_every: int, log_every: int, seed: int, device: str = "cpu",
    channels_last: bool = True, deterministic: bool = True, world: distributed.World | None = None,
) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train ``model`` (train mode: logits or ``(logits, aux)``) on ``train``; returns the Polyak-averaged
    copy (eval mode) and the per-iteration history (``loss``, ``main``, ``aux``, ``lr``).

    ``epochs`` passes over the data, in batches of ``batch_size`` (the global batch under
    DDP); lr x ``lr_gamma`` every ``lr_step_epochs`` epochs; from ``polyak_start_epoch``
    on, the averaged weights follow the model (exponential average with ``polyak_decay``
    per iteration, or the plain average of every iterate when null, as Polyak-Juditsky).
    """
    world = world if world is not None else distributed.current()
    for key, value in (("epochs", epochs), ("lr", lr), ("lr_step_epochs", lr_step_epochs)):
        if config_float(f"pretrain.train.{key}", value) <= 0:
            raise ConfigError(f"pretrain.train.{key} must be > 0, got {value}")
    config_int("pretrain.train.batch_size", batch_size, low=1)
    if polyak_decay is not None and not 0.0 <= polyak_decay < 1.0:
        raise ConfigError(f"pretrain.train.polyak_decay must be in [0, 1) or null, got {polyak_decay}")
    if batch_size % world.world_size:
        raise ConfigError(f"pretrain.train.batch_size {batch_size} must be a multiple of the "
                          f"{world.world_size} DDP processes")
    iterations = iterations_for(epochs, images=len(train), batch_size=batch_size)
    step_size = iterations_for(lr_step_epochs, images=len(train), batch_size=batch_size)
    polyak_start = min(int(round(polyak_start_epoch * len(train) / batch_size)), iterations - 1)
    dev = resolve_device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=lr_gamma)
    averaged = AveragedModel(model, multi_avg_fn=None if polyak_decay is None else get_ema_multi_avg_fn(polyak_decay),
                             use_buffers=True)
    fingerprint = {**model_fingerprint(model), "images": len(train), "iterations": iterations,
                   "batch_size": batch_size, "lr": lr, "seed": seed}
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start, history = 0, {"loss": [], "main": [], "aux": [], "lr": []}
    if path is not None and path.exists():
        state = load_checkpoint(path, fingerprint=fingerprint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        averaged.load_state_dict(state["averaged"])
        set_rng_state(state["rng"])
        start, history = int(state["iteration"]), {k: list(v) for k, v in state["history"].items()}
        log.info("pretrain: resuming from %s at iteration %d", path, start)

    def save(iteration: int) -> None:
        if path is not None and world.is_main:
            save_checkpoint(path, fingerprint=fingerprint, iteration=int(iteration), history=history,
                            model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), averaged=averaged.state_dict(), rng=rng_state())

    transform = train_transform(input_size=input_size, pixel_mean=pixel_mean, pixel_std=pixel_std, **augment)
    sampler = IterationBatchSampler(len(train), batch_size=batch_size, seed=seed, start=start,
                                    iterations=iterations, rank=world.rank, world_size=world.world_size)
    loader = DataLoader(ClassificationSamples(train, transform), batch_sampler=sampler, num_workers=workers,
                        pin_memory=dev.type == "cuda", persistent_workers=False,
                        prefetch_factor=4 if workers else None)
    batches = iter(loader)
    net = distributed.wrap_model(model, world, dev)

    def step(it: int):
        images, labels = next(batches)
        torch.manual_seed(distributed.rank_seed(int(np.random.SeedSequence([seed, it, 1]).generate_state(1)[0]),
                                                world.rank))  # dropout
        images = images.to(dev, non_blocking=True).contiguous(memory_format=memory_format)
        loss, main, aux = classifier_loss(net(images), labels.to(dev), aux_weight=aux_weight)
        return {"loss": loss, "main": main, "aux": aux}, batch_size

    def after_step(it: int) -> None:
        if it >= polyak_start:
            averaged.update_parameters(model)

    model.train()
    sgd_loop(step, optimizer=optimizer, scheduler=scheduler, history=history, start=start, iterations=iterations,
             save=save, log_every=log_every, checkpoint_every=checkpoint_every, deterministic=deterministic,
             name="pretrain", unit="images", world=world, after_step=after_step)
    if start < iterations or (path is not None and not path.exists()):
        save(iterations)
    distributed.barrier(world)
    result = averaged.module
    result.eval()
    return result, history


# --------------------------------------------------------------------------- the stage

def _model_cfg(model_cfg: DictConfig) -> dict[str, Any]:
    """The network's identity for the key: everything but ``weights`` (pretraining starts from scratch)."""
    return {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k not in ("weights",)}


def pretrain_key(pretrain_cfg: DictConfig, model_cfg: DictConfig, *, seed: int) -> str:
    """Hash of what determines the pretrained weights (not ``use_shipped``, ``workers`` or eval options)."""
    cfg = OmegaConf.to_container(pretrain_cfg, resolve=True)
    data = dict(cfg["data"])
    if str(data.get("_target_", "")).endswith("SyntheticClsSource"):
        data.pop("root")  # generated: its knobs say what it holds, wherever it lives
    train = {k: v for k, v in cfg["train"].items() if k not in ("workers", "checkpoint_every", "log_every")}
    return config_hash("pretrain", data, _model_cfg(model_cfg), train, cfg["augment"], seed)


def find_pretrained(cfg: DictConfig) -> PretrainResult | None:
    """`run_pretrain`'s result for ``cfg`` if it needs no training: the shipped weights when
    ``pretrain.use_shipped`` and they match the key, else the cached result, else None."""
    key = pretrain_key(cfg.pretrain, cfg.classifier.model, seed=int(cfg.pretrain.seed))
    if cfg.pretrain.use_shipped:
        weights, meta = SHIPPED_DIR / f"{key}.pt", SHIPPED_DIR / f"{key}.json"
        if weights.is_file() and meta.is_file():
            return PretrainResult(weights, key, json.loads(meta.read_text(encoding="utf-8")), "shipped")
    stage = Path(str(cfg.cache_dir)) / "pretrain" / key
    weights, meta = stage / WEIGHTS_NAME, stage / METRICS_NAME
    if weights.is_file() and meta.is_file():
        return PretrainResult(weights, key, json.loads(meta.read_text(encoding="utf-8")), "cache")
    return None


def estimate_seconds(iterations: int, batch_size: int, model: nn.Module, device: str) -> float:
    """Seconds the training will take, from a few timed iterations on random inputs (printed before training)."""
    dev = resolve_device(device)
    model = model.to(dev).train()
    x = torch.randn(batch_size, 3, model.input_size, model.input_size, device=dev)
    y = torch.zeros(batch_size, dtype=torch.long, device=dev)
    times = []
    with torch.random.fork_rng(devices=[]):
        for _ in range(3):
            t0 = time.perf_counter()
            loss = classifier_loss(model(x), y, aux_weight=0.3)[0]
            loss.backward()
            times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return min(times[1:]) * iterations


def run_pretrain(cfg: DictConfig, *, device: str, progress: bool = True) -> PretrainResult:
    """The pretrained weights of ``cfg.pretrain`` for the network ``cfg.classifier.model``.

    Shipped weights when ``pretrain.use_shipped`` and they match the key, else the cached
    result, else trains (resuming a killed run) and caches.
    """
    pcfg = cfg.pretrain
    found = find_pretrained(cfg)
    if found is not None:
        if found.source == "shipped":
            log.info("pretrain: shipped weights %s (top-1 error %.3f)", found.weights, found.metrics["top1_error"])
        return found
    key = pretrain_key(pcfg, cfg.classifier.model, seed=int(pcfg.seed))
    stage = Path(str(cfg.cache_dir)) / "pretrain" / key
    weights, metrics_path = stage / WEIGHTS_NAME, stage / METRICS_NAME

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    source = instantiate(pcfg.data)
    train, val = source.load(source.train_split), source.load(source.split)
    timing["data"] = time.perf_counter() - t0
    t = pcfg.train
    iterations = iterations_for(t.epochs, images=len(train), batch_size=t.batch_size)
    # How long it will take is logged by sgd_loop's LongRunCheck after its first timed iterations.
    log.warning("pretrain: training the classifier network (%d classes, %d images) for %d iterations on %s; "
                "results are cached under %s", train.num_classes, len(train), iterations, resolve_device(device),
                stage)
    torch.manual_seed(int(pcfg.seed))
    model = instantiate(cfg.classifier.model)(num_classes=train.num_classes, weights=None)
    mean, std = list(cfg.classifier.windows.pixel_mean), list(cfg.classifier.windows.pixel_std)
    t1 = time.perf_counter()
    averaged, history = train_pretrain(
        model, train, input_size=int(cfg.classifier.model.input_size), pixel_mean=mean, pixel_std=std,
        augment=OmegaConf.to_container(pcfg.augment, resolve=True), checkpoint_dir=stage, seed=int(pcfg.seed),
        device=device, **OmegaConf.to_container(t, resolve=True))
    timing["train"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    probs = predict_probs(averaged, val, input_size=int(cfg.classifier.model.input_size),
                          resize_ratio=float(pcfg.eval.resize_ratio), pixel_mean=mean, pixel_std=std,
                          batch_size=int(pcfg.eval.batch_size), workers=0, device=device)
    errors = topk_errors(probs, np.asarray(val.labels), ks=(1, 5))
    timing["eval"] = time.perf_counter() - t2
    metrics = {"top1_error": errors[1], "top5_error": errors[5], "key": key, "split": val.split,
               "num_classes": train.num_classes, "num_images": {"train": len(train), "val": len(val)},
               "iterations": len(history["loss"]), "final_loss": float(np.mean(history["loss"][-50:])),
               "loss_curve": _curve(history["loss"]), "timing_s": timing}
    if distributed.is_main():
        state = {k: v.detach().cpu() for k, v in averaged.state_dict().items()}
        with atomic.atomic_path(weights) as tmp:
            torch.save(state, tmp)
        atomic.write_json(metrics_path, metrics)
        plot_training_curve(stage / CURVE_NAME, history)
    distributed.barrier()
    return PretrainResult(weights, key, metrics, "trained")


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """``cfg`` with ``pretrain.seed`` set to ``seed`` (one of several pretrained networks)."""
    out = copy.deepcopy(cfg)
    out.pretrain.seed = seed
    return out


def network_seeds(pretrain_cfg: DictConfig) -> list[int]:
    """``pretrain.seed``, ``+1``, ... : the seeds of the ``pretrain.networks`` distinct pretrained networks."""
    base, count = int(pretrain_cfg.seed), int(pretrain_cfg.networks)
    if count < 1:
        raise ConfigError(f"pretrain.networks must be an integer >= 1, got {count}")
    return list(range(base, base + count))


def run_pretrain_networks(cfg: DictConfig, *, device: str, progress: bool = True) -> list[PretrainResult]:
    """`run_pretrain` for every seed of `network_seeds` (shipped, cached or trained one after another)."""
    seeds = network_seeds(cfg.pretrain)
    results = []
    for i, seed in enumerate(seeds, 1):
        if len(seeds) > 1:
            log.info("pretrain: network %d of %d (pretrain.seed=%d)", i, len(seeds), seed)
        results.append(run_pretrain(seed_config(cfg, seed), device=device, progress=progress))
    return results


def _curve(losses: list[float], points: int = 100) -> list[list[float]]:
    """``[[iteration, mean loss], ...]``: the loss averaged over ``points`` equal spans (for plots and README)."""
    if not losses:
        return []
    edges = np.linspace(0, len(losses), min(points, len(losses)) + 1).astype(int)
    return [[int(b), float(np.mean(losses[a:b]))] for a, b in zip(edges[:-1], edges[1:])]


def plot_training_curve(path: Path, history: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = np.asarray(_curve(history["loss"]))
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    if len(curve):
        ax1.plot(curve[:, 0], curve[:, 1], label="loss (main + 0.3 x aux)")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("training loss")
    ax2 = ax1.twinx()
    ax2.plot(np.arange(len(history["lr"])), history["lr"], color="tab:orange", alpha=0.6, label="lr")
    ax2.set_ylabel("learning rate")
    ax1.set_title("pretraining")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def ship(result: PretrainResult) -> Path:
    """Copy trained weights and metrics into ``classifier/pretrained/<key>.{pt,json}`` (the shipped set)."""
    SHIPPED_DIR.mkdir(exist_ok=True)
    if result.source == "shipped":  # already there (shipping again a config of several networks)
        return SHIPPED_DIR / f"{result.key}.pt"
    shutil.copyfile(result.weights, SHIPPED_DIR / f"{result.key}.pt")
    atomic.write_json(SHIPPED_DIR / f"{result.key}.json",
                      {**result.metrics, "sha256_16": file_digest(SHIPPED_DIR / f"{result.key}.pt")})
    (SHIPPED_DIR / f"{result.key}.json").chmod(0o644)
    return SHIPPED_DIR / f"{result.key}.pt"


# --------------------------------------------------------------------------- entry point

def _main(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    world = distributed.init_from_env(str(cfg.device))
    try:
        results = run_pretrain_networks(cfg, device=world.device if world.distributed else str(cfg.device))
        metrics = metrics_of(results)
        if world.is_main:
            for j, (seed, result) in enumerate(zip(network_seeds(cfg.pretrain), results)):
                if cfg.ship:
                    print(f"shipped as {ship(result)}")
                # Network 0 keeps the plain names (model.pt, ...); the others get their index: model_1.pt, ...
                suffix = "" if j == 0 else f"_{j}"
                weights = out_dir / WEIGHTS_NAME.replace(".pt", f"{suffix}.pt")
                shutil.copyfile(result.weights, weights)
                curve = result.weights.parent / CURVE_NAME
                if curve.is_file():
                    shutil.copyfile(curve, out_dir / CURVE_NAME.replace(".png", f"{suffix}.png"))
                print(f"pretrain ({result.source}, pretrain.seed={seed}): top-1 error "
                      f"{result.metrics['top1_error']:.4f}, top-5 error {result.metrics['top5_error']:.4f} on "
                      f"{result.metrics['split']}\nweights: {weights} (classifier.model.weights=...)", flush=True)
            atomic.write_json(out_dir / METRICS_NAME, metrics)
    finally:
        distributed.cleanup()
    return metrics


def metrics_of(results: list[PretrainResult]) -> dict[str, Any]:
    """Network 0's metrics, plus ``networks`` (`network_summaries`)."""
    return {**results[0].metrics, "networks": network_summaries(results)}


def network_summaries(results: list[PretrainResult]) -> list[dict[str, Any]]:
    """Key, source, top-1 and top-5 error of each pretrained network."""
    return [{"key": r.key, "source": r.source, "top1_error": r.metrics["top1_error"],
             "top5_error": r.metrics["top5_error"]} for r in results]


def main() -> None:
    import hydra

    from detect.cli import run_cli, run_user_errors

    run_cli(hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")(run_user_errors(_main)))


if __name__ == "__main__":
    main()
