"""Classifier training checkpoints: model, optimiser, scheduler, RNG states, iteration, config fingerprint.

Written atomically and loaded with ``torch.load(weights_only=True)`` through
`detect.checkpoint`, so every value stored here is a tensor or a plain Python type
(the numpy and ``random`` generator states are converted).  A checkpoint whose
fingerprint differs from the current config raises a one-line `detect.errors.UserError`
naming the first differing key.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detect.checkpoint import check_fingerprint, load_checkpoint, read_checkpoint, save_checkpoint
from detect.errors import UserError

# Config names of the architectures `classifier.factory.build_classifier` builds.
_ARCH_NAMES = {"GoogLeNet": "googlenet", "TorchvisionGoogLeNet": "torchvision_googlenet"}


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint's weights depend on: arch, num_classes, width, input_size, batch_norm, aux_logits.

    Attributes a model does not have (a stand-in in tests) are recorded as None.
    """
    return {
        "arch": _ARCH_NAMES.get(type(model).__name__, type(model).__name__),
        "num_classes": getattr(model, "num_classes", None),
        "width": getattr(model, "width", None),
        "input_size": getattr(model, "input_size", None),
        "batch_norm": any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()),
        "aux_logits": getattr(model, "aux_logits", None),
    }


def rng_state() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and ``random`` generator states, as tensors/plain types."""
    np_state = np.random.get_state()
    py_version, py_keys, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "keys": torch.tensor(py_keys, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"],
         np_state["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["keys"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(
    path: Path | str,
    *,
    fingerprint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    iteration: int,
    history: dict[str, list[float]],
) -> None:
    """Atomically write everything needed to continue training after ``iteration`` iterations."""
    save_checkpoint(
        path,
        fingerprint=fingerprint,
        iteration=int(iteration),
        history={k: [float(v) for v in vs] for k, vs in history.items()},
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=rng_state(),
    )


def load_training_state(
    path: Path | str,
    *,
    fingerprint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, dict[str, list[float]]]:
    """Load ``path`` into ``model``/``optimizer``/``scheduler`` and the global RNGs.

    Returns ``(iteration, history)``.  Raises `detect.errors.UserError` when the file is
    unreadable or its fingerprint differs from ``fingerprint`` (naming the key).
    """
    state = load_checkpoint(path, fingerprint=fingerprint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["iteration"]), {k: list(v) for k, v in state["history"].items()}


def load_model_weights(path: Path | str, *, model: nn.Module) -> int:
    """Load only the weights of a training checkpoint into ``model`` (for scoring); returns its iteration.

    Only the model's own fingerprint (`model_fingerprint`) must match; the training
    hyperparameters stored beside it (lr, seed, ...) are not checked.
    """
    expected = model_fingerprint(model)
    state, stored = read_checkpoint(path)
    if "model" not in state:
        raise UserError(f"{path}: not a classifier training checkpoint (no fingerprint or weights)")
    check_fingerprint(path, stored, expected, expected)
    model.load_state_dict(state["model"])
    return int(state["iteration"])


__all__ = [
    "load_model_weights",
    "load_training_state",
    "model_fingerprint",
    "rng_state",
    "save_training_state",
    "set_rng_state",
]
