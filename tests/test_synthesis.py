"""Synthetic-set construction (fer.methods.synthesis) and its quality measures
(fer.evaluation.synthetic_quality), with tiny stand-in networks (no FESGAN import)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch import Tensor

from fer.data.aligned import load_aligned
from fer.evaluation.synthetic_quality import (
    expression_accuracy,
    frechet_distance,
    identity_diversity,
    quality_report,
)
from fer.models.fesgan import Synthesizer
from fer.training.batches import ImageStore, normalize, to_uint8
from fer.methods.synthesis import (
    MANIFEST_COLUMNS,
    SyntheticSet,
    split_counts,
    synthesize_set,
    write_synthetic,
)

CLASSES = ["anger", "happy", "sad"]
K = len(CLASSES)
H = W = 8
C = 1
Z_DIM = 4
STEP = 30  # label c is written as pixel value c * STEP in row 0


def to_unit_range(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> network input in [-1, 1] (N, C, H, W), on the CPU."""
    return normalize(ImageStore(x_uint8, torch.device("cpu")).batch(torch.arange(len(x_uint8))))


class StandInGenerator(nn.Module):
    """G(z, expr) -> (N, C, H, W) in [-1, 1]: row 0 encodes the expression exactly, the
    rest is a smooth function of z (the "identity")."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.proj = nn.Parameter(torch.linspace(-1, 1, Z_DIM * H * W).reshape(Z_DIM, H * W))

    def forward(self, z: Tensor, expr: Tensor) -> Tensor:
        body = torch.tanh(z @ self.proj).reshape(-1, C, H, W)  # N, C, H, W
        level = expr.argmax(1).float() * STEP / 255.0 * 2.0 - 1.0  # N
        body[:, :, 0, :] = level[:, None, None]
        return body


class StandInEncoder(nn.Module):
    """E(x) -> (N, z_dim) in (-1, 1) from the rows below the expression row."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.linspace(-0.2, 0.2, (H - 1) * W * Z_DIM).reshape(-1, Z_DIM))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x[:, 0, 1:, :].flatten(1) @ self.proj)


