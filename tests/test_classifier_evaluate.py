"""``python -m classifier.evaluate`` (Table 3): crop geometry, top-k errors, averaging, the table, the command.

Crop boxes are checked against numbers worked out by hand from the paper's definition (section 7)
and torchvision's resize/centre-crop rules (long side ``int(L * long / short)``, centre offset
``round((side - crop) / 2)``, half to even)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from classifier.cls_batches import eval_transform
from classifier.crops import Crop, crop_boxes, render_crops, short_sides, squares
from classifier.evaluate import (PAPER_TOP5, Row, ensemble_probs, format_markdown, format_table, score_split,
                                 table_rows)
from classifier.googlenet import GoogLeNet
from classifier.pretrain import topk_errors
from detect.data.classification import ClassificationDataset, ClassificationRecord, ClassInfo

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _boxes(crops: list[Crop]) -> list[tuple]:
    return [(c.short_side, c.box, c.mirror) for c in crops]


def _expected_144(landscape: bool) -> list[tuple]:
    """Hand-made: a 300 x 200 image (or 200 x 300) at input 224.  Per scale L: long side int(L * 1.5),
    squares at 0, (long - L) / 2, long - L along it; corners at 0 and L - 224 inside a square; centre at
    (L - 224) / 2 (16, 32, 48, 64)."""
    scales = [  # L, square offsets along the long side, centre offset inside a square
        (256, (0, 64, 128), 16),    # long 384
        (288, (0, 72, 144), 32),    # long 432
        (320, (0, 80, 160), 48),    # long 480
        (352, (0, 88, 176), 64),    # long 528
    ]
    out = []
    for L, offsets, c in scales:
        for o in offsets:
            d = L - 224
            inner = [(0, 0), (d, 0), (0, d), (d, d), (c, c)]  # (along x, along y) inside the square
            boxes = [(o + x, y, o + x + 224, y + 224) if landscape else (x, o + y, x + 224, o + y + 224)
                     for x, y in inner]
            boxes.append((o, 0, o + L, L) if landscape else (0, o, L, o + L))  # the whole square
            out += [(L, b, m) for b in boxes for m in (False, True)]
    return out


def test_144_boxes_of_a_landscape_image():
    crops = crop_boxes(300, 200, scheme=144, input_size=224)
    assert len(crops) == 4 * 3 * 6 * 2 == 144
    assert _boxes(crops) == _expected_144(landscape=True)
    assert len(set(_boxes(crops))) == 144  # all distinct


def test_144_boxes_of_a_portrait_image_take_top_centre_bottom_squares():
    crops = crop_boxes(200, 300, scheme=144, input_size=224)
    assert _boxes(crops) == _expected_144(landscape=False)
    assert squares(256, 384) == [(0, 0, 256, 256), (0, 64, 256, 320), (0, 128, 256, 384)]


def test_a_square_image_repeats_its_one_square_three_times():
    crops = crop_boxes(100, 100, scheme=144, input_size=224)
    assert len(crops) == 144 and len(set(crops)) == 144 // 3  # left = centre = right


def test_10_boxes_are_the_corners_and_centre_of_the_256_image_and_their_mirrors():
    # 300 x 200 -> 384 x 256; corners at x 0 / 384 - 224 = 160, y 0 / 32; centre (80, 16)
    crops = crop_boxes(300, 200, scheme=10, input_size=224)
    unmirrored = [(0, 0, 224, 224), (160, 0, 384, 224), (0, 32, 224, 256), (160, 32, 384, 256), (80, 16, 304, 240)]
    assert _boxes(crops) == [(256, b, m) for b in unmirrored for m in (False, True)]
    assert crop_boxes(300, 200, scheme=1, input_size=224) == [Crop(256, (80, 16, 304, 240), False)]


def test_small_inputs_scale_the_short_sides_and_round_the_centre_half_to_even():
    assert short_sides(224) == (256, 288, 320, 352)
    assert short_sides(64) == (73, 82, 91, 101)  # 256 * 64 / 224 = 73.14, 82.29, 91.43, 100.57
    # 100 x 75 at short side 73: long side int(73 * 100 / 75) = int(97.33) = 97; centre x round(16.5) = 16,
    # y round(4.5) = 4 (torchvision's CenterCrop, Python's round half to even)
    assert crop_boxes(100, 75, scheme=1, input_size=64) == [Crop(73, (16, 4, 80, 68), False)]


def test_the_1_crop_is_exactly_the_pretraining_eval_transform():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, 75, 100), dtype=np.uint8))
    crop = render_crops(image, crop_boxes(100, 75, scheme=1, input_size=64), input_size=64)
    ours = F.normalize(F.to_dtype(crop, torch.float32, scale=True), list(MEAN), list(STD))[0]
    theirs = eval_transform(input_size=64, resize_ratio=256 / 224, pixel_mean=MEAN, pixel_std=STD)(image)
    assert torch.equal(ours, theirs)


def test_rendered_crops_are_the_resized_image_cut_resized_and_mirrored():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 256, (3, 7, 13), dtype=np.uint8))
    crops = crop_boxes(13, 7, scheme=144, input_size=8)  # short sides round(9.14)=9, 10, 11, 13
    out = render_crops(image, crops, input_size=8)
    assert out.shape == (144, 3, 8, 8) and out.dtype == torch.uint8
    for i, c in enumerate(crops):
        scaled = F.resize(image, [c.short_side], interpolation=InterpolationMode.BILINEAR, antialias=True)
        x1, y1, x2, y2 = c.box
        patch = scaled[:, y1:y2, x1:x2]
        if x2 - x1 != 8:
            assert x2 - x1 == y2 - y1 == c.short_side  # only the whole square is larger than the input
            patch = F.resize(patch, [8, 8], interpolation=InterpolationMode.BILINEAR, antialias=True)
        assert torch.equal(out[i], patch.flip(-1) if c.mirror else patch)
    # each crop is followed by its mirror
    assert torch.equal(out[1::2], out[0::2].flip(-1))


def test_topk_errors_on_a_hand_made_score_matrix():
    probs = np.array([
        [0.50, 0.10, 0.10, 0.10, 0.10, 0.05, 0.05],  # label 0: rank 1 -> right at top-1 and top-5
        [0.30, 0.25, 0.20, 0.10, 0.08, 0.04, 0.03],  # label 2: rank 3 -> wrong at top-1, right at top-5
        [0.30, 0.25, 0.20, 0.10, 0.08, 0.04, 0.03],  # label 5: rank 6 -> wrong at both
        [0.20, 0.20, 0.20, 0.20, 0.20, 0.00, 0.00],  # label 4: five-way tie, stable order keeps 0..4: right at 5
    ])
    labels = np.array([0, 2, 5, 4])
    errors = topk_errors(probs, labels, ks=(1, 5))
    assert errors[1] == pytest.approx(3 / 4)  # rows 1, 2, 3 (row 3's top-1 is class 0)
    assert errors[5] == pytest.approx(1 / 4)  # row 2 only


def _sigmoid(d: float) -> float:
    return 1 / (1 + math.exp(-d))


def test_probabilities_are_averaged_over_crops_then_models_not_logits():
    """Two classes, logits (d, 0): p(class 0) = sigmoid(d).  Model A's crops d = 10, -2, -2: mean logit
    +2 (class 0) but mean probability (0.99995 + 2 x 0.1192) / 3 = 0.4128 (class 1); model B's crops
    d = 1, 1, 1: 0.7311.  Ensemble: (0.4128 + 0.7311) / 2 = 0.5719."""
    a, b = [10.0, -2.0, -2.0], [1.0, 1.0, 1.0]
    logits = torch.tensor([[[[d, 0.0] for d in a]], [[[d, 0.0] for d in b]]])  # (2 models, 1 image, 3 crops, 2)
    pa = (_sigmoid(10) + 2 * _sigmoid(-2)) / 3
    pb = _sigmoid(1)
    assert pa == pytest.approx(0.41278, abs=1e-5)
    assert ensemble_probs(logits[:1])[0, 0] == pytest.approx(pa)  # class 1 wins, though the mean logit favours 0
    assert ensemble_probs(logits)[0, 0] == pytest.approx((pa + pb) / 2)
    assert ensemble_probs(logits)[0, 0] == pytest.approx(0.57193, abs=1e-5)
    # the same through the table: network i's crop-averaged probabilities, ensembles average networks 0..N-1
    per_network = [{1: np.array([[pa, 1 - pa]])}, {1: np.array([[pb, 1 - pb]])}]
    rows = table_rows(per_network, np.array([0]), models=[1, 2], crops=[1])
    assert [(r.models, r.top1_error) for r in rows] == [(1, 1.0), (2, 0.0)]


def _three_networks() -> list[dict[int, np.ndarray]]:
    """3 networks x 2 images x 6 classes; labels [0, 1].  Network 0, 1 crop: image 0 right, image 1 wrong
    (rank 6, outside the top 5); 10 crops: both right."""
    def p(*rows):
        return np.array(rows, dtype=np.float64)
    good0, good1 = [.5, .1, .1, .1, .1, .1], [.1, .5, .1, .1, .1, .1]
    n0 = {1: p(good0, [.3, 0, .2, .2, .2, .1]), 10: p(good0, good1)}
    n1 = {1: p(good1, good1), 10: p([.4, .2, .1, .1, .1, .1], [.1, .4, .2, .1, .1, .1])}
    return [n0, n1, n1]


def test_table_rows_cost_and_change_against_the_1x1_base():
    rows = table_rows(_three_networks(), np.array([0, 1]), models=[3, 1], crops=[10, 1])
    assert [(r.models, r.crops, r.cost) for r in rows] == [(1, 1, 1), (1, 10, 10), (3, 1, 3), (3, 10, 30)]
    got = {(r.models, r.crops): (r.top1_error, r.top5_error) for r in rows}
    assert got[(1, 1)] == (0.5, 0.5)
    assert got[(1, 10)] == (0.0, 0.0)
    # 3 x 1, image 0: class 0 (0.5 + 0.1 + 0.1) / 3 = 0.233 < class 1 (0.1 + 0.5 + 0.5) / 3 = 0.367 -> wrong at top-1
    # image 1: class 1 (0 + .5 + .5) / 3 = 0.333 is the highest -> right
    assert got[(3, 1)] == (0.5, 0.0)
    assert got[(3, 10)] == (0.0, 0.0)
    d = rows[2].as_dict()
    assert d["delta_top1"] == 0.0 and d["delta_top5"] == -0.5 and d["cost"] == 3 and d["paper_top5_error"] is None
    assert rows[0].as_dict()["paper_top5_error"] == pytest.approx(PAPER_TOP5[(1, 1)] / 100)
    text = format_table(rows)
    assert text.splitlines()[0].split()[:3] == ["models", "crops", "cost"] and "base" in text.splitlines()[2]
    md = format_markdown(rows).splitlines()
    assert len(md) == 2 + 4 and md[4].startswith("| 3 | 1 | 3 | 50.00% | 0.00% | +0.00% | -50.00% |")


def test_rows_as_in_table_3_with_the_base_always_first():
    rows = table_rows(_three_networks(), np.array([0, 1]), models=[3], crops=[10])
    assert [(r.models, r.crops) for r in rows] == [(1, 1), (3, 10)]
    assert isinstance(rows[0], Row) and rows[1].cost == 30


# --------------------------------------------------------------------------- scoring a split


def _image_folder(root: Path, sizes: dict[str, tuple[int, int]], classes=("a", "b", "c")) -> Path:
    """``root/<class>/<name>.png``: images of the given (width, height), class = the name's first letter."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name[0] / f"{name}.png")
    return root


