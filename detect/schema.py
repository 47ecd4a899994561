"""The typed schema of every config key, checked in one pass before any stage runs.

`validate_config(cfg, entry)` walks the composed config of one entry point (``config`` for
``python -m detect.run`` and ``classifier.train_ddp``, ``proposals_run``, ``eval_map``, ``pretrain``,
``evaluate``, ``export``, ``synth``) against `ENTRIES` and raises one `ConfigError` line naming the key, the value
and what is allowed:

* a wrong type or an out-of-range value: ``proposals.ss.scale must be a number > 0, got 'two'``;
* a key no code reads (a typo, or one added with ``+``): ``unknown config key 'classifier.train.lrr'
  (did you mean 'classifier.train.lr'?)``;
* a key a stage needs that is gone (``~key``), or a ``???`` left unset.

`detect.cli.run_user_errors` calls it first thing in every Hydra entry point (it picks the entry
from Hydra's ``config_name``), so nothing is computed before the whole config is known to be usable.
Cross-key rules that need the data or a model (``data.split`` among ``data.splits``, a classifier
input size its network can take, ...) stay with the code that owns them, which also raises one line.

Extending it: a new yaml key needs one line in the group's table below (`tests/test_config_schema.py`
composes every config x profile x reader and fails on any key the schema does not know); a new data
reader is one more entry of `DATA_READERS` keyed by its ``_target_`` (a ``_target_`` not listed is the
user's own class: only its presence is checked); a new entry point is one more `Entry`.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from detect.errors import ConfigError

# --------------------------------------------------------------------------- leaves


@dataclass(frozen=True)
class Key:
    """One leaf: ``ok(value)`` says whether the (resolved) value is allowed; ``what`` says what is."""

    what: str
    ok: Callable[[Any], bool]
    many: str = ""  # the plural, for lists of it: "integers >= 1"


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _or_null(key: Key, null: bool) -> Key:
    if not null:
        return key
    return Key(f"{key.what} or null", lambda v: v is None or key.ok(v), key.many)


def _bounds(low, high, low_open: bool = False, high_open: bool = False, *, integer: bool = False) -> str:
    if low is not None and high is not None:
        if integer:
            return f" in {low}..{high}"
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def _within(v, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (v <= low if low_open else v < low):
        return False
    if high is not None and (v >= high if high_open else v > high):
        return False
    return True


def integer(low: int | None = None, high: int | None = None, *, null: bool = False) -> Key:
    """An int (not a bool, not 2.0: a typed float is never silently truncated) within ``[low, high]``."""
    bounds = _bounds(low, high, integer=True)
    key = Key(f"an integer{bounds}", lambda v: _is_int(v) and _within(v, low, high, False, False), f"integers{bounds}")
    return _or_null(key, null)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, null: bool = False) -> Key:
    """A finite int or float (not a bool, not NaN) within the bounds (open ends with ``*_open``)."""
    bounds = _bounds(low, high, low_open, high_open)
    key = Key(f"a number{bounds}", lambda v: _is_number(v) and _within(v, low, high, low_open, high_open),
              f"numbers{bounds}")
    return _or_null(key, null)


def positive(*, null: bool = False) -> Key:
    return number(0, low_open=True, null=null)


def probability() -> Key:
    return number(0, 1)


def boolean(*, null: bool = False) -> Key:
    return _or_null(Key("true or false", lambda v: isinstance(v, bool), "true/false values"), null)


def text(*, null: bool = False, empty: bool = False) -> Key:
    """A string (a number typed for a name, ``data.split=2007``, is read as its text)."""
    key = Key("a string" if empty else "a non-empty string",
              lambda v: (isinstance(v, str) and (empty or v != "")) or _is_int(v),
              "strings" if empty else "non-empty strings")
    return _or_null(key, null)


def choice(*options: str, null: bool = False) -> Key:
    names = [repr(o) for o in options]
    what = " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)
    return _or_null(Key(what, lambda v: isinstance(v, str) and v in options, "names among " + ", ".join(names)), null)


def pattern(regex: str, what: str, *, null: bool = False) -> Key:
    compiled = re.compile(regex)
    return _or_null(Key(what, lambda v: isinstance(v, str) and compiled.fullmatch(v) is not None), null)


def list_of(item: Key, *, min_len: int = 0, length: int | None = None, unique: bool = False,
            null: bool = False) -> Key:
    many = item.many or f"values that are {item.what}"
    what = (f"a list of {length} {many}" if length is not None
            else f"a non-empty list of {many}" if min_len else f"a list of {many}")
    what += " (no repeats)" if unique else ""

    def ok(v) -> bool:
        if not isinstance(v, list) or len(v) < min_len or (length is not None and len(v) != length):
            return False
        if unique and len({repr(x) for x in v}) != len(v):
            return False
        return all(item.ok(x) for x in v)

    return _or_null(Key(what, ok), null)


def pair(item: Key) -> Key:
    """A ``[min, max]`` range: two ``item`` values with min <= max."""
    return Key(f"a [min, max] pair of {item.many} with min <= max",
               lambda v: isinstance(v, list) and len(v) == 2 and all(item.ok(x) for x in v) and v[0] <= v[1])


ANY = Key("anything", lambda v: True)


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class Group:
    """A dict of named entries.  ``complete`` (default True): every key must be there; a callable
    ``complete(root)`` decides from the whole (resolved) config; ``optional`` keys may be absent."""

    fields: Mapping[str, "Node"]
    optional: frozenset[str] = frozenset()
    complete: bool | Callable[[dict], bool] = True


@dataclass(frozen=True)
class Map:
    """A dict whose keys are the user's (split names, file patterns): every value is ``value``."""

    value: Key
    what: str
    min_len: int = 1


