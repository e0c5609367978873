"""AC-CNN (fer.models.accnn) and complexity counting (fer.models.complexity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fer.models import ARCHS, build_model
from fer.models.accnn import ACCNN, ACModule, ChannelAffinity
from fer.models.complexity import complexity_rows, count_macs, count_parameters
from fer.params import RecognizerParams


@pytest.mark.parametrize(("in_channels", "size"), [(1, 64), (3, 48), (1, 16)])
def test_accnn_shapes_and_features(in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model("accnn", 5, in_channels, 8, input_size=size, dropout=0.3)
    assert isinstance(model, ACCNN) and model.feature_dim == 24 * 8  # the head's 1x1 expansion
    x = torch.randn(3, in_channels, size, size)
    assert model(x).shape == (3, 5)
    assert model.features(x).shape == (3, model.feature_dim)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.classify(model.features(x)), model(x))


def test_accnn_registered_and_validated() -> None:
    assert "accnn" in ARCHS
    assert RecognizerParams(arch="accnn").arch == "accnn"
    with pytest.raises(ValueError, match="in_channels"):
        ACCNN(5, in_channels=2)
    with pytest.raises(ValueError, match="at least 8"):
        ACCNN(5, input_size=4)
    with pytest.raises(ValueError, match="width >= 2"):
        ACCNN(5, width=1)
    with pytest.raises(ValueError, match="width >= 2"):  # refused by params validation, before any job
        RecognizerParams(arch="accnn", width=1)
    with pytest.raises(ValueError, match="channels"):
        ACModule(0, 4)


@pytest.mark.parametrize(("in_ch", "out_ch", "side", "out_side"), [(6, 6, 15, 8), (6, 12, 16, 8), (3, 5, 1, 1)])
def test_acmodule_shape_and_shortcut(in_ch: int, out_ch: int, side: int, out_side: int) -> None:
    torch.manual_seed(0)
    mod = ACModule(in_ch, out_ch)
    x = torch.randn(2, in_ch, side, side)
    assert mod(x).shape == (2, out_ch, out_side, out_side)
    # gamma starts at 0: the module is mini-Xception's residual block (two separable
    # convolutions, max-pool, projection shortcut)
    mod.eval()
    with torch.no_grad():
        plain = mod.pool(mod.sep2(mod.sep1(x))) + mod.shortcut(x)
        assert torch.allclose(mod(x), plain)
        # with gamma != 0 the affinity mixes channels before the pooling
        mod.affinity.gamma.fill_(0.5)
        f = mod.sep2(mod.sep1(x))
        mixed = mod.pool(f + 0.5 * torch.bmm(mod.affinity.affinity(f), f.flatten(2)).reshape(f.shape))
        assert torch.allclose(mod(x), mixed + mod.shortcut(x), atol=1e-6)


def test_channel_affinity_hand_computed() -> None:
    # three 2x2 channels: 0 and 1 have the same layout (1 scaled by 2), 2 another layout
    f = torch.tensor(
        [[[[1.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]]
    )  # 1, 3, 2, 2
    aff = ChannelAffinity(pool=2, tau=1.0, gamma=1.0)
    # centred descriptors: corr(0, 1) = 1, corr(0, 2) = corr(1, 2) = -0.25 / 0.75 = -1/3
    corr = np.array([[1, 1, -1 / 3], [1, 1, -1 / 3], [-1 / 3, -1 / 3, 1]])
    a = np.exp(corr) / np.exp(corr).sum(1, keepdims=True)
    a_t = aff.affinity(f)[0].detach().numpy()
    np.testing.assert_allclose(a_t, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a_t.sum(1), 1.0, rtol=1e-6)
    flat = f[0].reshape(3, 4).numpy()
    expected = flat + a @ flat
    np.testing.assert_allclose(aff(f)[0].reshape(3, 4).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    # gamma 0: identity
    aff0 = ChannelAffinity(pool=2, tau=1.0, gamma=0.0)
    assert torch.equal(aff0(f), f)
    # the affinity does not depend on a channel's scale or offset, only on its layout
    g = f.clone()
    g[0, 2] = 5 * g[0, 2] + 3
    np.testing.assert_allclose(aff.affinity(g)[0].detach().numpy(), a, rtol=1e-5, atol=1e-6)


def test_counts_on_tiny_net_by_hand() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    # params: conv 1*2*9 + 2 bias, linear 32*3 + 3
    assert count_parameters(net) == 18 + 2 + 96 + 3
    # MACs: conv 2*4*4 outputs * 1*3*3, linear 3 outputs * 32 inputs
    assert count_macs(net, (1, 4, 4)) == 32 * 9 + 3 * 32
    assert count_macs(net, (5, 1, 4, 4)) == 5 * (32 * 9 + 3 * 32)
    net.train()
    count_macs(net, (1, 4, 4))
    assert net.training  # mode restored
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(net, (4, 4))


def test_acmodule_macs_by_hand() -> None:
    mod = ACModule(2, 4, pool=8)
    # on an 8x8 input: separable 1 = depthwise 2*64 outputs * 9 + pointwise 4*64 outputs * 2;
    # separable 2 = depthwise 4*64 * 9 + pointwise 4*64 * 4; affinity (C=4, 8x8 map, pooled
    # grid 8x8 = 64 cells): 4*4*64 descriptors + 4*4*64 mixing; shortcut 1x1 stride 2:
    # 4*4*4 outputs * 2
    assert count_macs(mod, (2, 8, 8)) == (128 * 9 + 256 * 2) + (256 * 9 + 256 * 4) + (4 * 4 * 64 * 2) + 64 * 2
    # depthwise 2*9, pointwise 2*4, BN 2*4; depthwise 4*9, pointwise 4*4, BN 2*4; gamma;
    # shortcut 2*4, BN 2*4
    assert count_parameters(mod) == (18 + 8 + 8) + (36 + 16 + 8) + 1 + (8 + 8)


def test_accnn_layout_and_macs_compose_by_hand() -> None:
    """Stem, four AC modules (descriptors on 8x8 cells in the first two, 4x4 in the last
    two), the 1x1 expansion head to 24 x width, and the classifier, counted part by part
    (width 4, 16 px grey)."""
    model = ACCNN(7, in_channels=1, width=4, input_size=16)
    mods = [m for m in model.stages if isinstance(m, ACModule)]
    assert [(m.in_ch, m.out_ch) for m in mods] == [(2, 4), (4, 8), (8, 16), (16, 32)]
    assert [m.affinity.pool for m in mods] == [8, 8, 4, 4]
    head = model.stages[-1]
    assert isinstance(head[0], nn.Conv2d) and (head[0].in_channels, head[0].out_channels) == (32, 96)
    assert model.feature_dim == 96 and model.fc.in_features == 96
    stem = 2 * 256 * 9 + 2 * 256 * 2 * 9  # 3x3 convs 1 -> 2 and 2 -> 2 on 16x16
    modules = (count_macs(ACModule(2, 4), (2, 16, 16)) + count_macs(ACModule(4, 8), (4, 8, 8))
               + count_macs(ACModule(8, 16, pool=4), (8, 4, 4)) + count_macs(ACModule(16, 32, pool=4), (16, 2, 2)))
    head_and_fc = 32 * 96 * 1 + 96 * 7  # 1x1 expansion on the final 1x1 grid, linear
    assert count_macs(model, (1, 16, 16)) == stem + modules + head_and_fc
    # the head sees the last module's ReLU output and the pooled features are its output
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        before_head = nn.Sequential(*list(model.stages)[:-1])(model.stem(x))
        assert (before_head >= 0).all()
        assert torch.allclose(model.features(x), head(before_head).mean(dim=(2, 3)), atol=1e-6)


def test_accnn_is_smaller_than_references() -> None:
    rows = {r["arch"]: r for r in complexity_rows(7, 1, 64)}
    assert set(rows) == {"accnn", "vgg_small", "resnet18"}
    assert rows["resnet18"]["width"] == 64 and rows["vgg_small"]["width"] == 16
    for ref in ("vgg_small", "resnet18"):
        assert rows["accnn"]["params"] < rows[ref]["params"]
        assert rows["accnn"]["macs"] < rows[ref]["macs"]
    # issue 12: no more than a third of the small VGG's multiply-accumulates
    assert rows["accnn"]["macs"] <= rows["vgg_small"]["macs"] / 3
    with pytest.raises(ValueError):
        complexity_rows(7, 2, 64)


def test_size_table_rows_follow_the_configured_widths() -> None:
    """The report's size table lists the recognisers as params.yaml configures them."""
    rows = complexity_rows(7, 1, 64, [("accnn", 8), ("vgg_small", 32)])
    assert [(r["arch"], r["width"]) for r in rows] == [("accnn", 8), ("vgg_small", 32)]
    default = {r["arch"]: r for r in complexity_rows(7, 1, 64)}
    assert rows[0]["macs"] < default["accnn"]["macs"] and rows[1]["macs"] > default["vgg_small"]["macs"]
