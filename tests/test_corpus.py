"""Corpus fine-tuning of the AC-CNN (M4, fer.methods.corpus): clustering sees the train
split only, round outputs, metrics/curve keys, exact resume after a kill, determinism,
errors. Tiny data: 16x16 gray, class = bright quadrant; the corpus is the same kind of
images without labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

import fer.methods.corpus as corpus
from conftest import make_fold, quadrant_data, random_split
from fer.clustering.guided import PseudoLabels
from fer.methods.corpus import (
    CORPUS_CURVE_COLUMNS,
    CORPUS_METRIC_KEYS,
    cluster_corpus_fold,
    run_corpus_finetune_fold,
)
from fer.models import build_model
from fer.params import ClusteringParams, FinetuneParams, RecognizerParams, build
from fer.training.checkpoint import load_weights
from fer.training.protocol import FoldOutputs, model_from_weights

K = 3
SIZE = 16
CLASSES = ["anger", "happiness", "surprise"]


X, Y = quadrant_data(48, 3, K)
SPLIT = random_split(48, 24, 12)
CORPUS, _ = quadrant_data(30, 5, K)  # its labels are thrown away
CORPUS_PATHS = [f"c/{i:03d}.png" for i in range(len(CORPUS))]
CLUSTER = ClusteringParams(keep_fraction=0.6, niter=5, use_gpu="never")


def train_cfg(**overrides: Any) -> RecognizerParams:
    base: dict[str, Any] = {
        "arch": "accnn", "width": 4, "epochs": 2, "batch_size": 8, "optimizer": "adamw",
        "lr": 0.01, "weight_decay": 0.0, "warmup_epochs": 0, "amp": False, "channels_last": False,
        "augment": {"hflip": False, "rotate_deg": 5.0, "scale": 0.0, "shift": 0.0,
                    "brightness": 0.1, "contrast": 0.0, "erasing": 0.0},
    }
    base.update(overrides)
    return build(RecognizerParams, base)


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("accnn", K, 1, 4, input_size=SIZE)


def make_pseudo0(tmp_path: Path) -> tuple[PseudoLabels, np.ndarray]:
    return cluster_corpus_fold(
        fresh_model(), X[SPLIT["train"]], Y[SPLIT["train"]], CORPUS, K, CLUSTER,
        seed=0, device="cpu", work_dir=tmp_path / "work0",
    )


def run(tmp_path: Path, name: str, pseudo0: PseudoLabels, feats0: np.ndarray | None, **kw: Any) -> dict[str, Any]:
    out = tmp_path / name
    log = kw.pop("log_path", out / "log.jsonl")
    outputs = FoldOutputs(model=out / "model.pt", metrics=out / "metrics.json", curve=out / "curve.csv", log=log)
    args: dict[str, Any] = {
        "corpus_images": CORPUS, "corpus_paths": CORPUS_PATHS, "pseudo0": pseudo0,
        "synthetic": None, "out_dir": out / "rounds",
        "resume_dir": out / "resume", "pseudo0_feats": feats0,
    }
    args.update(kw)
    ft = args.pop("ft", FinetuneParams(epochs=1, rounds=1, pseudo_ratio=0.5, pseudo_weight=0.5))
    cfg = args.pop("cfg", train_cfg())
    return run_corpus_finetune_fold(make_fold(X, Y, SPLIT, CLASSES), cfg, ft, CLUSTER, outputs, **args)


# --------------------------------------------------------------------------- config
def test_finetune_config_strict() -> None:
    ft = build(FinetuneParams, {"epochs": 3, "rounds": 0, "pseudo_ratio": 1})
    assert ft.pseudo_ratio == 1.0 and ft.rounds == 0
    for unknown in ("bogus", "lr"):  # lr: every round uses the accnn section's
        with pytest.raises(ValueError, match=unknown):
            build(FinetuneParams, {unknown: 1})
    with pytest.raises(ValueError, match="integer"):
        build(FinetuneParams, {"epochs": 1.5})
    for bad in ({"epochs": 0}, {"rounds": -1}, {"pseudo_ratio": 0.0}, {"pseudo_weight": -1.0},
                {"synthetic_weight": -0.1}, {"synthetic_ratio": 0.0}):
        with pytest.raises(ValueError, match="finetune"):
            FinetuneParams(**bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- clustering
class CountingModel(nn.Module):
    """Wraps a model and counts the images its ``features`` embed."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.inner.features(x)