@dataclass(frozen=True)
class Variants:
    """A group whose keys depend on its ``_target_`` (one `Group` per reader class)."""

    by_target: Mapping[str, Group]
    hint: str  # how the user picks one, e.g. "data=synthetic|ilsvrc|ilsvrc2014|voc|coco"


Node = Key | Group | Map | Variants


def group(optional: tuple[str, ...] = (), complete: bool | Callable[[dict], bool] = True, **fields: Node) -> Group:
    return Group(fields, frozenset(optional), complete)


TARGET = text()
PARTIAL = boolean()
SEED = integer(0)  # numpy seeds are non-negative
MOMENTUM = number(0, 1, high_open=True)
DROPOUT = number(0, 1, high_open=True)
IOU = number(0, 1, low_open=True)  # an IoU threshold of 0 would accept any box
RGB = list_of(number(), length=3)
RGB_STD = list_of(positive(), length=3)
UNKNOWN_CLASSES = choice("error", "skip")
COUNT_PAIR = pair(integer(0))

# Option lists of the code (tests/test_config_schema.py checks they are the code's own constants).
SS_MODES = ("fast", "quality")
MERGE_ORDERS = ("priority", "interleave")
SOURCES = ("ss", "multibox")
ARCHS = ("googlenet", "torchvision_googlenet")
TRUNK_LAYERS = ("stem", "inception3a", "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
                "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b")
INITS = ("pretrained", "scratch", "weights")
MULTIBOX_INITS = ("pretrained", "scratch")
OFFSET_UNITS = ("image", "prior")
CONFIDENCE_LOSSES = ("logistic", "focal", "quality_focal")
MODES = ("warp", "roi")
RUNTIMES = ("torch", "onnx")
LR_SCHEDULES = ("step", "poly")
SCORE_KINDS = ("softmax", "svm")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
SYNTH_CLASSES = 12  # len(detect.data.synth.CLASSES)
SYNTH_CLS_CLASSES = 48  # len(detect.data.synth_cls.CLS_CLASSES)

DEVICE = pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:N or mps")
SHARD = Key("null or 'i/n' with 0 <= i < n (e.g. 0/4)",
            lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"\d+/\d+", v) is not None
                                    and int(v.split("/")[0]) < int(v.split("/")[1])))

# ---- data readers (conf/data/*.yaml), keyed by _target_

_SPLITS = dict(split=text(), train_split=text())

