"""Tests of the "none of these" option of the expression-guided clustering (issue 11, item 2):
corpus faces outside every labelled class's training spread get no pseudo-label, the
calibration sees the training features only, the counts add up and reach the report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import fer.clustering.guided as guided
from fer.clustering.guided import (
    PseudoLabels,
    calibrate_rejection,
    guided_pseudo_labels,
    read_pseudo_labels,
    select_pseudo_labels,
    write_pseudo_labels,
)
from fer.clustering.quality import pseudo_label_quality
from fer.params import ClusteringParams, build
from fer.utils.io import save_npz, write_json

K, D = 3, 8
CLASSES = ["anger", "fear", "joy"]


def scene(seed: int = 0) -> dict[str, np.ndarray]:
    """Three labelled classes (training: 50 each, N(centre, I)); a corpus of 40 in-class
    points per class drawn tighter than the training data (N(centre, 0.25 I)) and 60 points
    of no labelled class, a cloud far from every class centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 6.0, size=(K, D))
    ty = np.repeat(np.arange(K), 50)
    train = centres[ty] + rng.normal(size=(len(ty), D))
    cy = np.repeat(np.arange(K), 40)
    inside = centres[cy] + 0.5 * rng.normal(size=(len(cy), D))
    far = centres.mean(0) + np.full(D, 40.0) + rng.normal(size=(60, D))
    corpus = np.concatenate([inside, far]).astype(np.float32)
    return {"train": train.astype(np.float32), "ty": ty, "corpus": corpus, "cy": cy, "far": np.arange(len(cy), len(corpus))}


@pytest.mark.parametrize(
    "kw",
    [dict(guidance="anchored", anchor_weight=0.75), dict(guidance="anchored", anchor_weight=0.0),
     dict(guidance="overcluster", clusters_per_class=2, neighbours=5)],
)
@pytest.mark.parametrize("normalize", [False, True])
def test_far_cloud_is_rejected_in_class_points_are_kept(kw, normalize):
    s = scene()
    cfg = ClusteringParams(normalize=normalize, use_gpu="never", keep_fraction=1.0, balance=False, reject_quantile=0.95,
                           niter=10, **kw)
    pl = guided_pseudo_labels(s["corpus"], s["train"], s["ty"], K, cfg, seed=0, threads=1)
    n_in = len(s["cy"])
    assert pl.rejected_mask[s["far"]].all()  # every face of no labelled class: no pseudo-label
    assert not pl.rejected_mask[:n_in].any()  # every in-class face is assigned ...
    np.testing.assert_array_equal(pl.label[:n_in], s["cy"])  # ... its class ...
    assert pl.kept[:n_in].all() and not pl.kept[s["far"]].any()  # ... and kept; no rejected face is kept
    st = pl.stats
    assert st["n_rejected"] == 60 and st["n_assigned"] == n_in and st["n_kept"] == n_in
    assert sum(st["rejected_per_class"]) == 60
    assert st["assigned_per_class"] == [40, 40, 40] == st["kept_per_class"] and st["not_kept_per_class"] == [0, 0, 0]
    json.dumps(st)


def test_without_rejection_the_far_cloud_is_forced_into_classes():
    """What the option is for: at reject_quantile 1 (off, the default) the far cloud is
    assigned and, with the default keep fraction, partly kept as expression pseudo-labels."""
    s = scene()
    assert ClusteringParams().reject_quantile == 1.0
    cfg = ClusteringParams(normalize=False, use_gpu="never", balance=False)
    pl = guided_pseudo_labels(s["corpus"], s["train"], s["ty"], K, cfg, seed=0, threads=1)
    assert not pl.rejected_mask.any() and pl.stats["n_rejected"] == 0 and pl.stats["reject_radius"] is None
    assert pl.kept[s["far"]].any()
    # off = exactly the selection made before the option existed (no rejected mask at all)
    np.testing.assert_array_equal(pl.kept, select_pseudo_labels(pl.label, pl.confidence, K, 0.5, False))
    assert pl.stats["assigned_per_class"] == np.bincount(pl.label, minlength=K).tolist()


