"""``python -m detect.export from_run=RUN_DIR out=DIR``: a trained detector as a self-contained folder.

    python -m detect.export from_run=outputs/2026-12-01/10-00-00-123-abcd out=my_detector [onnx=true]

The folder (layout in `detect.detector`) holds every member's weights, MultiBox and its priors,
the class list, the resolved proposal / classifier / ensemble settings and a manifest with the
sha256 of each file and the package version; it needs no cache and no training data, so it runs
on another machine: ``python -m detect.predict detector=DIR images=...`` or
``detect.Detector.load(DIR)``.  It is written into a temporary folder beside ``out``, loaded
back and checked, then renamed into place: an interrupted export leaves no ``out``.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from detect import atomic
from detect.cli import run_cli, run_user_errors
from detect.detector import (CLASSES, FORMAT, FORMAT_VERSION, MANIFEST, SETTINGS, Detector, DetectorFiles,
                             build_detector, package_version, run_files, sha256_file)
from detect.errors import UserError

log = logging.getLogger(__name__)


def _write_folder(tmp: Path, files: DetectorFiles, detector: Detector, *, onnx: bool, onnx_atol: float,
                  from_run: str) -> None:
    copies: dict[str, Path] = {}
    members = []
    for m in files.members:
        entry: dict[str, Any] = {"name": m.name, "key": m.key, "weights": f"members/{m.name}.pt"}
        copies[entry["weights"]] = m.weights
        for kind, path in (("svm", m.svm), ("bbox_reg", m.bbox_reg)):
            entry[kind] = None if path is None else f"members/{m.name}.{kind}.npz"
            if path is not None:
                copies[entry[kind]] = path
        members.append(entry)
    multibox = None
    if files.multibox is not None:
        multibox = {"key": files.multibox.key, "weights": "multibox/model.pt", "priors": "multibox/priors.npy"}
        copies[multibox["weights"]] = files.multibox.weights
        copies[multibox["priors"]] = files.multibox.priors
    for name, src in copies.items():
        dst = tmp / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    classes = {"ids": list(files.classes.ids), "synsets": list(files.classes.synsets),
               "names": list(files.classes.names)}
    atomic.write_json(tmp / CLASSES, classes)
    atomic.write_json(tmp / SETTINGS, {**files.settings, "members": members, "multibox": multibox})
    if onnx:
        from classifier.onnx_runtime import cached_export

        for entry, model in zip(members, detector.models):
            cached_export(tmp / entry["weights"], model, input_size=int(model.input_size), atol=onnx_atol)
    listed = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = path.relative_to(tmp).as_posix()
        listed[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "package": "inception-rcnn",
                "package_version": package_version(), "torch_version": torch.__version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "from_run": from_run, "num_classes": len(files.classes), "members": len(members),
                "files": listed}
    atomic.write_json(tmp / MANIFEST, manifest)
    umask = os.umask(0)
    os.umask(umask)
    for path in tmp.rglob("*"):  # atomic writes are private (mkstemp); the folder is made to be shipped
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


def export_detector(*, from_run: str, out: str, cache_dir: str, onnx: bool = False, overwrite: bool = False,
                    onnx_atol: float = 1e-4) -> Path:
    """Write the detector of the finished run ``from_run`` (weights from ``cache_dir``) to the folder ``out``.

    ``onnx``: also export every member to ONNX (validated against torch within ``onnx_atol``),
    used by ``classifier.runtime=onnx``.  ``overwrite``: replace an existing ``out``.
    Returns ``out``.  One-line `UserError` when the run is not finished, a file is missing from
    the cache, or ``out`` exists.
    """
    out_path = Path(out)
    if (out_path.exists() or out_path.is_symlink()) and not overwrite:
        raise UserError(f"{out_path}: already exists; choose another out= or set overwrite=true")
    files = run_files(from_run, cache_dir=cache_dir)
    detector = build_detector(files)  # the weights load into the configured networks before anything is written
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.parent / f".{out_path.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        _write_folder(tmp, files, detector, onnx=onnx, onnx_atol=onnx_atol, from_run=str(from_run))
        Detector.load(tmp)  # what was written loads, checksums included
        if out_path.exists():
            old = out_path.parent / f".{out_path.name}.{secrets.token_hex(4)}.old"
            os.replace(out_path, old)
            os.replace(tmp, out_path)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out_path.rglob("*") if p.is_file())
    print(f"exported {len(files.members)} members ({len(files.classes)} classes"
          f"{', MultiBox' if files.multibox else ''}{', ONNX' if onnx else ''}) from {from_run} "
          f"to {out_path} ({size / 1e6:.1f} MB)", flush=True)
    return out_path


@run_user_errors
def _main(cfg: DictConfig) -> str:
    return str(export_detector(from_run=str(cfg.from_run), out=str(cfg.out), cache_dir=str(cfg.cache_dir),
                               onnx=bool(cfg.onnx), overwrite=bool(cfg.overwrite), onnx_atol=float(cfg.onnx_atol)))


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> str:
    return _main(cfg)


if __name__ == "__main__":
    run_cli(main)