SYNTHETIC = group(
    _target_=TARGET, root=text(), **_SPLITS,
    managed_dir=text(null=True), regenerate=boolean(), workers=integer(1),
    seed=SEED,
    splits=Map(integer(1), "split names mapped to image counts"),
    num_classes=integer(1, SYNTH_CLASSES),
    image_long_side=pair(integer(16, 4096)),
    image_aspect=pair(number(0.1, 1.0)),
    portrait_prob=probability(), negative_fraction=probability(), missing_xml_fraction=probability(),
    objects_per_image=list_of(number(0), min_len=1),
    object_scale=pair(number(0.001, 2.0)),
    max_aspect=number(1), max_rotation=number(0), max_shear=number(0), hue_std=number(0),
    truncation_prob=probability(), min_visible_fraction=probability(),
    min_box_side=integer(1), placement_tries=integer(1),
    distractors=COUNT_PAIR, hard_distractor_prob=probability(),
    clutter_blobs=COUNT_PAIR, clutter_lines=COUNT_PAIR, clutter_textures=COUNT_PAIR,
    noise_std=pair(number(0)), blur_prob=probability(),
    jpeg_quality=integer(1, 100),
    blacklist_split=text(null=True), blacklist_entries=integer(0),
)
ILSVRC = group(
    _target_=TARGET, root=text(), **_SPLITS,
    images_dir=text(), annotations_dir=text(), split_list=text(), image_ext=text(empty=True),
    class_list=text(), meta_det=text(null=True), blacklist=text(null=True), blacklist_split=text(null=True),
    unknown_classes=UNKNOWN_CLASSES, check_image_size=boolean(),
    folder_of_split=Map(text(), "split-name patterns mapped to the split whose folders hold their images", 0),
)
VOC = group(
    _target_=TARGET, root=text(), **_SPLITS,
    classes=list_of(text(), min_len=1),  # repeats: detect.data.classes.class_list_from_names names them
    image_ext=text(empty=True), unknown_classes=UNKNOWN_CLASSES, check_image_size=boolean(),
)
COCO = group(_target_=TARGET, root=text(), **_SPLITS, annotations=text(), images_dir=text(empty=True))

DATA_READERS = {
    "detect.data.synth.SyntheticSource": SYNTHETIC,
    "detect.data.ilsvrc.IlsvrcSource": ILSVRC,
    "detect.data.voc.VocSource": VOC,
    "detect.data.coco.CocoSource": COCO,
}
DATA = Variants(DATA_READERS, "data=synthetic|ilsvrc|ilsvrc2014|voc|coco")

# ---- pretraining readers (conf/pretrain/data/*.yaml)

SYNTHETIC_CLS = group(
    _target_=TARGET, root=text(), **_SPLITS, seed=SEED,
    images_per_class=Map(integer(1), "split names mapped to images per class"),
    num_classes=integer(1, SYNTH_CLS_CLASSES),
    image_long_side=pair(integer(16, 4096)), image_aspect=pair(number(0.1, 1.0)),
    object_scale=pair(number(0.01, 1.5)), center_jitter=number(0),
    max_aspect=number(1), max_rotation=number(0), max_shear=number(0), hue_std=number(0),
    clutter_blobs=COUNT_PAIR, clutter_lines=COUNT_PAIR, clutter_textures=COUNT_PAIR,
    noise_std=pair(number(0)), blur_prob=probability(), jpeg_quality=integer(1, 100),
)
CLS_LOC = group(
    _target_=TARGET, root=text(), **_SPLITS, synset_mapping=text(), val_solution=text(),
    devkit_ground_truth=text(null=True), devkit_meta=text(null=True),
)
IMAGE_FOLDER = group(_target_=TARGET, root=text(), **_SPLITS, split_dir=text(empty=True))

PRETRAIN_READERS = {
    "detect.data.synth_cls.SyntheticClsSource": SYNTHETIC_CLS,
    "detect.data.cls_loc.ClsLocSource": CLS_LOC,
    "detect.data.cls_loc.ImageFolderSource": IMAGE_FOLDER,
}

# ---- proposals (conf/proposals/*.yaml)