def test_calibration_uses_the_training_features_only(monkeypatch):
    """By construction: the calibration is handed the training features and labels, nothing
    else, and its radii do not move when the corpus changes."""
    s = scene()
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = guided.calibrate_rejection

    def spy(feats, labels, num_classes, quantile, *, normalize):
        seen.append((np.array(feats), np.array(labels)))
        return real(feats, labels, num_classes, quantile, normalize=normalize)

    monkeypatch.setattr(guided, "calibrate_rejection", spy)
    cfg = ClusteringParams(normalize=False, use_gpu="never", reject_quantile=0.9)
    a = guided_pseudo_labels(s["corpus"], s["train"], s["ty"], K, cfg, seed=0, threads=1)
    b = guided_pseudo_labels(s["corpus"][::2], s["train"], s["ty"], K, cfg, seed=0, threads=1)
    assert len(seen) == 2
    for feats, labels in seen:
        np.testing.assert_array_equal(feats, s["train"])
        np.testing.assert_array_equal(labels, s["ty"])
    assert a.stats["reject_radius"] == b.stats["reject_radius"]
    # the radii by hand: per class, the 0.9-quantile of squared distances to the class mean
    for c in range(K):
        xc = s["train"][s["ty"] == c].astype(np.float64)
        d = ((xc - xc.mean(0)) ** 2).sum(1)
        assert a.stats["reject_radius"][c] == pytest.approx(np.quantile(d, 0.9), rel=1e-5)


def test_calibrate_rejection_radii_and_rule():
    # class 0: 1-D points 0, 1, 2, 3, 4 along axis 0 (mean 2: squared distances 4, 1, 0, 1, 4)
    x = np.zeros((7, 2), np.float32)
    x[:5, 0] = [0, 1, 2, 3, 4]
    x[5:, 1] = [10, 12]  # class 1: mean (0, 11), squared distances 1, 1
    y = np.array([0, 0, 0, 0, 0, 1, 1])
    rule = calibrate_rejection(x, y, 3, 0.5, normalize=False)
    assert rule.radius[0] == pytest.approx(1.0) and rule.radius[1] == pytest.approx(1.0)
    assert rule.radius[2] == -np.inf and rule.radii_json()[2] is None  # class 2 has no training features
    q = np.array([[2.0, 0.0], [4.0, 0.0], [0.0, 11.5], [0.0, 11.0]], np.float32)
    np.testing.assert_array_equal(rule.rejects(q, np.array([0, 0, 1, 2])), [False, True, False, True])
    with pytest.raises(ValueError, match="1 = off"):
        calibrate_rejection(x, y, 3, 1.0, normalize=False)
    with pytest.raises(ValueError, match="train_labels"):
        calibrate_rejection(x, y + 5, 3, 0.5, normalize=False)


def test_selection_counts_only_assigned_points():
    label = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.8, 0.7, 0.6], np.float32)
    rejected = np.array([True, False, False, False, True, True, False, False])
    # class 0: 3 assigned -> round(0.5 * 3) = 2 kept (the two most confident assigned ones)
    # class 1: 2 assigned -> 1 kept; balance caps class 0 at 1
    kept = select_pseudo_labels(label, conf, 2, 0.5, False, rejected)
    np.testing.assert_array_equal(kept, [False, True, True, False, False, False, True, False])
    kept = select_pseudo_labels(label, conf, 2, 0.5, True, rejected)
    np.testing.assert_array_equal(kept, [False, True, False, False, False, False, True, False])
    assert not (kept & rejected).any()
    with pytest.raises(ValueError, match="rejected must have the shape"):
        select_pseudo_labels(label, conf, 2, 0.5, True, rejected[:3])


