"""Bad-input matrix, part 2 (issue 17, "reliability at the user's boundary"): the same harness and row
style as `test_bad_input_matrix` (``<area>:<case>-><behaviour>``, `Expect`, `Action`), for

* ``path:`` OS errors at user paths (a folder where a file is expected, a file where a folder is, no
  read permission, a read-only cache): one line ``error: <path>: <problem>``, exit 2;
* ``run:`` run folders: one per process, never shared by two live runs;
* ``coco:``/``xml:``/``classes:``/``sub:`` inconsistent input: an error or a counted warning, never a
  silently different number;
* ``coco-eval:`` the COCO second opinion at the configured per-image limit;
* ``synth:`` a generated dataset outside the cache is never rewritten without being asked;
* ``profile:`` every profile with every reader (a profile's reader-only knobs never reach another reader);
* ``config:`` the typed schema (`detect.schema`), checked by every entry point before any stage: wrong
  types, out-of-range values, unknown keys (``+key=...``), removed or unset keys, one line, exit 2;
* ``real:`` real-data usability: the class-list hint, one box convention for readers and submissions,
  the per-image cap's coverage warning, the up-front estimate of long trainings.

Rows run in-process where they can (``config:`` rows call the real Hydra entry points in-process,
`hydra_entry`); ``cli`` rows are real subprocesses (`Cmd`), two at a time.
Permission rows emulate an unprivileged user when the tests run as root (root ignores file modes).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import ilsvrc_source, voc_xml
from real_fixtures import CLASSIFICATION_READERS, DETECTION_READERS
from detect import atomic
from detect.cli import check_cache_dir, run_id, run_user_errors
from detect.data.coco import CocoSource
from detect.data.image_io import load_rgb
from detect.data.record import ClassList, DetectionDataset, ImageRecord, empty_annotations
from detect.data.synth import SyntheticSource, generate
from detect.data.voc import VocSource
from eval.map import evaluate_submission
from test_bad_input_matrix import (CONVERTED, REPO, Action, CliFailure, Ctx, Expect, _ilsvrc, _raw_xml, _run_cli, _text,
                                   ann_case, error, warn)
from test_bad_input_matrix import test_bad_input as check_row

# --------------------------------------------------------------------------- harness additions


@dataclass(frozen=True)
class Cmd:
    """A real ``python -m <module>`` subprocess, like `test_bad_input_matrix.Cli` (run ahead, two at
    a time, by this module's ``boundary_cli_runs`` fixture)."""

    args: tuple[str, ...]
    names: str
    module: str = "eval.map"
    prepare: Callable[[Path], None] | None = None
    forbidden: tuple[str, ...] = ("run/metrics.json", "run/pr_curves.png")

    def __call__(self, ctx: Ctx) -> Action:
        result = ctx.request.getfixturevalue("boundary_cli_runs")[self]

        def run():
            assert result["killed_by"] is None, f"killed: {result['killed_by']}; stderr:\n{result['stderr'][-1500:]}"
            if result["rc"] != 0:
                raise CliFailure(result["rc"], result["stderr"])
            return result

        def after(_) -> None:
            left = [f for f in self.forbidden if (result["work"] / f).exists()]
            assert not left, f"a failed run left {left}"

        return Action(run, names=self.names.format(work=result["work"]), after=after)


@pytest.fixture(scope="module")
def boundary_cli_runs(request, tmp_path_factory) -> dict:
    wanted: list[Cmd] = []
    for item in request.session.items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        if isinstance(case, Cmd) and case not in wanted:
            wanted.append(case)
    base = tmp_path_factory.mktemp("boundary_cli")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda ic: _run_cli(ic[1], base / f"row{ic[0]}"), enumerate(wanted)))
    return dict(zip(wanted, results))


def entry(fn: Callable[[], Any]) -> Any:
    """``fn`` as an entry point (`detect.cli.run_user_errors`), in-process: its exit 2 and stderr
    become a `CliFailure`, checked by the harness like a subprocess's."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return run_user_errors(lambda *_: fn())(None)
    except SystemExit as exc:
        raise CliFailure(int(exc.code), err.getvalue()) from None


@contextlib.contextmanager
def unprivileged():
    """File modes apply as they do to an ordinary user (root bypasses them): reading a file needs its
    owner read bit, creating one needs the folder's owner write bit.  A no-op for other users."""
    if os.geteuid() != 0:
        yield
        return
    import builtins

    real_open, real_os_open, real_mkdir, real_access = builtins.open, os.open, os.mkdir, os.access

    def denied(path) -> PermissionError:
        return PermissionError(13, "Permission denied", os.fspath(path))

    def check(path, write: bool, create: bool) -> None:
        if isinstance(path, int):
            return
        p = Path(os.fsdecode(path))
        if p.exists() and not p.is_dir():
            mode = p.stat().st_mode
            if (write and not mode & 0o200) or (not write and not mode & 0o400):
                raise denied(p)
        elif create and p.parent.exists() and not p.parent.stat().st_mode & 0o200:
            raise denied(p)

    def fake_open(file, mode="r", *args, **kwargs):
        write = any(c in mode for c in "wax+")
        check(file, write, write)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        write = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        check(path, write, bool(flags & os.O_CREAT))
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        p = Path(os.fsdecode(path))
        if not p.exists() and p.parent.exists() and not p.parent.stat().st_mode & 0o200:
            raise denied(p)
        return real_mkdir(path, *args, **kwargs)

    def fake_access(path, mode, *args, **kwargs):
        if not real_access(path, os.F_OK):
            return False
        bits = os.stat(path).st_mode
        need = [(os.R_OK, 0o400), (os.W_OK, 0o200), (os.X_OK, 0o100)]
        return all(bits & bit for flag, bit in need if mode & flag)

    patches = [(builtins, "open", fake_open), (io, "open", fake_open), (os, "open", fake_os_open),
               (os, "mkdir", fake_mkdir), (os, "access", fake_access)]
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        yield
    finally:
        builtins.open, io.open, os.open, os.mkdir, os.access = real_open, real_open, real_os_open, real_mkdir, \
            real_access


def as_user(fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args):
        with unprivileged():
            return fn(*args)

    return run