def _uses(source: str) -> Callable[[dict], bool]:
    """The block of a proposal source is complete only when that source runs (a profile may tune the other)."""
    return lambda root: source in (((root.get("proposals") or {}).get("sources")) or ())


SS = group(
    complete=_uses("ss"),
    _target_=TARGET, mode=choice(*SS_MODES), base_k=integer(1), inc_k=integer(1), sigma=number(0),
    min_region_size=integer(0), scale=positive(),
    resize_short_side=integer(1, null=True), max_long_side=integer(1, null=True), max_boxes=integer(1, null=True),
    min_size=number(0),
)
MULTIBOX = group(
    complete=_uses("multibox"),
    top_k=integer(0), nms_iou=IOU, min_size=number(0), num_shapes=integer(1), centres_per_cell=integer(1),
    init=choice(*MULTIBOX_INITS),
    width=positive(), input_size=integer(1), batch_norm=boolean(), feature_layer=choice(*TRUNK_LAYERS),
    iterations=integer(1), batch_size=integer(1), lr=positive(), momentum=MOMENTUM, weight_decay=number(0),
    alpha=number(0), extra_match_iou=number(0, 1, low_open=True, null=True), offset_units=choice(*OFFSET_UNITS),
    confidence_loss=choice(*CONFIDENCE_LOSSES), pos_weight=positive(), focal_alpha=number(0, 1), focal_gamma=number(0),
    checkpoint_every=integer(1), pixel_mean=RGB, pixel_std=RGB_STD, channels_last=boolean(),
    threads=integer(1, null=True),
)
PROPOSALS = group(
    ("ss", "multibox"),
    ss=SS, multibox=MULTIBOX,
    sources=list_of(choice(*SOURCES), min_len=1, unique=True),
    workers=integer(1), chunk_size=integer(1), shard=SHARD,
    merge=group(iou=number(0, 1), max_per_image=integer(1, null=True), order=choice(*MERGE_ORDERS),
                snap_iou=number(0, 1, low_open=True, null=True)),
)

# ---- classifier (conf/classifier/googlenet.yaml)

CLASSIFIER = group(
    init=choice(*INITS),
    model=group(
        _target_=TARGET, _partial_=PARTIAL, arch=choice(*ARCHS), width=positive(), input_size=integer(1),
        batch_norm=boolean(null=True), aux_logits=boolean(), dropout=DROPOUT, aux_dropout=DROPOUT,
        weights=text(null=True), transform_input=boolean(),
    ),
    windows=group(context_pad=number(0), pixel_mean=RGB, pixel_std=RGB_STD, flip=boolean(), include_gt=boolean(),
                  image_cache=integer(0)),
    labeler=group(_target_=TARGET, fg_iou=probability(), bg_iou=probability(), bg_iou_low=probability()),
    sampler=group(_target_=TARGET, fg_per_batch=integer(0), bg_per_batch=integer(0)),
    train=group(
        iterations=integer(1), lr=positive(), momentum=MOMENTUM, weight_decay=number(0),
        lr_schedule=choice(*LR_SCHEDULES), step_size=integer(1), gamma=positive(), power=number(0),
        aux_weight=number(0), checkpoint_every=integer(1), log_every=integer(1), deterministic=boolean(),
        channels_last=boolean(), amp=boolean(), prefetch=boolean(),
    ),
    shared=group(iterations=integer(0), lr=positive()),  # detect.members: fine-tuning shared by every member
    score=group(batch_size=integer(1), amp=boolean(), channels_last=boolean()),
    svm=group(
        enabled=boolean(),
        fit=group(
            _target_=TARGET, _partial_=PARTIAL, neg_iou=IOU, max_negatives_per_image=integer(0),
            initial_negatives=integer(1), mining_rounds=integer(0), hard_threshold=number(),
            evict_threshold=number(), C=positive(), positive_weight=positive(), bias_mult=positive(),
            target_norm=positive(), tol=positive(), max_iter=integer(1),
        ),
    ),
    bbox_reg=group(
        enabled=boolean(),
        fit=group(_target_=TARGET, _partial_=PARTIAL, min_iou=IOU, include_gt=boolean(),
                  max_examples_per_image=integer(1, null=True), alpha=number(0), target_norm=positive()),
    ),
    mode=choice(*MODES),
    runtime=choice(*RUNTIMES),
    roi=group(
        pool_size=integer(1, null=True), sampling_ratio=integer(1), image_size=integer(1),
        max_size=integer(1, null=True), images_per_batch=integer(1), fg_per_image=integer(0),
        bg_per_image=integer(0), init_from_warp=boolean(),
    ),
    onnx=group(intra_op_threads=integer(0), atol=positive()),
)