def test_counts_add_up_with_keep_fraction_and_balance():
    s = scene(1)
    cfg = ClusteringParams(normalize=False, use_gpu="never", keep_fraction=0.5, balance=True, reject_quantile=0.95)
    pl = guided_pseudo_labels(s["corpus"], s["train"], s["ty"], K, cfg, seed=0, threads=1)
    st = pl.stats
    a, kp, nk, rj = (np.array(st[k]) for k in ("assigned_per_class", "kept_per_class", "not_kept_per_class",
                                                 "rejected_per_class"))
    np.testing.assert_array_equal(a, kp + nk)
    assert a.sum() + rj.sum() == st["n"] == len(s["corpus"])
    assert st["n_assigned"] == a.sum() and st["n_rejected"] == rj.sum() == pl.rejected_mask.sum()
    np.testing.assert_array_equal(a, np.bincount(pl.label[~pl.rejected_mask], minlength=K))
    np.testing.assert_array_equal(rj, np.bincount(pl.label[pl.rejected_mask], minlength=K))
    assert kp.tolist() == [20, 20, 20] and not (pl.kept & pl.rejected_mask).any()


def test_rejected_column_round_trip_and_errors(tmp_path):
    s = scene()
    cfg = ClusteringParams(normalize=False, use_gpu="never", reject_quantile=0.95)
    pl = guided_pseudo_labels(s["corpus"], s["train"], s["ty"], K, cfg, seed=0, threads=1)
    paths = [f"c/{i:03d}.png" for i in range(len(s["corpus"]))]
    write_pseudo_labels(tmp_path / "pl", pl, paths, CLASSES)
    back = read_pseudo_labels(tmp_path / "pl", CLASSES, corpus_paths=paths)
    np.testing.assert_array_equal(back.rejected_mask, pl.rejected_mask)
    assert back.stats["n_rejected"] == 60
    csv = tmp_path / "pl" / "labels.csv"
    lines = csv.read_text().splitlines()
    assert lines[0].endswith(",kept,rejected")
    i = int(s["far"][0]) + 1
    assert lines[i].endswith(",0,1")
    lines[i] = lines[i][: -len(",0,1")] + ",1,1"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"labels.csv, line {i + 1}: a rejected image cannot be kept"):
        read_pseudo_labels(tmp_path / "pl", CLASSES)
    bad = PseudoLabels(label=pl.label, confidence=pl.confidence, kept=pl.rejected_mask.copy(), cluster=pl.cluster,
                       stats={}, rejected=pl.rejected_mask)
    with pytest.raises(ValueError, match="rejected corpus image is marked kept"):
        write_pseudo_labels(tmp_path / "bad", bad, paths, CLASSES)


def test_reject_quantile_param_is_checked():
    assert build(ClusteringParams, {"reject_quantile": 0.9}).reject_quantile == 0.9
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="reject_quantile"):
            ClusteringParams(reject_quantile=bad)


def test_quality_scores_the_rejection():
    pl = PseudoLabels(label=np.array([0, 0, 1, 1, 1]), confidence=np.ones(5, np.float32),
                      kept=np.array([True, False, True, False, False]), cluster=np.array([0, 0, 1, 1, 1]), stats={},
                      rejected=np.array([False, False, False, True, True]))
    q = pseudo_label_quality(pl, np.array([0, 1, 1, -1, 1]), 2)
    assert q["pseudo/rejected"] == pytest.approx(2 / 5)
    assert q["pseudo/rejected_unknown"] == pytest.approx(1 / 2)  # of the 2 rejected, 1 has no labelled class
    assert q["pseudo/assigned_unknown"] == 0.0
    assert q["pseudo/acc_all"] == pytest.approx(2 / 3)  # over the 3 assigned faces only


