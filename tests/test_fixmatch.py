"""FixMatch (fer.methods.fixmatch) and its strong augmentation (fer.training.randaugment)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer.methods.fixmatch import fixmatch_loss, run_fixmatch_fold
from fer.params import FixmatchParams, ParamsError, RecognizerParams, section
from fer.training.protocol import UNLABELLED, FoldOutputs, prepare_fold
from fer.training.randaugment import OPS, strong_augment


def test_loss_matches_a_hand_computation_and_the_threshold_masks_the_right_samples():
    logits_x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    # weak-view confidences: sample 0 -> 0.97 (class 1), sample 1 -> 0.58 (class 0), sample 2 -> 0.99 (class 2)
    logits_weak = torch.tensor([[0.0, 4.2, 0.0], [1.0, 0.3, 0.0], [0.0, 0.0, 5.5]])
    logits_strong = torch.tensor([[0.5, 0.2, 0.1], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]])
    loss, terms = fixmatch_loss(logits_x, labels, logits_weak, logits_strong, threshold=0.95, lambda_u=0.5)

    def ce(z, y):  # -log softmax(z)[y]
        return -z[y] + math.log(sum(math.exp(v) for v in z))

    p = torch.softmax(logits_weak, 1).max(1).values.tolist()
    assert p[0] > 0.95 and p[1] < 0.95 and p[2] > 0.95
    loss_x = (ce([2.0, 0.0, 0.0], 0) + ce([0.0, 1.0, 0.0], 2)) / 2
    loss_u = (ce([0.5, 0.2, 0.1], 1) + 0.0 + ce([1.0, 1.0, 0.0], 2)) / 3  # sample 1 masked, still counted
    assert terms["train/mask_rate"].item() == pytest.approx(2 / 3)
    assert terms["train/loss_x"].item() == pytest.approx(loss_x, rel=1e-6)
    assert terms["train/loss_u"].item() == pytest.approx(loss_u, rel=1e-6)
    assert loss.item() == pytest.approx(loss_x + 0.5 * loss_u, rel=1e-6)
    # threshold 1: nothing passes, the unlabelled term is 0
    _, none = fixmatch_loss(logits_x, labels, logits_weak, logits_strong, threshold=1.0, lambda_u=1.0)
    assert none["train/mask_rate"].item() == 0 and none["train/loss_u"].item() == 0


def test_no_gradient_flows_through_the_weak_view():
    weak = torch.tensor([[0.0, 6.0]], requires_grad=True)
    strong = torch.tensor([[1.0, 0.0]], requires_grad=True)
    x = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss, _ = fixmatch_loss(x, torch.tensor([0]), weak, strong, threshold=0.9, lambda_u=1.0)
    loss.backward()
    assert weak.grad is None and strong.grad is not None and strong.grad.abs().sum() > 0


def test_strong_augmentation_is_seeded_in_range_and_changes_the_faces():
    x = torch.rand(64, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    a = strong_augment(x, torch.Generator().manual_seed(5))
    b = strong_augment(x, torch.Generator().manual_seed(5))
    c = strong_augment(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a - x).abs().flatten(1).amax(1) > 1e-4
    assert changed.float().mean() > 0.9  # two operations + cutout leave almost no face as it was
    # cutout alone: a grey square, the rest untouched
    d = strong_augment(x, torch.Generator().manual_seed(1), n_ops=0, cutout=0.5)
    grey = (d == 0.5) & (x != 0.5)
    assert grey.flatten(1).any(1).float().mean() > 0.8
    assert torch.equal(d[~grey], x[~grey])


@pytest.mark.parametrize("op", OPS)
def test_every_operation_keeps_shape_and_range(op, monkeypatch):
    import fer.training.randaugment as ra

    monkeypatch.setattr(ra, "OPS", (op,))
    x = torch.rand(8, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    y = ra.strong_augment(x, torch.Generator().manual_seed(0), n_ops=1, magnitude=1.0, cutout=0.0)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, x) == (op == "identity")


def toy_fold(masked: bool = True):
    """Two classes told apart by brightness; 8 labelled training, 4 val, 8 test, 32 unlabelled images."""
    rng = np.random.default_rng(0)
    n = 52
    labels = np.arange(n) % 2
    images = (rng.integers(0, 60, (n, 16, 16, 1)) + 150 * labels[:, None, None, None]).astype(np.uint8)
    idx = {"train": np.arange(0, 8), "val": np.arange(8, 12), "test": np.arange(12, 20), "unlabelled": np.arange(20, n)}
    fold = prepare_fold(images, labels, idx, ["a", "b"], device="cpu", seed=0)
    if not masked:
        fold.labels = labels.astype(np.int64)
    return fold


def tiny_cfg() -> RecognizerParams:
    return section({"baseline": {"arch": "vgg_small", "width": 4, "epochs": 2, "batch_size": 4, "amp": False}},
                   "baseline")


def test_a_fold_trains_with_its_unlabelled_part(tmp_path):
    fold = toy_fold()
    out = FoldOutputs(tmp_path / "m.pt", tmp_path / "m.json", tmp_path / "c.csv", log=tmp_path / "log.jsonl")
    metrics = run_fixmatch_fold(fold, tiny_cfg(), FixmatchParams(threshold=0.5), out)
    assert metrics["n_unlabelled"] == 32 and metrics["n_train"] == 8 and metrics["epochs"] == 2
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("train/loss_u" in r and 0 <= r["train/mask_rate"] <= 1 for r in rows)
    assert json.loads((tmp_path / "m.json").read_text())["n_unlabelled"] == 32


def test_unmasked_unlabelled_labels_are_refused(tmp_path):
    out = FoldOutputs(tmp_path / "m.pt", tmp_path / "m.json", tmp_path / "c.csv")
    with pytest.raises(ValueError, match="masked"):
        run_fixmatch_fold(toy_fold(masked=False), tiny_cfg(), FixmatchParams(), out)
    assert UNLABELLED == -1


def test_without_unlabelled_images_it_trains_on_labels_only(tmp_path):
    fold = toy_fold()
    del fold.idx["unlabelled"]
    out = FoldOutputs(tmp_path / "m.pt", tmp_path / "m.json", tmp_path / "c.csv", log=tmp_path / "log.jsonl")
    metrics = run_fixmatch_fold(fold, tiny_cfg(), FixmatchParams(), out)
    assert metrics["n_unlabelled"] == 0 and metrics["train/mask_rate"] is None
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("train/loss_u" not in r for r in rows)
    assert all(r["train/loss_x"] == pytest.approx(r["train/loss"]) for r in rows)  # the labels-only step's one term


@pytest.mark.parametrize("key, value", [("threshold", 0.0), ("unlabelled_ratio", 0.0), ("cutout", 1.5),
                                        ("strong_ops", -1)])
def test_bad_fixmatch_params_are_refused(key, value):
    with pytest.raises(ParamsError, match=f"fixmatch.{key}"):
        section({"fixmatch": {key: value}}, "fixmatch")


def test_cross_entropy_default_matches_torch():
    z, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    loss, _ = fixmatch_loss(z, y, torch.zeros(2, 3), torch.zeros(2, 3), threshold=0.95, lambda_u=1.0)
    assert loss.item() == pytest.approx(F.cross_entropy(z, y).item())