def call_case(setup: Callable[[Path], Any], call: Callable[[Any], Any], names: Callable[[Path], str],
              after: Callable[[Path, Any], None] | None = None, keep: tuple[str, ...] = ()) -> Callable[[Ctx], Action]:
    """``call(setup(tmp))``; the error must name ``names(tmp)``; ``after(tmp, value)`` checks the outcome."""

    def case(ctx: Ctx) -> Action:
        state = setup(ctx.tmp)
        return Action(lambda: call(state), names=names(ctx.tmp),
                      after=None if after is None else (lambda value: after(ctx.tmp, value)), keep=keep)

    return case


# --------------------------------------------------------------------------- paths

def _mkdir(rel: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / rel).unlink(missing_ok=True)
        (root / rel).mkdir()

    return mutate


def _dets(tmp: Path, text: str = "1 1 0.9 1 2 10 12\n") -> Path:
    path = tmp / "dets.txt"
    path.write_text(text)
    return path


def _eval_inputs(work: Path) -> None:
    _ilsvrc(work / "ILSVRC")
    _dets(work)
    (work / "dets_dir").mkdir()
    (work / "a_file").write_text("not a folder\n")


def _eval_map(*args: str, names: str, run_dir: str = "{work}/run", **kw) -> Cmd:
    return Cmd(("data=ilsvrc", "data.root={work}/ILSVRC", "data.split=val", *args, f"hydra.run.dir={run_dir}"),
               names=names, prepare=_eval_inputs, **kw)


def _unreadable(tmp: Path) -> Path:
    path = _dets(tmp)
    path.chmod(0o000)
    return path


def _tiny_cfg(cache: Path) -> Any:
    return OmegaConf.create({"cache_dir": str(cache), "proposals": {}})


def _read_only_cache(tmp: Path, populated: bool = False) -> Path:
    cache = tmp / "ro_cache"
    (cache / "proposals").mkdir(parents=True) if populated else cache.mkdir()
    cache.chmod(0o555)
    if populated:
        (cache / "proposals").chmod(0o555)
    return cache


def _write_under(cache: Path) -> None:
    atomic.write_text(cache / "proposals" / "chunk.json", "{}")


def _unreadable_image(tmp: Path) -> Path:
    path = tmp / "im.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0o000)
    return path


def _file(path: Path) -> Path:
    path.write_text("a file, not a folder\n")
    return path


def _unreadable_xml(tmp: Path) -> Path:
    root = _ilsvrc(tmp / "ILSVRC")
    (root / "Annotations/DET/val/val_1.xml").chmod(0o000)
    return root


def _is_this_process_run_id(tmp: Path, value: str) -> None:
    assert re.fullmatch(rf"{os.getpid()}-[0-9a-f]{{4}}", value) and run_id() == value, value


def _open_folder(tmp: Path) -> None:
    with open(tmp, "rb"):
        pass


# --------------------------------------------------------------------------- inconsistent input

def _coco_root(tmp: Path, **edits) -> Path:
    root = tmp / "COCO"
    (root / "annotations").mkdir(parents=True)
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 60, "height": 60},
                   {"id": 42, "file_name": "b.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}],
        "annotations": [{"id": 1, "image_id": 42, "category_id": 90, "bbox": [10, 20, 30, 40], "iscrowd": 0}],
    }
    for key, change in edits.items():
        data[key] = change(data[key])
    (root / "annotations/instances_val.json").write_text(json.dumps(data))
    return root


def _coco(root: Path) -> DetectionDataset:
    return CocoSource(root=str(root), split="val", train_split="train",
                      annotations="annotations/instances_{split}.json", images_dir="{split}").load("val")


def coco_case(**edits) -> Callable[[Ctx], Action]:
    return call_case(lambda tmp: _coco_root(tmp, **edits), _coco,
                     lambda tmp: f"{tmp}/COCO/annotations/instances_val.json")


def _voc(tmp: Path, classes) -> VocSource:
    root = tmp / "VOC"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    Image.new("RGB", (50, 40)).save(root / "JPEGImages/000001.jpg")
    (root / "Annotations/000001.xml").write_text(voc_xml("000001.jpg", (50, 40), [("cat", (1, 1, 20, 30))]))
    (root / "ImageSets/Main/test.txt").write_text("000001\n")
    return VocSource(root=str(root), split="test", train_split="trainval", classes=classes, image_ext=".jpg",
                     unknown_classes="error", check_image_size=False)


NS_DEFAULT = ('<annotation xmlns="http://example.org/voc"><size><width>40</width><height>30</height></size>'
              '<object><name>n01</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax>'
              '</bndbox></object></annotation>')
NS_PREFIXED = ('<v:annotation xmlns:v="http://example.org/voc"><v:object><v:name>n01</v:name><v:bndbox>'
               '<v:xmin>1</v:xmin><v:ymin>2</v:ymin><v:xmax>10</v:xmax><v:ymax>12</v:ymax></v:bndbox></v:object>'
               '</v:annotation>')
NS_UNBOUND = NS_PREFIXED.replace(' xmlns:v="http://example.org/voc"', "")


def _gap_split(root: Path) -> None:
    """val_2 keeps index 3 (a list with a gap, as R-CNN's val1/val2 halves of val have)."""
    (root / "ImageSets/DET/val.txt").write_text("val_1 1\nval_2 3\n")


def gap_case(dets: str, fails: bool = True) -> Callable[[Ctx], Action]:
    def setup(tmp: Path):
        root = _ilsvrc(tmp / "ILSVRC")
        _gap_split(root)
        return ilsvrc_source(root).load("val"), _dets(tmp, dets)

    def after(tmp: Path, metrics) -> None:
        assert fails or metrics["mAP"] == 1.0

    return call_case(setup, lambda s: evaluate_submission(s[0], s[1], out_dir=None, coco=False, coco_max_dets=None,
                                                          plots=False),
                     lambda tmp: f"{tmp}/dets.txt:{dets.count(chr(10))}", after)


# --------------------------------------------------------------------------- COCO second opinion

def _crowded(objects: int = 4) -> DetectionDataset:
    """One 200x200 image with ``objects`` disjoint boxes of class 1, and one empty image."""
    boxes = np.array([[i * 40, 0, i * 40 + 29, 29] for i in range(objects)], np.float32)
    records = (ImageRecord("im1", 1, Path("im1.jpg"), 200, 200, boxes, np.ones(objects, np.int64),
                           np.zeros(objects, bool)),
               ImageRecord("im2", 2, Path("im2.jpg"), 200, 200, *empty_annotations()))
    return DetectionDataset("t", "val", Path("."), ClassList(("n1",), ("thing",)), records)


