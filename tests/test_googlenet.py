"""GoogLeNet (Table 1), torchvision GoogLeNet arch, factory and safe weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classifier.factory import build_classifier
from classifier.fuse import fold_batch_norm
from classifier.googlenet import CLASS_HEAD_KEYS, TRUNK_LAYERS, ClassifierOutput, GoogLeNet, map_sizes
from classifier.inception import Inception, InceptionSpec, scale_channels
from classifier.weights import load_weights, read_state_dict
from detect.errors import ConfigError, UserError


def tiny(num_classes: int = 5, **kwargs) -> GoogLeNet:
    torch.manual_seed(0)
    return build_classifier("googlenet", num_classes=num_classes, width=0.25, input_size=64, **kwargs)


def images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_scale_channels_rounds_half_up_with_floor_of_one():
    assert scale_channels(64, 1.0) == 64
    assert scale_channels(16, 0.25) == 4
    assert scale_channels(6, 0.25) == 2  # 1.5 rounds up (Python's round() would give 2, but 0.5 -> 0)
    assert scale_channels(2, 0.25) == 1  # 0.5 rounds up
    assert scale_channels(16, 0.01) == 1  # never a zero-channel branch


def test_inception_has_the_papers_5x5_branch():
    block = Inception(192, InceptionSpec(64, 96, 128, 16, 32, 32))
    assert block.branch3[1].conv.kernel_size == (5, 5)
    assert block.branch3[1].conv.padding == (2, 2)
    out = block(torch.randn(1, 192, 7, 7))
    assert out.shape == (1, 64 + 128 + 32 + 32, 7, 7)  # 256 = Table 1's 3a output depth


def test_full_width_224_output_shape_and_maps():
    torch.manual_seed(0)
    model = build_classifier("googlenet", num_classes=201).eval()
    assert map_sizes(224) == {8: 28, 16: 14, 32: 7}  # Table 1's 28x28, 14x14, 7x7
    assert model.feature_dim == 1024
    assert model.aux1.fc1.in_features == 128 * 4 * 4  # 5x5/3 pool of a 14x14 map -> 4x4 (paper)
    with torch.no_grad():
        out = model(images(1, 224))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 201)


def test_width_quarter_64px_shapes_in_train_and_eval():
    model = tiny(num_classes=7)
    # 64 px: conv1 -> 32, pool -> 16, pool -> 8 (stem), pool3 -> 4, pool4 -> 2
    assert map_sizes(64) == {8: 8, 16: 4, 32: 2}
    assert model.feature_dim == 96 + 96 + 32 + 32  # 5b's #1x1/#3x3/#5x5/pool proj 384/384/128/128 at width 0.25
    model.train()
    out = model(images())
    assert isinstance(out, ClassifierOutput)
    assert out.logits.shape == (2, 7) and [a.shape for a in out.aux] == [(2, 7), (2, 7)]
    model.eval()
    with torch.no_grad():
        assert model(images()).shape == (2, 7)


def test_aux_heads_only_run_in_train_mode():
    model = tiny()
    calls = {"aux1": 0, "aux2": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls[name] + 1))
    model.eval()
    with torch.no_grad():
        out = model(images())
    assert isinstance(out, torch.Tensor)
    assert calls == {"aux1": 0, "aux2": 0}  # not even computed at inference
    model.train()
    out = model(images())
    assert len(out.aux) == 2
    assert calls == {"aux1": 1, "aux2": 1}


def test_without_aux_logits_train_mode_returns_plain_logits():
    model = tiny(aux_logits=False).train()
    assert model.aux1 is None and model.aux2 is None
    out = model(images())
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_forward_rejects_other_input_sizes():
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        tiny()(images(1, 96))


def test_trunk_slices_compose_to_forward_and_feature_info_matches():
    model = tiny().eval()
    x = images()
    with torch.no_grad():
        c4 = model.trunk(x, until="inception4e")
        logits = model.head(model.trunk(c4, start="maxpool4"))
        assert torch.allclose(logits, model(x), atol=1e-6)
        assert torch.allclose(model.pooled(x), model.features(x).mean(dim=(2, 3)), atol=1e-6)
        for layer in TRUNK_LAYERS:
            info = model.feature_info(layer)
            fmap = model.features(x, layer)
            assert fmap.shape == (2, info.channels, 64 // info.stride, 64 // info.stride)
        # the trunk runs on any image size (whole-image RoI mode)
        assert model.features(images(1, 128), "inception4e").shape[-2:] == (8, 8)
    with pytest.raises(ValueError, match="unknown trunk layer"):
        model.trunk(x, until="inception6a")


def test_batch_norm_option_replaces_conv_bias_and_lrn():
    plain, bn = tiny(), tiny(batch_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, nn.LocalResponseNorm) for m in plain.modules())
    assert plain.stem.conv1.conv.bias is not None
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == sum(
        isinstance(m, nn.Conv2d) for m in bn.modules())
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in bn.modules())
    assert bn.stem.conv1.conv.bias is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(arch="resnet"), "unknown classifier arch"),
        (dict(width=0.0), "width must be a positive"),
        (dict(input_size=32), "input_size must be an integer >= 47"),
        (dict(num_classes=0), "num_classes must be a positive"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(arch="torchvision_googlenet", width=0.5), "no width multiplier"),
        (dict(arch="torchvision_googlenet", width=1.0, batch_norm=False), "always uses batch norm"),
        (dict(transform_input=True), "only available for arch=torchvision_googlenet"),
    ],
)
def test_factory_rejects_bad_config(kwargs, match):
    args = dict(arch="googlenet", num_classes=5, width=0.25, input_size=64) | kwargs
    with pytest.raises(ConfigError, match=match):
        build_classifier(args.pop("arch"), **args)


def test_folding_batch_norm_keeps_the_outputs_and_leaves_the_model_alone():
    model = tiny(batch_norm=True)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics far from the initial (0, 1), so the fold has work to do
            model(images(8) * 3 + 1)
    model.eval()
    folded = fold_batch_norm(model)
    x = images(4)
    with torch.no_grad():
        reference, out = model(x), folded(x)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 50  # the original keeps its layers
    model.train()
    assert not folded.training  # eval-mode copy, independent of the original's mode
    # the paper's plain network has nothing to fold: same outputs exactly
    plain = tiny().eval()
    with torch.no_grad():
        assert torch.equal(fold_batch_norm(plain)(x), plain(x))
    # torchvision's googlenet blocks are folded too
    torch.manual_seed(0)
    tv = build_classifier("torchvision_googlenet", num_classes=3, input_size=64).eval()
    with torch.no_grad():
        torch.testing.assert_close(fold_batch_norm(tv)(x), tv(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fold_batch_norm(tv).modules())


# --- weights -------------------------------------------------------------------------------


def test_torchvision_arch_roundtrips_a_state_dict(tmp_path):
    torch.manual_seed(0)
    source = build_classifier("torchvision_googlenet", num_classes=3, input_size=64).eval()
    path = tmp_path / "tv.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)  # a different initialisation, overwritten by the file
    loaded = build_classifier("torchvision_googlenet", num_classes=3, input_size=64, weights=str(path)).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
        assert loaded.feature_info("inception4e") == (832, 16)
        assert loaded.features(x, "inception4e").shape == (2, 832, 4, 4)
    loaded.train()
    out = loaded(x)
    assert isinstance(out, ClassifierOutput) and [a.shape for a in out.aux] == [(2, 3), (2, 3)]
    # a Table-1 checkpoint is not a torchvision one: the first model key is named
    torch.save(tiny().state_dict(), path)
    with pytest.raises(UserError, match=r"key 'conv1\.conv\.weight' is missing from the file") as err:
        build_classifier("torchvision_googlenet", num_classes=3, input_size=64, weights=path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_googlenet_weights_roundtrip_and_width_mismatch(tmp_path):
    source = tiny().eval()
    path = tmp_path / "w.pt"
    torch.save({"model": source.state_dict(), "iteration": 7}, path)  # a wrapped training checkpoint
    loaded = build_classifier("googlenet", num_classes=5, width=0.25, input_size=64, weights=path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images()), source(images()))
    with pytest.raises(UserError) as err:
        build_classifier("googlenet", num_classes=5, width=0.5, input_size=64, weights=path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    # width 0.25 -> 16 stem channels, width 0.5 -> 32: the first key of the model is named
    assert "key 'stem.conv1.conv.weight' has shape (16, 3, 7, 7) in the file but (32, 3, 7, 7) in the model" in msg


def test_class_count_heads_are_replaced_when_fine_tuning_but_strict_load_names_them(tmp_path):
    source = tiny(num_classes=10)
    path = tmp_path / "imagenet_like.pt"
    torch.save(source.state_dict(), path)
    model = tiny(num_classes=5)
    fresh_fc = model.fc.weight.detach().clone()
    report = load_weights(model, path, replaceable=CLASS_HEAD_KEYS)
    assert set(report.reinitialised) == {p + s for p in ("fc.", "aux1.fc2.", "aux2.fc2.") for s in ("weight", "bias")}
    assert torch.equal(model.inception5b.branch3[1].conv.weight, source.inception5b.branch3[1].conv.weight)
    assert torch.equal(model.fc.weight, fresh_fc)
    # resuming (strict) must refuse a checkpoint of another num_classes
    with pytest.raises(UserError, match=r"key 'aux1\.fc2\.weight' has shape \(10, 256\) in the file but \(5, 256\)"):
        load_weights(tiny(num_classes=5), path)


def test_aux_heads_are_optional_in_the_file(tmp_path):
    path = tmp_path / "no_aux.pt"
    torch.save(tiny(aux_logits=False).state_dict(), path)
    model = build_classifier("googlenet", num_classes=5, width=0.25, input_size=64, weights=path)
    assert model.aux1 is not None
    with pytest.raises(UserError, match="key 'aux1.conv.conv.weight' is missing from the file"):
        load_weights(tiny(), path)


def test_unreadable_weights_files_give_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="weights file not found"):
        read_state_dict(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file") as err:
        read_state_dict(corrupt)
    assert "\n" not in str(err.value)
    not_sd = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_sd)
    with pytest.raises(UserError, match="not a state dict"):
        read_state_dict(not_sd)
    pickled = tmp_path / "object.pt"
    torch.save({"w": torch.zeros(1), "obj": ConfigError("x")}, pickled)  # weights_only refuses arbitrary classes
    with pytest.raises(UserError, match="cannot read weights file") as err:
        read_state_dict(pickled)
    assert "\n" not in str(err.value)
