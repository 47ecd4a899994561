"""Safe loading of model weights from a local file (never downloaded).

Files are read with ``torch.load(path, map_location="cpu", weights_only=True)``, so a
checkpoint cannot run code.  Every key and shape is checked before anything is copied;
a file that does not fit raises `detect.errors.UserError` with one line naming the file
and the first mismatching key.

Two relaxations, both opt-in by key prefix:

- ``replaceable``: class-count-dependent layers (final linear layers) whose shape may
  differ in dim 0 only.  They keep their fresh initialisation (fine-tuning an ImageNet
  checkpoint for C + 1 classes).  Their other dims must match (a different width still fails).
- ``optional``: training-only parts (auxiliary heads) that may be absent from the file or
  from the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from detect.errors import UserError

log = logging.getLogger(__name__)

# Checkpoints that wrap the state dict (training checkpoints) keep it under one of these keys.
STATE_DICT_KEYS = ("model", "state_dict")


@dataclass(frozen=True)
class LoadReport:
    path: Path
    loaded: tuple[str, ...]  # keys copied from the file
    reinitialised: tuple[str, ...]  # replaceable keys whose class count differed: kept their init
    kept_init: tuple[str, ...]  # optional model keys absent from the file
    ignored: tuple[str, ...]  # optional file keys absent from the model


def read_state_dict(path: Path | str) -> dict[str, Tensor]:
    """Read a state dict (or a checkpoint dict holding one under "model"/"state_dict") from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path}: cannot read weights file ({type(e).__name__}: {first_line})") from None
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise UserError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return dict(obj)


def _has_prefix(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def match_state_dict(
    model_state: Mapping[str, Tensor],
    file_state: Mapping[str, Tensor],
    *,
    replaceable: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> tuple[dict[str, Tensor], list[str], list[str], list[str], list[str]]:
    """Compare two state dicts key by key (in model order, then the file's extra keys).

    Returns ``(to_load, reinitialised, kept_init, ignored, problems)``: the file tensors to
    copy, the keys left at their initialisation or ignored (see module docstring), and one
    message per mismatch (empty when the file fits).
    """
    replaceable, optional = tuple(replaceable), tuple(optional)
    to_load: dict[str, Tensor] = {}
    reinitialised: list[str] = []
    kept_init: list[str] = []
    problems: list[str] = []
    for key, target in model_state.items():
        if key not in file_state:
            if _has_prefix(key, optional):
                kept_init.append(key)
            else:
                problems.append(f"key '{key}' is missing from the file")
            continue
        source = file_state[key]
        if source.shape == target.shape:
            to_load[key] = source
        elif (
            _has_prefix(key, replaceable)
            and source.ndim == target.ndim
            and source.shape[1:] == target.shape[1:]
        ):
            reinitialised.append(key)
        else:
            problems.append(
                f"key '{key}' has shape {tuple(source.shape)} in the file but {tuple(target.shape)} in the model"
            )
    ignored: list[str] = []
    for key in file_state:
        if key not in model_state:
            if _has_prefix(key, optional):
                ignored.append(key)
            else:
                problems.append(f"unexpected key '{key}' in the file")
    return to_load, reinitialised, kept_init, ignored, problems


def load_weights(
    model: nn.Module,
    path: Path | str,
    *,
    replaceable: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> LoadReport:
    """Copy the weights in ``path`` into ``model`` after checking every key and shape.

    With the default empty ``replaceable``/``optional`` the file must match the model exactly
    (e.g. resuming a checkpoint).  Raises `UserError` (one line) when it does not.
    """
    path = Path(path)
    file_state = read_state_dict(path)
    model_state = model.state_dict()
    to_load, reinit, kept, ignored, problems = match_state_dict(
        model_state, file_state, replaceable=replaceable, optional=optional
    )
    if problems:
        more = f" ({len(problems)} mismatches in all)" if len(problems) > 1 else ""
        raise UserError(f"{path}: weights do not fit the {type(model).__name__} model: {problems[0]}{more}")
    merged = dict(model_state)
    merged.update(to_load)
    model.load_state_dict(merged, strict=True)
    if reinit:
        log.info("%s: class count differs; re-initialised %s", path, ", ".join(reinit))
    if kept:
        log.info("%s: %d optional keys not in the file kept their initialisation", path, len(kept))
    return LoadReport(path, tuple(to_load), tuple(reinit), tuple(kept), tuple(ignored))


def load_trunk_weights(trunk: nn.Module, path: Path | str, *, until: str) -> LoadReport:
    """Copy the layers up to and including ``until`` of a GoogLeNet state dict in ``path`` into ``trunk``
    (a `classifier.googlenet.GoogLeNet` whose later layers may be replaced); the file's other layers
    and heads are ignored.  One-line `UserError` naming the file and key when a trunk layer is missing
    or has another shape (another width)."""
    from classifier.googlenet import TRUNK_LAYERS

    layers = TRUNK_LAYERS[:TRUNK_LAYERS.index(until) + 1]
    path = Path(path)
    file_state = {k: v for k, v in read_state_dict(path).items() if k.split(".")[0] in layers}
    model_state = {k: v for k, v in trunk.state_dict().items() if k.split(".")[0] in layers}
    to_load, _, _, _, problems = match_state_dict(model_state, file_state)
    if problems:
        more = f" ({len(problems)} mismatches in all)" if len(problems) > 1 else ""
        raise UserError(f"{path}: pretrained weights do not fit the trunk up to {until}: {problems[0]}{more}")
    trunk.load_state_dict(to_load, strict=False)
    return LoadReport(path, tuple(to_load), (), (), ())


def load_cached_weights(model: nn.Module, path: Path | str) -> bool:
    """Load a cache's finished ``model.pt`` into ``model``; False (with a warning) when it is unusable.

    A cache file can be truncated (a full disk, a copy cut short) or come from another
    version of the code; neither is the user's mistake, so the caller retrains instead of
    stopping.  Returns False, without a warning, when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        model.load_state_dict(read_state_dict(path))
    except (UserError, RuntimeError) as e:  # RuntimeError: keys or shapes differ
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        log.warning("%s: cached weights unusable (%s); training again", path, first_line)
        return False
    return True
