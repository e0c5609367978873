"""Hand-computed checks of fer.evaluation.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fer.metrics.classification import classification_metrics, summarize_folds


def test_classification_metrics_hand_example() -> None:
    # y_true=[0,0,1,1,2], y_pred=[0,1,1,1,0]
    # acc = 3/5; recalls: c0 1/2, c1 2/2, c2 0/1 -> mean 0.5
    # precisions: c0 1/2, c1 2/3, c2 0 (never predicted) -> F1 c0 0.5, c1 0.8, c2 0
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert set(m) == {"acc", "mean_class_acc", "macro_f1", "confusion", "per_class_recall"}
    assert m["acc"] == pytest.approx(0.6)
    assert m["mean_class_acc"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class_recall"] == pytest.approx([0.5, 1.0, 0.0])


def test_absent_class_excluded_from_mean_class_acc_but_counts_in_macro_f1() -> None:
    # 4 classes, class 3 absent from y_true and y_pred.
    # recalls c0 1, c1 1/2, c2 1 -> mean over present = 2.5/3
    # F1: c0 1; c1 p=1 r=1/2 -> 2/3; c2 p=1/2 r=1 -> 2/3; c3 0 -> macro (1+4/3)/4
    m = classification_metrics(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4)
    assert m["acc"] == pytest.approx(0.75)
    assert m["mean_class_acc"] == pytest.approx(2.5 / 3)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)
    assert m["per_class_recall"][3] is None
    assert m["confusion"][3] == [0, 0, 0, 0]
    assert all(isinstance(v, int) for row in m["confusion"] for v in row)


def test_macro_f1_is_scikit_learns_bit_for_bit() -> None:
    """The macro F1 computed from the confusion matrix (no scikit-learn import in the
    stages) equals scikit-learn's f1_score(average="macro", labels=range(K),
    zero_division=0) exactly, on random predictions with absent and never-predicted
    classes: the metrics files keep their bytes."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for trial in range(300):
        k = int(rng.integers(2, 9))
        n = int(rng.integers(1, 60))
        t = rng.integers(0, max(1, k - trial % 3), n)  # some trials leave the last classes out
        p = rng.integers(0, k, n) if trial % 2 else np.where(rng.random(n) < 0.7, t, rng.integers(0, k, n))
        want = f1_score(t, p, labels=list(range(k)), average="macro", zero_division=0)
        assert classification_metrics(t, p, k)["macro_f1"] == float(want), (trial, t, p)


def test_classification_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], 2)
    with pytest.raises(ValueError):
        classification_metrics([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        classification_metrics([], [], 3)


def test_summarize_folds() -> None:
    folds = [
        {"test/acc": 0.5, "best_epoch": 3, "test/confusion": [[1]]},
        {"test/acc": 0.7, "best_epoch": 5, "test/confusion": [[2]]},
        {"test/acc": 0.9, "best_epoch": 4, "test/confusion": [[3]]},
    ]
    s = summarize_folds(folds)
    assert list(s) == ["test/acc", "best_epoch"]  # non-scalars skipped
    assert s["test/acc"]["mean"] == pytest.approx(0.7)
    assert s["test/acc"]["std"] == pytest.approx(0.2)  # sample std, ddof=1
    assert s["test/acc"]["n"] == 3
    assert s["test/acc"]["values"] == [0.5, 0.7, 0.9]
    assert s["best_epoch"]["mean"] == pytest.approx(4.0)
    assert s["best_epoch"]["std"] == pytest.approx(1.0)


def test_summarize_single_fold_and_errors() -> None:
    s = summarize_folds([{"acc": 0.25}])
    assert s["acc"] == {"mean": 0.25, "std": 0.0, "n": 1, "values": [0.25]}
    with pytest.raises(ValueError):
        summarize_folds([])
    with pytest.raises(ValueError):
        summarize_folds([{"acc": 0.5}, {"f1": 0.5}])
    nan = summarize_folds([{"acc": float("nan")}, {"acc": 0.5}])
    assert math.isnan(nan["acc"]["mean"])


def test_still_rising_flags_a_new_best_in_the_last_fifth() -> None:
    from fer.training.protocol import still_rising

    flat = [{"val/acc": a} for a in (0.2, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6)]
    assert not still_rising(flat)
    late = [{"val/acc": a} for a in (0.2, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.61)]
    assert still_rising(late)
    # a best at epoch 8 of 10 is outside the last fifth (epochs 9, 10)
    assert not still_rising([{"val/acc": a} for a in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.7, 0.7)])
    assert not still_rising([{"val/acc": 0.5}])


def test_report_budget_and_generator_probe() -> None:
    from fer.report.html import budget_text
    from fer.report.sections import generator_probe_section

    folds = [{"epochs": 40, "best_epoch": 12, "val/still_rising": False},
             {"epochs": 40, "best_epoch": 39, "val/still_rising": True},
             {"epochs": 40, "best_epoch": 20, "val/still_rising": False}]
    assert budget_text(folds) == "40 (20), still rising on 1/3 folds"
    assert budget_text([{"epochs": 30, "best_epoch": 3}, {"epochs": 40, "best_epoch": 5}]) == "30-40 (5)"
    synthetic = [{"synth/expr_acc_prior": 0.6, "synth/expr_acc_reexpressed": 0.3, "synth/real_val_acc": 0.7,
                  "synth/expr_acc_ratio_prior": 0.6 / 0.7, "synth/expr_acc_ratio_reexpressed": 0.3 / 0.7}]
    fersnet = [{"fersnet_synth/expr_acc": 0.2, "fersnet_synth/real_val_acc": 0.7, "fersnet_synth/expr_acc_ratio": 0.2 / 0.7}]
    html = generator_probe_section(synthetic, fersnet)
    assert "<td class=\"l\">FESGAN prior</td><td class=\"\">0.86</td>" in html and "reaches 0.8" in html
    assert "<td class=\"l\">FESGAN re-expressed</td><td class=\"\">0.43</td>" in html
    assert "<td class=\"l\">FERSNet synthesis</td><td class=\"\">0.29</td>" in html and "below 0.8" in html
    # the per-fold row says how many re-expressed faces started from a neutral face
    synthetic[0].update({"synth/n_neutral_sources": 180, "synth/n_reexpressed": 210})
    assert "FESGAN re-expressed (180 of 210 from neutral)" in generator_probe_section(synthetic, fersnet)
    assert "from neutral)" not in html  # older metrics without the count: the plain label


def test_wall_time_comes_from_the_training_log_and_says_when_it_is_missing(tmp_path):
    import json

    from fer.report.html import training_seconds, wall_time_text

    log = tmp_path / "fold-0.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "seconds": 30.0}) + "\n" for e in range(1, 5)))
    assert training_seconds(log) == 120.0
    assert training_seconds(tmp_path / "absent.jsonl") is None
    assert wall_time_text([120.0, 60.0, 240.0]) == "2.0 min (60 s-4.0 min)"
    assert wall_time_text([None, 30.0]) == "30 s (1 of 2 folds)"
    assert wall_time_text([None, None]) == "n/a"
