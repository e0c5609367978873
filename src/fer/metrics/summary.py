"""Fold-level metrics -> one method summary (mean and std over folds, pooled confusion)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer.metrics.classification import summarize_folds
from fer.utils.io import read_json

#: Scalar per-fold metrics that are summarised over folds.
SUMMARY_KEYS = ("test/acc", "test/mean_class_acc", "test/macro_f1", "test/last_epoch_acc", "val/acc", "val/mean_class_acc")


def summarize_method(method: str, fold_metric_paths: Sequence[str | Path], classes: Sequence[str]) -> dict[str, Any]:
    """Read per-fold metric files (in fold order) and summarise them."""
    folds = [read_json(p) for p in fold_metric_paths]
    if not folds:
        raise ValueError(f"{method}: no fold metrics")
    scalars = [{k: float(f[k]) for k in SUMMARY_KEYS if k in f} for f in folds]
    pooled = np.sum([np.asarray(f["test/confusion"], dtype=np.int64) for f in folds], axis=0)
    if pooled.shape != (len(classes), len(classes)):
        raise ValueError(f"{method}: confusion matrices are {pooled.shape}, expected {len(classes)} classes")
    return {
        "method": method,
        "n_folds": len(folds),
        "classes": list(classes),
        "metrics": summarize_folds(scalars),
        "per_fold": [{k: v for k, v in f.items() if k != "test/confusion"} for f in folds],
        "pooled_confusion": pooled.tolist(),
    }
