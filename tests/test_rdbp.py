"""The intra-class loss with real data-guided back-propagation (RDBP): gradient routing
(the issue's acceptance criterion), zero loss at the anchors, skipped classes, anchors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fer.losses import intra_class_loss

ANCHOR_MODES = ["class_mean", "per_sample"]


def feature_net() -> nn.Module:
    """A small conv + linear feature extractor (no batch statistics coupling samples)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 6)
    )


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x_real = torch.randn(6, 1, 8, 8, generator=g).requires_grad_(True)
    x_syn = torch.randn(5, 1, 8, 8, generator=g).requires_grad_(True)
    y_real = torch.tensor([0, 0, 1, 1, 2, 2])
    y_syn = torch.tensor([0, 1, 2, 0, 1])
    return x_real, y_real, x_syn, y_syn


@pytest.mark.parametrize("anchor", ANCHOR_MODES)
def test_stop_gradient_blocks_the_real_branch(anchor: str) -> None:
    net = feature_net()
    x_real, y_real, x_syn, y_syn = inputs()
    loss, stats = intra_class_loss(net(x_syn), y_syn, net(x_real), y_real,
                                   stop_gradient=True, anchor=anchor)
    assert loss.item() > 0 and int(stats["n_used"]) == 5 and int(stats["n_skipped"]) == 0
    loss.backward()
    # RDBP: d loss / d real inputs is exactly zero (not connected at all)
    assert x_real.grad is None or torch.count_nonzero(x_real.grad) == 0
    assert x_syn.grad is not None and torch.count_nonzero(x_syn.grad) > 0
    # the network still learns, through the synthetic branch
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("anchor", ANCHOR_MODES)
def test_without_stop_gradient_both_branches_get_gradients(anchor: str) -> None:
    net = feature_net()
    x_real, y_real, x_syn, y_syn = inputs()
    loss, _ = intra_class_loss(net(x_syn), y_syn, net(x_real), y_real,
                               stop_gradient=False, anchor=anchor)
    loss.backward()
    assert x_real.grad is not None and torch.count_nonzero(x_real.grad) > 0
    assert x_syn.grad is not None and torch.count_nonzero(x_syn.grad) > 0


@pytest.mark.parametrize("anchor", ANCHOR_MODES)
def test_loss_value_is_the_same_with_and_without_stop_gradient(anchor: str) -> None:
    torch.manual_seed(0)
    fs, fr = torch.randn(7, 5), torch.randn(9, 5)
    ys, yr = torch.randint(0, 3, (7,)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    a, _ = intra_class_loss(fs, ys, fr, yr, stop_gradient=True, anchor=anchor)
    b, _ = intra_class_loss(fs, ys, fr, yr, stop_gradient=False, anchor=anchor)
    assert torch.equal(a, b)


def test_zero_when_synthetic_features_equal_their_anchors() -> None:
    torch.manual_seed(0)
    fr = torch.randn(6, 4)
    yr = torch.tensor([0, 0, 0, 1, 1, 2])
    # class-mean anchor: the direction of the mean of the normalised real features
    centres = torch.stack([F.normalize(fr[yr == c], dim=1).mean(0) for c in range(3)])
    ys = torch.tensor([2, 0, 1, 1])
    fs = 3.0 * centres[ys]  # any positive scale: the loss uses normalised features
    loss, stats = intra_class_loss(fs, ys, fr, yr, anchor="class_mean")
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and int(stats["n_used"]) == 4
    # per-sample anchor: synthetic features equal to real features of their class
    fs = 0.5 * fr[[5, 0, 4, 1]]
    loss, _ = intra_class_loss(fs, torch.tensor([2, 0, 1, 0]), fr, yr, anchor="per_sample")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # and a mismatch gives a positive loss
    loss, _ = intra_class_loss(-fs, torch.tensor([2, 0, 1, 0]), fr, yr, anchor="per_sample")
    assert loss.item() > 1.0


def test_per_sample_uses_the_nearest_real_sample_of_the_class() -> None:
    fr = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    yr = torch.tensor([0, 0, 1])
    fs = torch.tensor([[1.0, 0.2]])  # nearest class-0 real feature: [1, 0]
    loss, _ = intra_class_loss(fs, torch.tensor([0]), fr, yr, anchor="per_sample")
    expected = (F.normalize(fs, dim=1) - fr[:1]).pow(2).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # class_mean anchors on the centre direction of [1, 0] and [0, 1] instead
    loss_mean, _ = intra_class_loss(fs, torch.tensor([0]), fr, yr, anchor="class_mean")
    centre = F.normalize(torch.tensor([[0.5, 0.5]]), dim=1)
    expected = (F.normalize(fs, dim=1) - centre).pow(2).sum()
    assert loss_mean.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("anchor", ANCHOR_MODES)
def test_classes_missing_from_the_real_batch_are_skipped(anchor: str) -> None:
    torch.manual_seed(0)
    fr, yr = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    fs = torch.randn(5, 3, requires_grad=True)
    ys = torch.tensor([0, 2, 1, 2, 3])  # classes 2 and 3 have no real sample
    loss, stats = intra_class_loss(fs, ys, fr, yr, anchor=anchor, num_classes=4)
    assert int(stats["n_used"]) == 2 and int(stats["n_skipped"]) == 3
    kept, _ = intra_class_loss(fs[[0, 2]], ys[[0, 2]], fr, yr, anchor=anchor)
    assert loss.item() == pytest.approx(kept.item(), rel=1e-6)  # mean over kept samples
    loss.backward()
    assert torch.count_nonzero(fs.grad[[1, 3, 4]]) == 0  # skipped: no gradient
    assert torch.count_nonzero(fs.grad[[0, 2]]) > 0
    # nothing to anchor: an exact zero that still back-propagates
    none, stats = intra_class_loss(fs[[1, 3]], ys[[1, 3]], fr, yr, anchor=anchor)
    assert none.item() == 0.0 and int(stats["n_skipped"]) == 2
    none.backward()


def test_rejects_bad_arguments() -> None:
    fr, yr = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="anchor"):
        intra_class_loss(fr, yr, fr, yr, anchor="nearest")
    with pytest.raises(ValueError, match="features"):
        intra_class_loss(torch.randn(4, 2), yr, fr, yr)