class MeanColour(torch.nn.Module):
    """Logits = the crop's mean of each channel (3 classes): depends on every pixel of every crop."""

    input_size = 48
    num_classes = 3

    def forward(self, x):
        return x.mean(dim=(2, 3)) * 4


def test_score_split_averages_each_scheme_over_its_crops_and_skips_unreadable_images(tmp_path, caplog):
    root = _image_folder(tmp_path / "f", {"a1": (60, 48), "b1": (48, 70), "c1": (50, 50)})
    (root / "a" / "broken.png").write_bytes(b"not an image")
    records = tuple(sorted([ClassificationRecord(str(p), "abc".index(p.parent.name)) for p in root.glob("*/*.png")],
                           key=lambda r: r.path))
    ds = ClassificationDataset(str(root), "val", tuple(ClassInfo(c, c) for c in "abc"), records)
    nets = [MeanColour(), MeanColour()]
    per_network, readable, skipped = score_split(nets, ds, schemes=[1, 10, 144], input_size=48, pixel_mean=MEAN,
                                                 pixel_std=STD, batch_size=200, channels_last=False)
    broken = [i for i, r in enumerate(records) if "broken" in r.path]
    assert readable.tolist() == [i not in broken for i in range(len(records))]
    assert [s["file"] for s in skipped] == [records[broken[0]].path] and "not an image" in skipped[0]["error"]
    assert any("broken.png" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for i, r in enumerate(records):
        if i in broken:
            continue
        image = torch.from_numpy(np.array(Image.open(r.path).convert("RGB"))).permute(2, 0, 1)
        for scheme in (1, 10, 144):
            crops = crop_boxes(image.shape[2], image.shape[1], scheme=scheme, input_size=48)
            x = F.normalize(F.to_dtype(render_crops(image, crops, input_size=48), torch.float32, scale=True),
                            list(MEAN), list(STD))
            want = torch.softmax(MeanColour()(x), dim=1).mean(dim=0).numpy()
            np.testing.assert_allclose(per_network[0][scheme][i], want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(per_network[1][scheme][i], want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the command


def _run(argv: list[str], monkeypatch, tmp_path: Path) -> tuple[int, str, str]:
    """``python -m classifier.evaluate <argv>`` in this process: (exit status, stdout, stderr)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from classifier import evaluate

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("DETECT_TRACEBACK", raising=False)
    monkeypatch.delenv("DETECT_CLI_SET_HYDRA_FULL_ERROR", raising=False)
    run_dir = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    monkeypatch.setattr(sys, "argv", ["classifier.evaluate", f"--config-path={REPO / 'conf'}", *argv,
                                      f"hydra.run.dir={run_dir}",
                                      "hydra/job_logging=none", "hydra/hydra_logging=none"])
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            evaluate.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    return code, out.getvalue(), err.getvalue()


def test_tiny_end_to_end_trains_the_missing_networks_then_reuses_them(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    args = ["profile=tiny", f"cache_dir={cache}", "evaluate.models=[1,2]", "evaluate.workers=0",
            "evaluate.progress=false"]
    code, out, err = _run(args, monkeypatch, tmp_path)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert [(r["models"], r["crops"], r["cost"]) for r in metrics["rows"]] == [
        (1, 1, 1), (1, 10, 10), (1, 144, 144), (2, 1, 2), (2, 10, 20), (2, 144, 288)]
    assert [n["seed"] for n in metrics["networks"]] == [0, 1]
    assert {n["source"] for n in metrics["networks"]} == {"trained"}
    assert metrics["num_images"] == 12 and metrics["num_unreadable"] == 0 and metrics["scored_now"] == 2
    for r in metrics["rows"]:
        assert 0 <= r["top5_error"] <= r["top1_error"] <= 1
    assert metrics["rows"][0]["delta_top5"] == 0.0
    # the 1 x 1 row is the single network's own 1-crop error, as pretraining records it
    assert metrics["rows"][0]["top1_error"] == metrics["networks"][0]["errors"]["1"]["top1_error"]
    assert "top-5 error" in out and "| 2 | 144 | 288 |" in out
    assert (tmp_path / "run0" / "table.md").read_text().startswith("| models | crops | cost |")

    # again: the networks come from the cache and their scores too; the same table
    code, _, err = _run(args, monkeypatch, tmp_path)
    assert code == 0, err
    again = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    assert again["rows"] == metrics["rows"] and again["scored_now"] == 0
    assert {n["source"] for n in again["networks"]} == {"cache"}

    # ONNX Runtime: same networks, the same errors (probabilities within float tolerance)
    code, _, err = _run([*args, "evaluate.runtime=onnx", "evaluate.crops=[1,10]"], monkeypatch, tmp_path)
    assert code == 0, err
    onnx = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    torch_rows = {(r["models"], r["crops"]): r for r in metrics["rows"]}
    for r in onnx["rows"]:
        assert r["top1_error"] == torch_rows[(r["models"], r["crops"])]["top1_error"]
        assert r["top5_error"] == torch_rows[(r["models"], r["crops"])]["top5_error"]
    assert onnx["scored_now"] == 2 and list((cache / "classify_eval" / "onnx").glob("*.onnx"))


def _folder_args(root: Path, tmp_path: Path, *weights: Path) -> list[str]:
    return ["profile=tiny", f"cache_dir={tmp_path / 'cache'}", "pretrain/data=image_folder",
            f"pretrain.data.root={root}", "pretrain.data.split_dir=''", "evaluate.workers=0",
            "evaluate.progress=false", f"evaluate.weights=[{','.join(map(str, weights))}]",
            f"evaluate.models=[{len(weights)}]"]


def _net(path: Path, num_classes: int = 3, width: float = 0.125) -> Path:
    torch.manual_seed(0)
    torch.save(GoogLeNet(num_classes, width=width, input_size=48, batch_norm=True).state_dict(), path)
    return path


def test_unreadable_images_are_skipped_named_and_counted(tmp_path, monkeypatch, caplog):
    root = _image_folder(tmp_path / "f", {"a1": (60, 48), "b1": (48, 70), "c1": (50, 50), "c2": (64, 40)})
    (root / "b" / "b2.png").write_bytes(b"\x89PNG truncated")
    code, out, err = _run(_folder_args(root, tmp_path, _net(tmp_path / "n.pt")), monkeypatch, tmp_path)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["num_unreadable"] == 1
    assert metrics["skipped"][0]["file"].endswith("b/b2.png")
    assert any("b2.png" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "1 unreadable skipped" in out


def _one_line_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_split_without_one_readable_image_is_a_one_line_error(tmp_path, monkeypatch):
    root = tmp_path / "f"
    for c in "abc":
        (root / c).mkdir(parents=True)
        (root / c / "x.jpg").write_bytes(b"")
    code, _, err = _run(_folder_args(root, tmp_path, _net(tmp_path / "n.pt")), monkeypatch, tmp_path)
    line = _one_line_error(code, err)
    assert "no readable image" in line and "3 files" in line and "empty file" in line
    assert not (tmp_path / "run0" / "metrics.json").exists()


def test_networks_mixing_class_counts_or_architectures_are_one_line_errors(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "f", {"a1": (60, 48), "b1": (48, 70), "c1": (50, 50)})
    a, five, wide = _net(tmp_path / "a.pt"), _net(tmp_path / "five.pt", 5), _net(tmp_path / "wide.pt", width=0.25)
    code, _, err = _run(_folder_args(root, tmp_path, a, five), monkeypatch, tmp_path)
    line = _one_line_error(code, err)
    assert "mix class counts" in line and "five.pt has 5 classes" in line and "a.pt has 3" in line
    code, _, err = _run(_folder_args(root, tmp_path, a, wide), monkeypatch, tmp_path)
    line = _one_line_error(code, err)
    assert "mix architectures" in line and "wide.pt (googlenet)" in line and "shape" in line
    # one network of another class count than the split
    code, _, err = _run(_folder_args(root, tmp_path, five), monkeypatch, tmp_path)
    assert "has 5 classes but the val split has 3" in _one_line_error(code, err)


def test_bad_evaluate_options_are_one_line_errors(tmp_path, monkeypatch):
    code, _, err = _run(["profile=tiny", f"cache_dir={tmp_path / 'cache'}", "evaluate.crops=[1,12]"],
                        monkeypatch, tmp_path)
    assert "evaluate.crops must be" in _one_line_error(code, err)
    code, _, err = _run(["profile=tiny", f"cache_dir={tmp_path / 'cache'}", "evaluate.models=[0]"],
                        monkeypatch, tmp_path)
    assert "evaluate.models must be" in _one_line_error(code, err)
    assert not (tmp_path / "cache").exists()


def test_the_evaluate_config_passes_the_schema_with_every_profile_and_reader():
    from hydra import compose, initialize_config_dir

    from detect.schema import validate_config

    conf = REPO / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for profile in sorted(p.stem for p in (conf / "profile").glob("*.yaml")):
            for reader in sorted(p.stem for p in (conf / "pretrain" / "data").glob("*.yaml")):
                cfg = compose(config_name="evaluate", overrides=[f"profile={profile}", f"pretrain/data={reader}",
                                                                 "pretrain.data.root=/data/x"])
                validate_config(cfg, "evaluate")


def test_a_users_torchvision_googlenet_file_is_scored_as_the_imagenet_command_does(tmp_path, monkeypatch):
    """The documented ImageNet command's network options (torchvision's GoogLeNet, its weights file,
    transform_input) on a hand-made class-per-folder split; a second network needs evaluate.weights."""
    from classifier.tv_googlenet import TorchvisionGoogLeNet

    root = _image_folder(tmp_path / "f", {"a1": (80, 64), "b1": (64, 90), "c1": (70, 70)})
    torch.manual_seed(0)
    weights = tmp_path / "googlenet.pth"
    torch.save(TorchvisionGoogLeNet(3, input_size=64, transform_input=True).state_dict(), weights)
    args = ["profile=tiny", f"cache_dir={tmp_path / 'cache'}", "pretrain/data=image_folder",
            f"pretrain.data.root={root}", "pretrain.data.split_dir=''", "evaluate.workers=0",
            "evaluate.progress=false", "classifier.model.arch=torchvision_googlenet", "classifier.model.width=1.0",
            "classifier.model.input_size=64", "classifier.model.batch_norm=null", f"classifier.model.weights={weights}",
            "classifier.model.transform_input=true", "evaluate.crops=[1,10]"]
    code, out, err = _run(args, monkeypatch, tmp_path)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert metrics["networks"] == [{"seed": None, "weights": str(weights), "source": "file", "key": None,
                                    "errors": metrics["networks"][0]["errors"]}]
    assert [(r["models"], r["crops"]) for r in metrics["rows"]] == [(1, 1), (1, 10)] and metrics["num_images"] == 3
    code, _, err = _run([*args, "evaluate.models=[1,2]"], monkeypatch, tmp_path)
    assert "list the ensemble's files in evaluate.weights" in _one_line_error(code, err)
