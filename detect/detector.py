"""A trained detector as one object: ``Detector.load(exported_dir)`` or ``Detector.from_run(run_dir)``.

    from detect import Detector
    detector = Detector.load("my_detector")        # a folder written by python -m detect.export
    out = detector("photo.jpg")                    # or an (H, W, 3) uint8 RGB array
    out["boxes"], out["scores"], out["labels"]     # Tensor[N, 4] xyxy float, Tensor[N], Tensor[N] int64 in 1..C
    detector.class_names[int(out["labels"][0]) - 1]

Both constructors gather the same `DetectorFiles` (where every weight file is, the class list,
the resolved ``proposals`` / ``classifier`` / ``ensemble`` settings) and `build_detector` turns
them into networks.  The per-image work is `detect.inference.detect_image`, the code
``detect.run`` uses for its ensemble.

An exported folder (`detect.export`)::

    manifest.json         format, package version, sha256 and size of every other file
    classes.json          {"ids": [1..C], "synsets": [...], "names": [...]}
    settings.json         resolved proposals / classifier / ensemble settings, and which file is what
    members/member_K.pt   each member's state dict (K = its member index in the run)
    members/member_K.{svm,bbox_reg}.npz    post-classifiers, when the run used them
    members/member_K.<sha256[:16]>.onnx     ONNX exports (optional, ``onnx=true``)
    multibox/model.pt, multibox/priors.npy  MultiBox network and its priors (when MultiBox is on)

Loading checks every file against the manifest (missing or changed: one-line `UserError` naming
the file), reads weights with ``torch.load(weights_only=True)`` (`classifier.weights`) and arrays
with ``allow_pickle=False``, and only builds the classes it knows (the settings' ``_target_``
entries are checked against an allow-list, never imported from the file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from classifier.bbox_reg import BboxRegressor
from classifier.svm import SvmModel
from classifier.weights import load_weights
from detect.data.image_io import load_rgb
from detect.data.record import ClassList
from detect.ensemble import EnsembleSettings
from detect.errors import UserError, read_user_file
from detect.inference import ImageResult, Member, MergeSettings, detect_image
from detect.members import build_model, post_classifier_path, region_scorer
from proposals.multibox import MultiBoxNet, MultiBoxProposer
from proposals.selective_search import SelectiveSearch

log = logging.getLogger(__name__)

FORMAT = "inception-rcnn-detector"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CLASSES = "classes.json"
SETTINGS = "settings.json"

# The only classes an exported settings file may name (it is data, not code).
ALLOWED_TARGETS = {
    ("classifier", "model"): "classifier.factory.build_classifier",
    ("proposals", "ss"): "proposals.selective_search.SelectiveSearch",
    ("ensemble",): "detect.ensemble.EnsembleSettings",
}
POST_CLASSIFIERS = ("svm", "bbox_reg")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("inception-rcnn")
    except PackageNotFoundError:
        return "unknown"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- what a detector is made of

@dataclass
class MemberFiles:
    name: str  # "member_<k>"
    key: str  # the member's cache key in the run
    weights: Path
    svm: Path | None = None
    bbox_reg: Path | None = None


@dataclass
class MultiBoxFiles:
    key: str  # the network's cache key (part of the proposal identity)
    weights: Path
    priors: Path


@dataclass
class DetectorFiles:
    """Everything `build_detector` needs: classes, resolved settings, and the weight files."""

    classes: ClassList
    settings: dict[str, Any]  # {"proposals": {...}, "classifier": {...}, "ensemble": {...}}, resolved
    members: list[MemberFiles]
    multibox: MultiBoxFiles | None
    source: str = ""  # the run or folder it came from (messages)


def resolved_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run config's inference settings as plain data (interpolations resolved; no start weights)."""
    settings = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("proposals", "classifier", "ensemble")}
    settings["classifier"]["model"]["weights"] = None  # the members' own weights replace the starting point
    return settings