# ---- pretraining (conf/pretrain/default.yaml)

PRETRAIN = group(
    data=Variants(PRETRAIN_READERS, "pretrain/data=synthetic|cls_loc|image_folder"),
    seed=SEED,
    networks=integer(1),
    use_shipped=boolean(),
    train=group(
        epochs=positive(), batch_size=integer(1), lr=positive(), momentum=MOMENTUM, weight_decay=number(0),
        lr_step_epochs=positive(), lr_gamma=positive(), aux_weight=number(0), polyak_start_epoch=number(0),
        polyak_decay=number(0, 1, high_open=True, null=True), workers=integer(0), checkpoint_every=integer(1),
        log_every=integer(1), channels_last=boolean(), deterministic=boolean(),
    ),
    augment=group(
        crop_scale=pair(number(0, 1, low_open=True)), crop_ratio=pair(positive()),
        interpolations=list_of(choice(*INTERPOLATIONS), min_len=1), brightness=number(0), contrast=number(0),
        saturation=number(0), hue=number(0, 0.5), flip=boolean(),
    ),
    eval=group(resize_ratio=positive(), batch_size=integer(1)),
)

# ---- ensemble, eval

ENSEMBLE = group(
    _target_=TARGET, size=integer(1), members=list_of(integer(0), unique=True, null=True), member=integer(0, null=True),
    score=choice(*SCORE_KINDS), nms_iou=IOU, score_threshold=number(), max_per_image=integer(1),
    max_per_class=integer(1), workers=integer(1), box_voting_iou=number(0, 1, low_open=True, null=True),
)
EVAL = group(coco=boolean(), coco_max_dets=integer(1, null=True), plots=boolean())

# ---- classification evaluation (conf/evaluate.yaml, classifier/evaluate.py)

CROP_SCHEMES = (1, 10, 144)
EVALUATE = group(
    models=list_of(integer(1), min_len=1, unique=True),
    crops=list_of(Key("1, 10 or 144", lambda v: _is_int(v) and v in CROP_SCHEMES, "crop counts among 1, 10, 144"),
                  min_len=1, unique=True),
    weights=list_of(text()), batch_size=integer(1), workers=integer(0), runtime=choice(*RUNTIMES),
    channels_last=boolean(), progress=boolean(),
)

# ---- top level

TOP: dict[str, Node] = {
    "data": DATA,
    "proposals": PROPOSALS,
    "classifier": CLASSIFIER,
    "pretrain": PRETRAIN,
    "ensemble": ENSEMBLE,
    "eval": EVAL,
    "seed": SEED,
    "cache_dir": text(),
    "device": DEVICE,
}


@dataclass(frozen=True)
class Entry:
    """One primary config (``conf/<name>.yaml``): its keys, all required; ``profile_groups``: the
    other groups of `TOP` it may hold in part (a profile's blocks of groups it does not compose):
    their keys are checked, never required, and a ``???`` there may be filled in later."""

    keys: Mapping[str, Node]
    profile_groups: tuple[str, ...] = ()


def _top(*names: str, **extra: Node) -> dict[str, Node]:
    return {**{n: TOP[n] for n in names}, **extra}