class StandInClassifier(nn.Module):
    """Perfect for images whose pixel (0, 0) is label * STEP; ``features`` = rows 1.."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def features(self, x: Tensor) -> Tensor:
        return x[:, 0, 1:, :].flatten(1) + 1.0 + self.dummy  # N, (H-1)*W, positive

    def forward(self, x: Tensor) -> Tensor:
        level = ((x[:, 0, 0, 0] + 1.0) / 2.0 * 255.0 / STEP).round().long().clamp(0, K - 1)
        return nn.functional.one_hot(level, K).float() * 10.0


def make_train(n_subjects: int = 5, per_subject: int = 4, seed: int = 0):
    """Training part: every subject has images of several classes."""
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    images = rng.integers(0, 256, size=(n, H, W, C), dtype=np.uint8)
    subjects = np.repeat([f"S{i:03d}" for i in range(n_subjects)], per_subject)
    labels = np.tile(np.arange(per_subject) % K, n_subjects).astype(np.int64)
    images[:, 0, :, :] = (labels * STEP).astype(np.uint8)[:, None, None]
    return images, labels, subjects


def synth(seed: int = 1, per_class: int = 5, prior_fraction: float = 0.4, **kw) -> SyntheticSet:
    images, labels, subjects = make_train(**kw)
    torch.manual_seed(0)
    return synthesize_set(
        Synthesizer(StandInGenerator(), StandInEncoder()),
        images,
        labels,
        subjects,
        CLASSES,
        per_class=per_class,
        prior_fraction=prior_fraction,
        seed=seed,
        device="cpu",
        batch_size=4,
    )


# ----------------------------------------------------------------------- synthesis
def test_split_counts() -> None:
    assert split_counts(5, 0.4) == (2, 3)
    assert split_counts(10, 0.0) == (0, 10)
    assert split_counts(10, 1.0) == (10, 0)
    with pytest.raises(ValueError):
        split_counts(0, 0.5)
    with pytest.raises(ValueError):
        split_counts(4, 1.5)


def test_uint8_mapping_round_trips() -> None:
    x = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    assert np.array_equal(to_uint8(to_unit_range(x)), x)
    y = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5)
    assert to_uint8(y).ravel().tolist() == [0, 0, 128, 255, 255]


def test_class_balance_and_source_counts() -> None:
    s = synth(per_class=5, prior_fraction=0.4)
    assert s.images.shape == (K * 5, H, W, C) and s.images.dtype == np.uint8
    assert np.bincount(s.labels, minlength=K).tolist() == [5] * K
    for c in range(K):
        in_c = s.labels == c
        assert int((s.source[in_c] == "prior").sum()) == 2
        assert int((s.source[in_c] == "reexpressed").sum()) == 3
        # the prior pool: the same identities rendered in every class
        assert sorted(s.identity[in_c & (s.source == "prior")]) == ["prior-00000", "prior-00001"]
    # the generator really rendered the target expression
    assert np.array_equal(s.images[:, 0, 0, 0], (s.labels * STEP).astype(np.uint8))


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_all_prior_or_all_reexpressed(fraction: float) -> None:
    s = synth(per_class=4, prior_fraction=fraction)
    assert np.bincount(s.labels, minlength=K).tolist() == [4] * K
    assert ((s.source == "prior").all()) == (fraction == 1.0)
    assert ((s.source == "reexpressed").all()) == (fraction == 0.0)


def test_reexpressed_rows_come_from_training_subjects() -> None:
    images, labels, subjects = make_train()
    s = synth(per_class=5, prior_fraction=0.4)
    re = s.source == "reexpressed"
    assert (s.source_index[~re] == -1).all() and (s.source_label[~re] == -1).all()
    idx = s.source_index[re]
    assert ((idx >= 0) & (idx < len(images))).all()
    assert np.array_equal(s.identity[re], subjects[idx])
    assert set(s.identity[re]) <= set(subjects)
    assert np.array_equal(s.source_label[re], labels[idx])
    # every subject has images of other classes -> always re-expression, never reconstruction
    assert (s.source_label[re] != s.labels[re]).all()
    # 9 re-expressed slots, 5 subjects: round robin -> every subject, 1 or 2 times each
    counts = np.unique(s.identity[re], return_counts=True)[1]
    assert len(counts) == 5 and counts.min() >= 1 and counts.max() - counts.min() <= 1
    # the rendered code is the encoder's code of the source image
    with torch.no_grad():
        codes = StandInEncoder()(to_unit_range(images[idx])).numpy()
    np.testing.assert_allclose(s.codes[re], codes, atol=1e-6)
    # prior codes are in [-1, 1]
    assert np.abs(s.codes[~re]).max() <= 1.0


def test_same_label_fallback_when_subject_has_one_class() -> None:
    images, labels, subjects = make_train()
    labels = np.zeros_like(labels)  # every image is class 0
    s = synthesize_set(
        Synthesizer(StandInGenerator(), StandInEncoder()), images, labels, subjects, CLASSES,
        per_class=3, prior_fraction=0.0, seed=0, device="cpu",
    )
    re_c0 = s.labels == 0
    assert (s.source_label[re_c0] == 0).all()  # reconstruction is the only option
    assert (s.source_label[~re_c0] != s.labels[~re_c0]).all()


CLASSES_N = ["anger", "happy", "neutral"]  # the same indices as CLASSES, class 2 named neutral


def synth_from(labels: np.ndarray, classes: list[str], reexpress_from: str, per_class: int = 8) -> SyntheticSet:
    images, _, subjects = make_train()
    return synthesize_set(
        Synthesizer(StandInGenerator(), StandInEncoder()), images, labels, subjects, classes,
        per_class=per_class, prior_fraction=0.25, seed=5, device="cpu", reexpress_from=reexpress_from,
    )


def test_reexpress_from_neutral_prefers_the_subjects_neutral_images(tmp_path: Path) -> None:
    _, labels, subjects = make_train()  # labels per subject: 0, 1, 2, 0 (one neutral image each)
    labels = labels.copy()
    labels[(subjects == "S004") & (labels == 2)] = 1  # S004 has no neutral image
    s = synth_from(labels, CLASSES_N, "neutral")
    re = s.source == "reexpressed"
    has_neutral = np.isin(s.identity, np.unique(subjects[labels == 2]))
    to_expr = re & (s.labels != 2)
    # a non-neutral target starts from the subject's neutral image wherever it has one ...
    assert to_expr.sum() > 0 and (s.source_label[to_expr & has_neutral] == 2).all()
    assert np.array_equal(s.identity[re], subjects[s.source_index[re]])  # ... of that same subject
    # ... from another expression otherwise; a neutral target from another expression
    assert (to_expr & ~has_neutral).sum() > 0
    assert (s.source_label[to_expr & ~has_neutral] != s.labels[to_expr & ~has_neutral]).all()
    assert (s.source_label[to_expr & ~has_neutral] != 2).all()
    assert (s.source_label[re & (s.labels == 2)] != 2).all()
    # the round robin over subjects is kept: every subject contributes, evenly
    counts = np.unique(s.identity[re], return_counts=True)[1]
    assert len(counts) == 5 and counts.max() - counts.min() <= 1
    write_synthetic(tmp_path, s, CLASSES_N, {})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["reexpress_from"] == "neutral"
    assert meta["n_neutral_sources"] == int((to_expr & has_neutral).sum()) > 0


def test_reexpress_from_other_is_the_rule_without_a_neutral_preference(caplog: pytest.LogCaptureFixture) -> None:
    _, labels, _ = make_train()
    other = synth_from(labels, CLASSES_N, "other")
    re = other.source == "reexpressed"
    assert (other.source_label[re] != other.labels[re]).all()
    assert (other.source_label[re & (other.labels != 2)] != 2).any()  # not only neutral sources
    # a label set without "neutral": "neutral" is logged and falls back to the same rule
    with caplog.at_level("WARNING", logger="fer.methods.synthesis"):
        unnamed = synth_from(labels, CLASSES, "neutral")
    assert "no 'neutral'" in caplog.text
    assert np.array_equal(unnamed.source_index, other.source_index)
    assert not np.array_equal(synth_from(labels, CLASSES_N, "neutral").source_index, other.source_index)
    with pytest.raises(ValueError, match="reexpress_from"):
        synth_from(labels, CLASSES_N, "any")


def test_deterministic_and_seed_dependent() -> None:
    state = torch.get_rng_state()
    a, b = synth(seed=3), synth(seed=3)
    for f in ("images", "labels", "source", "identity", "source_index", "codes"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    c = synth(seed=4)
    assert not np.array_equal(a.codes, c.codes)
    torch.set_rng_state(state)


def test_global_rng_and_module_mode_untouched() -> None:
    images, labels, subjects = make_train()
    g, e = StandInGenerator(), StandInEncoder()
    g.train()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    synthesize_set(Synthesizer(g, e), images, labels, subjects, CLASSES, per_class=2, prior_fraction=0.5,
                   seed=0, device="cpu")
    assert torch.equal(torch.get_rng_state(), before)
    assert g.training and e.training


def test_generator_geometry_mismatch_raises() -> None:
    images, labels, subjects = make_train()
    big = np.zeros((len(images), H * 2, W * 2, C), np.uint8)
    with pytest.raises(ValueError, match="geometry"):
        synthesize_set(Synthesizer(StandInGenerator(), StandInEncoder()), big, labels, subjects, CLASSES,
                       per_class=2, prior_fraction=1.0, seed=0, device="cpu")


def test_write_synthetic_round_trips(tmp_path: Path) -> None:
    s = synth(per_class=5, prior_fraction=0.4)
    out = tmp_path / "synthetic"
    write_synthetic(out, s, CLASSES, {"fold": 2, "generator": "fesgan"})
    loaded = load_aligned(out / "images.npy", out / "manifest.csv", out / "meta.json")
    assert np.array_equal(loaded.images, s.images)
    assert np.array_equal(loaded.labels, s.labels)
    assert np.array_equal(loaded.subjects, s.identity)
    assert loaded.classes == CLASSES
    assert loaded.paths[0] == "synthetic/prior/0"
    header = (out / "manifest.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == MANIFEST_COLUMNS
    meta = json.loads((out / "meta.json").read_text())
    assert meta["synthetic"] is True and meta["size"] == H and meta["channels"] == "gray"
    assert meta["per_class"] == 5 and meta["prior_fraction"] == 0.4
    assert meta["n_prior"] == 2 * K and meta["n_reexpressed"] == 3 * K
    assert meta["n_prior_identities"] == 2 and meta["n_source_subjects"] == 5
    assert meta["fold"] == 2 and meta["generator"] == "fesgan"
    with pytest.raises(ValueError, match="override"):
        write_synthetic(out, s, CLASSES, {"synthetic": False})


# ------------------------------------------------------------------------- quality
def test_frechet_distance_closed_form_diagonal() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    a = mu_a + rng.standard_normal((n, 3)) * np.sqrt(var_a)
    b = mu_b + rng.standard_normal((n, 3)) * np.sqrt(var_b)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()  # 5 + 2
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.1)
    # invariant under a common rotation (non-diagonal covariances)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(expected, abs=0.1)


def test_frechet_distance_one_dim_and_identical() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, size=(100_000, 1))
    b = rng.normal(1.0, 2.0, size=(100_000, 1))
    assert frechet_distance(a, b) == pytest.approx(1.0 + (1.0 - 2.0) ** 2, abs=0.05)
    x = rng.standard_normal((500, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_singular_covariances_is_finite() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((10, 32)), rng.standard_normal((12, 32)) + 0.5
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 0


def test_identity_diversity_collapsed_vs_diverse() -> None:
    rng = np.random.default_rng(0)
    n_subj, d = 20, 64
    centres = rng.standard_normal((n_subj, d))
    train = np.repeat(centres, 5, axis=0) + 0.3 * rng.standard_normal((n_subj * 5, d))
    subjects = np.repeat([f"S{i:02d}" for i in range(n_subj)], 5)
    diverse = rng.standard_normal((10, d))  # new people, as spread out as the real ones
    collapsed = centres[[0, 1] * 5] + 0.05 * rng.standard_normal((10, d))  # two subjects' copies
    dv = identity_diversity(diverse, train, subjects)
    cl = identity_diversity(collapsed, train, subjects)
    # 10 random new people among 20 subjects: ~8 distinct nearest subjects by chance
    assert cl["distinct_nn_subjects"] == 2 and dv["distinct_nn_subjects"] >= 6
    assert cl["nn_shared_frac"] == 1.0 and dv["nn_shared_frac"] <= 0.6
    assert cl["pairwise_ratio"] < 0.7 and 0.8 < dv["pairwise_ratio"] < 1.2
    assert cl["nn_dist_median"] < 0.1 < dv["nn_dist_median"]
    assert cl["n_prior_clusters"] == 2 and dv["n_prior_clusters"] == 10
    assert cl["match_frac"] == 1.0 and dv["match_frac"] == 0.0
    assert dv["threshold_source"] == "within_subject_median"
    assert identity_diversity(diverse, train, subjects, threshold=2.0)["n_prior_clusters"] == 1


def test_expression_accuracy_perfect_classifier() -> None:
    images, labels, _ = make_train()
    r = expression_accuracy(StandInClassifier(), images, labels, "cpu")
    assert r["acc"] == 1.0 and r["mean_class_acc"] == 1.0 and r["per_class"] == [1.0] * K
    r = expression_accuracy(StandInClassifier(), images, (labels + 1) % K, "cpu")
    assert r["acc"] == 0.0


def test_quality_report_keys() -> None:
    images, labels, subjects = make_train()
    s = synth(per_class=6, prior_fraction=0.5)
    rep = quality_report(StandInClassifier(), None, images, labels, subjects, s, "cpu")
    assert rep["synth/n"] == 6 * K and rep["synth/n_prior"] == 3 * K
    assert rep["synth/n_prior_identities"] == 3
    assert rep["synth/expr_acc"] == 1.0 and rep["synth/real_expr_acc"] == 1.0
    assert rep["synth/identity_features"] == "recognizer"
    for key in ("synth/fid_recognizer", "synth/fid_real_halves", "synth/prior_nn_dist_median",
                "synth/prior_distinct_nn_subjects", "synth/prior_pairwise_ratio",
                "synth/train_pairwise", "synth/reexp_identity_retrieval"):
        assert rep[key] is not None, key
    assert all(k.startswith("synth/") for k in rep)
    json.dumps(rep)  # JSON-ready

    def ident(x: np.ndarray) -> np.ndarray:
        return x[:, 1:, :, 0].reshape(len(x), -1).astype(np.float64) + 1.0

    rep2 = quality_report(StandInClassifier(), ident, images, labels, subjects, s, "cpu")
    assert rep2["synth/identity_features"] == "identity_net"


def test_frechet_distance_matches_exact_trace_form() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    b = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12)) + 1.0
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(w)) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s_b @ root), 0, None)).sum()
    exact = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr
    assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    images, labels, subjects = make_train()
    kw = dict(per_class=4, prior_fraction=0.5, seed=7, batch_size=4)
    cpu = synthesize_set(Synthesizer(StandInGenerator(), StandInEncoder()), images, labels, subjects, CLASSES,
                         device="cpu", **kw)
    cuda = synthesize_set(Synthesizer(StandInGenerator(), StandInEncoder()).cuda(), images, labels,
                          subjects, CLASSES, device="cuda", **kw)
    assert np.array_equal(cpu.source_index, cuda.source_index)
    np.testing.assert_allclose(cpu.codes, cuda.codes, atol=1e-4)
    assert np.abs(cpu.images.astype(int) - cuda.images.astype(int)).max() <= 1
    rep = quality_report(StandInClassifier().cuda(), None, images, labels, subjects, cuda, "cuda")
    assert rep["synth/expr_acc"] == 1.0
