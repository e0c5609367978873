"""Subject-independent stratified folds with a validation split inside each training part.

No subject ever appears in two parts (train / val / test) of one fold: the test part of
fold k comes from scikit-learn's ``StratifiedGroupKFold`` with subjects as groups, and
the validation subjects (used for model selection) are drawn, again by subject and
stratified, from the remaining training subjects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

PARTS = ("train", "val", "test")


class FoldError(ValueError):
    """The data cannot be split as asked."""


def make_folds(
    subjects: Sequence[str],
    labels: Sequence[int],
    n_folds: int,
    val_fraction: float,
    seed: int,
) -> list[dict[str, list[str]]]:
    """Return ``n_folds`` dicts with sorted subject lists under ``train``, ``val``, ``test``."""
    subj = np.asarray(subjects)
    y = np.asarray(labels)
    if len(subj) != len(y):
        raise FoldError("subjects and labels differ in length")
    uniq = np.unique(subj)
    if len(uniq) < n_folds:
        raise FoldError(f"{len(uniq)} subjects cannot make {n_folds} subject-independent folds")
    n_val_splits = max(2, int(round(1.0 / val_fraction)))
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (trval_idx, test_idx) in enumerate(outer.split(np.zeros(len(y)), y, groups=subj)):
        tv_subjects = np.unique(subj[trval_idx])
        if len(tv_subjects) < n_val_splits:
            raise FoldError(
                f"fold {k}: {len(tv_subjects)} training subjects cannot give a validation split of "
                f"1/{n_val_splits}; lower folds.val_fraction or use more subjects"
            )
        inner = StratifiedGroupKFold(n_splits=n_val_splits, shuffle=True, random_state=seed + 1000 + k)
        tr_rel, va_rel = next(inner.split(np.zeros(len(trval_idx)), y[trval_idx], groups=subj[trval_idx]))
        folds.append(
            {
                "train": sorted(set(subj[trval_idx][tr_rel].tolist())),
                "val": sorted(set(subj[trval_idx][va_rel].tolist())),
                "test": sorted(set(subj[test_idx].tolist())),
            }
        )
    check_folds(folds, uniq.tolist())
    return folds


def check_folds(folds: Sequence[dict[str, list[str]]], all_subjects: Sequence[str]) -> None:
    """Raise :class:`FoldError` unless parts are disjoint, cover every subject in each fold,
    and every subject is tested exactly once."""
    everyone = set(all_subjects)
    tested: Counter[str] = Counter()
    for k, fold in enumerate(folds):
        parts = [set(fold[p]) for p in PARTS]
        for i in range(3):
            for j in range(i + 1, 3):
                both = parts[i] & parts[j]
                if both:
                    raise FoldError(f"fold {k}: subjects {sorted(both)[:5]} in both {PARTS[i]} and {PARTS[j]}")
        if set().union(*parts) != everyone:
            raise FoldError(f"fold {k}: parts do not cover every subject")
        if not all(parts):
            raise FoldError(f"fold {k}: an empty part")
        tested.update(parts[2])
    twice = [s for s, c in tested.items() if c != 1]
    if twice or set(tested) != everyone:
        raise FoldError("every subject must be in exactly one test part")


def split_indices(subjects: Sequence[str], fold: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Image indices of each part of ``fold`` given the per-image subject ids."""
    subj = np.asarray(subjects)
    out = {p: np.flatnonzero(np.isin(subj, fold[p])) for p in PARTS}
    covered = sum(len(v) for v in out.values())
    if covered != len(subj):
        raise FoldError(f"{len(subj) - covered} images belong to subjects not in the fold")
    return out


def fold_summary(
    subjects: Sequence[str], labels: Sequence[int], folds: Sequence[dict[str, list[str]]], classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Per fold and part: number of subjects, images and images per class."""
    y = np.asarray(labels)
    rows = []
    for k, fold in enumerate(folds):
        idx = split_indices(subjects, fold)
        row: dict[str, Any] = {"fold": k}
        for p in PARTS:
            counts = np.bincount(y[idx[p]], minlength=len(classes))
            row[p] = {
                "subjects": len(fold[p]),
                "images": int(len(idx[p])),
                "per_class": {c: int(n) for c, n in zip(classes, counts)},
            }
        rows.append(row)
    return rows


def write_folds(
    manifest: str | Path, meta: str | Path, out: str | Path, n_folds: int, val_fraction: float, seed: int
) -> dict[str, Any]:
    """Make folds from the aligned manifest and write them as JSON (subject lists per part
    plus per-part image and class counts)."""
    from fer.data.aligned import read_manifest
    from fer.utils.io import read_json, write_json

    rows = read_manifest(manifest)
    classes = list(read_json(meta)["classes"])
    index = {c: i for i, c in enumerate(classes)}
    subjects = [r["subject"] for r in rows]
    labels = [index[r["label"]] for r in rows]
    folds = make_folds(subjects, labels, n_folds, val_fraction, seed)
    doc = {
        "n_folds": n_folds,
        "val_fraction": val_fraction,
        "seed": seed,
        "classes": classes,
        "folds": folds,
        "summary": fold_summary(subjects, labels, folds, classes),
    }
    write_json(out, doc)
    return {"n_folds": n_folds, "subjects": len(set(subjects)), "images": len(rows)}
