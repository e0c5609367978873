"""The re-expression probe (fer.evaluation.generators): a perfect editor, a do-nothing
editor and an identity-destroying editor give the numbers a hand computation expects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fer.evaluation.generators import reexpress_all, reexpression_probe

K, H, W = 3, 8, 8
STEP = 60  # class c is written as pixel value c * STEP in row 0


class RowReader(nn.Module):
    """A "recogniser" reading the class from row 0; features = the other rows."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 1:, :].flatten(1) + self.dummy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = ((x[:, 0, 0, 0] + 1) / 2 * 255 / STEP).round().long().clamp(0, K - 1)
        return nn.functional.one_hot(level, K).float()


def faces(n_subjects: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_subjects * K, H, W, 1)).astype(np.uint8)
    y = np.tile(np.arange(K), n_subjects)
    x[:, 0] = (y * STEP).astype(np.uint8)[:, None, None]
    s = np.repeat([f"S{i}" for i in range(n_subjects)], K)
    return x, y, s


def paint(x: torch.Tensor, e: torch.Tensor, _source: torch.Tensor | None = None) -> torch.Tensor:
    """A perfect editor: writes the target class into row 0, keeps the rest."""
    out = x.clone()
    out[:, :, 0, :] = (e.argmax(1).float() * STEP / 255 * 2 - 1)[:, None, None]
    return out


def identity_features(images: np.ndarray) -> np.ndarray:
    return images[:, 1:].reshape(len(images), -1).astype(np.float64) - 127.5


def test_reexpress_all_covers_every_other_class() -> None:
    x, y, _ = faces(2)
    out, tgt, src = reexpress_all(paint, x, y, K, torch.device("cpu"))
    assert out.shape == (len(x) * (K - 1), H, W, 1)
    assert np.all(tgt != y[src]) and np.bincount(src).tolist() == [K - 1] * len(x)
    assert np.array_equal(out[:, 0, 0, 0] // STEP, tgt)


@pytest.mark.parametrize(
    "editor,expr,source,same_identity",
    [(paint, 1.0, 0.0, True), (lambda x, e, s: x, 0.0, 1.0, True), (lambda x, e, s: paint(-x, e), 1.0, 0.0, False)],
)
def test_probe_numbers(editor, expr: float, source: float, same_identity: bool) -> None:
    x, y, s = faces()
    r = reexpression_probe(editor, RowReader(), identity_features, x, y, s, x, y, K, "cpu")
    assert r["n"] == len(x) * (K - 1)
    assert r["real_val_acc"] == 1.0  # the reader is perfect on real faces
    assert r["expr_acc"] == pytest.approx(expr) and r["expr_acc_ratio"] == pytest.approx(expr)
    assert r["source_acc"] == pytest.approx(source)
    if same_identity:
        assert r["identity_cos"] == pytest.approx(1.0)
    else:
        assert r["identity_cos"] < r["identity_cos_other"]
    assert r["fid"] is not None and r["fid"] >= 0