def coco_eval_case(max_dets, objects: int = 4, expect_ap: float | None = None) -> Callable[[Ctx], Action]:
    """A perfect submission (every box, distinct scores) scored with the COCO second opinion."""

    def setup(tmp: Path) -> Path:
        lines = "".join(f"1 1 {1 - i / 100:.2f} {i * 40} 0 {i * 40 + 29} 29\n" for i in range(objects))
        return _dets(tmp, lines)

    def after(tmp: Path, metrics) -> None:
        if metrics is None:
            return
        assert metrics["mAP"] == 1.0  # the ILSVRC number never depends on the COCO limit
        assert all(v != -1 for k, v in metrics["coco"].items() if k in ("AP", "AP50", "AP75")), metrics["coco"]
        if expect_ap is not None:
            assert metrics["coco"]["AP"] == pytest.approx(expect_ap, abs=0.02), metrics["coco"]
        over = metrics["warnings"]["coco_images_over_max_dets"]
        assert over == (1 if max_dets is not None and objects > max_dets else 0)

    return call_case(setup, lambda path: evaluate_submission(_crowded(objects), path, out_dir=None, coco=True,
                                                             coco_max_dets=max_dets, plots=False),
                     lambda tmp: "eval.coco_max_dets", after)


# --------------------------------------------------------------------------- generated data

SYNTH_KNOBS = ["data.splits={{train: 1, val: 2}}", "data.image_long_side=[64,64]", "data.blacklist_entries=0"]


def _knobs(**overrides) -> dict:
    knobs = OmegaConf.to_container(OmegaConf.load(REPO / "conf/data/synthetic.yaml"))
    for key in ("_target_", "root", "split", "train_split", "managed_dir", "regenerate", "workers"):
        knobs.pop(key)
    knobs.update(splits={"train": 1, "val": 2}, image_long_side=[64, 64], blacklist_entries=0)
    knobs.update(overrides)
    return knobs


def _generated(tmp: Path, **overrides) -> Path:
    root = tmp / "my_data"
    generate(root, progress=False, **_knobs(**overrides))
    return root


def _hashes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def synth_case(managed: bool, regenerate: bool) -> Callable[[Ctx], Action]:
    """``root`` holds a dataset generated with seed 0; it is loaded with seed 1."""

    def setup(tmp: Path):
        root = _generated(tmp / "cache" if managed else tmp)
        return root, _hashes(root)

    def call(state):
        root, _ = state
        return SyntheticSource(root=str(root), split="val", train_split="train", **_knobs(seed=1),
                               managed_dir=str(root.parent) if managed else None, regenerate=regenerate).load("val")

    def after(tmp: Path, dataset) -> None:
        root = (tmp / "cache" if managed else tmp) / "my_data"
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["knobs"]["seed"] == (0 if dataset is None else 1)

    return call_case(setup, call, lambda tmp: f"{tmp}/my_data", after,
                     keep=("my_data/*", "my_data/**/*", "cache/my_data/**/*", "cache/.my_data.lock", ".my_data.lock"))


def _synth_cli_inputs(work: Path) -> None:
    generate(work / "synth", progress=False, **_knobs(seed=4))
    _dets(work)


# --------------------------------------------------------------------------- profiles x readers

def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def profile_case(profile: str, reader: str, entry: str = "config", check: Callable[[Any], None] | None = None,
                 ) -> Callable[[Ctx], Action]:
    """Compose ``entry`` with ``profile=<profile>`` and a hand-made copy of ``reader``'s layout, check it
    against the schema, instantiate the reader (``data`` or ``pretrain.data``) and load both splits."""

    def case(ctx: Ctx) -> Action:
        readers = {**DETECTION_READERS, **CLASSIFICATION_READERS}
        overrides = readers[reader](ctx.tmp / reader) if reader in readers else [f"data={reader}"]
        group = "pretrain" if reader in CLASSIFICATION_READERS else None

        def run():
            from hydra.utils import instantiate

            from detect.schema import validate_config

            cfg = _compose(entry, [f"profile={profile}", *overrides, f"cache_dir={ctx.tmp / 'cache'}"])
            validate_config(cfg, entry)
            data = cfg.pretrain.data if group else cfg.data
            if check is not None:
                check(cfg)
            source = instantiate(data)
            if reader == "synthetic":
                return source
            train, val = source.load(source.train_split), source.load(source.split)
            assert len(train) >= 1 and len(val) >= 1
            return source

        return Action(run)

    return case


def _tiny_knobs_stay_with_synthetic(cfg) -> None:
    assert OmegaConf.to_container(cfg.data.splits) == {"train": 24, "val": 12} and cfg.data.num_classes == 4
    assert cfg.pretrain.data.num_classes == 6


def _no_synthetic_knobs(cfg) -> None:
    leaked = {"splits", "num_classes", "blacklist_entries", "managed_dir", "regenerate"} & set(cfg.data)
    assert not leaked, leaked


# --------------------------------------------------------------------------- entry points in-process


def hydra_entry(module: str, *args: str, prepare: Callable[[Path], Any] | None = None,
                keep: tuple[str, ...] = ()) -> Callable[[Ctx], Action]:
    """``python -m <module> <args>`` run in this process (the real ``@hydra.main`` and `run_cli`):
    its exit 2 and stderr become a `CliFailure`.  ``{work}`` in ``args`` is the row's folder
    (``prepare(work)`` writes inputs first); the run folder is ``{work}/run`` and the default cache
    ``{work}/cache``, which must not exist afterwards (the config is checked before any stage).
    The error must name the key of the last argument."""

    def case(ctx: Ctx) -> Action:
        import importlib

        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        monkeypatch = ctx.request.getfixturevalue("monkeypatch")
        work = ctx.tmp
        if prepare is not None:
            prepare(work)
        argv = [a.format(work=work) for a in args]
        key = argv[-1].lstrip("+~").split("=")[0]

        def run():
            monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
            monkeypatch.delenv("DETECT_TRACEBACK", raising=False)
            monkeypatch.delenv("DETECT_CLI_SET_HYDRA_FULL_ERROR", raising=False)  # run_cli sets it: undone after
            monkeypatch.setenv("DETECT_CACHE_DIR", str(work / "cache"))
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    if module == "classifier.train_ddp":
                        importlib.import_module(module).main(argv)
                        return None
                    monkeypatch.setattr(sys, "argv", [module, f"--config-path={REPO / 'conf'}", *argv,
                                                      f"hydra.run.dir={work}/run", "hydra/job_logging=none",
                                                      "hydra/hydra_logging=none"])
                    from detect.cli import run_cli

                    mod = importlib.import_module(module)
                    run_cli(mod.main)
            except SystemExit as exc:
                raise CliFailure(int(exc.code or 0), err.getvalue()) from None
            finally:
                GlobalHydra.instance().clear()
                HydraConfig.instance().cfg = None  # later in-process rows must not see this job's run folder
            return None

        def after(_) -> None:
            assert not (work / "cache").exists(), "a stage ran before the config was checked"

        return Action(run, names=key, after=after, keep=("run/.hydra/*", *keep))

    return case


