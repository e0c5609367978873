"""finetune.validation_weighting: the pseudo-labels are scored on the fold's validation faces
(clustered as corpus faces would be, moving nothing) and their chance-corrected accuracy
scales the pseudo-labelled CE; pseudo-labels no better than chance leave the corpus row's
round exactly the control's round."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fer.methods.corpus as corpus
from fer.clustering.guided import guided_pseudo_labels, pseudo_label_check
from fer.methods.corpus import CORPUS_METRIC_KEYS, cluster_corpus_fold, round_pseudo_weight
from fer.params import ClusteringParams, FinetuneParams, build
from fer.training.checkpoint import load_weights
from test_clustering import blobs
from test_corpus import CLUSTER, CORPUS, SPLIT, K, X, Y, fresh_model, make_pseudo0, read_curve, run
from test_corpus_start import START_FT, control, same, trained_state


def test_the_check_by_hand() -> None:
    """4 classes; pool: class 0 keeps confidences >= 0.5, class 1 >= 0.8, classes 2-3 keep
    nothing. Check faces: the kept rule, the two accuracies and the reliability."""
    pool_label = np.array([0, 0, 0, 1, 1, 2])
    pool_conf = np.array([0.9, 0.5, 0.2, 0.8, 0.3, 0.7], dtype=np.float32)
    pool_kept = np.array([True, True, False, True, False, False])
    label = np.array([0, 0, 1, 1, 2, 3])  # pseudo-labels given to the 6 check faces
    conf = np.array([0.6, 0.4, 0.9, 0.7, 0.99, 0.5], dtype=np.float32)
    rejected = np.array([False, False, False, False, False, True])
    truth = np.array([0, 1, 1, 0, 2, 3])
    got = pseudo_label_check(truth, 4, assigned=(label, conf, rejected),
                             pool=(pool_label, pool_conf, pool_kept))
    # assigned: faces 0-4 (5 is rejected); right: 0, 2, 4 -> 3/5; kept: face 0 (0.6 >= 0.5) and
    # face 2 (0.9 >= 0.8); face 1 (0.4 < 0.5), face 3 (0.7 < 0.8), face 4 (class 2 keeps nothing) not
    assert got["n"] == 6 and got["n_assigned"] == 5 and got["n_kept"] == 2
    assert got["acc_assigned"] == pytest.approx(0.6) and got["acc_kept"] == pytest.approx(1.0)
    assert got["reliability"] == pytest.approx((0.6 - 0.25) / 0.75)
    # below chance (1 of 5 right, chance 1/4) -> 0; nothing assigned -> 0 and no accuracy
    worse = pseudo_label_check((truth + 1) % 4, 4, assigned=(label, conf, rejected),
                               pool=(pool_label, pool_conf, pool_kept))
    assert worse["acc_assigned"] == pytest.approx(0.2) and worse["reliability"] == 0.0
    none = pseudo_label_check(truth, 4, assigned=(label, conf, np.ones(6, bool)),
                              pool=(pool_label, pool_conf, pool_kept))
    assert none["acc_assigned"] is None and none["acc_kept"] is None and none["reliability"] == 0.0
    with pytest.raises(ValueError, match="check labels"):
        pseudo_label_check(truth[:5], 4, assigned=(label, conf, rejected),
                           pool=(pool_label, pool_conf, pool_kept))


def test_the_check_faces_move_nothing_and_are_scored() -> None:
    """Adding the check leaves every pseudo-label, confidence and kept flag of the pool as it
    was; on planted blobs the check's labels are recovered (reliability 1), with shuffled
    check labels the reliability drops to about chance."""
    x, y = blobs(130, 4, 10, seed=6)
    pool, train, ty, check, cy = x[:300], x[300:460], y[300:460], x[460:], y[460:]
    for kw in (dict(guidance="anchored"), dict(guidance="overcluster", clusters_per_class=3, neighbours=5),
               dict(guidance="anchored", reject_quantile=0.9)):
        cfg = ClusteringParams(niter=10, keep_fraction=0.5, use_gpu="never", **kw)
        plain = guided_pseudo_labels(pool, train, ty, 4, cfg, seed=0, threads=1)
        checked = guided_pseudo_labels(pool, train, ty, 4, cfg, seed=0, threads=1, check=(check, cy))
        for name in ("label", "confidence", "kept", "cluster", "rejected"):
            np.testing.assert_array_equal(getattr(plain, name), getattr(checked, name))
        assert "check" not in plain.stats
        assert {k: v for k, v in checked.stats.items() if k != "check"} == plain.stats
        c = checked.stats["check"]
        assert c["n"] == len(cy) and c["n_kept"] <= c["n_assigned"] <= len(cy)
        assert c["acc_assigned"] == 1.0 and c["reliability"] == 1.0
        shuffled = np.random.default_rng(0).permutation(cy)
        low = guided_pseudo_labels(pool, train, ty, 4, cfg, seed=0, threads=1, check=(check, shuffled))
        assert low.stats["check"]["reliability"] < 0.3
    with pytest.raises(ValueError, match="check features"):
        guided_pseudo_labels(pool, train, ty, 4, cfg, seed=0, threads=1, check=(check[:, :3], cy))


def test_cluster_corpus_fold_scores_the_validation_split(tmp_path: Path) -> None:
    xtr, ytr = X[SPLIT["train"]], Y[SPLIT["train"]]
    xva, yva = X[SPLIT["val"]], Y[SPLIT["val"]]
    plain, _ = make_pseudo0(tmp_path)
    model = fresh_model()
    checked, _ = cluster_corpus_fold(model, xtr, ytr, CORPUS, K, CLUSTER, seed=0, device="cpu",
                                     work_dir=tmp_path / "c", check=(xva, yva))
    np.testing.assert_array_equal(plain.label, checked.label)
    np.testing.assert_array_equal(plain.kept, checked.kept)
    assert checked.stats["check"]["n"] == len(yva)
    with pytest.raises(ValueError, match="check"):
        cluster_corpus_fold(model, xtr, ytr, CORPUS, K, CLUSTER, seed=0, device="cpu", work_dir=tmp_path / "d",
                            check=(xva, yva[:-1]))


def with_reliability(pl: Any, rel: Any) -> Any:
    stats = {**pl.stats, "check": {"reliability": rel}} if rel is not None else {
        k: v for k, v in pl.stats.items() if k != "check"}
    return dataclasses.replace(pl, stats=stats)


def test_the_round_weight_is_the_reliability_times_pseudo_weight(tmp_path: Path) -> None:
    pseudo0, _ = make_pseudo0(tmp_path)
    on = build(FinetuneParams, {**START_FT, "validation_weighting": True})
    off = build(FinetuneParams, START_FT)
    assert round_pseudo_weight(off, with_reliability(pseudo0, None), "x") == (0.5, None)
    assert round_pseudo_weight(on, with_reliability(pseudo0, 0.5), "x") == (0.25, 0.5)
    for bad in (None, 1.5, "high", True):
        with pytest.raises(ValueError, match="validation_weighting"):
            round_pseudo_weight(on, with_reliability(pseudo0, bad), "round 0 pseudo-labels")
    with pytest.raises(ValueError, match="validation_weighting must be true or false"):
        build(FinetuneParams, {**START_FT, "validation_weighting": "yes"})


class WeightSpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[float, bool]] = []
        orig = corpus.train_round

        def spy(model: Any, train: Any, val: Any, cfg: Any, ft: FinetuneParams, **k: Any) -> Any:
            self.calls.append((ft.pseudo_weight, k["pseudo"] is not None))
            return orig(model, train, val, cfg, ft, **k)

        monkeypatch.setattr(corpus, "train_round", spy)


def test_a_chance_level_round_is_the_controls_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reliability 0: the corpus row trains exactly as its control (same weights, bit for
    bit), n_pseudo and pseudo_weight 0; reliability 0.5 halves the weight and trains on the
    pseudo-labels."""
    pseudo0, feats0 = make_pseudo0(tmp_path)
    start = trained_state()
    ft = build(FinetuneParams, {**START_FT, "rounds": 0, "validation_weighting": True})
    spy = WeightSpy(monkeypatch)
    m = run(tmp_path, "zero", with_reliability(pseudo0, 0.0), feats0, ft=ft, start_state=start)
    assert tuple(m) == CORPUS_METRIC_KEYS and m["n_pseudo"] == 0 and m["pseudo_weight"] == 0.0
    assert spy.calls == [(0.0, False)]
    ctl = control(tmp_path, "ctl", start, ft)
    assert same(load_weights(tmp_path / "zero" / "model.pt")[0], load_weights(tmp_path / "ctl" / "model.pt")[0])
    assert m["test/acc"] == ctl["test/acc"]
    spy.calls.clear()
    half = run(tmp_path, "half", with_reliability(pseudo0, 0.5), feats0, ft=ft, start_state=start)
    assert spy.calls == [(0.25, True)] and half["pseudo_weight"] == 0.25 and half["n_pseudo"] == int(pseudo0.kept.sum())
    assert read_curve(tmp_path / "zero" / "curve.csv") == read_curve(tmp_path / "ctl" / "curve.csv")
    assert read_curve(tmp_path / "half" / "curve.csv") != read_curve(tmp_path / "ctl" / "curve.csv")
    # the weight is in the round's fingerprint: a new reliability is not the old round reused
    spy.calls.clear()
    run(tmp_path, "half", with_reliability(pseudo0, 0.75), feats0, ft=ft, start_state=start)
    assert spy.calls == [(0.375, True)]


def test_later_rounds_are_scored_on_validation(tmp_path: Path) -> None:
    """Re-clustering (rounds >= 1) scores its pseudo-labels on the validation split too."""
    pseudo0, feats0 = make_pseudo0(tmp_path)
    ft = build(FinetuneParams, {**START_FT, "validation_weighting": True})
    run(tmp_path, "two", with_reliability(pseudo0, 1.0), feats0, ft=ft, start_state=trained_state())
    stats = json.loads((tmp_path / "two" / "rounds" / "round-1" / "stats.json").read_text())
    assert stats["check"]["n"] == len(SPLIT["val"])
    done = json.loads((tmp_path / "two" / "rounds" / "round-1" / "round.json").read_text())
    assert done["pseudo_weight"] == pytest.approx(0.5 * stats["check"]["reliability"])
    assert done["reliability"] == stats["check"]["reliability"]