def test_cluster_corpus_fold_sees_train_images_only(tmp_path: Path) -> None:
    xtr, ytr = X[SPLIT["train"]], Y[SPLIT["train"]]
    model = CountingModel(fresh_model())
    pl, feats = cluster_corpus_fold(model, xtr, ytr, CORPUS, K, CLUSTER, seed=0, device="cpu", work_dir=tmp_path)
    assert model.seen == len(xtr) + len(CORPUS)  # nothing else was embedded
    assert feats.shape == (len(CORPUS), model.inner.feature_dim) and feats.dtype == np.float32
    assert pl.label.shape == pl.kept.shape == (len(CORPUS),)
    assert pl.stats["n_labelled"] == len(xtr)
    with pytest.raises(ValueError, match="corpus images"):
        cluster_corpus_fold(model, xtr, ytr, CORPUS[:, :8], K, CLUSTER, seed=0, device="cpu", work_dir=tmp_path)
    with pytest.raises(ValueError, match="labels"):
        cluster_corpus_fold(model, xtr, ytr[:-1], CORPUS, K, CLUSTER, seed=0, device="cpu", work_dir=tmp_path)


# --------------------------------------------------------------------------- method
def read_curve(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_rounds_metrics_and_curve(tmp_path: Path) -> None:
    pseudo0, feats0 = make_pseudo0(tmp_path)
    m = run(tmp_path, "a", pseudo0, feats0)
    out = tmp_path / "a"
    assert tuple(m) == CORPUS_METRIC_KEYS
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert m["rounds"] == 1 and m["n_pseudo"] >= 1
    assert m["n_train"] == 24 and m["n_val"] == 12 and m["n_test"] == 12
    for r in (0, 1):
        rdir = out / "rounds" / f"round-{r}"
        for name in ("labels.csv", "stats.json", "map.npz", "source.json", "model.pt", "round.json"):
            assert (rdir / name).is_file(), (r, name)
        mp = np.load(rdir / "map.npz")
        assert mp["xy"].shape == (len(CORPUS), 2) and mp["idx"].shape == (len(CORPUS),)
    # round 0 trained on pseudo0: its labels.csv holds them
    with open(out / "rounds" / "round-0" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [CLASSES.index(r["label"]) for r in rows] == pseudo0.label.tolist()
    n_kept_final = json.loads((out / "rounds" / "round-1" / "stats.json").read_text())["n_kept"]
    assert m["n_pseudo"] == n_kept_final
    curve = read_curve(out / "curve.csv")
    assert tuple(curve[0]) == CORPUS_CURVE_COLUMNS
    assert [(r["round"], r["round_epoch"], r["epoch"]) for r in curve] == [("0", "1", "1"), ("1", "1", "2")]
    assert all(float(r["train/cls_pseudo"]) > 0 and float(r["train/cls_syn"]) == 0 for r in curve)
    log_rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["round"] for r in log_rows] == [0, 1]
    model, meta = model_from_weights(out / "model.pt")
    assert meta["method"] == "accnn_corpus" and meta["arch"] == "accnn" and meta["n_pseudo"] == m["n_pseudo"]
    assert sum(p.numel() for p in model.parameters()) > 0
    assert not any((out / "resume").glob("*.pt"))  # resume files cleared


def test_same_seed_same_result(tmp_path: Path) -> None:
    pseudo0, feats0 = make_pseudo0(tmp_path)
    m1 = run(tmp_path, "a", pseudo0, feats0)
    m2 = run(tmp_path, "b", pseudo0, feats0, resume_dir=None, log_path=None)
    assert m1 == m2
    s1, meta = load_weights(tmp_path / "a" / "model.pt")
    s2, _ = load_weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert "init_weights" not in meta  # every round-0 network starts from the seed, never from another row


class Killed(Exception):
    pass


def test_resume_after_kill_is_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pseudo0, feats0 = make_pseudo0(tmp_path)
    ft = FinetuneParams(epochs=2, rounds=1, pseudo_ratio=0.5, pseudo_weight=0.5)
    ref = run(tmp_path, "ref", pseudo0, feats0, ft=ft)

    orig = corpus.train_epochs
    calls: list[str] = []

    def killing(*args: Any, **kw: Any) -> Any:
        cb = kw["on_epoch_end"]
        in_round_1 = "round-1" in str(kw["log_path"])
        calls.append("round-1" if in_round_1 else "round-0")

        def on_end(row: dict[str, float]) -> None:
            cb(row)
            if in_round_1 and row["epoch"] == 1:
                raise Killed  # after epoch 1 of round 1 (resume file written)

        kw["on_epoch_end"] = on_end
        return orig(*args, **kw)

    monkeypatch.setattr(corpus, "train_epochs", killing)
    with pytest.raises(Killed):
        run(tmp_path, "k", pseudo0, feats0, ft=ft)
    assert (tmp_path / "k" / "resume" / "round-1.pt").is_file()
    monkeypatch.setattr(corpus, "train_epochs", orig)

    def no_recluster(*a: Any, **k: Any) -> Any:
        raise AssertionError("round-1 pseudo-labels should be reused")

    monkeypatch.setattr(corpus, "cluster_corpus_fold", no_recluster)
    resumed = run(tmp_path, "k", pseudo0, feats0, ft=ft)
    assert calls == ["round-0", "round-1"]
    assert resumed == ref
    s_ref, _ = load_weights(tmp_path / "ref" / "model.pt")
    s_res, _ = load_weights(tmp_path / "k" / "model.pt")
    assert all(torch.equal(s_ref[k], s_res[k]) for k in s_ref)
    assert read_curve(tmp_path / "k" / "curve.csv") == read_curve(tmp_path / "ref" / "curve.csv")
    log_rows = [json.loads(line) for line in (tmp_path / "k" / "log.jsonl").read_text().splitlines()]
    assert [(r["round"], r["epoch"]) for r in log_rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_errors(tmp_path: Path) -> None:
    pseudo0, feats0 = make_pseudo0(tmp_path)
    empty = PseudoLabels(label=pseudo0.label, confidence=pseudo0.confidence,
                         kept=np.zeros_like(pseudo0.kept), cluster=pseudo0.cluster, stats=pseudo0.stats)
    with pytest.raises(ValueError, match="no kept pseudo-labelled"):
        run(tmp_path, "e", empty, feats0)
    with pytest.raises(ValueError, match="synthetic"):
        run(tmp_path, "s", pseudo0, feats0, ft=FinetuneParams(epochs=1, synthetic_weight=1.0))
    with pytest.raises(ValueError, match="corpus paths"):
        run(tmp_path, "p", pseudo0, feats0, corpus_paths=CORPUS_PATHS[:-1])
    short = PseudoLabels(label=pseudo0.label[:-1], confidence=pseudo0.confidence[:-1],
                         kept=pseudo0.kept[:-1], cluster=pseudo0.cluster[:-1], stats={})
    with pytest.raises(ValueError, match="pseudo0"):
        run(tmp_path, "q", short, feats0)


def test_synthetic_term_and_no_feats(tmp_path: Path) -> None:
    pseudo0, _ = make_pseudo0(tmp_path)
    syn = quadrant_data(12, 9, K)
    ft = FinetuneParams(epochs=1, rounds=0, synthetic_weight=0.5, synthetic_ratio=0.25)
    m = run(tmp_path, "syn", pseudo0, None, ft=ft, synthetic=syn)
    assert m["rounds"] == 0
    curve = read_curve(tmp_path / "syn" / "curve.csv")
    assert len(curve) == 1 and float(curve[0]["train/cls_syn"]) > 0
    mp = np.load(tmp_path / "syn" / "rounds" / "round-0" / "map.npz")
    assert "initial network" in str(mp["features"])
    assert not (tmp_path / "syn" / "rounds" / "round-1").exists()


def test_rejected_corpus_faces_are_never_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A face the clustering rejected ("none of these", clustering.reject_quantile) has no
    pseudo-label: the round trains on the kept faces only, none of them rejected, and the
    round's labels.csv records the rejection; all rejected -> an error naming the param."""
    pseudo0, feats0 = make_pseudo0(tmp_path)
    rejected = np.zeros(len(CORPUS), dtype=bool)
    kept_idx = np.flatnonzero(pseudo0.kept)
    rejected[kept_idx[::2]] = True  # half of the kept faces (and one face that was not kept)
    rejected[np.flatnonzero(~pseudo0.kept)[0]] = True
    pl = PseudoLabels(label=pseudo0.label, confidence=pseudo0.confidence, kept=pseudo0.kept & ~rejected,
                      cluster=pseudo0.cluster, stats=pseudo0.stats, rejected=rejected)
    seen: list[np.ndarray] = []
    orig = corpus.train_round

    def spy(*a: Any, **k: Any) -> Any:
        seen.append(k["pseudo"][0])
        return orig(*a, **k)

    monkeypatch.setattr(corpus, "train_round", spy)
    run(tmp_path, "rej", pl, feats0, ft=FinetuneParams(epochs=1, rounds=0))
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], CORPUS[np.flatnonzero(pl.kept)])
    with open(tmp_path / "rej" / "rounds" / "round-0" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rejected"] == "1" for r in rows] == rejected.tolist()
    assert not any(r["rejected"] == "1" and r["kept"] == "1" for r in rows)
    everything = PseudoLabels(label=pseudo0.label, confidence=pseudo0.confidence,
                              kept=np.zeros_like(pseudo0.kept), cluster=pseudo0.cluster, stats=pseudo0.stats,
                              rejected=np.ones(len(CORPUS), dtype=bool))
    with pytest.raises(ValueError, match=rf"{len(CORPUS)} of {len(CORPUS)} rejected .*reject_quantile"):
        run(tmp_path, "all", everything, feats0, ft=FinetuneParams(epochs=1, rounds=0))
    bad = PseudoLabels(label=pseudo0.label, confidence=pseudo0.confidence, kept=pseudo0.kept,
                       cluster=pseudo0.cluster, stats=pseudo0.stats, rejected=pseudo0.kept.copy())
    with pytest.raises(ValueError, match="pseudo0: a rejected corpus image is marked kept"):
        run(tmp_path, "bad", bad, feats0, ft=FinetuneParams(epochs=1, rounds=0))


def test_first_round_real_trains_round_0_on_the_labelled_images_only(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune.first_round real: round 0 gets no pseudo-labelled image (its curve's pseudo
    term is 0, and its network does not depend on pseudo0: other pseudo-labels give the
    same round-0 weights, bit for bit); round 1 fine-tunes round 0's network on real +
    pseudo-labelled images re-clustered with it, with its start weights as a selection
    candidate (keep_start). first_round real without a later round is refused."""
    pseudo0, feats0 = make_pseudo0(tmp_path)
    calls: list[tuple[bool, bool]] = []
    orig = corpus.train_round

    def spy(*a: Any, **k: Any) -> Any:
        calls.append((k["pseudo"] is None, k["start_candidate"]))
        return orig(*a, **k)

    monkeypatch.setattr(corpus, "train_round", spy)
    ft = FinetuneParams(epochs=1, rounds=1, first_round="real", keep_start=True)
    m = run(tmp_path, "a", pseudo0, feats0, ft=ft)
    assert calls == [(True, False), (False, True)]
    assert m["n_pseudo"] >= 1
    curve = read_curve(tmp_path / "a" / "curve.csv")
    assert [float(r["train/cls_pseudo"]) > 0 for r in curve] == [False, True]
    source = json.loads((tmp_path / "a" / "rounds" / "round-1" / "source.json").read_text())
    assert source["made_by"] == "round-0"  # re-clustered with round 0's (labelled-only) network
    done = json.loads((tmp_path / "a" / "rounds" / "round-1" / "round.json").read_text())
    assert done["start_row"]["epoch"] == 0 and "start_row" not in json.loads(
        (tmp_path / "a" / "rounds" / "round-0" / "round.json").read_text())
    calls.clear()
    assert run(tmp_path, "a", pseudo0, feats0, ft=ft) == m and calls == []  # complete rounds reused, same metrics
    shifted = PseudoLabels(label=(pseudo0.label + 1) % K, confidence=pseudo0.confidence, kept=pseudo0.kept,
                           cluster=pseudo0.cluster, stats=pseudo0.stats)
    run(tmp_path, "b", shifted, feats0, ft=ft)
    a, _ = load_weights(tmp_path / "a" / "rounds" / "round-0" / "model.pt")
    b, _ = load_weights(tmp_path / "b" / "rounds" / "round-0" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the default (mixed) trains round 0 on the pseudo-labels
    calls.clear()
    run(tmp_path, "c", pseudo0, feats0, ft=FinetuneParams(epochs=1, rounds=0))
    assert calls == [(False, False)]
    with pytest.raises(ValueError, match="rounds >= 1"):
        FinetuneParams(first_round="real", rounds=0)
    with pytest.raises(ValueError, match="first_round"):
        FinetuneParams(first_round="labelled")  # type: ignore[arg-type]