ENTRIES: dict[str, Entry] = {
    "config": Entry(_top(*TOP)),
    "proposals_run": Entry(_top("data", "proposals", "classifier", "pretrain", "seed", "cache_dir", "device"),
                           ("ensemble", "eval")),
    "eval_map": Entry(_top("data", "eval", "cache_dir", detections=text())),
    "pretrain": Entry(_top("classifier", "pretrain", "cache_dir", "device", ship=boolean()),
                      ("data", "proposals", "ensemble", "eval", "seed")),
    "evaluate": Entry(_top("classifier", "pretrain", "cache_dir", "device", evaluate=EVALUATE),
                      ("data", "proposals", "ensemble", "eval", "seed")),
    "export": Entry({"from_run": text(), "out": text(), "onnx": boolean(), "onnx_atol": positive(),
                     "overwrite": boolean(), "cache_dir": text()}),
    # data is optional (default null) and, with from_run, applied on top of the run's own data settings.
    "predict": Entry({"images": text(null=True), "from_run": text(null=True), "detector": text(null=True),
                      "cache_dir": text(), "device": DEVICE,
                      "predict": group(score_threshold=number(), draw=boolean(), workers=integer(1, null=True),
                                       mode=choice(*MODES, null=True), runtime=choice(*RUNTIMES, null=True),
                                       progress=boolean())},
                     ("data",)),
    # The generator CLI: data=synthetic's knobs at the top level (``seed=1``, ``splits.val=800``).
    "synth": Entry({**SYNTHETIC.fields, "cache_dir": text(), "force": boolean()}),
}

IGNORED_TOP = ("hydra",)  # Hydra's own settings (never part of a job's cfg; present with return_hydra_config)


# ---- rules between keys that would otherwise fail only after the first stages (checked when the keys are valid)

def _cuda_available(root: dict) -> str | None:
    device = root.get("device")
    if not (isinstance(device, str) and device.startswith("cuda")):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return f"device={device} but CUDA is not available on this machine; use device=cpu or device=auto"


def _multibox_start(root: dict) -> str | None:
    proposals, classifier = root.get("proposals") or {}, root.get("classifier") or {}
    multibox = proposals.get("multibox") or {}
    if ("multibox" not in (proposals.get("sources") or ()) or not multibox.get("top_k")
            or multibox.get("init") != "pretrained" or classifier.get("init") != "scratch"):
        return None
    return ("proposals.multibox.init=pretrained needs the pretrained network (classifier.init=pretrained or "
            "weights), but classifier.init=scratch; set proposals.multibox.init=scratch too")


RULES: tuple[Callable[[dict], str | None], ...] = (_cuda_available, _multibox_start)


# --------------------------------------------------------------------------- the pass


class _Problems(list):
    """The messages found so far, in walk order."""

    add = list.append


def validate_config(cfg: DictConfig, entry: str) -> None:
    """Check ``cfg`` (the composed config of ``conf/<entry>.yaml``) against the schema.

    Raises one `ConfigError` line: the first problem (``<key> must be <allowed>, got <value>``,
    ``unknown config key ...``, ``<key> is missing ...``, ``<key> is not set ...``), with the
    number and names of any further ones.
    """
    spec = ENTRIES[entry]
    problems = _Problems()
    root = _resolved_root(cfg)
    keys = {**spec.keys, **{g: TOP[g] for g in spec.profile_groups if g not in spec.keys}}
    top = Group(keys, frozenset(spec.profile_groups) | frozenset(IGNORED_TOP))
    _check_group(cfg, top, "", root, problems, ignore=IGNORED_TOP, partial_keys=set(spec.profile_groups))
    if not problems:
        problems += [m for m in (rule(root) for rule in RULES) if m]
    if problems:
        first, rest = problems[0], problems[1:]
        more = "" if not rest else (f" (and {len(rest)} more: " + "; ".join(rest[:3])
                                    + ("; ..." if len(rest) > 3 else "") + ")")
        raise ConfigError(first + more)


