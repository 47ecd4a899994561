"""Training checkpoints: atomic saves, safe loads, a config fingerprint that must match."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detect import atomic
from detect.errors import UserError


def iteration_seed(seed: int, iteration: int) -> int:
    """Seed of every random draw of one training iteration.

    Deriving each iteration's randomness from ``(seed, iteration)`` makes a resumed
    run identical to an uninterrupted one without saving generator states.
    """
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])


def save_checkpoint(path: Path | str, *, fingerprint: dict[str, Any], **state: Any) -> None:
    """``torch.save`` of ``state`` plus ``fingerprint``, atomically (never a half-written file)."""
    with atomic.atomic_path(path) as tmp:
        torch.save({"fingerprint": dict(fingerprint), **state}, tmp)


def read_checkpoint(path: Path | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, stored fingerprint)`` of a checkpoint, loaded with ``weights_only=True``.

    Raises `UserError` naming the file when it is missing, unreadable or has no fingerprint.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # unpickling errors come in many types
        raise UserError(f"{path}: not a readable checkpoint ({_load_problem(path, exc)})") from None
    stored = state.get("fingerprint") if isinstance(state, dict) else None
    if not isinstance(stored, dict):
        raise UserError(f"{path}: checkpoint has no config fingerprint (not written by this toolkit?)")
    return state, stored


def _load_problem(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` refused ``path``, in a few words (not torch's multi-sentence advice)."""
    text = str(exc).strip()
    if path.is_file() and path.stat().st_size == 0:
        return "empty file"
    if "Weights only load failed" in text:
        refused = re.search(r"GLOBAL (\S+)", text)
        if refused:
            return f"it pickles {refused.group(1)}; weights_only loading accepts only tensors and plain values"
        return "truncated or corrupt: not a torch checkpoint"
    first = (text.splitlines() or [""])[0].split(". ")[0][:160]
    return f"truncated or corrupt: {type(exc).__name__}" + (f": {first}" if first else "")


def check_fingerprint(path: Path | str, stored: dict[str, Any], expected: dict[str, Any], keys) -> None:
    """One-line `UserError` naming the first of ``keys`` whose stored value differs from ``expected``."""
    for key in keys:
        if stored.get(key) != expected.get(key):
            raise UserError(
                f"{path}: checkpoint was trained with {key}={stored.get(key)!r}, config has {expected.get(key)!r}"
            )


def load_checkpoint(path: Path | str, *, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Load with ``weights_only=True``; the stored fingerprint must equal ``fingerprint``.

    Raises `UserError` naming the file and the first mismatching key (a checkpoint
    trained with another width, input size or class count cannot be resumed).
    """
    state, stored = read_checkpoint(path)
    check_fingerprint(path, stored, fingerprint, sorted(set(stored) | set(fingerprint)))
    return state
