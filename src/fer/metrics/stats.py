"""Paired comparison of two methods over the same folds (same subjects, same seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def paired_test(method: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Paired t-test and Wilcoxon signed-rank test of per-fold scores against the baseline.

    With few folds these tests have little power: the report shows the per-fold
    differences and both p-values, not a verdict. p-values are None when undefined
    (fewer than two folds, or every difference zero).
    """
    a = np.asarray(method, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same folds: {a.shape} vs {b.shape}")
    diff = a - b
    out: dict[str, Any] = {
        "n": int(diff.size),
        "mean_diff": float(diff.mean()) if diff.size else float("nan"),
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
        "t_p": None,
        "wilcoxon_p": None,
    }
    if diff.size >= 2 and np.any(diff != 0):
        if np.std(diff) > 0:
            out["t_p"] = float(stats.ttest_rel(a, b).pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)
    return out
