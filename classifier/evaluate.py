"""``python -m classifier.evaluate``: classification error by test crops and ensemble size (paper, Table 3).

Szegedy et al. 2015, section 7: softmax probabilities are averaged over an image's crops
(1, 10 or 144: `classifier.crops`) and then over the networks of an ensemble (the paper: 7
networks differing in initialisation and sampling); top-1/top-5 error of the average.  The
table has one row per (models, crops) setting with its ``cost`` (forward passes per image,
relative to one network x one crop) and its change against that 1 x 1 base.

Networks: ``evaluate.models=[N, ...]`` scores the pretrained networks of
``pretrain.seed + 0 .. N - 1`` (`classifier.pretrain.run_pretrain`: the shipped weights,
the cache, or trained now, with a note of how long it will take), or the state-dict files of
``evaluate.weights`` (``classifier.model.weights=PATH`` alone: ``[PATH]``, e.g. torchvision's
ImageNet GoogLeNet).  Each network scores every image once per crop scheme; its crop-averaged
probabilities are cached in ``<cache_dir>/classify_eval/`` (keyed by the weights file, the
split's files, the crop scheme and the runtime), so a later run with more networks scores
only the new ones.

Images that cannot be decoded are skipped with a warning naming each (listed and counted in
``metrics.json``); a split with no readable image, or networks that disagree in architecture
or class count, are one-line errors (exit 2).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from classifier.cls_batches import decode
from classifier.crops import SCHEMES, crop_boxes, render_crops, short_sides
from classifier.googlenet import AUX_KEYS
from classifier.pretrain import (METRICS_NAME, estimate_seconds, find_pretrained, iterations_for, run_pretrain,
                                 seed_config, topk_errors)
from classifier.score import resolve_device
from classifier.weights import load_weights, read_state_dict
from detect import atomic
from detect.data.classification import ClassificationDataset
from detect.errors import ConfigError, DataError, UserError
from detect.fingerprint import config_hash, file_digest

log = logging.getLogger(__name__)

CACHE_DIR = "classify_eval"
CACHE_VERSION = 1
TABLE_NAME = "table.md"
# Table 3 of the paper (top-5 error, %): (models, crops) -> error.
PAPER_TOP5 = {(1, 1): 10.07, (1, 10): 9.15, (1, 144): 7.89, (7, 1): 8.09, (7, 10): 7.62, (7, 144): 6.67}


# --------------------------------------------------------------------------- averaging and the table

def ensemble_probs(logits: Tensor | np.ndarray) -> np.ndarray:
    """``(models, images, crops, K)`` logits -> ``(images, K)``: softmax per crop, averaged over the crops,
    then over the models (the paper's order; probabilities, never logits, are averaged)."""
    x = torch.as_tensor(logits, dtype=torch.float64)
    return torch.softmax(x, dim=-1).mean(dim=2).mean(dim=0).numpy()


@dataclass(frozen=True)
class Row:
    """One setting of the table: ``models`` networks x ``crops`` crops per image."""

    models: int
    crops: int
    top1_error: float
    top5_error: float
    base_top1: float  # the 1 x 1 row's errors
    base_top5: float

    @property
    def cost(self) -> int:
        """Forward passes per image relative to one network on one crop (the paper's cost column)."""
        return self.models * self.crops

    def as_dict(self) -> dict[str, Any]:
        return {"models": self.models, "crops": self.crops, "cost": self.cost, "top1_error": self.top1_error,
                "top5_error": self.top5_error, "delta_top1": self.top1_error - self.base_top1,
                "delta_top5": self.top5_error - self.base_top5,
                "paper_top5_error": (PAPER_TOP5[(self.models, self.crops)] / 100
                                     if (self.models, self.crops) in PAPER_TOP5 else None)}


def table_rows(per_network: Sequence[dict[int, np.ndarray]], labels: np.ndarray, *, models: Sequence[int],
               crops: Sequence[int]) -> list[Row]:
    """Rows for every (N in ``models``, c in ``crops``), the 1 x 1 base first.

    ``per_network[i][c]``: network ``i``'s ``(images, K)`` probabilities averaged over its ``c`` crops;
    the ensemble of N averages networks ``0 .. N - 1``."""
    settings = [(1, 1)] + [(m, c) for m in sorted(set(models)) for c in sorted(set(crops)) if (m, c) != (1, 1)]
    errors = {}
    for m, c in settings:
        probs = np.mean([per_network[i][c] for i in range(m)], axis=0)
        e = topk_errors(probs, labels, ks=(1, 5))
        errors[(m, c)] = (e[1], e[5])
    base = errors[(1, 1)]
    return [Row(m, c, *errors[(m, c)], *base) for m, c in settings]


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.2f}%" if signed else f"{100 * x:.2f}%"


