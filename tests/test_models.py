"""Shapes, parameter counts and initialisation of the backbones in fer.models."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fer.models import build_model
from fer.models.resnet import BasicBlock, stem_downsample

TORCHVISION_RESNET18_PARAMS = 11_689_512  # torchvision.models.resnet18(), 1000 classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["resnet18", "vgg_small"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [48, 64, 96, 112])
def test_output_and_feature_shapes(arch: str, channels: int, size: int) -> None:
    width = 8
    model = build_model(arch, 7, channels, width, input_size=size).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
    assert logits.shape == (2, 7)
    assert feats.shape == (2, 8 * width)
    assert model.feature_dim == 8 * width


def test_resnet18_width64_matches_torchvision_param_count() -> None:
    # ImageNet stem (inputs > 128 px): exactly torchvision's resnet18.
    standard = build_model("resnet18", 1000, 3, 64, input_size=224)
    assert n_params(standard) == TORCHVISION_RESNET18_PARAMS
    # Small-input stem (3x3 conv): within 1 %.
    small = build_model("resnet18", 1000, 3, 64, input_size=64)
    assert abs(n_params(small) - TORCHVISION_RESNET18_PARAMS) / TORCHVISION_RESNET18_PARAMS < 0.01


def test_resnet_stem_rule() -> None:
    assert [stem_downsample(s) for s in (32, 48, 64, 65, 96, 112, 128, 129, 224)] == [
        1, 1, 1, 2, 2, 2, 2, 4, 4,
    ]
    m48 = build_model("resnet18", 7, 1, 8, input_size=48)
    assert m48.conv1.kernel_size == (3, 3) and m48.conv1.stride == (1, 1)
    assert isinstance(m48.maxpool, nn.Identity)
    m96 = build_model("resnet18", 7, 1, 8, input_size=96)
    assert m96.conv1.kernel_size == (3, 3) and m96.conv1.stride == (2, 2)
    m224 = build_model("resnet18", 7, 3, 8, input_size=224)
    assert m224.conv1.kernel_size == (7, 7) and isinstance(m224.maxpool, nn.MaxPool2d)


def test_resnet_zero_init_residual_and_widths() -> None:
    model = build_model("resnet18", 7, 1, 16, input_size=48)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    assert all(torch.all(b.bn2.weight == 0) for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    widths = [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
              model.layer3[0].conv1.out_channels, model.layer4[0].conv1.out_channels]
    assert widths == [16, 32, 64, 128]


def test_vgg_small_structure() -> None:
    model = build_model("vgg_small", 5, 1, 8, input_size=48)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4


def test_build_model_rejects_unknown_arch_and_channels() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("resnet50", 7, 1, 8)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("resnet18", 7, 2, 8)


def test_backward_pass_reaches_all_parameters() -> None:
    for arch in ("resnet18", "vgg_small"):
        model = build_model(arch, 3, 1, 4, input_size=32)
        model(torch.rand(4, 1, 32, 32)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
