"""Classification metrics and across-fold summaries (plain Python types, JSON-ready).

* ``acc``: overall accuracy.
* ``mean_class_acc``: mean of the per-class recalls over the classes PRESENT in y_true
  (the "average accuracy" reported for imbalanced FER sets such as RAF-DB).
* ``macro_f1``: the mean over the K classes of F1 = 2 TP / (2 TP + FP + FN), 0 where
  that is 0/0 (a class absent from both y_true and y_pred counts as F1 = 0): the same
  numbers, bit for bit, as scikit-learn's ``f1_score(average="macro", labels=range(K),
  zero_division=0)`` (tests/test_metrics.py checks it), computed here from the confusion
  matrix so that a stage that computes metrics does not import scikit-learn (1-3 s of
  every training and summary job's start-up).
* ``confusion``: K x K counts, rows = true class, columns = predicted class.
* ``per_class_recall``: K entries, ``None`` for classes absent from y_true (JSON has no
  NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Metrics of integer predictions against integer labels in [0, num_classes)."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise ValueError("no samples to evaluate")
    k = int(num_classes)
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.min() < 0 or a.max() >= k:
            raise ValueError(f"{name} has labels outside [0, {k})")
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (t, p), 1)
    support = conf.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(conf), support, out=np.zeros(k), where=present)
    # F1 = 2 TP / (|true| + |predicted|) per class (sklearn's form of 2PR / (P + R))
    f1_denom = support + conf.sum(axis=0)
    f1 = np.divide(2 * np.diag(conf), f1_denom, out=np.zeros(k), where=f1_denom > 0)
    macro_f1 = f1.mean()
    return {
        "acc": float((t == p).mean()),
        "mean_class_acc": float(recall[present].mean()),
        "macro_f1": float(macro_f1),
        "confusion": conf.tolist(),
        "per_class_recall": [float(r) if ok else None for r, ok in zip(recall, present)],
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def summarize_folds(per_fold: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean, sample std (ddof=1; 0.0 for one fold), n and per-fold values of each metric.

    Scalar numeric entries are summarised; non-scalar ones (e.g. confusion matrices) are
    skipped. A scalar key must be present in every fold. Keys keep the first fold's order.

    Returns:
        ``{key: {"mean": float, "std": float, "n": int, "values": [float, ...]}}``
    """
    if not per_fold:
        raise ValueError("no folds to summarize")
    keys = [key for key, v in per_fold[0].items() if _is_number(v)]
    all_scalar = {key for fold in per_fold for key, v in fold.items() if _is_number(v)}
    if missing := sorted(all_scalar - set(keys)):
        raise ValueError(f"metrics missing from the first fold: {missing}")
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values: list[float] = []
        for i, fold in enumerate(per_fold):
            if key not in fold or not _is_number(fold[key]):
                raise ValueError(f"fold {i} lacks a numeric {key!r}")
            values.append(float(fold[key]))
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        out[key] = {"mean": mean, "std": std, "n": n, "values": values}
    return out