def _resolved_root(cfg: DictConfig) -> dict:
    """A plain resolved copy for the `Group.complete` rules and `RULES` (unresolved when it cannot be)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception:  # an interpolation error: reported with its key by the walk
        return OmegaConf.to_container(cfg, resolve=False)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _value(node: DictConfig, key: Any, path: str, problems: _Problems, partial: bool = False) -> tuple[bool, Any]:
    """``(ok, value)``: the resolved value of ``node[key]`` (lists and dicts as plain containers when leaves)."""
    try:
        value = node[key]
    except MissingMandatoryValue:
        if partial:
            return False, None
        problems.add(f"{path} is not set (??? in the config): give it on the command line, {path}=...")
        return False, None
    except InterpolationResolutionError as exc:
        raw = node._get_node(key)._value()
        problems.add(f"{path}: cannot resolve {raw!r} ({str(exc).splitlines()[0]})")
        return False, None
    if isinstance(value, ListConfig):
        try:
            value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue:
            problems.add(f"{path} has an entry that is not set (???)")
            return False, None
        except InterpolationResolutionError as exc:
            problems.add(f"{path}: cannot resolve an entry ({str(exc).splitlines()[0]})")
            return False, None
    return True, value


def _unknown(path: str, key: Any, known: list[str]) -> str:
    full = _join(path, key)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"unknown config key {full!r}: no code reads it (did you mean {_join(path, close[0])!r}?)"
    listing = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    where = f"keys of {path}" if path else "top-level keys"
    return f"unknown config key {full!r}: no code reads it ({where}: {listing})"


def _check_group(node: Any, schema: Group, path: str, root: dict, problems: _Problems, *, partial: bool = False,
                 ignore: tuple[str, ...] = (), partial_keys: set[str] = frozenset()) -> None:
    """``partial``: the group may hold a subset of its keys (a profile's block of a group its entry
    point does not compose); ``partial_keys``: children that are such blocks."""
    if not isinstance(node, DictConfig):
        problems.add(f"{path} must be a group of keys ({', '.join(list(schema.fields)[:8])}, ...), got {_show(node)}")
        return
    known = [k for k in schema.fields]
    for key in node.keys():
        if key in ignore:
            continue
        child_path = _join(path, key)
        if key not in schema.fields:
            problems.add(_unknown(path, key, known))
            continue
        part = partial or key in partial_keys
        ok, value = _value(node, key, child_path, problems, part)
        if ok:
            _check(value, schema.fields[key], child_path, root, problems, partial=part)
    complete = not partial and (schema.complete(root) if callable(schema.complete) else schema.complete)
    if complete:
        for key in schema.fields:
            if key not in node.keys() and key not in schema.optional and key not in ignore:
                problems.add(f"{_join(path, key)} is missing: the code needs it (was it removed with ~?)")


def _check(value: Any, schema: Node, path: str, root: dict, problems: _Problems, *, partial: bool = False) -> None:
    if isinstance(schema, Key):
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=False)
        if not schema.ok(value):
            problems.add(f"{path} must be {schema.what}, got {_show(value)}")
        return
    if isinstance(schema, Group):
        _check_group(value, schema, path, root, problems, partial=partial)
        return
    if isinstance(schema, Map):
        if not isinstance(value, DictConfig) or len(value) < schema.min_len:
            problems.add(f"{path} must be {schema.what}, got {_show(value)}")
            return
        for key in value.keys():
            ok, item = _value(value, key, _join(path, key), problems, partial)
            if ok:
                _check(item, schema.value, _join(path, key), root, problems, partial=partial)
        return
    if isinstance(schema, Variants):
        if not isinstance(value, DictConfig):
            problems.add(f"{path} must be a reader's group of keys ({schema.hint}), got {_show(value)}")
            return
        target = value.get("_target_") if "_target_" in value else None
        if target is None:
            if partial:
                return  # a profile's block without a reader: nothing to pick the keys by
            problems.add(f"{path}._target_ is missing: choose a reader with {schema.hint}")
            return
        chosen = schema.by_target.get(str(target))
        if chosen is None:
            return  # the user's own reader class: its keys are its own
        _check_group(value, chosen, path, root, problems, partial=partial)
        return
    raise TypeError(f"unknown schema node {schema!r}")


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    text_ = repr(value)
    return text_ if len(text_) <= 80 else text_[:77] + "..."


__all__ = ["ENTRIES", "Entry", "Group", "Key", "Map", "Variants", "validate_config"]