TABLE_HEADER = ("models", "crops", "cost", "top-1 error", "top-5 error", "top-1 vs base", "top-5 vs base",
                "paper top-5")


def _cells(row: Row) -> list[str]:
    d = row.as_dict()
    base = (row.models, row.crops) == (1, 1)
    return [str(row.models), str(row.crops), str(row.cost), _pct(row.top1_error), _pct(row.top5_error),
            "base" if base else _pct(d["delta_top1"], signed=True),
            "base" if base else _pct(d["delta_top5"], signed=True), _pct(d["paper_top5_error"])]


def format_table(rows: Sequence[Row]) -> str:
    """The rows as aligned text (Table 3's columns, plus top-1 and the paper's top-5)."""
    cells = [list(TABLE_HEADER)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_HEADER))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]]) + "\n"


def format_markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---:|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- images -> crops

class CropSet(Dataset):
    """``crop_set[i]`` -> dict: ``index``, ``crops`` (float32 ``(U, 3, S, S)`` normalised: the distinct crops
    of every scheme), ``groups`` (scheme -> indices into ``crops``, one per crop of the scheme), ``error``
    (None, or why the image could not be read; then ``crops`` is None)."""

    def __init__(self, dataset: ClassificationDataset, *, schemes: Sequence[int], input_size: int,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        self.dataset, self.schemes, self.input_size = dataset, tuple(schemes), int(input_size)
        self.mean, self.std = list(pixel_mean), list(pixel_std)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image = decode(self.dataset.records[i].path)
        except UserError as exc:
            return {"index": i, "crops": None, "groups": None, "error": str(exc)}
        height, width = image.shape[-2:]
        union: dict = {}
        groups = {s: [union.setdefault(c, len(union)) for c in crop_boxes(width, height, scheme=s,
                                                                           input_size=self.input_size)]
                  for s in self.schemes}
        crops = render_crops(image, list(union), input_size=self.input_size)
        # the same conversion as classifier.cls_batches.eval_transform (ToDtype(scale=True), Normalize)
        crops = F.normalize(F.to_dtype(crops, torch.float32, scale=True), self.mean, self.std)
        return {"index": i, "crops": crops, "groups": {s: torch.tensor(g) for s, g in groups.items()}, "error": None}


def _as_list(items: list) -> list:
    return items


@torch.no_grad()
def score_split(networks: Sequence[nn.Module], dataset: ClassificationDataset, *, schemes: Sequence[int],
                input_size: int, pixel_mean: Sequence[float], pixel_std: Sequence[float], batch_size: int,
                workers: int = 0, device: str | torch.device = "cpu", channels_last: bool = True,
                progress: bool = False) -> tuple[list[dict[int, np.ndarray]], np.ndarray, list[dict[str, str]]]:
    """Each network's crop-averaged softmax over ``dataset`` for every crop scheme.

    Returns ``(per_network, readable, skipped)``: ``per_network[i][s]`` float32 ``(N, K)`` (rows of
    unreadable images are zero), ``readable`` bool ``(N,)``, ``skipped`` ``[{"file", "error"}]``.
    An image's crops (all schemes, each distinct crop once) are one batch; whole images are added
    to a forward pass while it holds at most ``batch_size`` crops.
    """
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    for net in networks:
        net.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    n = len(dataset)
    per_network: list[dict[int, np.ndarray]] = [{s: None for s in schemes} for _ in networks]
    readable = np.zeros(n, bool)
    skipped: list[dict[str, str]] = []
    loader = DataLoader(CropSet(dataset, schemes=schemes, input_size=input_size, pixel_mean=pixel_mean,
                                pixel_std=pixel_std), batch_size=1, num_workers=workers, collate_fn=_as_list,
                        prefetch_factor=4 if workers else None)
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.cat([p["crops"] for p in pending]).to(dev).contiguous(memory_format=memory_format)
        offsets = np.cumsum([0] + [len(p["crops"]) for p in pending])
        for out, net in zip(per_network, networks):
            probs = torch.softmax(net(x).float(), dim=1).cpu()
            for p, start, stop in zip(pending, offsets[:-1], offsets[1:]):
                image_probs = probs[start:stop]
                for s in schemes:
                    if out[s] is None:
                        out[s] = np.zeros((n, probs.shape[1]), np.float32)
                    out[s][p["index"]] = image_probs[p["groups"][s]].mean(dim=0).numpy()
        pending.clear()

    for (item,) in tqdm(loader, total=n, desc="classify", unit="img", disable=not progress, leave=False):
        if item["error"] is not None:
            log.warning("evaluate: skipping unreadable image: %s", item["error"])
            skipped.append({"file": dataset.records[item["index"]].path, "error": item["error"]})
            continue
        readable[item["index"]] = True
        if pending and sum(len(p["crops"]) for p in pending) + len(item["crops"]) > batch_size:
            flush()
        pending.append(item)
    flush()
    return per_network, readable, skipped


# --------------------------------------------------------------------------- the networks

@dataclass(frozen=True)
class Network:
    """One network of the ensemble: its weights file and where it came from."""

    weights: Path
    seed: int | None  # pretrain.seed that made it (None: a user's file)
    source: str       # shipped | cache | trained | file
    key: str | None   # its pretrain key


def pretrained_networks(cfg: DictConfig, count: int, *, device: str) -> list[Network]:
    """The networks of ``pretrain.seed + 0 .. count - 1``, pretraining the missing ones (one after another)."""
    base = int(cfg.pretrain.seed)
    found = {seed: find_pretrained(seed_config(cfg, seed)) for seed in range(base, base + count)}
    missing = [s for s, r in found.items() if r is None]
    if missing:
        source = instantiate(cfg.pretrain.data)
        train = source.load(source.train_split)
        t = cfg.pretrain.train
        iterations = iterations_for(t.epochs, images=len(train), batch_size=t.batch_size)
        torch.manual_seed(0)
        probe = instantiate(cfg.classifier.model)(num_classes=train.num_classes, weights=None)
        each = estimate_seconds(iterations, int(t.batch_size), probe, device)
        log.warning("evaluate: %d of %d networks are not pretrained yet (pretrain.seed %s): training them now, one "
                    "after another, about %.0f min in all (%.0f min each: %d iterations on %s, "
                    "pretrain.train.epochs=%s; cached in %s). Faster on several cores or machines: run "
                    "python -m classifier.pretrain pretrain.seed=K (same overrides) side by side first",
                    len(missing), count,
                    ", ".join(map(str, missing)), each * len(missing) / 60, each / 60, iterations,
                    resolve_device(device), t.epochs, Path(str(cfg.cache_dir)) / "pretrain")
        for i, seed in enumerate(missing, 1):
            log.warning("evaluate: pretraining network %d of %d (pretrain.seed=%d)", i, len(missing), seed)
            found[seed] = run_pretrain(seed_config(cfg, seed), device=device)
    return [Network(Path(r.weights), seed, r.source, r.key) for seed, r in found.items()]


def file_networks(paths: Sequence[str], count: int) -> list[Network]:
    if len(paths) < count:
        raise ConfigError(f"evaluate.models asks for {count} networks but evaluate.weights lists {len(paths)} "
                          "file(s); list more files or lower evaluate.models")
    return [Network(Path(p), None, "file", None) for p in paths[:count]]


def _arch_name(state: dict[str, Tensor]) -> str:
    if any(k.startswith("stem.") for k in state):
        return "googlenet"
    if "conv1.conv.weight" in state:
        return "torchvision_googlenet"
    return "an unknown architecture"


def check_ensemble(networks: Sequence[Network], *, num_classes: int, split: str) -> None:
    """One-line `UserError` when the networks differ in class count or architecture (any key or shape but the
    auxiliary heads), or their class count is not the split's."""
    first: tuple[Network, dict[str, Tensor]] | None = None
    for net in networks:
        state = read_state_dict(net.weights)
        if "fc.weight" not in state:
            raise UserError(f"{net.weights}: no 'fc.weight' in the state dict: not a classification network")
        if first is None:
            first = (net, state)
            continue
        ref, ref_state = first
        classes, ref_classes = state["fc.weight"].shape[0], ref_state["fc.weight"].shape[0]
        if classes != ref_classes:
            raise UserError(f"the networks mix class counts: {net.weights} has {classes} classes, "
                            f"{ref.weights} has {ref_classes}; an ensemble averages the same classes")
        body = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(AUX_KEYS)}
        ref_body = {k: tuple(v.shape) for k, v in ref_state.items() if not k.startswith(AUX_KEYS)}
        if body != ref_body:
            key = next(k for k in sorted(body.keys() | ref_body.keys()) if body.get(k) != ref_body.get(k))
            show = lambda shape: "absent" if shape is None else f"shape {list(shape)}"  # noqa: E731
            raise UserError(f"the networks mix architectures: {net.weights} ({_arch_name(state)}) differs from "
                            f"{ref.weights} ({_arch_name(ref_state)}) at '{key}': {show(body.get(key))} vs "
                            f"{show(ref_body.get(key))}; an ensemble needs one architecture (classifier.model)")
    ref, ref_state = first
    if ref_state["fc.weight"].shape[0] != num_classes:
        raise UserError(f"{ref.weights}: the network has {ref_state['fc.weight'].shape[0]} classes but the "
                        f"{split} split has {num_classes}; evaluate it on the data it was trained for (pretrain.data)")


