"""Quality of expression pseudo-labels against the corpus's hidden expression truth.

EVALUATION ONLY: this is the only module that reads the corpus truth (the demo generator's
``corpus_truth.csv``); nothing it returns may flow back into training. Used to score the
guidance modes of ``fer.clustering.guided`` (Fang et al., Sensors 2023, M4) and to report
pseudo-label accuracy next to the recogniser's test accuracy.

Project's reading of the metrics: every corpus image counts. An image whose true expression
is not one of ``classes`` (truth -1) can never be labelled correctly, so it counts as wrong
in the accuracies, and as its own category in NMI and purity.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from fer.clustering.guided import PseudoLabels

__all__ = ["pseudo_label_quality", "purity", "read_corpus_truth"]


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("", "."))


def read_corpus_truth(
    truth_csv: Path,
    corpus_paths: Sequence[str],
    classes: Sequence[str],
    *,
    known_expressions: Sequence[str] | None = None,
) -> np.ndarray:
    """True expression index of every corpus image, (N,) int64; -1 for an expression that
    is not in ``classes``.

    ``truth_csv`` has columns ``image, expression`` with image paths relative to the corpus
    root; ``corpus_paths`` (e.g. the aligned corpus manifest's ``path`` column) may carry any
    prefix: a corpus path matches the truth row equal to one of its trailing path suffixes
    (the longest that matches). ``known_expressions`` (optional) lists every legal name;
    a name outside it and ``classes`` is an error. Errors (ValueError naming the file):
    missing columns, duplicate rows, unknown names, corpus images absent from the truth.
    """
    truth_csv = Path(truth_csv)
    if not truth_csv.is_file():
        raise ValueError(f"{truth_csv}: corpus truth file is missing")
    with open(truth_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "image" not in fields or "expression" not in fields:
            raise ValueError(f"{truth_csv}: needs columns 'image' and 'expression', got {fields}")
        truth: dict[tuple[str, ...], str] = {}
        for line, row in enumerate(reader, start=2):
            key = _parts(row["image"] or "")
            name = (row["expression"] or "").strip()
            if not key or not name:
                raise ValueError(f"{truth_csv}, line {line}: empty image or expression")
            if key in truth:
                raise ValueError(f"{truth_csv}, line {line}: duplicate image {row['image']!r}")
            truth[key] = name
    index = {c: i for i, c in enumerate(classes)}
    if known_expressions is not None:
        legal = set(known_expressions) | set(classes)
        unknown = sorted({v for v in truth.values() if v not in legal})
        if unknown:
            raise ValueError(f"{truth_csv}: unknown expression names {unknown} (known: {sorted(legal)})")
    out = np.empty(len(corpus_paths), dtype=np.int64)
    missing: list[str] = []
    used: dict[tuple[str, ...], int] = {}
    for i, path in enumerate(corpus_paths):
        parts = _parts(path)
        key = next((parts[s:] for s in range(len(parts)) if parts[s:] in truth), None)
        if key is None:
            missing.append(path)
            continue
        if key in used:
            raise ValueError(
                f"{truth_csv}: corpus images {corpus_paths[used[key]]!r} and {path!r} both match the "
                f"truth row {'/'.join(key)!r}"
            )
        used[key] = i
        out[i] = index.get(truth[key], -1)
    if missing:
        raise ValueError(
            f"{truth_csv}: no truth for {len(missing)} corpus images, e.g. {missing[:3]}"
        )
    return out


def purity(cluster: np.ndarray, truth: np.ndarray) -> float:
    """sum over clusters of the size of its majority true category / N."""
    cluster = np.asarray(cluster, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    if cluster.size == 0:
        return float("nan")
    _, ci = np.unique(cluster, return_inverse=True)
    _, ti = np.unique(truth, return_inverse=True)
    table = np.zeros((ci.max() + 1, ti.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, ti), 1)
    return float(table.max(axis=1).sum() / cluster.size)


def _acc(pred: np.ndarray, truth: np.ndarray) -> float | None:
    return float(np.mean(pred == truth)) if pred.size else None


def pseudo_label_quality(pl: PseudoLabels, truth: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Pseudo-label quality (JSON-ready; None where undefined, e.g. nothing kept).

    ``pseudo/acc_kept``: accuracy of the kept pseudo-labels; ``pseudo/acc_all``: of all
    ASSIGNED ones (a rejected image has no pseudo-label; without rejection: of all images);
    ``pseudo/coverage``: kept fraction; ``pseudo/rejected``: rejected fraction;
    ``pseudo/rejected_unknown`` / ``pseudo/assigned_unknown``: share of the rejected /
    assigned images whose true expression is none of the classes (rejection does its job
    when the first is well above the second; None when there are none);
    ``cluster/nmi``: NMI (arithmetic normalisation)
    between cluster ids and truth; ``cluster/purity``; ``pseudo/kept_per_class`` (list of
    kept counts per pseudo-label class); ``pseudo/acc_kept_per_class``: per pseudo-label
    class, the fraction of its kept images whose truth is that class (None when none kept);
    ``pseudo/n_unknown_truth``: images whose true expression is not in the classes.
    """
    truth = np.asarray(truth)
    n = len(pl.label)
    if truth.shape != (n,):
        raise ValueError(f"truth shape {truth.shape} does not match {n} pseudo-labels")
    if not np.issubdtype(truth.dtype, np.integer) or (truth.size and (truth.min() < -1 or truth.max() >= num_classes)):
        raise ValueError(f"truth must be integers in [-1, {num_classes})")
    kept = np.asarray(pl.kept, dtype=bool)
    rejected = pl.rejected_mask
    if rejected.shape != (n,):
        raise ValueError(f"rejected shape {rejected.shape} does not match {n} pseudo-labels")
    assigned = ~rejected
    unknown = truth == -1
    label = np.asarray(pl.label, dtype=np.int64)
    per_class = np.bincount(label[kept], minlength=num_classes)
    acc_pc = [_acc(label[kept & (label == c)], truth[kept & (label == c)]) for c in range(num_classes)]
    return {
        "pseudo/acc_kept": _acc(label[kept], truth[kept]),
        "pseudo/acc_all": _acc(label[assigned], truth[assigned]),
        "pseudo/coverage": float(kept.mean()) if n else None,
        "pseudo/rejected": float(rejected.mean()) if n else None,
        "pseudo/rejected_unknown": float(unknown[rejected].mean()) if rejected.any() else None,
        "pseudo/assigned_unknown": float(unknown[assigned].mean()) if assigned.any() else None,
        "cluster/nmi": float(normalized_mutual_info_score(truth, pl.cluster)) if n else None,
        "cluster/purity": purity(pl.cluster, truth) if n else None,
        "pseudo/kept_per_class": per_class.tolist(),
        "pseudo/acc_kept_per_class": acc_pc,
        "pseudo/n_unknown_truth": int((truth == -1).sum()),
    }