def test_counts_reach_the_report_section(tmp_path):
    """The corpus section tabulates assigned / kept / rejected per class and round from the
    round-0 stats (metrics/pseudo) and the fine-tuning's round folders."""
    from fer.clustering.map2d import embedding_map
    from fer.report.sections import corpus_section

    s = scene()
    paths = [f"c/{i:03d}.png" for i in range(len(s["corpus"]))]
    stats, rounds = [], []
    for fold, q in enumerate((0.95, 0.9)):
        cfg = ClusteringParams(normalize=False, use_gpu="never", reject_quantile=q)
        rdir = tmp_path / f"fold-{fold}"
        for r, seed in enumerate((0, 1)):
            pl = guided_pseudo_labels(s["corpus"], s["train"], s["ty"], K, cfg, seed=seed, threads=1)
            write_pseudo_labels(rdir / f"round-{r}", pl, paths, CLASSES)
            idx, xy = embedding_map(s["corpus"], seed=0)
            save_npz(rdir / f"round-{r}" / "map.npz", idx=idx, xy=xy)
            if r == 0:
                write_json(tmp_path / f"pseudo-{fold}.json", pl.stats)
                stats.append(json.loads((tmp_path / f"pseudo-{fold}.json").read_text()))
        rounds.append(rdir)
    # round 1 of fold 1 with hand-set counts: the table must show exactly these
    st1 = json.loads((rounds[1] / "round-1" / "stats.json").read_text())
    st1.update(assigned_per_class=[7, 8, 9], kept_per_class=[3, 4, 5], rejected_per_class=[11, 12, 13],
               check={"n": 10, "n_assigned": 8, "n_kept": 4, "acc_assigned": 0.5, "acc_kept": 0.75,
                      "reliability": 0.25})
    (rounds[1] / "round-1" / "stats.json").write_text(json.dumps(st1))
    html = corpus_section(stats=stats, quality=None, rounds=rounds, classes=CLASSES, complexity=[], ablation=[])
    assert "assigned, kept, rejected" in html and "reject_quantile = 0.95" in html
    section = html[html.index("assigned, kept, rejected"):html.index("Pseudo-label quality per round")]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)]
    rows = [r for r in rows if r]
    by_key = {tuple(r[:2]): r[2:] for r in rows}
    r0 = stats[0]
    assert by_key[("fold 0", "round 0")] == [
        str(r0["n_assigned"]), str(r0["n_kept"]), str(r0["n_assigned"] - r0["n_kept"]), str(r0["n_rejected"]),
        "n/a", "n/a",  # no validation check in these stats
    ] + [f"{a} / {k} / {r}" for a, k, r in
         zip(r0["assigned_per_class"], r0["kept_per_class"], r0["rejected_per_class"], strict=True)]
    assert by_key[("fold 1", "round 1")] == ["24", "12", "12", "36", "50.0 %", "0.25",
                                             "7 / 3 / 11", "8 / 4 / 12", "9 / 5 / 13"]
    assert by_key[("round 1", "2")][4:6] == ["n/a", "n/a"]  # a fold without the check: no mean made up
    assert ("fold 1", "round 0") in by_key and ("fold 0", "round 1") in by_key and len(by_key) == 4 + 2
    # the per-round summary sums the folds
    summary0 = by_key[("round 0", "2")]
    assert summary0[3] == str(stats[0]["n_rejected"] + stats[1]["n_rejected"])
    assert int(summary0[3]) >= 120  # both folds reject the far cloud
    assert summary0[0] == str(stats[0]["n_assigned"] + stats[1]["n_assigned"])
    # the fine-tuning settings are said only when they are on
    assert "first_round" not in html and "keep_start" not in html
    strict = corpus_section(stats=stats, quality=None, rounds=rounds, classes=CLASSES, complexity=[], ablation=[],
                            first_round="real", keep_start=True)
    assert "finetune.first_round = real" in strict and "finetune.keep_start = true" in strict


def test_counts_table_says_n_a_for_stats_without_rejection_counts():
    """Stats written before the option (no rejected_per_class) show n/a, not a made-up 0."""
    from fer.report.sections import counts_table

    old = {"fold": 0, "round": 0, "assigned": [5, 6, 7], "kept": [2, 3, 4], "rejected": None}
    html = counts_table([old], CLASSES)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html)]
    assert ["fold 0", "round 0", "18", "9", "9", "n/a", "n/a", "n/a", "5 / 2 / n/a", "6 / 3 / n/a",
            "7 / 4 / n/a"] in rows
    # the validation check: the pseudo-labels' accuracy on validation faces, mean over folds
    checked = [{**old, "fold": f, "check": {"acc_assigned": a, "reliability": r}}
               for f, a, r in ((0, 0.5, 0.4), (1, 0.7, 0.6))]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", counts_table(checked, CLASSES))]
    assert ["round 0", "2", "36", "18", "18", "n/a", "60.0 %", "0.50", "10 / 4 / n/a", "12 / 6 / n/a",
            "14 / 8 / n/a"] in rows