def build_network(cfg: DictConfig, net: Network, num_classes: int) -> nn.Module:
    """The eval-mode ``classifier.model`` with ``net``'s weights (class head included: never re-initialised)."""
    model = instantiate(cfg.classifier.model, weights=None)(num_classes=num_classes)
    load_weights(model, net.weights, optional=AUX_KEYS)
    return model.eval()


def onnx_network(cfg: DictConfig, model: nn.Module, net: Network) -> nn.Module:
    """``model`` run by ONNX Runtime: exported once, beside a copy of its weights in ``<cache_dir>/classify_eval/onnx``
    (never beside a user's or the repository's file)."""
    from classifier.onnx_runtime import OnnxClassifier, cached_export, make_session

    folder = Path(str(cfg.cache_dir)) / CACHE_DIR / "onnx"
    copy_path = folder / f"{file_digest(net.weights)}.pt"
    if not copy_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(copy_path) as tmp:
            shutil.copyfile(net.weights, tmp)
    path = cached_export(copy_path, model, input_size=int(model.input_size), atol=float(cfg.classifier.onnx.atol))
    session = make_session(path, intra_op_threads=int(cfg.classifier.onnx.intra_op_threads))
    return OnnxClassifier(session, num_classes=int(model.num_classes), input_size=int(model.input_size))