def _config_error(key: str, allowed: str, value: str) -> Expect:
    return error("^" + re.escape(f"{key} must be {allowed}, got {value}") + "$")


# --------------------------------------------------------------------------- real-data usability

def _voc_with(tmp: Path, objects, size=(50, 40)) -> Path:
    root = tmp / "VOC"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    Image.new("RGB", size).save(root / "JPEGImages/000001.jpg")
    (root / "Annotations/000001.xml").write_text(voc_xml("000001.jpg", size, objects))
    (root / "ImageSets/Main/test.txt").write_text("000001\n")
    return root


def voc_case(objects, classes=("cat", "dog", "person"), boxes=None) -> Callable[[Ctx], Action]:
    """Load a one-image VOC copy; ``boxes``: the boxes the record must hold (as written, or clipped)."""

    def setup(tmp: Path):
        return VocSource(root=str(_voc_with(tmp, objects)), split="test", train_split="trainval",
                         classes=list(classes), image_ext=".jpg", unknown_classes="error", check_image_size=False)

    def after(tmp: Path, dataset) -> None:
        if boxes is not None:
            np.testing.assert_array_equal(dataset[0].boxes, np.asarray(boxes, np.float32))

    return call_case(setup, lambda s: s.load("test"), lambda tmp: f"{tmp}/VOC/Annotations/000001.xml", after)


def _quiet(fn: Callable[[], Any]) -> Any:
    """``fn()``, failing when it logs a warning (a row that must be accepted without one)."""
    import logging

    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger().addHandler(handler)
    try:
        value = fn()
    finally:
        logging.getLogger().removeHandler(handler)
    assert not seen, seen
    return value


def _edge_dets(x2: float) -> Callable[[Path], Path]:
    """A box over a 200x200 image's whole extent ``[0, 200] x [0, 200]`` (x2 = width: inside), or beyond it."""
    return lambda tmp: _dets(tmp, f"1 1 0.9 0 0 {x2:g} 200\n")


def _score(dets: Path) -> Any:
    return evaluate_submission(_crowded(1), dets, out_dir=None, coco=False, coco_max_dets=None, plots=False)


def coverage_case(cap: int, merged_hits: int) -> Callable[[Ctx], Action]:
    """`proposal_report` of 10 one-object images: SS (uncapped) covers every object, the capped merged
    set covers ``merged_hits`` of them."""

    def run():
        from detect.proposal_stage import SplitProposals, proposal_report

        records = tuple(ImageRecord(f"im{i}", i + 1, Path(f"im{i}.jpg"), 100, 100,
                                    np.array([[10, 10, 50, 50]], np.float32), np.ones(1, np.int64),
                                    np.zeros(1, bool)) for i in range(10))
        dataset = DetectionDataset("t", "val", Path("."), ClassList(("n1",), ("thing",)), records)
        hit, miss = np.array([[10, 10, 50, 50]], np.float32), np.array([[60, 60, 99, 99]], np.float32)
        ss = [np.concatenate([miss, hit]) for _ in records]
        merged = [hit if i < merged_hits else miss for i in range(10)]
        props = SplitProposals(boxes=merged, key="k", per_source={"ss": ss, "merged": merged}, max_per_image=cap)
        return proposal_report(dataset, props)

    return lambda ctx: Action(run)


def eta_case(seconds_per_iteration: float, iterations: int, answer: str | None = None,
             interactive: bool = False) -> Callable[[Ctx], Action]:
    """`LongRunCheck` on a fake clock: ``iterations`` of ``seconds_per_iteration`` each; ``answer``:
    what the user types when asked (None: nobody is asked)."""

    def run():
        from detect import work_estimate

        work_estimate._CONFIRMED.discard("multibox")
        clock = iter([0.0, 3 * seconds_per_iteration])  # read after iteration 1 and after iteration 4
        asked: list[str] = []

        def ask(prompt: str) -> str:
            asked.append(prompt)
            return answer

        check = work_estimate.LongRunCheck("multibox", start=0, iterations=iterations, device="cpu",
                                           can_ask=interactive, ask=ask if interactive else None,
                                           clock=lambda: float(next(clock)))
        for done in range(1, 6):
            check.after_iteration(done)
        return check.estimate_s, asked

    def after(value) -> None:
        if value is None:
            return
        estimate, asked = value
        assert estimate == pytest.approx(seconds_per_iteration * (iterations - 4))
        assert bool(asked) == (interactive and estimate > 1800), asked

    return lambda ctx: Action(run, names="multibox", after=after)


# --------------------------------------------------------------------------- the matrix