def run_files(run_dir: str | Path, *, cache_dir: str | Path, device: str = "cpu") -> DetectorFiles:
    """The detector a finished ``detect.run`` folder trained, found in ``cache_dir`` (nothing is trained).

    Reads ``.hydra/config.yaml`` and ``metrics.json`` (member keys, MultiBox key, classes).  A run
    folder written before ``metrics.json`` recorded the MultiBox key and the classes gets them from
    the run's own data and MultiBox stage (cached; `detect.proposal_stage.build_sources`).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: " + ("is a file, expected a detect.run folder" if run.exists()
                                      else "no such run folder (from_run)"))
    config_path = run / ".hydra" / "config.yaml"
    metrics_path = run / "metrics.json"
    for path, why in ((config_path, "no .hydra/config.yaml"), (metrics_path, "no metrics.json: it did not finish")):
        if not path.is_file():
            raise UserError(f"{path}: missing; {run} is not a finished detect.run folder ({why})")
    try:
        metrics = json.loads(read_user_file(metrics_path, "run metrics", error=UserError))
    except json.JSONDecodeError as exc:
        raise UserError(f"{metrics_path}: not valid JSON ({exc})") from None
    try:
        cfg = OmegaConf.load(config_path)
    except Exception as exc:  # yaml and OmegaConf raise several types
        raise UserError(f"{config_path}: unreadable run config ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("members"), list) or not metrics["members"]:
        raise UserError(f"{metrics_path}: no 'members' list; {run} is not a finished detect.run folder")
    missing = [k for k in ("proposals", "classifier", "ensemble", "data") if k not in cfg]
    if missing:
        raise UserError(f"{config_path}: not a detect.run config (no {', '.join(missing)})")
    cfg.cache_dir = str(cache_dir)
    settings = resolved_settings(cfg)
    cache = Path(str(cache_dir))
    ensemble = _ensemble(settings["ensemble"], source=str(config_path))
    if len(ensemble.member_ids) != len(metrics["members"]):
        raise UserError(f"{metrics_path}: {len(metrics['members'])} members, the run config has "
                        f"{len(ensemble.member_ids)}")
    members = []
    for k, key in zip(ensemble.member_ids, metrics["members"]):
        weights = cache / "members" / str(key) / "model.pt"
        if not weights.is_file():
            raise UserError(f"{weights}: weights of member {k} of {run} not found "
                            f"(cache_dir={cache_dir}: is it the cache the run used?)")
        post = {}
        for name in POST_CLASSIFIERS:
            if cfg.classifier[name].enabled:
                post[name] = post_classifier_path(cfg.classifier, name, member_key=str(key), cache_dir=str(cache))
                if not post[name].is_file():
                    raise UserError(f"{post[name]}: {name} of member {k} of {run} not found in cache_dir")
        members.append(MemberFiles(f"member_{k}", str(key), weights, post.get("svm"), post.get("bbox_reg")))
    classes = _run_classes(metrics, cfg)
    multibox = None
    if "multibox" in settings["proposals"]["sources"] and settings["proposals"]["multibox"]["top_k"] != 0:
        key = metrics.get("multibox") or _rebuild_multibox_key(cfg, device=device)
        stage = cache / "multibox" / str(key)
        multibox = MultiBoxFiles(str(key), stage / "model.pt", stage / "priors.npy")
        for path in (multibox.weights, multibox.priors):
            if not path.is_file():
                raise UserError(f"{path}: MultiBox of {run} not found (cache_dir={cache_dir}: is it the cache the run used?)")
    return DetectorFiles(classes, settings, members, multibox, source=str(run))


def _run_classes(metrics: dict, cfg: DictConfig) -> ClassList:
    recorded = metrics.get("classes")
    if isinstance(recorded, dict):
        return ClassList(tuple(recorded["synsets"]), tuple(recorded["names"]))
    from hydra.utils import instantiate

    log.info("run metrics do not list the classes; reading them from the run's data source")
    source = instantiate(cfg.data)
    return source.load(source.split).classes


def _rebuild_multibox_key(cfg: DictConfig, *, device: str) -> str:
    """The MultiBox network key of a run whose metrics.json does not record it: the pipeline's own
    functions on the run's training split (cache hits when the run's cache is there)."""
    from hydra.utils import instantiate

    from detect.pretrain_stage import multibox_init_weights
    from detect.proposal_stage import build_sources

    log.warning("run metrics do not record the MultiBox key; rebuilding it from the training split "
                "(from the cache; trains if the cache lacks it)")
    source = instantiate(cfg.data)
    train = source.load(source.train_split)
    sources = build_sources(cfg.proposals, train, cache_dir=str(cfg.cache_dir), seed=int(cfg.seed),
                            init_weights=multibox_init_weights(cfg, device=device))
    return sources["multibox"].network_key


# --------------------------------------------------------------------------- exported folders

def _safe_relative(root: Path, name: str, manifest: Path) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UserError(f"{manifest}: file name {name!r} points outside the detector folder")
    return root / rel


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of an exported folder, every listed file checked (present, same size and sha256)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: " + ("is a file, expected an exported detector folder" if root.exists()
                                       else "no such exported detector folder"))
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: missing: {root} is not an exported detector (python -m detect.export)")
    try:
        manifest = json.loads(read_user_file(path, "detector manifest", error=UserError))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{path}: not an exported detector manifest (format {FORMAT!r} with a 'files' table)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: format version {manifest.get('format_version')!r}; this version reads "
                        f"{FORMAT_VERSION} (package {package_version()})")
    for name in (CLASSES, SETTINGS):
        if name not in manifest["files"]:
            raise UserError(f"{path}: does not list {name}")
    for name, entry in manifest["files"].items():
        file = _safe_relative(root, name, path)
        if not file.is_file():
            raise UserError(f"{file}: missing from the exported detector (listed in {path})")
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise UserError(f"{path}: entry {name!r} has no sha256")
        if file.stat().st_size != entry.get("bytes", file.stat().st_size) or sha256_file(file) != entry["sha256"]:
            raise UserError(f"{file}: checksum mismatch with {path} (corrupt, truncated or modified file)")
    return manifest


def folder_files(root: str | Path) -> DetectorFiles:
    """The `DetectorFiles` of an exported folder (checked against its manifest)."""
    root = Path(root)
    read_manifest(root)
    classes_path, settings_path = root / CLASSES, root / SETTINGS
    try:
        classes = json.loads(classes_path.read_text(encoding="utf-8"))
        synsets, names = tuple(map(str, classes["synsets"])), tuple(map(str, classes["names"]))
        if list(classes["ids"]) != list(range(1, len(synsets) + 1)) or len(names) != len(synsets) or not synsets:
            raise ValueError("ids must be 1..C with one synset and one name each")
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{classes_path}: not a class list ({exc})") from None
    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
        members = [MemberFiles(m["name"], m["key"], _safe_relative(root, m["weights"], settings_path),
                               *(_safe_relative(root, m[k], settings_path) if m.get(k) else None
                                 for k in POST_CLASSIFIERS)) for m in settings["members"]]
        mb = settings["multibox"]
        multibox = None if mb is None else MultiBoxFiles(mb["key"], _safe_relative(root, mb["weights"], settings_path),
                                                         _safe_relative(root, mb["priors"], settings_path))
        inference = {k: settings[k] for k in ("proposals", "classifier", "ensemble")}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{settings_path}: not detector settings ({type(exc).__name__}: {exc})") from None
    if not members:
        raise UserError(f"{settings_path}: lists no member")
    return DetectorFiles(ClassList(synsets, names), inference, members, multibox, source=str(root))


# --------------------------------------------------------------------------- building the networks

def _check_target(settings: dict, where: tuple[str, ...], source: str) -> dict:
    node = settings
    for key in where:
        node = node[key]
    target = node.get("_target_")
    if target != ALLOWED_TARGETS[where]:
        raise UserError(f"{source}: {'.'.join(where)}._target_ is {target!r}, expected {ALLOWED_TARGETS[where]!r}")
    return {k: v for k, v in node.items() if k != "_target_"}


def _ensemble(ensemble: dict, *, source: str) -> EnsembleSettings:
    return EnsembleSettings(**_check_target({"ensemble": ensemble}, ("ensemble",), source))


def _load_priors(path: Path, num_priors: int) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            priors = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: not a readable priors array ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if priors.shape != (num_priors, 4):
        raise UserError(f"{path}: priors have shape {priors.shape}, the MultiBox network has ({num_priors}, 4)")
    return priors.astype(np.float32)


def _multibox(files: MultiBoxFiles, mb: dict) -> MultiBoxProposer:
    # Detectors exported before centres_per_cell / offset_units existed used 1 / image units.
    model = MultiBoxNet(num_shapes=mb["num_shapes"], width=mb["width"], input_size=mb["input_size"],
                        batch_norm=mb["batch_norm"], feature_layer=mb["feature_layer"],
                        centres_per_cell=mb.get("centres_per_cell", 1))
    load_weights(model, files.weights)
    priors = _load_priors(files.priors, model.num_priors)
    offset_units = mb.get("offset_units", "image")
    return MultiBoxProposer(model=model.eval(), priors=priors, network_key=files.key, offset_units=offset_units,
                            top_k=mb["top_k"],
                            nms_iou=mb["nms_iou"], min_size=mb["min_size"], pixel_mean=tuple(mb["pixel_mean"]),
                            pixel_std=tuple(mb["pixel_std"]))


def _post_classifier(kind, path: Path | None):
    if path is None:
        return None
    try:
        return kind.load(path)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise UserError(f"{path}: not a readable {kind.__name__} file ({type(exc).__name__}: {exc})") from None


def build_detector(files: DetectorFiles, *, device: str = "cpu", mode: str | None = None,
                   runtime: str | None = None) -> "Detector":
    """Networks from ``files``: the proposal sources in `detect.proposal_stage.build_sources` order
    (MultiBox first), then every member.  ``mode`` / ``runtime`` override ``classifier.mode``
    (warp | roi: the same weights serve both) and ``classifier.runtime`` (torch | onnx)."""
    settings = files.settings
    source = files.source
    proposals = settings["proposals"]
    unknown = set(proposals["sources"]) - {"ss", "multibox"}
    if unknown or not proposals["sources"]:
        raise UserError(f"{source}: proposals.sources must be a non-empty subset of [ss, multibox], "
                        f"got {proposals['sources']}")
    sources: dict[str, Any] = {}
    if files.multibox is not None:
        sources["multibox"] = _multibox(files.multibox, proposals["multibox"])
    if "ss" in proposals["sources"]:
        sources["ss"] = SelectiveSearch(**_check_target(settings, ("proposals", "ss"), source))
    if not sources:
        raise UserError(f"{source}: no proposal source is on")
    classifier = OmegaConf.create(settings["classifier"])
    _check_target(settings, ("classifier", "model"), source)
    if mode is not None:
        classifier.mode = mode
    if runtime is not None:
        classifier.runtime = runtime
    members, models = [], []
    for m in files.members:
        model = build_model(OmegaConf.merge(classifier, {"model": {"weights": None}}), num_classes=len(files.classes))
        load_weights(model, m.weights)  # every key and shape: weights of another architecture are refused
        model.eval()
        svm, bbox_reg = _post_classifier(SvmModel, m.svm), _post_classifier(BboxRegressor, m.bbox_reg)
        score_image = region_scorer(model, classifier, device=device, checkpoint=m.weights,
                                    features=svm is not None or bbox_reg is not None)
        members.append(Member(m.name, score_image, svm, bbox_reg))
        models.append(model)
    merge = MergeSettings(iou=proposals["merge"]["iou"], max_per_image=proposals["merge"]["max_per_image"],
                          order=proposals["merge"].get("order", "priority"),
                          snap_iou=proposals["merge"].get("snap_iou"))  # detectors exported before the key: off
    return Detector(classes=files.classes, sources=sources, members=members, merge=merge,
                    settings=_ensemble(settings["ensemble"], source=source),
                    workers=int(proposals.get("workers", 1)), files=files, models=models)


# --------------------------------------------------------------------------- the detector

@dataclass
class Detector:
    """Proposal sources, ensemble members and the ensemble settings of one trained detector.

    ``detector(image)`` for a path or an ``(H, W, 3)`` uint8 RGB array returns torchvision's
    detection convention: ``{"boxes": Tensor[N, 4] float32 xyxy pixels, "scores": Tensor[N]
    float32, "labels": Tensor[N] int64 in 1..C}``, best first; ``class_names[label - 1]`` names
    a label.  `detect` returns the numpy arrays with per-stage seconds.
    """

    classes: ClassList
    sources: dict[str, Any]
    members: list[Member]
    merge: MergeSettings
    settings: EnsembleSettings
    workers: int = 1  # the run's proposals.workers (detect.predict's default)
    files: DetectorFiles | None = field(default=None, repr=False)
    models: list[torch.nn.Module] = field(default_factory=list, repr=False)  # the members' torch networks

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", mode: str | None = None,
             runtime: str | None = None) -> "Detector":
        """An exported detector folder (`detect.export`), checksums checked (see the module docstring)."""
        return build_detector(folder_files(Path(path)), device=device, mode=mode, runtime=runtime)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, cache_dir: str | os.PathLike, device: str = "cpu",
                 mode: str | None = None, runtime: str | None = None) -> "Detector":
        """The detector a finished ``detect.run`` folder trained, from ``cache_dir`` (nothing is trained)."""
        return build_detector(run_files(run_dir, cache_dir=cache_dir, device=device), device=device, mode=mode,
                              runtime=runtime)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.names)

    def detect(self, image: np.ndarray, *, per_source: dict[str, np.ndarray] | None = None,
               seconds: dict[str, float] | None = None) -> ImageResult:
        """`detect.inference.detect_image` with this detector's parts (``image``: ``(H, W, 3)`` uint8 RGB)."""
        return detect_image(image, sources=self.sources, members=self.members, merge=self.merge,
                            settings=self.settings, per_source=per_source, seconds=seconds)

    def __call__(self, image: str | os.PathLike | np.ndarray) -> dict[str, torch.Tensor]:
        if isinstance(image, (str, os.PathLike)):
            array = load_rgb(Path(image))
        else:
            array = np.asarray(image)
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
                raise ValueError(f"expected an image path or an (H, W, 3) uint8 RGB array, got shape "
                                 f"{array.shape} dtype {array.dtype}")
            array = np.ascontiguousarray(array)
        result = self.detect(array)
        return {"boxes": torch.from_numpy(np.asarray(result.boxes, np.float32).reshape(-1, 4)),
                "scores": torch.from_numpy(np.asarray(result.scores, np.float32)),
                "labels": torch.from_numpy(np.asarray(result.labels, np.int64))}
