"""``classifier.runtime=onnx``: score warped windows with ONNX Runtime on the CPU.

The trained eval-mode network is exported once with ``torch.onnx.export`` (dynamic
batch axis) to ``<checkpoint stem>.<sha256 of the checkpoint, 16 hex>.onnx`` beside
the checkpoint, so a retrained checkpoint gets a new file and an unchanged one reuses
it.  Before use the file is validated: ``onnx.checker`` plus an output comparison
against the torch model on a seeded random batch.  A file that fails (truncated,
corrupted, exported from other weights or by a broken exporter) is re-exported with a
warning.

onnx and onnxruntime are the optional ``onnx`` extra; they are imported only here, when
this runtime is selected.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from classifier.score import score_regions
from detect import atomic
from detect.errors import ConfigError, UserError

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "windows", "logits"
# Opset 17 is supported by every onnxruntime >= 1.14 (our floor is 1.17).
OPSET = 17


def import_onnx() -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``, or a one-line `UserError` saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UserError(
            f"classifier.runtime=onnx needs the onnx extra ({exc.name} is not installed): pip install -e '.[onnx]'"
        ) from None
    return onnx, onnxruntime


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_path_for(checkpoint: Path | str) -> Path:
    """Cache file of ``checkpoint``'s export: same folder, keyed by the checkpoint's sha256."""
    checkpoint = Path(checkpoint)
    try:
        digest = file_sha256(checkpoint)
    except FileNotFoundError:
        raise UserError(f"{checkpoint}: checkpoint not found (needed to key its ONNX export)") from None
    return checkpoint.with_name(f"{checkpoint.stem}.{digest[:16]}.onnx")


def export_onnx(model: nn.Module, path: Path | str, *, input_size: int) -> None:
    """Export eval-mode ``model`` (``(N, 3, input_size, input_size)`` -> logits ``(N, K)``)
    to ``path`` atomically, with a dynamic batch axis."""
    was_training = model.training
    model.eval()
    example = torch.zeros(2, 3, input_size, input_size, device=_device(model))
    try:
        with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
            # the TorchScript exporter's deprecation and tracer notes are not the user's business
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,  # the torch.export-based exporter needs onnxscript, not a dependency
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
            )
    finally:
        model.train(was_training)


def make_session(path: Path | str, *, intra_op_threads: int) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU with ``intra_op_threads`` (0 = onnxruntime's default)."""
    _, ort = import_onnx()
    if not isinstance(intra_op_threads, int) or intra_op_threads < 0:
        raise ConfigError(f"classifier onnx intra_op_threads must be an integer >= 0, got {intra_op_threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1  # one chain of layers: nothing to run side by side
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_export(path: Path | str, model: nn.Module, *, input_size: int, atol: float, seed: int = 0) -> str | None:
    """None if ``path`` is a valid export of ``model``, else why not (one line).

    Checks the graph with ``onnx.checker`` and compares onnxruntime's logits with the
    torch model's on a seeded random batch of 3 windows (3, not the export's 2, so the
    batch axis is known to be dynamic).
    """
    onnx, _ = import_onnx()
    try:
        onnx.checker.check_model(str(path))
        session = make_session(path, intra_op_threads=1)
        x = torch.randn(3, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed))
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    except Exception as exc:  # onnx and onnxruntime raise many unrelated types for a bad file
        return f"unreadable ({type(exc).__name__}: {exc})".splitlines()[0]
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        want = model(x.to(_device(model))).float().cpu().numpy()
    model.train(was_training)
    if got.shape != want.shape:
        return f"output shape {got.shape} != torch's {want.shape}"
    err = float(np.abs(got - want).max())
    if not err <= atol:
        return f"outputs differ from torch's by {err:.3g} (> {atol:g})"
    return None


def cached_export(checkpoint: Path | str, model: nn.Module, *, input_size: int, atol: float) -> Path:
    """Path of a validated ONNX export of ``model`` (trained weights from ``checkpoint``),
    exporting it when missing and re-exporting (with a warning) when the cached file fails
    `check_export`."""
    path = onnx_path_for(checkpoint)
    if path.exists():
        problem = check_export(path, model, input_size=input_size, atol=atol)
        if problem is None:
            log.info("classifier: cached ONNX export %s", path)
            return path
        warnings.warn(f"{path}: cached ONNX export is invalid ({problem}); exporting again", stacklevel=2)
    export_onnx(model, path, input_size=input_size)
    problem = check_export(path, model, input_size=input_size, atol=atol)
    if problem is not None:
        raise RuntimeError(f"{path}: fresh ONNX export fails validation: {problem}")
    log.info("classifier: exported %s", path)
    return path


class OnnxClassifier(nn.Module):
    """An onnxruntime session behind the torch model's interface: ``forward(x (N, 3, S, S))``
    -> logits ``(N, K)`` on ``x``'s device.  A drop-in for the torch model in
    `classifier.score.score_regions` / ``score_dataset`` (no parameters; ``to``/``eval`` are no-ops)."""

    def __init__(self, session: Any, *, num_classes: int, input_size: int) -> None:
        super().__init__()
        self.session = session
        self.num_classes = num_classes
        self.input_size = input_size

    def forward(self, x: Tensor) -> Tensor:
        # ascontiguousarray: a channels-last tensor's numpy view is strided
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]).to(x.device)

    def trunk(self, x: Tensor) -> Tensor:
        raise ConfigError("pooled features (classifier SVMs) need classifier.runtime=torch; the ONNX export has logits only")


class OnnxScorer:
    """`classifier.score.score_regions` with the network run by onnxruntime (CPUExecutionProvider).

    Args:
        model: the trained torch classifier (exported once; the reference in validation).
        checkpoint: the file its weights came from (keys and locates the cached export).
        intra_op_threads: onnxruntime's intra-op threads (0 = its default, one per core).
        atol: largest accepted difference between onnxruntime's and torch's logits.

    ``scorer(image, boxes, *, batch_size, input_size, context_pad, pixel_mean, pixel_std, ...)``
    takes exactly `score_regions`' arguments after ``model`` and returns the same
    ``(R, C + 1)`` probabilities, so a pipeline swaps ``functools.partial(score_regions, model)``
    for an ``OnnxScorer``.  ``scorer.model`` (an `OnnxClassifier`) can stand in for the
    torch model in ``score_dataset``.  ``features=True`` raises `ConfigError` (logits only).
    """

    def __init__(self, model: nn.Module, *, checkpoint: Path | str, intra_op_threads: int, atol: float) -> None:
        input_size = int(model.input_size)
        self.path = cached_export(checkpoint, model, input_size=input_size, atol=atol)
        session = make_session(self.path, intra_op_threads=intra_op_threads)
        self.model = OnnxClassifier(session, num_classes=int(model.num_classes), input_size=input_size)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, **kwargs: Any) -> np.ndarray:
        return score_regions(self.model, image, boxes, **kwargs)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