BOUNDARY = [
    # ---- paths: folders where files are expected
    pytest.param(_eval_map("detections={work}/dets_dir", names="{work}/dets_dir"),
                 error(r": is a folder, expected a submission file$"), id="cli:path:detections=<folder>->error"),
    pytest.param(ann_case(_mkdir("Annotations/DET/val/val_1.xml")),
                 error(r"val_1\.xml: is a folder, expected an annotation file$"), id="path:xml-is-a-folder->error"),
    pytest.param(ann_case(_mkdir("ImageSets/DET/val.txt"), "ImageSets/DET/val.txt"),
                 error(r": is a folder, expected a split list \(split 'val'\)$"), id="path:split-list-is-a-folder->error"),
    pytest.param(ann_case(_mkdir("devkit/data/map_det.txt"), "devkit/data/map_det.txt"),
                 error(r": is a folder, expected a class list$"), id="path:class-list-is-a-folder->error"),
    pytest.param(ann_case(_mkdir("Data/DET/val/val_1.JPEG"), "Data/DET/val/val_1.JPEG"),
                 error(r": is a folder, expected an image file$"), id="path:image-is-a-folder->error"),
    pytest.param(call_case(lambda tmp: _coco_root(tmp) / "annotations/instances_val.json",
                           lambda p: (p.unlink(), p.mkdir(), _coco(p.parents[1])),
                           lambda tmp: f"{tmp}/COCO/annotations/instances_val.json"),
                 error(r": is a folder, expected a COCO annotation file$"), id="path:coco-json-is-a-folder->error"),
    pytest.param(call_case(lambda tmp: tmp / "a_folder", lambda p: (p.mkdir(), entry(lambda: _open_folder(p))),
                           lambda tmp: f"{tmp}/a_folder"),
                 error(r": is a folder, expected a file$"), id="path:any-open-of-a-folder(entry point)->error"),
    # ---- paths: files where folders are expected
    pytest.param(Cmd(("data=coco", "data.root={work}/a_file", "data.split=val", "detections={work}/dets.txt",
                      "hydra.run.dir={work}/run"), names="{work}/a_file", prepare=_eval_inputs),
                 error(r": dataset root is a file, expected a folder$"), id="cli:path:data=coco-root=<file>->error"),
    pytest.param(call_case(lambda tmp: _file(tmp / "root_file"), lambda p: ilsvrc_source(p).load("val"),
                           lambda tmp: f"{tmp}/root_file"),
                 error(r": dataset root is a file, expected a folder$"), id="path:ilsvrc-root=<file>->error"),
    pytest.param(Cmd(("profile=tiny", "cache_dir={work}/a_file", "hydra.run.dir={work}/run"), names="{work}/a_file",
                     module="detect.run", prepare=_eval_inputs,
                     forbidden=("a_file/proposals", "run/detections.txt", "run/metrics.json")),
                 error(r": is a file, expected a folder for cache_dir$"), id="cli:path:cache_dir=<file>->error"),
    pytest.param(call_case(lambda tmp: _file(tmp / "f"), lambda f: entry(lambda: check_cache_dir(_tiny_cfg(f / "cache"))),
                           lambda tmp: f"{tmp}/f"),
                 error(r": is a file, expected a folder for cache_dir \(in cache_dir .*f/cache\)$"),
                 id="path:cache_dir-under-a-file->error"),
    pytest.param(_eval_map("detections={work}/dets.txt", names="{work}/a_file", run_dir="{work}/a_file/run"),
                 error(r": is a file, expected a folder \(in the path .*a_file/run\)$"),
                 id="cli:path:hydra.run.dir-under-a-file->error"),
    pytest.param(call_case(lambda tmp: tmp / "ILSVRC", lambda p: ilsvrc_source(p).load("val"),
                           lambda tmp: f"{tmp}/ILSVRC"),
                 error(r": dataset root does not exist \(set data\.root\)$"), id="path:missing-root->error"),
    # ---- paths: permissions (emulated for root)
    pytest.param(call_case(_unreadable, as_user(lambda p: evaluate_submission(
        _crowded(), p, out_dir=None, coco=False, coco_max_dets=None, plots=False)), lambda tmp: f"{tmp}/dets.txt"),
                 error(r": submission file is not readable \(permission denied\)$"),
                 id="path:unreadable-submission->error"),
    pytest.param(call_case(_unreadable_image, as_user(load_rgb), lambda tmp: f"{tmp}/im.png"),
                 error(r": image file is not readable \(permission denied\)$"), id="path:unreadable-image->error"),
    pytest.param(call_case(_unreadable_xml, as_user(lambda root: ilsvrc_source(root).load("val")),
                           lambda tmp: f"{tmp}/ILSVRC/Annotations/DET/val/val_1.xml"),
                 error(r": annotation file is not readable \(permission denied\)$"), id="path:unreadable-xml->error"),
    pytest.param(call_case(_read_only_cache, as_user(lambda cache: entry(lambda: check_cache_dir(_tiny_cfg(cache)))),
                           lambda tmp: f"{tmp}/ro_cache"),
                 error(r": cache_dir is read-only and empty: nothing can be cached; choose a writable cache_dir$"),
                 id="path:read-only-empty-cache_dir->error"),
    pytest.param(call_case(lambda tmp: _read_only_cache(tmp, populated=True),
                           as_user(lambda cache: entry(lambda: (check_cache_dir(_tiny_cfg(cache)), _write_under(cache)))),
                           lambda tmp: f"{tmp}/ro_cache/proposals/"),
                 error(r"ro_cache/proposals/\.chunk\.json\.\w+\.tmp: permission denied$"),
                 id="path:read-only-cache-first-write->error"),
    # ---- run folders
    pytest.param(call_case(lambda tmp: None, lambda _: run_id(), lambda tmp: "", _is_this_process_run_id),
                 CONVERTED, id="run:run_id-is-pid+random-and-stable"),
    # ---- inconsistent input: submissions against the split list
    pytest.param(gap_case("1 1 0.9 1 2 10 12\n2 1 0.5 1 2 10 12\n"),
                 error(r": image index 2 is not in the split list \(2 images with indices 1\.\.3, with gaps\)$"),
                 id="sub:image-index-not-in-split-list->error"),
    pytest.param(gap_case("1 1 0.9 1 2 10 12\n3 2 0.8 2 1 12 9\n", fails=False), CONVERTED,
                 id="sub:split-list-with-gaps(listed-indices)->scored"),
    # ---- inconsistent input: COCO files
    pytest.param(coco_case(images=lambda im: im + [dict(im[0], file_name="c.jpg")]),
                 error(r": images id 7 is listed twice$"), id="coco:image-id-twice->error"),
    pytest.param(coco_case(categories=lambda c: c + [{"id": 1, "name": "human"}]),
                 error(r": categories id 1 is listed twice$"), id="coco:category-id-twice->error"),
    pytest.param(coco_case(categories=lambda c: c + [{"id": 5, "name": "person"}]),
                 error(r": category name 'person' is used by category ids 1 and 5$"), id="coco:category-name-twice->error"),
    pytest.param(coco_case(annotations=lambda a: a + [dict(a[0], id=2, image_id=99)]),
                 warn(r"1 annotations whose image_id is not in 'images' ignored \(first: .*image id 99\)"),
                 id="coco:annotation-of-unknown-image->skipped+warning"),
    pytest.param(coco_case(annotations=lambda a: []), warn(r"'annotations' is empty: all 2 images are negatives"),
                 id="coco:empty-annotations->warning"),
    pytest.param(coco_case(annotations=lambda a: [{"id": 3, "category_id": 1, "bbox": [0, 0, 2, 2]}]),
                 error(r": annotation 3 has no usable 'image_id' \(got None\)$"), id="coco:annotation-without-image_id->error"),
    pytest.param(coco_case(images=lambda im: {"7": im[0]}), error(r": 'images' must be a list of JSON objects$"),
                 id="coco:images-not-a-list->error"),
    pytest.param(coco_case(categories=lambda c: [{"id": 1}]), error(r": categories id 1 has no 'name'$"),
                 id="coco:category-without-name->error"),
    # ---- inconsistent input: namespaced XML
    pytest.param(ann_case(_raw_xml(NS_DEFAULT), boxes=[[1, 2, 10, 12]]), CONVERTED,
                 id="xml:default-namespace->objects-read"),
    pytest.param(ann_case(_raw_xml(NS_PREFIXED), boxes=[[1, 2, 10, 12]]), CONVERTED,
                 id="xml:declared-prefix->objects-read"),
    pytest.param(ann_case(_raw_xml(NS_UNBOUND)), error(r": malformed XML \(unbound prefix: line 1, column \d+\)$"),
                 id="xml:undeclared-prefix->error"),
    # ---- inconsistent input: class lists
    pytest.param(call_case(lambda tmp: _voc(tmp, ["cat", "dog", "cat"]), lambda s: s.load("test"),
                           lambda tmp: "data.classes"),
                 error(r"^data\.classes lists 'cat' twice \(entries 1 and 3\)$"), id="classes:data.classes-repeated->error"),
    pytest.param(call_case(lambda tmp: _voc(tmp, []), lambda s: s.load("test"), lambda tmp: "data.classes"),
                 error(r"^data\.classes is empty"), id="classes:data.classes-empty->error"),
    pytest.param(ann_case(_text("devkit/data/map_det.txt", "n01 1 cat\nn01 2 dog\n"), "devkit/data/map_det.txt"),
                 error(r": a synset is listed twice$"), id="classes:map_det-synset-twice->error"),
    # ---- COCO second opinion: summary at the configured limit
    pytest.param(coco_eval_case(None, objects=4, expect_ap=1.0), CONVERTED,
                 id="coco-eval:no-limit(default)->perfect-is-1"),
    pytest.param(coco_eval_case(50, objects=4, expect_ap=1.0), CONVERTED, id="coco-eval:max_dets=50->not-minus-1"),
    pytest.param(coco_eval_case(3, objects=4),
                 warn(r"1 images have more ground-truth objects than eval\.coco_max_dets=3 \(most: 4 in image 1\)"),
                 id="coco-eval:image-over-the-limit->counted-warning"),
    pytest.param(coco_eval_case(0), error(r"^eval\.coco_max_dets must be an integer >= 1, got 0$"),
                 id="coco-eval:max_dets=0->error"),
    pytest.param(coco_eval_case("many"), error(r"^eval\.coco_max_dets must be an integer >= 1, got 'many'$"),
                 id="coco-eval:max_dets=many->error"),
    # ---- generated data is never rewritten unasked
    pytest.param(synth_case(managed=False, regenerate=False),
                 error(r": holds a synthetic dataset generated with other knobs \(seed 0 -> 1\) outside the cache "
                       r"folder, so it is not regenerated: read it as it is with data=ilsvrc, rewrite it with "
                       r"data\.regenerate=true"), id="synth:other-knobs-outside-the-cache->error(untouched)"),
    pytest.param(synth_case(managed=True, regenerate=False), CONVERTED,
                 id="synth:other-knobs-inside-the-cache->regenerated"),
    pytest.param(synth_case(managed=False, regenerate=True), CONVERTED,
                 id="synth:other-knobs(data.regenerate=true)->regenerated"),
    pytest.param(Cmd(("data.root={work}/synth", *SYNTH_KNOBS, "detections={work}/dets.txt", "cache_dir={work}/cache",
                      "hydra.run.dir={work}/run"), names="{work}/synth", prepare=_synth_cli_inputs),
                 error(r": holds a synthetic dataset generated with other knobs \(seed 4 -> 0\)"),
                 id="cli:synth:eval.map-data.root=<dataset-made-with-other-knobs>->error"),
    pytest.param(call_case(lambda tmp: tmp, lambda tmp: SyntheticSource(
        root=str(tmp / "s"), split="val", train_split="train", **_knobs(), regenerate="maybe"), lambda tmp: "data.regenerate"),
                 error(r"^data\.regenerate must be true or false, got 'maybe'$"), id="synth:data.regenerate=maybe->error"),
    # ---- every profile with every reader: compose + schema + instantiate + load (hand-made copies)
    pytest.param(profile_case("tiny", "voc", check=_no_synthetic_knobs), CONVERTED, id="profile:tiny+voc->loads"),
    pytest.param(profile_case("tiny", "coco", check=_no_synthetic_knobs), CONVERTED, id="profile:tiny+coco->loads"),
    pytest.param(profile_case("tiny", "ilsvrc", "proposals_run", check=_no_synthetic_knobs), CONVERTED,
                 id="profile:tiny+ilsvrc(proposals.run)->loads"),
    pytest.param(profile_case("tiny", "ilsvrc2014", check=_no_synthetic_knobs), CONVERTED,
                 id="profile:tiny+ilsvrc2014->loads"),
    pytest.param(profile_case("paper", "coco", "proposals_run"), CONVERTED, id="profile:paper+coco(proposals.run)->loads"),
    pytest.param(profile_case("cpu_real", "voc"), CONVERTED, id="profile:cpu_real+voc->loads"),
    pytest.param(profile_case("tiny", "cls_loc", "pretrain"), CONVERTED,
                 id="profile:tiny+pretrain/data=cls_loc(classifier.pretrain)->loads"),
    pytest.param(profile_case("tiny", "image_folder"), CONVERTED, id="profile:tiny+pretrain/data=image_folder->loads"),
    pytest.param(profile_case("tiny", "synthetic", check=_tiny_knobs_stay_with_synthetic), CONVERTED,
                 id="profile:tiny+synthetic->tiny-knobs-kept"),
    pytest.param(hydra_entry("proposals.run", "profile=tiny", "proposals=ss", "data=voc", "data.root={work}/voc",
                             "cache_dir={work}/run_cache", prepare=lambda work: DETECTION_READERS["voc"](work / "voc"),
                             keep=("run/*", "run_cache/*")), CONVERTED,
                 id="profile:proposals.run-profile=tiny-data=voc(the issue's example)->runs"),
    # ---- the typed schema, in every entry point, before any stage (real entry points, in-process)
    pytest.param(hydra_entry("detect.run", "profile=tiny", "proposals.ss.scale=two"),
                 _config_error("proposals.ss.scale", "a number > 0", "'two'"), id="config:proposals.ss.scale=two->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "seed=abc"),
                 _config_error("seed", "an integer >= 0", "'abc'"), id="config:seed=abc->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "classifier.train.lr=abc"),
                 _config_error("classifier.train.lr", "a number > 0", "'abc'"), id="config:classifier.train.lr=abc->error"),
    pytest.param(hydra_entry("classifier.train_ddp", "profile=tiny", "classifier.train.lr=-0.1"),
                 _config_error("classifier.train.lr", "a number > 0", "-0.1"),
                 id="config:classifier.train.lr=-0.1(train_ddp)->error"),
    pytest.param(hydra_entry("proposals.run", "profile=tiny", "proposals.workers=abc"),
                 _config_error("proposals.workers", "an integer >= 1", "'abc'"), id="config:proposals.workers=abc->error"),
    pytest.param(hydra_entry("proposals.run", "profile=tiny", "proposals.merge.iou=-1"),
                 _config_error("proposals.merge.iou", "a number in [0, 1]", "-1"),
                 id="config:proposals.merge.iou=-1->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "proposals.merge.max_per_image=0"),
                 _config_error("proposals.merge.max_per_image", "an integer >= 1 or null", "0"),
                 id="config:proposals.merge.max_per_image=0->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "proposals.merge.order=random"),
                 _config_error("proposals.merge.order", "'priority' or 'interleave'", "'random'"),
                 id="config:proposals.merge.order=random->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "proposals.multibox.init=imagenet"),
                 _config_error("proposals.multibox.init", "'pretrained' or 'scratch'", "'imagenet'"),
                 id="config:proposals.multibox.init=imagenet->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "classifier.init=imagenet"),
                 _config_error("classifier.init", "one of 'pretrained', 'scratch', 'weights'", "'imagenet'"),
                 id="config:classifier.init=imagenet->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "+classifier.train.lrr=0.1"),
                 error(r"^unknown config key 'classifier\.train\.lrr': no code reads it "
                       r"\(did you mean 'classifier\.train\.lr'\?\)$"), id="config:+classifier.train.lrr(typo)->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "+speed=fast"),
                 error(r"^unknown config key 'speed': no code reads it \(did you mean 'seed'\?\)$"),
                 id="config:+speed(did-you-mean-seed)->error"),
    pytest.param(hydra_entry("proposals.run", "profile=tiny", "+verbose=true"),
                 error(r"^unknown config key 'verbose': no code reads it \(top-level keys: data, proposals, "),
                 id="config:+verbose(no-code-reads-it)->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "data=voc", "data.root={work}", "+data.regenerate=true"),
                 error(r"^unknown config key 'data\.regenerate': no code reads it"),
                 id="config:data=voc+data.regenerate(synthetic-only)->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "~classifier.train.lr"),
                 error(r"^classifier\.train\.lr is missing: the code needs it \(was it removed with ~\?\)$"),
                 id="config:~classifier.train.lr(removed)->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "data=coco"),
                 error(r"^data\.root is not set \(\?\?\? in the config\): give it on the command line, "
                       r"data\.root=\.\.\.$"),
                 id="config:data=coco-without-data.root->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "device=gpu"),
                 _config_error("device", "auto, cpu, cuda, cuda:N or mps", "'gpu'"), id="config:device=gpu->error"),
    pytest.param(hydra_entry("detect.run", "profile=tiny", "classifier.init=scratch"),
                 error(r"^proposals\.multibox\.init=pretrained needs the pretrained network .*but "
                       r"classifier\.init=scratch; set proposals\.multibox\.init=scratch too$"),
                 id="config:classifier.init=scratch(MultiBox-pretrained)->error"),
    pytest.param(hydra_entry("eval.map", "detections={work}/dets.txt", "eval.coco_max_dets=0"),
                 _config_error("eval.coco_max_dets", "an integer >= 1 or null", "0"),
                 id="config:eval.coco_max_dets=0(eval.map)->error"),
    pytest.param(hydra_entry("classifier.pretrain", "profile=tiny", "pretrain.train.epochs=0"),
                 _config_error("pretrain.train.epochs", "a number > 0", "0"),
                 id="config:pretrain.train.epochs=0(classifier.pretrain)->error"),
    pytest.param(hydra_entry("classifier.pretrain", "profile=tiny", "pretrain/data=cls_loc", "pretrain.data.root={work}",
                             "+pretrain.data.num_classes=6"),
                 error(r"^unknown config key 'pretrain\.data\.num_classes': no code reads it"),
                 id="config:pretrain/data=cls_loc+num_classes(synthetic-only)->error"),
    pytest.param(hydra_entry("detect.export", "from_run={work}", "out={work}/out", "onnx=maybe"),
                 _config_error("onnx", "true or false", "'maybe'"), id="config:onnx=maybe(detect.export)->error"),
    pytest.param(hydra_entry("detect.data.synth", "root={work}/synth", "splits.val=zero"),
                 _config_error("splits.val", "an integer >= 1", "'zero'"), id="config:splits.val=zero(generator)->error"),
    # ---- real-data usability
    pytest.param(voc_case([("cat", (1, 1, 20, 30)), ("Tree", (2, 2, 9, 9))]),
                 error(r": unknown class 'Tree' \(not in data\.classes, 3 names\): add it to the class list, "
                       r"data\.classes=\[cat,dog,person,Tree\], or skip such objects with data\.unknown_classes=skip$"),
                 id="real:voc-unknown-class->error(says-data.classes=[...])"),
    pytest.param(call_case(lambda tmp: _coco_root(tmp, annotations=lambda a: [dict(a[0], category_id=5)]), _coco,
                           lambda tmp: f"{tmp}/COCO/annotations/instances_val.json"),
                 error(r": annotation 1 has unknown category_id 5 \(the class list of a COCO file is its 'categories'"),
                 id="real:coco-unknown-category->error(says-categories)"),
    pytest.param(call_case(lambda tmp: VocSource(root=str(_voc_with(tmp, [("cat", (1, 1, 50, 40))])), split="test",
                                                 train_split="trainval", classes=["cat"], image_ext=".jpg",
                                                 unknown_classes="error", check_image_size=False),
                           lambda src: _quiet(lambda: src.load("test")), lambda tmp: "",
                           lambda tmp, ds: np.testing.assert_array_equal(ds[0].boxes, [[1, 1, 50, 40]])),
                 CONVERTED, id="real:voc-xmax==width(1-based)->kept-without-warning"),
    pytest.param(voc_case([("cat", (0, 1, 55, 40))], boxes=[[0, 1, 50, 40]]),
                 warn(r"1 boxes extending outside the image clipped"), id="real:voc-xmax>width->clipped+warning"),
    pytest.param(call_case(_edge_dets(200), lambda dets: _quiet(lambda: _score(dets)), lambda tmp: "",
                           lambda tmp, m: m["warnings"]["out_of_image_boxes"] == 0 or pytest.fail(m)),
                 CONVERTED, id="real:submission-x2==width->accepted-without-warning"),
    pytest.param(call_case(_edge_dets(201), _score, lambda tmp: ""),
                 warn(r"1 boxes extend outside their image"), id="real:submission-x2>width->counted-warning"),
    pytest.param(coverage_case(cap=1, merged_hits=2),
                 warn(r"^proposals\.merge\.max_per_image=1 cuts coverage on split 'val': the 1 regions per image "
                      r"classified cover 20\.0% of the objects, ss alone \(uncapped, 2 per image\) covers 100\.0%"),
                 id="real:cap-cuts-coverage-by-80-points->warning"),
    pytest.param(coverage_case(cap=1, merged_hits=10), CONVERTED, id="real:cap-keeps-coverage->no-warning"),
    pytest.param(eta_case(2.0, 100_000), warn(r"^multibox: 99,996 iterations to go at 2 s each on cpu: about 2\.3 days\. "
                                              r"Less work: lower proposals\.multibox\.iterations"),
                 id="real:paper-multibox-on-cpu(non-interactive)->estimate+warning"),
    pytest.param(eta_case(2.0, 100_000, answer="n", interactive=True),
                 error(r"^multibox: stopped at your request after iteration 4 of 100,000 \(the rest would take about "
                       r"2\.3 days on cpu\); a rerun resumes from the last checkpoint$"),
                 id="real:paper-multibox-on-cpu(answer-no)->stopped-before-it-runs"),
    pytest.param(eta_case(2.0, 100_000, answer="y", interactive=True), warn(r"about 2\.3 days"),
                 id="real:paper-multibox-on-cpu(answer-yes)->continues"),
    pytest.param(eta_case(0.1, 600, interactive=True), CONVERTED, id="real:short-training->no-question"),
]


