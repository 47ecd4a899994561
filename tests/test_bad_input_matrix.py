"""Bad-input matrix (issue "Reliability", item 1): every kind of bad input and its documented behaviour.

`MATRIX` is the table.  Each row's id reads ``<area>:<case>-><behaviour>``; its `Expect` says what the
documented behaviour is:

* ``error``: a one-line `detect.errors.UserError` naming the file (and line) or the config key.  On
  the command line (``cli:`` rows, real subprocesses): exit status 2, the last stderr line is
  ``error: ...`` and there is no traceback.
* ``warn``: the input is converted, clipped, skipped or recomputed, and a warning counts it.
* ``converted``: accepted as documented (an image decoded into the RGB uint8 every stage expects,
  a missing ``<size>`` read from the image header); the row checks the converted values.

Every row also proves that nothing is left behind looking complete: the files an action creates
must all be complete outputs the row allows (`Action.keep`), no ``*.tmp`` file survives, and the
row's own post-condition (`Action.after`) checks the outputs that exist (e.g. the proposal chunk of
the good image is readable, the bad image's chunk does not exist; a failed run has no
``detections.txt``/``metrics.json`` and no stage cache).
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import re
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from classifier.checkpoint import load_training_state
from conftest import MAP_DET, ilsvrc_source, voc_xml
from detect import atomic
from detect.checkpoint import load_checkpoint, save_checkpoint
from detect.data.image_io import load_rgb
from detect.data.record import ClassList, DetectionDataset, ImageRecord, empty_annotations
from detect.data.synth import SyntheticSource
from detect.ensemble import EnsembleSettings
from detect.errors import UserError
from eval.map import evaluate_submission
from proposals import cache as cache_mod
from proposals.cache import ProposalCache, parse_shard
from proposals.extract import extract_proposals

REPO = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 120  # safety net only: config errors exit within seconds
CLI_WORKERS = 2  # subprocesses run two at a time (2-core budget)


# --------------------------------------------------------------------------- harness

@dataclass(frozen=True)
class Expect:
    kind: str  # "error" | "warn" | "converted"
    pattern: str = ""  # regex searched in the one-line error ("error") or in the warnings ("warn")


def error(pattern: str) -> Expect:
    return Expect("error", pattern)


def warn(pattern: str) -> Expect:
    return Expect("warn", pattern)


CONVERTED = Expect("converted")


@dataclass
class Action:
    """What a row does once its bad input is in place.

    run: the call under test (its return value goes to ``after``; None when it raised).
    names: what the error must name (a file, ``FILE:LINE`` or a config key).
    after: the row's post-condition on what exists afterwards.
    keep: glob patterns (relative to the row's tmp dir) of complete outputs the call may create.
    """

    run: Callable[[], Any]
    names: str = ""
    after: Callable[[Any], None] | None = None
    keep: tuple[str, ...] = ()


@dataclass
class Ctx:
    tmp: Path
    request: pytest.FixtureRequest


class CliFailure(Exception):
    """A subprocess that exited with an error (the harness checks its exit status and stderr)."""

    def __init__(self, rc: int, stderr: str) -> None:
        super().__init__(rc, stderr)
        self.rc, self.stderr = rc, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        self.last_line = lines[-1] if lines else ""


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def perform(action: Action) -> Outcome:
    """Run ``action``: its value, or its one-line error; every log warning and `warnings.warn` message."""
    outcome = Outcome()
    handler = _Collect(outcome.warnings)
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome.value = action.run()
            except UserError as exc:
                outcome.error = str(exc)
            except CliFailure as exc:
                assert exc.rc == 2, f"exit status {exc.rc}, want 2; stderr tail:\n{exc.stderr[-1500:]}"
                assert "Traceback" not in exc.stderr, exc.stderr[-3000:]
                assert exc.last_line.startswith("error: "), f"last stderr line: {exc.last_line!r}"
                outcome.error = exc.last_line[len("error: "):]
        outcome.warnings += [str(w.message) for w in caught]
    finally:
        logging.getLogger().removeHandler(handler)
    return outcome


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- images

def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` RGB over a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A 16x16 baseline JPEG whose SOF0 header is patched to claim ``width x height``."""
    data = bytearray(_jpeg(Image.new("RGB", (16, 16), (1, 2, 3))))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _palette() -> Image.Image:
    image = Image.new("P", (5, 4), 0)
    image.putpalette([10, 20, 30] + [0] * 765)
    return image


class FullImageBox:
    """Proposal source stub: one box covering the decoded image, so the cache records its decoded size."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.array([[0, 0, w - 1, h - 1]], np.float32)

    @staticmethod
    def identity() -> dict:
        return {"source": "full-image"}


BOMB_PROOF = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: a 20000x20000 decode needs >= 1.2 GB
from PIL import Image
from detect.data.image_io import load_rgb
from detect.errors import DataError
try:
    load_rgb(sys.argv[1])
    print("decoded")
except DataError:
    print("refused")
Image.MAX_IMAGE_PIXELS = None
try:
    Image.open(sys.argv[1]).load()
    print("control decoded")
except MemoryError:
    print("control MemoryError")
"""


def _refused_within_one_gib(path: Path) -> None:
    """Under a 1 GiB address-space cap the reader refuses the file, while a plain decode runs out of memory."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", BOMB_PROOF, str(path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["refused", "control", "MemoryError"], proc.stdout + proc.stderr


def image_case(content: bytes | None, check: Callable[[np.ndarray], None] | None = None, *,
               bomb: bool = False) -> Callable[[Ctx], Action]:
    """Extract proposals (chunk size 1) over [a good image, the case's file named ``b_case.JPEG``].

    Error rows: the good image's chunk is complete, the case's chunk does not exist.  Converted
    rows: ``check`` sees the decoded array and the cached box spans the decoded size.
    """

    def case(ctx: Ctx) -> Action:
        images = ctx.tmp / "images"
        images.mkdir()
        good = images / "a_good.png"
        Image.new("RGB", (8, 6), (1, 2, 3)).save(good)
        odd = images / "b_case.JPEG"
        if content is not None:  # None: listed but missing
            odd.write_bytes(content)
        records = tuple(ImageRecord(p.stem, i + 1, p, 8, 6, *empty_annotations()) for i, p in enumerate([good, odd]))
        dataset = DetectionDataset("matrix", "val", images, ClassList(("n1",), ("thing",)), records)
        cache_dir = ctx.tmp / "cache"
        kwargs = dict(source_id=FullImageBox.identity(), cache_dir=cache_dir, workers=1, chunk_size=1)

        def after(props) -> None:
            cache = ProposalCache.for_split(cache_dir, dataset, source_id=FullImageBox.identity(), chunk_size=1)
            assert cache.read_chunk(0) is not None, "the good image's chunk must be complete"
            if props is None:
                assert not cache.chunk_path(1).exists(), "a chunk was written for the bad image"
                if bomb:
                    _refused_within_one_gib(odd)
                return
            array = load_rgb(odd)
            assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and array.flags.c_contiguous
            h, w = array.shape[:2]
            np.testing.assert_array_equal(props.boxes[1], [[0, 0, w - 1, h - 1]])
            check(array)

        return Action(lambda: extract_proposals(dataset, FullImageBox(), shard=None, progress=False, **kwargs),
                      names=str(odd), after=after,
                      keep=("cache/proposals/*/meta.json", "cache/proposals/*/chunk_0000[01].npz"))

    return case


def _pixels(y: int, x: int, rgb: tuple[int, int, int], tol: int = 0) -> Callable[[np.ndarray], None]:
    def check(array: np.ndarray) -> None:
        assert np.abs(array[y, x].astype(int) - rgb).max() <= tol, array[y, x]

    return check


def _cmyk_is_red(array: np.ndarray) -> None:
    r, g, b = array[3, 3].tolist()  # C=0, M=255, Y=255, K=0 is red
    assert r > 200 and g < 60 and b < 60


def _gray(array: np.ndarray) -> None:
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    assert abs(int(array[1, 1, 0]) - 77) <= 2


def _one_pixel(array: np.ndarray) -> None:
    assert array.shape == (1, 1, 3) and array[0, 0].tolist() == [3, 4, 5]


def _sixteen_bit(array: np.ndarray) -> None:
    assert (array == 255).all()  # 65535 / 257 = 255 exactly


# --------------------------------------------------------------------------- annotations

def _ilsvrc(root: Path) -> Path:
    """Two annotated validation images in the ILSVRC DET 2015 layout (reader config: conftest.ilsvrc_source)."""
    for d in ("Data/DET/val", "Annotations/DET/val", "ImageSets/DET", "devkit/data"):
        (root / d).mkdir(parents=True)
    (root / "devkit/data/map_det.txt").write_text(MAP_DET)
    for name, size in {"val_1": (40, 30), "val_2": (50, 20)}.items():
        Image.new("RGB", size, (10, 20, 30)).save(root / f"Data/DET/val/{name}.JPEG", format="JPEG")
    _xml(root, "val_1", [("n01", (1, 2, 10, 12))])
    _xml(root, "val_2", [("n02", (2, 1, 12, 9))], size=(50, 20))
    (root / "ImageSets/DET/val.txt").write_text("val_1 1\nval_2 2\n")
    return root


def _xml(root: Path, name: str, objects, size=(40, 30)) -> None:
    (root / f"Annotations/DET/val/{name}.xml").write_text(voc_xml(name, size, objects))


def _raw_xml(text: str) -> Callable[[Path], None]:
    return lambda root: (root / "Annotations/DET/val/val_1.xml").write_text(text)


def _boxes(*objects) -> Callable[[Path], None]:
    return lambda root: _xml(root, "val_1", list(objects))


def _text(rel: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_text(text)


def ann_case(mutate: Callable[[Path], None], names: str = "Annotations/DET/val/val_1.xml", *,
             boxes: list | None = None, key: str | None = None, **reader) -> Callable[[Ctx], Action]:
    """Load split ``val`` after ``mutate``.

    ``names``: the file (relative to the root, ``:LINE`` allowed) the error must name, or ``key``
    (a config key) instead; ``boxes``: val_1's boxes expected after the fix-ups.
    """

    def case(ctx: Ctx) -> Action:
        root = _ilsvrc(ctx.tmp / "ILSVRC")
        mutate(root)

        def after(dataset) -> None:
            if boxes is not None:
                np.testing.assert_array_equal(dataset[0].boxes, np.asarray(boxes, np.float32).reshape(-1, 4))
                assert (dataset[0].width, dataset[0].height) == (40, 30)  # from the image header when no <size>

        return Action(lambda: ilsvrc_source(root, **reader).load("val"), names=key or f"{root}/{names}",
                      after=after)

    return case


def _obj(name: str, coords: tuple[str, ...]) -> str:
    tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), coords))
    return f"<annotation><object><name>{name}</name><bndbox>{tags}</bndbox></object></annotation>"


# --------------------------------------------------------------------------- submissions

def _eval_dataset() -> DetectionDataset:
    """Three 100x80 images, two classes, one ground-truth box in image 1."""
    records = tuple(
        ImageRecord(f"im{i}", i, Path(f"im{i}.JPEG"), 100, 80,
                    *(((np.array([[0, 0, 49, 49]], np.float32), np.array([1]), np.zeros(1, bool)) if i == 1
                       else empty_annotations())))
        for i in (1, 2, 3)
    )
    return DetectionDataset("t", "val", Path("."), ClassList(("n1", "n2"), ("cat", "dog")), records)


def sub_case(content: str | bytes, line: int | None = None, *, fails: bool = True) -> Callable[[Ctx], Action]:
    """Score a submission file with `eval.map.evaluate_submission`.

    Rows that must fail name ``dets.txt:<line>`` (or the file) and run with plots on: the plots
    come after validation, so none may appear.  Accepted rows must give a valid mAP.
    """

    def case(ctx: Ctx) -> Action:
        path = ctx.tmp / "dets.txt"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out = ctx.tmp / "out"
        out.mkdir()

        def after(metrics) -> None:
            assert fails or 0.0 <= metrics["mAP"] <= 1.0

        return Action(lambda: evaluate_submission(_eval_dataset(), path, out_dir=out, coco=False, coco_max_dets=100,
                                                  plots=fails),
                      names=str(path) if line is None else f"{path}:{line}", after=after)

    return case


# --------------------------------------------------------------------------- configs

ENSEMBLE = dict(size=2, members=None, member=None, score="softmax", nms_iou=0.3, score_threshold=0.01,
                max_per_image=100, max_per_class=30000)


def config_case(key: str, call: Callable[[Any], Any], setup: Callable[[Path], Any] = lambda tmp: tmp,
                ) -> Callable[[Ctx], Action]:
    """``call(setup(tmp))`` must raise a `ConfigError` naming ``key`` (inputs are made by ``setup``, before)."""

    def case(ctx: Ctx) -> Action:
        state = setup(ctx.tmp)
        return Action(lambda: call(state), names=key)

    return case


def _synthetic(root: Path, **overrides) -> SyntheticSource:
    knobs = OmegaConf.to_container(OmegaConf.load(REPO / "conf/data/synthetic.yaml"))
    knobs.pop("_target_")
    return SyntheticSource(**{**knobs, "root": str(root / "synthetic"), **overrides})


def _two_images(tmp: Path) -> tuple[DetectionDataset, Path]:
    """Two good 8x6 images and the cache folder to extract their proposals into."""
    images = tmp / "images"
    images.mkdir()
    records = []
    for i in range(2):
        Image.new("RGB", (8, 6), (i, 2, 3)).save(images / f"im{i}.png")
        records.append(ImageRecord(f"im{i}", i + 1, images / f"im{i}.png", 8, 6, *empty_annotations()))
    return DetectionDataset("matrix", "val", images, ClassList(("n1",), ("thing",)), tuple(records)), tmp / "cache"


def _extract(state: tuple[DetectionDataset, Path], **kwargs):
    dataset, cache_dir = state
    args = dict(source_id=FullImageBox.identity(), cache_dir=cache_dir, workers=1, chunk_size=1, shard=None,
                progress=False)
    return extract_proposals(dataset, FullImageBox(), **{**args, **kwargs})


@dataclass(frozen=True)
class Cli:
    """A real ``python -m <module>`` subprocess (run ahead, two at a time, by the ``cli_runs`` fixture).

    ``args`` may use ``{work}`` (the row's own folder); ``prepare(work)`` writes input files first.
    The run must fail before any of ``forbidden`` (relative to ``work``) exists: it is killed the
    moment one appears, and the row fails, so a check that comes too late cannot pass.
    """

    args: tuple[str, ...]
    names: str
    module: str = "detect.run"
    prepare: Callable[[Path], None] | None = None
    forbidden: tuple[str, ...] = ("cache/proposals", "cache/multibox", "cache/members", "cache/scores",
                                  "run/detections.txt", "run/metrics.json")

    def __call__(self, ctx: Ctx) -> Action:
        result = ctx.request.getfixturevalue("cli_runs")[self]

        def run():
            assert result["killed_by"] is None, (
                f"the run got past the config checks ({result['killed_by']} appeared) and was killed; "
                f"stderr tail:\n{result['stderr'][-1500:]}")
            if result["rc"] != 0:
                raise CliFailure(result["rc"], result["stderr"])
            return result

        def after(_) -> None:
            left = [f for f in self.forbidden if (result["work"] / f).exists()]
            assert not left, f"a failed run left {left}"

        return Action(run, names=self.names.format(work=result["work"]), after=after)


def detect_run(*overrides: str) -> Cli:
    key = overrides[0].split("=")[0]
    return Cli(("profile=tiny", "cache_dir={work}/cache", "hydra.run.dir={work}/run", *overrides), names=key)


def _eval_map_inputs(work: Path) -> None:
    _ilsvrc(work / "ILSVRC")
    (work / "dets.txt").write_text("1 1 0.9 1 2 10 12\n2 2 nan 2 1 12 9\n")


EVAL_MAP_NAN = Cli(("data=ilsvrc", "data.root={work}/ILSVRC", "data.split=val", "detections={work}/dets.txt",
                    "hydra.run.dir={work}/run"), names="{work}/dets.txt:2", module="eval.map",
                   prepare=_eval_map_inputs, forbidden=("run/metrics.json", "run/pr_curves.png"))


def _run_cli(case: Cli, work: Path) -> dict:
    work.mkdir(parents=True)
    if case.prepare is not None:
        case.prepare(work)
    cmd = [sys.executable, "-m", case.module, *(a.format(work=work) for a in case.args)]
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DETECT_TRACEBACK",
                                                            "DETECT_CACHE_DIR")}
    killed_by = None
    with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err, env=env, start_new_session=True)
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while proc.poll() is None:
            killed_by = next((f for f in case.forbidden if (work / f).exists()), None)
            if killed_by is None and time.monotonic() > deadline:
                killed_by = f"timeout ({CLI_TIMEOUT_S} s)"
            if killed_by is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.05)
    return {"rc": proc.returncode, "stderr": (work / "stderr.txt").read_text(), "killed_by": killed_by,
            "work": work}


@pytest.fixture(scope="module")
def cli_runs(request, tmp_path_factory) -> dict:
    """Run every selected `Cli` row once, two subprocesses at a time; results keyed by row."""
    wanted: list[Cli] = []
    for item in request.session.items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        if isinstance(case, Cli) and case not in wanted:
            wanted.append(case)
    base = tmp_path_factory.mktemp("cli")
    with ThreadPoolExecutor(max_workers=CLI_WORKERS) as pool:
        results = list(pool.map(lambda ic: _run_cli(ic[1], base / f"row{ic[0]}"), enumerate(wanted)))
    return dict(zip(wanted, results))


# --------------------------------------------------------------------------- caches

def cache_case(corrupt: Callable[[Path], None]) -> Callable[[Ctx], Action]:
    """Extract, damage chunk 0 with ``corrupt(path)``, extract again: recomputed, identical, warned once."""

    def case(ctx: Ctx) -> Action:
        state = _two_images(ctx.tmp)
        dataset, first = state[0], _extract(state)
        chunk = next((ctx.tmp / "cache/proposals").glob("*/chunk_00000.npz"))
        corrupt(chunk)

        def after(props) -> None:
            for a, b in zip(first.boxes, props.boxes):
                np.testing.assert_array_equal(a, b)
            cache = ProposalCache(chunk.parent, [r.image_id for r in dataset], chunk_size=1)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the rewritten chunk reads back without a warning
                assert cache.read_chunk(0) is not None

        return Action(lambda: _extract(state), names=str(chunk), after=after)

    return case


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_version(path: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["format_version"] = np.array(0, np.int64)
    data["checksum"] = np.array(cache_mod._checksum(0, data["image_ids"], data["counts"], data["boxes"], None))
    atomic.save_npz(path, **data)


def _flip_a_box(path: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["boxes"] = data["boxes"] + 1  # the stored checksum no longer matches
    atomic.save_npz(path, **data)


def checkpoint_case(damage: str) -> Callable[[Ctx], Action]:
    """A classifier training checkpoint (as a member writes it), damaged, then resumed from."""

    def case(ctx: Ctx) -> Action:
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
        path = ctx.tmp / "members" / "key" / "checkpoint.pt"
        fingerprint = {"arch": "linear", "width": 0.25}
        save_checkpoint(path, fingerprint=fingerprint, iteration=3, model=model.state_dict())
        if damage == "truncated":
            _truncate(path)
            return Action(lambda: load_training_state(path, fingerprint=fingerprint, model=model,
                                                      optimizer=optimizer, scheduler=scheduler), names=str(path))
        return Action(lambda: load_checkpoint(path, fingerprint={**fingerprint, "width": 0.5}), names=str(path))

    return case


# --------------------------------------------------------------------------- the matrix

MATRIX = [
    # ---- images: decoded by detect.data.image_io.load_rgb inside proposal extraction (chunk size 1)
    pytest.param(image_case(b"\x00\x01this is not an image at all"), error(r": not an image"),
                 id="image:corrupt-bytes->error"),
    pytest.param(image_case(_jpeg(Image.new("RGB", (64, 64), (5, 5, 5)))[:300]),
                 error(r": truncated or corrupt image"), id="image:truncated-jpeg->error"),
    pytest.param(image_case(b""), error(r": empty file \(0 bytes\)$"), id="image:zero-bytes->error"),
    pytest.param(image_case(None), error(r": image file not found$"), id="image:missing-file->error"),
    pytest.param(image_case(_png(Image.new("RGB", (4, 3), (1, 2, 3))), _pixels(0, 0, (1, 2, 3))), CONVERTED,
                 id="image:png-named-jpeg->converted"),
    pytest.param(image_case(_jpeg(Image.new("CMYK", (6, 6), (0, 255, 255, 0)), quality=100), _cmyk_is_red),
                 CONVERTED, id="image:cmyk-jpeg->converted"),
    pytest.param(image_case(_jpeg(Image.new("L", (4, 3), 77), quality=100), _gray), CONVERTED,
                 id="image:grayscale-jpeg->converted"),
    pytest.param(image_case(_png(_palette()), _pixels(1, 1, (10, 20, 30))), CONVERTED,
                 id="image:palette-png->converted"),
    pytest.param(image_case(_png(Image.new("RGBA", (3, 3), (9, 8, 7, 0))), _pixels(0, 0, (9, 8, 7))), CONVERTED,
                 id="image:rgba-png->converted(alpha-dropped)"),
    pytest.param(image_case(_png(Image.fromarray(np.full((2, 2), 65535, np.uint16))), _sixteen_bit), CONVERTED,
                 id="image:16bit-png->converted"),
    pytest.param(image_case(_png(Image.new("RGB", (1, 1), (3, 4, 5))), _one_pixel), CONVERTED,
                 id="image:1x1->converted"),
    pytest.param(image_case(_png_claiming(20000, 20000), bomb=True), error(r": image too large \(20000x20000"),
                 id="image:png-header-20000x20000->error(no-allocation)"),
    pytest.param(image_case(_jpeg_claiming(20000, 20000), bomb=True), error(r": image too large \(20000x20000"),
                 id="image:jpeg-header-20000x20000->error(no-allocation)"),
    # ---- annotations: ILSVRC DET reader (VOC uses the same XML and split-list code)
    pytest.param(ann_case(_raw_xml("<annotation><object><name>n01</name></annotation>")),
                 error(r": malformed XML \(mismatched tag: line 1, column \d+\)"), id="ann:malformed-xml->error"),
    pytest.param(ann_case(_raw_xml(voc_xml("val_1", None, [("n01", (1, 2, 10, 12))])), boxes=[[1, 2, 10, 12]],
                          check_image_size=False), CONVERTED, id="ann:no-size->size-from-image-header"),
    pytest.param(ann_case(_raw_xml("<annotation><object><name>n01</name></object></annotation>")),
                 error(r": object 'n01' without <bndbox>$"), id="ann:no-bndbox->error"),
    pytest.param(ann_case(_raw_xml(_obj("n01", ("1", "2", "5")))), error(r": object without <ymax>$"),
                 id="ann:missing-coordinate->error"),
    pytest.param(ann_case(_raw_xml(_obj("n01", ("1", "2", "five", "9")))),
                 error(r": <xmax> is not a number: 'five'$"), id="ann:non-numeric-coordinate->error"),
    pytest.param(ann_case(_raw_xml("<annotation><size><width>4O</width><height>30</height></size></annotation>")),
                 error(r": <size> is not numeric$"), id="ann:non-numeric-size->error"),
    pytest.param(ann_case(_boxes(("n01", (10, 2, 5, 12)), ("n01", (1, 2, 10, 12))), boxes=[[1, 2, 10, 12]]),
                 warn(r"1 inverted boxes \(xmax < xmin or ymax < ymin\) skipped \(first: .*val_1\.xml\)"),
                 id="ann:inverted-box->skipped+warning"),
    pytest.param(ann_case(_boxes(("n01", (7, 4, 7, 20)), ("n01", (1, 2, 10, 12))), boxes=[[1, 2, 10, 12]]),
                 warn(r"1 zero-area boxes \(after clipping\) skipped \(first: .*val_1\.xml\)"),
                 id="ann:zero-area-box->skipped+warning"),
    pytest.param(ann_case(_boxes(("n01", (-5, -3, 50, 40))), boxes=[[0, 0, 40, 30]]),
                 warn(r"1 boxes extending outside the image clipped \(first: .*val_1\.xml\)"),
                 id="ann:out-of-bounds-box->clipped+warning"),
    pytest.param(ann_case(_boxes(("n77", (1, 1, 5, 5)))),
                 error(r": unknown class 'n77' \(not in the class list .*map_det\.txt, data\.class_list\): add a line "
                       r"'n77 <id> <name>' there, or skip such objects with data\.unknown_classes=skip$"),
                 id="ann:unknown-synset->error"),
    pytest.param(ann_case(_boxes(("n77", (1, 1, 5, 5)), ("n01", (1, 2, 10, 12))), boxes=[[1, 2, 10, 12]],
                          unknown_classes="skip"),
                 warn(r"1 objects of unknown classes skipped \(first: .*val_1\.xml\)"),
                 id="ann:unknown-synset(data.unknown_classes=skip)->skipped+warning"),
    pytest.param(ann_case(_text("ImageSets/DET/val.txt", "val_1 1\nval_1 2\n"), "ImageSets/DET/val.txt:2"),
                 error(r": duplicate image 'val_1' \(first on line 1\)$"), id="split:duplicate-image-id->error"),
    pytest.param(ann_case(_text("ImageSets/DET/val.txt", "val_1 1\nval_2 1\n"), "ImageSets/DET/val.txt:2"),
                 error(r": duplicate image index 1 \(first on line 1\)$"), id="split:duplicate-image-index->error"),
    pytest.param(ann_case(_text("ImageSets/DET/val.txt", "val_1 one\n"), "ImageSets/DET/val.txt:1"),
                 error(r": second column 'one' is not an integer$"), id="split:non-numeric-index->error"),
    pytest.param(ann_case(_text("ImageSets/DET/val.txt", "# nothing\n"), "ImageSets/DET/val.txt"),
                 error(r": split 'val' is empty$"), id="split:empty->error"),
    pytest.param(ann_case(_text("ImageSets/DET/val.txt", "val_1 1\nval_9 2\n"), "Data/DET/val/val_9.JPEG"),
                 error(r": image listed in .*val\.txt is missing$"), id="split:image-missing->error"),
    pytest.param(ann_case(_text("devkit/data/map_det.txt", "n01 1 cat\nn02 1 dog\n"), "devkit/data/map_det.txt:2"),
                 error(r": class id 1 listed twice$"), id="classes:duplicate-class-id->error"),
    # ---- submissions: eval.submission via eval.map.evaluate_submission (plots on: none may appear)
    pytest.param(sub_case("1 1 0.5 0 0 10\n", 1), error(r": expected 7 columns .*, got 6$"),
                 id="sub:wrong-column-count->error"),
    pytest.param(sub_case("1 1 0.5 0 0 10 10\n1 1 high 0 0 10 10\n", 2),
                 error(r": confidence 'high' is not a number$"), id="sub:non-numeric-score->error"),
    pytest.param(sub_case("1 x 0.5 0 0 10 10\n", 1), error(r": class_id 'x' is not an integer$"),
                 id="sub:non-numeric-class-id->error"),
    pytest.param(sub_case("1 1.5 0.5 0 0 10 10\n", 1), error(r": image_index and class_id must be integers$"),
                 id="sub:fractional-class-id->error"),
    pytest.param(sub_case("1 1 0.5 0 0 10 10\n1 7 0.5 0 0 10 10\n", 2),
                 error(r": unknown class id 7 \(classes are 1\.\.2\)$"), id="sub:unknown-class-id->error"),
    pytest.param(sub_case("9 1 0.5 0 0 10 10\n", 1), error(r": image index 9 is out of range 1\.\.3$"),
                 id="sub:image-index-out-of-range->error"),
    pytest.param(sub_case("0 1 0.5 0 0 10 10\n", 1), error(r": image index 0 is out of range 1\.\.3$"),
                 id="sub:image-index-zero->error"),
    pytest.param(sub_case("1 1 nan 0 0 10 10\n", 1), error(r": confidence is NaN or infinite$"),
                 id="sub:nan-score->error"),
    pytest.param(sub_case("1 1 0.5 0 0 inf 10\n", 1), error(r": box coordinate is NaN or infinite$"),
                 id="sub:infinite-coordinate->error"),
    pytest.param(sub_case(b"\xff\xfe\x00\x01"), error(r": not a text file"), id="sub:binary-file->error"),
    pytest.param(sub_case("1 1 0.9 0 0 49 49\n1 1 0.5 40 40 10 10\n", fails=False),
                 warn(r"1 inverted boxes \(xmax < xmin or ymax < ymin\) accepted as the devkit does"),
                 id="sub:inverted-box->accepted+warning"),
    pytest.param(sub_case("1 1 0.9 0 0 49 49\n2 1 0.5 -5 0 120 10\n", fails=False),
                 warn(r"1 boxes extend outside their image; accepted as the devkit does"),
                 id="sub:out-of-image-box->accepted+warning"),
    pytest.param(EVAL_MAP_NAN, error(r": confidence is NaN or infinite$"), id="cli:eval.map-nan-score->error"),
    # ---- configs: real `python -m detect.run profile=tiny <override>` subprocesses
    pytest.param(detect_run("data=nope"), error(r"'data/nope'"),
                 id="cli:data=nope(unknown-option)->error"),
    pytest.param(detect_run("ensemble.size=abc"), error(r"^ensemble\.size must be an integer >= 1, got 'abc'$"),
                 id="cli:ensemble.size=abc(wrong-type)->error"),
    pytest.param(detect_run("ensemble.size=0"), error(r"^ensemble\.size must be an integer >= 1, got 0$"),
                 id="cli:ensemble.size=0->error"),
    pytest.param(detect_run("classifier.model.input_size=-1"), error(r"^classifier\.model\.input_size .*got -1$"),
                 id="cli:classifier.model.input_size=-1->error"),
    pytest.param(detect_run("proposals.multibox.top_k=-5"), error(r"^proposals\.multibox\.top_k .*got -5$"),
                 id="cli:proposals.multibox.top_k=-5->error"),
    pytest.param(detect_run("data.splits.val=-1"), error(r"^data\.splits\.val must be an integer >= 1, got -1$"),
                 id="cli:data.splits.val=-1->error"),
    pytest.param(detect_run("data.seed=-1"), error(r"^data\.seed must be an integer >= 0, got -1$"),
                 id="cli:data.seed=-1->error"),
    # ---- configs: the same validation, called directly
    pytest.param(config_case("ensemble.nms_iou", lambda _: EnsembleSettings(**{**ENSEMBLE, "nms_iou": "abc"})),
                 error(r"^ensemble\.nms_iou must be a number, got 'abc'$"), id="config:ensemble.nms_iou=abc->error"),
    pytest.param(config_case("ensemble.members[1]",
                             lambda _: EnsembleSettings(**{**ENSEMBLE, "members": [0, "x"]})),
                 error(r"must be an integer >= 0, got 'x'$"), id="config:ensemble.members=[0,x]->error"),
    pytest.param(config_case("data.num_classes", lambda tmp: _synthetic(tmp, num_classes="abc")),
                 error(r"^data\.num_classes must be an integer, got 'abc'$"), id="config:data.num_classes=abc->error"),
    pytest.param(config_case("data.seed", lambda tmp: _synthetic(tmp, seed=1.5)),
                 error(r"^data\.seed must be an integer >= 0, got 1\.5$"), id="config:data.seed=1.5->error"),
    pytest.param(ann_case(lambda root: None, key="data.unknown_classes", unknown_classes="maybe"),
                 error(r"^data\.unknown_classes must be 'error' or 'skip', got 'maybe'$"),
                 id="config:data.unknown_classes=maybe->error"),
    pytest.param(config_case("proposals.chunk_size", lambda s: _extract(s, chunk_size=0), _two_images),
                 error(r"^proposals\.chunk_size must be >= 1, got 0$"), id="config:proposals.chunk_size=0->error"),
    pytest.param(config_case("proposals.workers", lambda s: _extract(s, workers=0), _two_images),
                 error(r"^proposals\.workers must be >= 1, got 0$"), id="config:proposals.workers=0->error"),
    pytest.param(config_case("proposals.shard", lambda _: parse_shard("3/2")),
                 error(r"^proposals\.shard '3/2': need 0 <= i < n$"), id="config:proposals.shard=3/2->error"),
    # ---- caches
    pytest.param(cache_case(_truncate), warn(r"chunk_00000\.npz: proposal cache chunk unreadable .*; recomputing it$"),
                 id="cache:truncated-proposal-chunk->recomputed+warning"),
    pytest.param(cache_case(_other_version),
                 warn(r"chunk_00000\.npz: proposal cache chunk written by format version 0, this code reads "
                      rf"{cache_mod.FORMAT_VERSION}; recomputing it$"),
                 id="cache:proposal-chunk-from-another-version->recomputed+warning"),
    pytest.param(cache_case(_flip_a_box),
                 warn(r"chunk_00000\.npz: proposal cache chunk checksum mismatch; recomputing it$"),
                 id="cache:proposal-chunk-checksum-mismatch->recomputed+warning"),
    pytest.param(checkpoint_case("truncated"),
                 error(r": not a readable checkpoint \(truncated or corrupt: RuntimeError: PytorchStreamReader"),
                 id="cache:truncated-member-checkpoint->error"),
    pytest.param(checkpoint_case("other-config"), error(r": checkpoint was trained with width=0\.25, config has 0\.5$"),
                 id="cache:checkpoint-from-another-config->error"),
]


@pytest.mark.parametrize("case, expect", MATRIX)
def test_bad_input(case: Callable[[Ctx], Action], expect: Expect, tmp_path: Path, request) -> None:
    action = case(Ctx(tmp_path, request))
    before = files_under(tmp_path)
    outcome = perform(action)
    created = files_under(tmp_path) - before
    assert not [f for f in files_under(tmp_path) if f.endswith(".tmp")], "a temporary file was left behind"
    unexpected = sorted(f for f in created if not any(fnmatch.fnmatch(f, k) for k in action.keep))
    assert not unexpected, f"created files the row does not allow: {unexpected}"
    if expect.kind == "error":
        message = outcome.error
        assert message is not None, f"no error; value: {outcome.value!r}"
        assert "\n" not in message and "Traceback" not in message, message
        assert action.names in message, f"{message!r} does not name {action.names!r}"
        assert re.search(expect.pattern, message), f"{message!r} !~ {expect.pattern!r}"
    else:
        assert outcome.error is None, outcome.error
        if expect.kind == "warn":
            assert any(re.search(expect.pattern, w) for w in outcome.warnings), \
                f"no warning matches {expect.pattern!r}: {outcome.warnings}"
    if action.after is not None:
        action.after(outcome.value)


def test_the_matrix_covers_every_area() -> None:
    from test_bad_input_boundary import BOUNDARY  # part 2 of the matrix (issue 17), on this harness

    ids = [p.id for p in MATRIX]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    every = ids + [p.id for p in BOUNDARY]
    assert len(every) == len(set(every)) and len(every) >= 100
    areas = {i.split(":")[0] for i in ids}
    assert {"image", "ann", "split", "sub", "cli", "config", "cache"} <= areas
    assert sum(isinstance(p.values[0], Cli) for p in MATRIX) <= 8  # subprocesses are the slow rows