# --------------------------------------------------------------------------- cached scores

def split_fingerprint(dataset: ClassificationDataset) -> str:
    """Hash of the split's files (path, label, size, mtime): regenerated or edited images get new scores."""
    entries = []
    for r in dataset.records:
        try:
            st = Path(r.path).stat()
            entries.append((r.path, r.label, st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append((r.path, r.label, -1, -1))
    return config_hash("cls-split", dataset.split, [c.wnid for c in dataset.classes], entries)


def _cache_path(cfg: DictConfig, net: Network, split_key: str, scheme: int, runtime: str) -> Path:
    model = {k: v for k, v in OmegaConf.to_container(cfg.classifier.model, resolve=True).items() if k != "weights"}
    key = config_hash("classify-eval", CACHE_VERSION, file_digest(net.weights), model, split_key, scheme, runtime,
                      list(cfg.classifier.windows.pixel_mean), list(cfg.classifier.windows.pixel_std))
    return Path(str(cfg.cache_dir)) / CACHE_DIR / f"{key}-{scheme}crops.npz"


def _load_cached(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["probs"], z["readable"], json.loads(str(z["skipped"]))
    except (OSError, KeyError, ValueError):
        return None


def _save_cached(path: Path, probs: np.ndarray, readable: np.ndarray, skipped: list[dict[str, str]]) -> None:
    atomic.save_npz(path, probs=probs, readable=readable, skipped=np.array(json.dumps(skipped)))


# --------------------------------------------------------------------------- the stage

def _options(cfg: DictConfig) -> dict[str, Any]:
    e = cfg.evaluate
    models, crops = list(e.models), list(e.crops)
    if not models or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in models):
        raise ConfigError(f"evaluate.models must be a non-empty list of integers >= 1, got {models}")
    if not crops or any(c not in SCHEMES for c in crops):
        raise ConfigError(f"evaluate.crops must be a non-empty list of {list(SCHEMES)}, got {crops}")
    if e.runtime not in ("torch", "onnx"):
        raise ConfigError(f"evaluate.runtime must be 'torch' or 'onnx', got {e.runtime!r}")
    weights = [str(w) for w in e.weights]
    if not weights and cfg.classifier.model.weights:
        weights = [str(cfg.classifier.model.weights)]
        if max(models) > 1:
            raise ConfigError(f"classifier.model.weights names one network but evaluate.models={models}; list the "
                              "ensemble's files in evaluate.weights=[a.pt,b.pt,...]")
    return {"models": sorted(set(models)), "crops": sorted(set(crops)), "weights": weights}


def evaluate_classifier(cfg: DictConfig, *, progress: bool = True) -> dict[str, Any]:
    """Score the networks and build the table; returns the ``metrics.json`` content (``rows`` = the table)."""
    opts = _options(cfg)
    e = cfg.evaluate
    runtime = str(e.runtime)
    device = resolve_device(str(cfg.device)) if runtime == "torch" else torch.device("cpu")
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    source = instantiate(cfg.pretrain.data)
    dataset = source.load(source.split)
    if len(dataset) == 0:
        raise DataError(f"{dataset.root}: the {dataset.split} split has no image")
    count = max(opts["models"])
    if opts["weights"]:
        networks = file_networks(opts["weights"], count)
    else:
        networks = pretrained_networks(cfg, count, device=str(device))
    check_ensemble(networks, num_classes=dataset.num_classes, split=dataset.split)
    timing["networks"] = time.perf_counter() - t0

    schemes = sorted(set(opts["crops"]) | {1})  # the 1 x 1 base is always scored
    split_key = split_fingerprint(dataset)
    per_network: list[dict[int, np.ndarray]] = [{} for _ in networks]
    readable, skipped = None, None
    todo: list[int] = []
    for i, net in enumerate(networks):
        for s in schemes:
            cached = _load_cached(_cache_path(cfg, net, split_key, s, runtime))
            if cached is None:
                todo.append(i)
                break
            per_network[i][s], readable, skipped = cached
    t1 = time.perf_counter()
    if todo:
        input_size = int(cfg.classifier.model.input_size)
        models = [build_network(cfg, networks[i], dataset.num_classes) for i in todo]
        if runtime == "onnx":
            models = [onnx_network(cfg, m, networks[i]) for m, i in zip(models, todo)]
        else:
            memory_format = torch.channels_last if e.channels_last else torch.contiguous_format
            models = [m.to(device, memory_format=memory_format) for m in models]
        log.info("evaluate: scoring %d network(s) on %d %s images x %s crops (%s)", len(todo), len(dataset),
                 dataset.split, "/".join(map(str, schemes)), runtime)
        scores, readable, skipped = score_split(
            models, dataset, schemes=schemes, input_size=input_size,
            pixel_mean=list(cfg.classifier.windows.pixel_mean), pixel_std=list(cfg.classifier.windows.pixel_std),
            batch_size=int(e.batch_size), workers=int(e.workers), device=device,
            channels_last=bool(e.channels_last) and runtime == "torch", progress=progress and e.progress)
        if readable.any():
            for i, probs in zip(todo, scores):
                per_network[i] = probs
                for s in schemes:
                    _save_cached(_cache_path(cfg, networks[i], split_key, s, runtime), probs[s], readable, skipped)
    else:
        for item in skipped:
            log.warning("evaluate: skipping unreadable image: %s", item["error"])
    timing["scoring"] = time.perf_counter() - t1
    if not readable.any():
        raise DataError(f"{dataset.root}: no readable image in the {dataset.split} split ({len(dataset)} files, "
                        f"first: {skipped[0]['error']})")

    labels = np.asarray(dataset.labels)[readable]
    sides = short_sides(int(cfg.classifier.model.input_size))
    kept = [{s: p[s][readable] for s in schemes} for p in per_network]
    rows = table_rows(kept, labels, models=opts["models"], crops=opts["crops"])
    each = []
    for net, probs in zip(networks, kept):
        errors = {str(s): dict(zip(("top1_error", "top5_error"), topk_errors(probs[s], labels).values()))
                  for s in schemes}
        each.append({"seed": net.seed, "weights": str(net.weights), "source": net.source, "key": net.key,
                     "errors": errors})
    return {
        "rows": [r.as_dict() for r in rows],
        "split": dataset.split, "root": dataset.root, "num_classes": dataset.num_classes,
        "num_images": int(readable.sum()), "num_unreadable": len(skipped), "skipped": skipped,
        "runtime": runtime, "device": str(device), "input_size": int(cfg.classifier.model.input_size),
        "short_sides": {str(s): list(sides[:1] if s != 144 else sides) for s in schemes},
        "networks": each, "scored_now": len(todo), "timing_s": timing,
    }


# --------------------------------------------------------------------------- entry point

def _main(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = evaluate_classifier(cfg)
    rows = [Row(r["models"], r["crops"], r["top1_error"], r["top5_error"], r["top1_error"] - r["delta_top1"],
                r["top5_error"] - r["delta_top5"]) for r in metrics["rows"]]
    atomic.write_json(out_dir / METRICS_NAME, metrics)
    (out_dir / TABLE_NAME).write_text(format_markdown(rows), encoding="utf-8")
    skipped = f", {metrics['num_unreadable']} unreadable skipped" if metrics["num_unreadable"] else ""
    print(f"classification error on {metrics['split']} ({metrics['num_images']} images{skipped}, "
          f"{metrics['num_classes']} classes, {metrics['runtime']}):\n\n{format_table(rows)}\n"
          f"{format_markdown(rows)}\nmetrics: {out_dir / METRICS_NAME}", flush=True)
    return metrics


def main() -> None:
    import hydra

    from detect.cli import run_cli, run_user_errors

    run_cli(hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")(run_user_errors(_main)))


if __name__ == "__main__":
    main()