@pytest.mark.parametrize("case, expect", BOUNDARY)
def test_boundary(case: Callable[[Ctx], Action], expect, tmp_path: Path, request) -> None:
    try:
        check_row(case, expect, tmp_path, request)
    finally:
        for p in tmp_path.rglob("*"):  # undo the permission rows' chmod so pytest can clean up
            with contextlib.suppress(OSError):
                p.chmod(0o755 if p.is_dir() else 0o644)


def test_the_boundary_matrix_covers_every_family() -> None:
    ids = [p.id for p in BOUNDARY]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    areas = {i.split(":")[0] for i in ids} | {i.split(":")[1] for i in ids if i.startswith("cli:")}
    assert {"path", "run", "sub", "coco", "xml", "classes", "coco-eval", "synth", "profile", "config", "real"} <= areas
    assert sum(isinstance(p.values[0], Cmd) for p in BOUNDARY) <= 6  # subprocesses are the slow rows


# --------------------------------------------------------------------------- run folders, end to end

def _eval_map_proc(cwd: Path, work: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DETECT_TRACEBACK")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "eval.map", "data=ilsvrc", f"data.root={work}/ILSVRC",
                             f"detections={work}/dets.txt", "eval.plots=false", *extra],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    _eval_inputs(tmp_path)
    procs = [_eval_map_proc(tmp_path, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    folders = sorted((tmp_path / "outputs/eval_map").glob("*/*"))
    assert len(folders) == 2, folders
    names = [f.name for f in folders]
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d-\d+-[0-9a-f]{4}", n) for n in names), names
    reported = sorted(Path(o[0].split("metrics: ")[1].split("\n")[0]).parent.name for o in outs)
    assert reported == sorted(names)  # each run wrote its metrics into its own folder
    for folder in folders:
        assert json.loads((folder / "metrics.json").read_text())["mAP"] == 0.5
        assert (folder / ".hydra/run.lock").exists()


def test_a_run_never_writes_into_a_folder_a_live_run_holds(tmp_path: Path) -> None:
    _eval_inputs(tmp_path)
    run = tmp_path / "shared"
    first = _eval_map_proc(tmp_path, tmp_path, f"hydra.run.dir={run}")
    assert first.communicate(timeout=120) and first.returncode == 0
    (run / "metrics.json").unlink()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(run / '.hydra/run.lock')!r}, 'a+')\n"
                               "fcntl.flock(f, fcntl.LOCK_EX); f.write('pid 12345'); f.flush()\n"
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = _eval_map_proc(tmp_path, tmp_path, f"hydra.run.dir={run}")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and "Traceback" not in err
        assert err.strip().splitlines()[-1] == (
            f"error: {run}: run folder in use by another live run (pid 12345); give this run its own hydra.run.dir")
        assert not (run / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    third = _eval_map_proc(tmp_path, tmp_path, f"hydra.run.dir={run}")  # the holder is gone: the folder is free
    assert third.communicate(timeout=120) and third.returncode == 0
    assert (run / "metrics.json").exists()


def test_run_folder_lock_is_reentrant_and_released(tmp_path: Path, monkeypatch) -> None:
    import detect.cli as cli

    lock = tmp_path / ".hydra" / "run.lock"
    monkeypatch.setattr(cli, "_run_lock_path", lambda: lock)
    with cli.own_run_dir():
        with cli.own_run_dir():  # a wrapped entry point calling another one: the same run
            pass
        f = open(lock)
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: held
        f.close()
    with open(lock) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end


def test_sweep_and_run_folders_resolve_once_per_process() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        dirs = [compose(config_name=name, return_hydra_config=True).hydra
                for name in ("config", "eval_map", "proposals_run")]
    for hydra_cfg in dirs:
        assert str(hydra_cfg.run.dir).endswith(f"-{run_id()}") and str(hydra_cfg.sweep.dir).endswith(f"-{run_id()}")
