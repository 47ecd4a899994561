"""ONNX Runtime scoring: export, cache keyed by the checkpoint, validation, re-export of a bad file."""

from __future__ import annotations

import builtins
import warnings

import numpy as np
import pytest
import torch

from classifier import onnx_runtime
from classifier.factory import build_classifier
from classifier.onnx_runtime import OnnxScorer, cached_export, check_export, onnx_path_for
from classifier.score import score_regions
from detect.errors import ConfigError, UserError

pytest.importorskip("onnxruntime")

SCORE = dict(batch_size=4, input_size=64, context_pad=4.0, pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def trained(tmp_path):
    """A tiny eval-mode classifier (width 0.125, 64 px) and the checkpoint file its weights came from."""
    torch.manual_seed(0)
    model = build_classifier("googlenet", num_classes=4, width=0.125, input_size=64).eval()
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save({"model": model.state_dict()}, checkpoint)
    return model, checkpoint


def test_onnx_scores_match_torch(trained):
    model, checkpoint = trained
    scorer = OnnxScorer(model, checkpoint=checkpoint, intra_op_threads=1, atol=1e-4)
    assert scorer.path.parent == checkpoint.parent and scorer.path.suffix == ".onnx"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    # 7 regions in batches of 4: the dynamic batch axis sees 4 and 3; one degenerate box
    boxes = np.array([[0, 0, 90, 70], [5, 5, 40, 30], [30, 20, 85, 69], [10, 40, 20, 60], [50, 5, 52, 9],
                      [3, 3, 3, 30], [60, 30, 90, 70]], np.float64)
    got = scorer(image, boxes, **SCORE)
    want = score_regions(model, image, boxes, **SCORE)
    assert got.shape == (7, 4)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_array_equal(got[5], [1, 0, 0, 0])  # zero width: background, as the torch scorer
    # the raw logits too, on a batch size never seen at export time
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(scorer.model(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="runtime=torch"):
        scorer(image, boxes, features=True, **SCORE)


def test_export_is_cached_by_checkpoint_hash(trained):
    model, checkpoint = trained
    path = cached_export(checkpoint, model, input_size=64, atol=1e-4)
    stamp = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid cached file is reused silently
        assert cached_export(checkpoint, model, input_size=64, atol=1e-4) == path
    assert path.stat().st_mtime_ns == stamp
    # new weights -> new checkpoint bytes -> a new export file beside the old one
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    torch.save({"model": model.state_dict()}, checkpoint)
    assert onnx_path_for(checkpoint) != path
    assert cached_export(checkpoint, model, input_size=64, atol=1e-4) != path


def test_corrupted_cache_is_detected_and_reexported(trained):
    model, checkpoint = trained
    path = cached_export(checkpoint, model, input_size=64, atol=1e-4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a killed copy
    assert "unreadable" in check_export(path, model, input_size=64, atol=1e-4)
    with pytest.warns(UserWarning, match="cached ONNX export is invalid"):
        again = cached_export(checkpoint, model, input_size=64, atol=1e-4)
    assert again == path and check_export(path, model, input_size=64, atol=1e-4) is None


def test_export_from_other_weights_is_detected(trained):
    model, checkpoint = trained
    path = cached_export(checkpoint, model, input_size=64, atol=1e-4)
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # the torch model no longer matches the file (checkpoint unchanged)
    assert "differ from torch's" in check_export(path, model, input_size=64, atol=1e-4)
    with pytest.warns(UserWarning, match="outputs differ"):
        cached_export(checkpoint, model, input_size=64, atol=1e-4)
    assert check_export(path, model, input_size=64, atol=1e-4) is None


def test_missing_packages_give_one_line_install_hint(trained, monkeypatch):
    model, checkpoint = trained
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(UserError, match=r"onnxruntime is not installed\): pip install -e '\.\[onnx\]'") as err:
        OnnxScorer(model, checkpoint=checkpoint, intra_op_threads=1, atol=1e-4)
    assert "\n" not in str(err.value)


def test_missing_checkpoint_and_bad_threads(trained, tmp_path):
    model, checkpoint = trained
    with pytest.raises(UserError, match="checkpoint not found"):
        onnx_path_for(tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match="intra_op_threads"):
        onnx_runtime.make_session(cached_export(checkpoint, model, input_size=64, atol=1e-4), intra_op_threads=-1)
