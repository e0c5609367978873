"""Repeated runs on the same folds: is a row's difference to a reference row on one fold
more than the training noise of that fold?

A single run per fold mixes two things: what the method changes, and how far the same
network moves when only its initialisation, batch order and augmentation draws change
(on folds of 60-90 test faces, several points). Repeats -- the whole comparison run again
with other training seeds (``seed``) on the same data and folds (``data_seed``) -- separate
them. This module compares two rows fold by fold over R repeats:

* per fold, each row's mean and standard deviation over its repeats (ddof 1);
* the difference of the means, its standard error ``sqrt(sd_row^2 / R_row + sd_ref^2 / R_ref)``
  and Welch's t-test (two-sided p; None when both rows are constant on that fold);
* the **noise** of one run: the reference row's within-fold standard deviation pooled
  over the folds (each fold's variance weighted by its R - 1 degrees of freedom), and that
  of a single-run difference between two independently trained models, ``sqrt(2)`` times it
  (when both rows had the reference's noise);
* per fold, ``below``: the row's mean is below the reference's by more than two standard
  errors of the difference (about a two-sided 5 % test; with R = 3-5 it has little power
  and, over many folds, some false alarms: read it with the p-values).

Nothing is dropped: every run must have every fold of both rows (``ValueError`` otherwise).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["compare_repeats"]


def compare_repeats(row: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Compare ``row`` with ``reference``, both ``(repeats, folds)`` arrays of one score
    (e.g. test accuracy) from runs on the same folds; the two rows may have different
    numbers of repeats (at least two each) but the same folds. See the module docstring."""
    a = np.asarray(row, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    for name, x in (("row", a), ("reference", b)):
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise ValueError(f"{name}: need a (repeats >= 2, folds >= 1) array, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: non-finite scores")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"row has {a.shape[1]} folds, reference {b.shape[1]}: repeats must share the folds")
    ra, rb = a.shape[0], b.shape[0]
    mean_a, mean_b = a.mean(0), b.mean(0)
    sd_a, sd_b = a.std(0, ddof=1), b.std(0, ddof=1)
    se = np.sqrt(sd_a**2 / ra + sd_b**2 / rb)
    diff = mean_a - mean_b
    folds: list[dict[str, Any]] = []
    for k in range(a.shape[1]):
        p: float | None = None
        if se[k] > 0:
            with warnings.catch_warnings():  # one row constant on a fold: scipy warns of precision, p is right
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(stats.ttest_ind(a[:, k], b[:, k], equal_var=False).pvalue)
        folds.append({
            "fold": k, "row_mean": float(mean_a[k]), "row_sd": float(sd_a[k]),
            "reference_mean": float(mean_b[k]), "reference_sd": float(sd_b[k]),
            "diff": float(diff[k]), "se": float(se[k]), "welch_p": p,
            "below": bool(diff[k] < -2 * se[k]) if se[k] > 0 else bool(diff[k] < 0),
        })
    noise = float(np.sqrt(np.sum((rb - 1) * sd_b**2) / (b.shape[1] * (rb - 1))))
    single_sd = float(np.sqrt(2.0) * noise)
    return {
        "repeats": {"row": ra, "reference": rb},
        "folds": folds,
        "mean_diff": float(diff.mean()),
        "reference_noise_sd": noise,
        "single_run_diff_sd": single_sd,
        "folds_below": [f["fold"] for f in folds if f["below"]],
        "single_runs_below_noise": _single_runs(a, b, -single_sd),
    }


def _single_runs(a: np.ndarray, b: np.ndarray, cut: float) -> Mapping[str, Any]:
    """What one-run tables would have shown: over every pair (a run of the row, a run of
    the reference) on the same fold, how many differences fall below minus the single-run
    difference sd, and the worst one; the same over every ordered pair of two different
    reference runs (the reference against a retrained copy of itself)."""
    row_pairs = (a[:, None, :] - b[None, :, :]).ravel()
    rb = b.shape[0]
    ref_pairs = np.concatenate([b[i] - b[j] for i in range(rb) for j in range(rb) if i != j])
    return {
        "cut": cut,
        "row_vs_reference": {"n": int(row_pairs.size), "below": int((row_pairs < cut).sum()),
                             "worst": float(row_pairs.min())},
        "reference_vs_itself": {"n": int(ref_pairs.size), "below": int((ref_pairs < cut).sum()),
                                "worst": float(ref_pairs.min())},
    }
