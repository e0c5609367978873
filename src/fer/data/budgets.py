"""Label budgets: per fold, which training subjects keep their expression labels.

``labels.budgets`` (params.yaml) lists fractions below 1 of a fold's labelled training
images (its train + validation part); every fold always also runs with all its labels
(the budget 1.0, today's folds). For fold ``k`` and budget slot ``j`` (1-based position in
``labels.budgets``) the split key is ``"k-bj"`` (``"0-b1"``); the full-label split keeps
the key ``"k"``. Keys name slots, not values, so that ``dvc exp run -S labels.budgets=[0.1]``
keeps the DAG (and dvc.yaml) and re-runs only what depends on the budgets.

How a budget's labelled subjects are drawn (:func:`labelled_order`, :func:`budget_splits`):

- **Subject-grouped**: a subject keeps all or none of its labels. A dataset without
  subject ids has one "subject" per image, so it is budgeted by image.
- **Ordered once per fold, prefixes per budget**: the fold's training-plus-validation
  subjects are put in one seeded order; a budget takes the shortest prefix holding at
  least ``fraction`` of the images. Budgets are therefore **nested** (the 10 % subjects
  are inside the 25 % ones).
- **Class-stratified, every class present**: the order starts with one subject per class
  (rarest class first), then always adds, of the next 8 subjects of a seeded permutation,
  the one that brings the labelled class shares closest to the pool's.
- **Validation is carved from the labelled subjects only** (``folds.val_fraction`` of
  them, at least one), never taking a subject whose loss would leave a class without
  training images; when that is impossible the prefix grows by one subject (the budget's
  actual fraction is recorded and shown in the report).
- The rest of the training part is the **unlabelled** part (``"unlabelled"``): its
  images may be used by methods that learn from unlabelled data; its expression labels
  are masked by :func:`fer.training.protocol.prepare_fold` before any training code
  sees the fold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer.data.folds import FoldError

#: Parts of a budget split (the full-label folds have the first three).
BUDGET_PARTS = ("train", "val", "test", "unlabelled")

#: How many subjects (next in the seeded permutation) compete for each place of the
#: labelling order: more follows the class shares more closely, fewer is more random.
CANDIDATES = 8

_KEY = re.compile(r"(\d+)(?:-b(\d+))?")


def split_key(fold: int, slot: int | None = None) -> str:
    """The split key of fold ``fold`` at budget slot ``slot`` (1-based; None: all labels)."""
    return str(fold) if slot is None else f"{fold}-b{slot}"


def parse_split_key(key: str) -> tuple[int, int | None]:
    """(fold, budget slot or None) of a split key ``"K"`` or ``"K-bJ"``."""
    m = _KEY.fullmatch(str(key))
    if m is None:
        raise FoldError(f"{key!r} is not a split key (K for fold K with all labels, K-bJ for budget slot J)")
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)


def _subject_counts(subjects: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted subject ids and their images per class, (S, K) int64."""
    names, inverse = np.unique(subjects, return_inverse=True)
    counts = np.zeros((len(names), num_classes), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    return names, counts


def _order(counts: np.ndarray, seed: int) -> np.ndarray:
    """Subject indices (rows of ``counts``) in labelling order (module docstring). Linear
    in the number of subjects (a dataset without subject ids has one per image)."""
    n_subjects, _ = counts.shape
    perm = np.random.default_rng(seed).permutation(n_subjects)
    pool = counts.sum(axis=0).astype(float)
    share = pool / max(pool.sum(), 1.0)
    chosen = np.zeros(n_subjects, dtype=bool)
    order: list[int] = []
    covered = np.zeros(len(pool), dtype=bool)
    for c in np.argsort(pool, kind="stable"):
        if pool[c] == 0 or covered[c]:
            continue
        s = int(perm[(counts[perm, c] > 0) & ~chosen[perm]][0])
        order.append(s)
        chosen[s] = True
        covered |= counts[s] > 0
    have = counts[order].sum(axis=0).astype(float)
    pos = 0
    while len(order) < n_subjects:
        # Of the next CANDIDATES subjects in the seeded permutation, the one that brings
        # the labelled part's class shares closest to the pool's (L1).
        while chosen[perm[pos]]:
            pos += 1
        candidates, j = [], pos
        while len(candidates) < CANDIDATES and j < n_subjects:
            if not chosen[perm[j]]:
                candidates.append(int(perm[j]))
            j += 1
        totals = have + counts[candidates]  # (m, K)
        gaps = np.abs(totals / np.maximum(totals.sum(axis=1, keepdims=True), 1.0) - share).sum(axis=1)
        pick = candidates[int(np.argmin(gaps))]
        order.append(pick)
        chosen[pick] = True
        have += counts[pick]
    return np.asarray(order, dtype=np.int64)


def labelled_order(subjects: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> list[str]:
    """The fold's training-plus-validation subjects in labelling order (module docstring):
    one subject per class first (rarest class first), then stratified by class share."""
    if len(subjects) == 0:
        raise FoldError("a fold without training images cannot be budgeted")
    names, counts = _subject_counts(np.asarray(subjects), np.asarray(labels, dtype=np.int64), num_classes)
    return names[_order(counts, seed)].tolist()


def _carve_validation(labelled: np.ndarray, counts: np.ndarray, val_fraction: float) -> list[int] | None:
    """Validation subjects (rows of ``counts``) from ``labelled`` (the last-labelled
    first), as many as ``val_fraction`` of them (at least one), keeping every class present
    in training; None when not even one can be taken."""
    train_total = counts[labelled].sum(axis=0)
    present = train_total > 0
    n_val = max(1, int(round(val_fraction * len(labelled))))
    n_train = len(labelled)
    val: list[int] = []
    for s in labelled[::-1]:
        if len(val) == n_val or n_train <= 1:
            break
        rest = train_total - counts[s]
        if np.all((rest > 0) >= present):
            train_total, n_train = rest, n_train - 1
            val.append(int(s))
    return val or None


def budget_splits(
    subjects: Sequence[str],
    labels: Sequence[int],
    fold: Mapping[str, Sequence[str]],
    fractions: Sequence[float],
    num_classes: int,
    val_fraction: float,
    seed: int,
) -> list[dict[str, Any]]:
    """One split per budget fraction of one fold: ``train``, ``val`` (carved from the
    labelled subjects), ``test`` (the fold's own), ``unlabelled`` (the rest of the
    training part), plus ``fraction`` (asked) and ``labelled_fraction`` (actual, images)."""
    subj = np.asarray(subjects)
    y = np.asarray(labels, dtype=np.int64)
    in_pool = np.isin(subj, sorted(set(fold["train"]) | set(fold["val"])))
    if not in_pool.any():
        raise FoldError("a fold without training images cannot be budgeted")
    names, counts = _subject_counts(subj[in_pool], y[in_pool], num_classes)
    order = _order(counts, seed)
    sizes = np.cumsum(counts[order].sum(axis=1))
    total = int(sizes[-1])
    present = counts.sum(axis=0) > 0
    seen = np.cumsum(counts[order] > 0, axis=0) > 0  # classes covered by each prefix
    n_cover = int(np.flatnonzero(np.all(seen >= present, axis=1))[0]) + 1
    out = []
    for f in fractions:
        if not 0 < f < 1:
            raise FoldError(f"labels.budgets: {f!r} is not a fraction in (0, 1) (all labels always run)")
        n = max(int(np.searchsorted(sizes, math.ceil(f * total))) + 1, n_cover, 2)
        val = None
        while n <= len(order):
            val = _carve_validation(order[:n], counts, val_fraction)
            if val is not None:
                break
            n += 1
        if val is None:
            raise FoldError(
                f"labels.budgets {f:g}: the fold's {len(order)} training subjects cannot give a labelled part with "
                "every class in training and at least one validation subject"
            )
        labelled = order[:n]
        out.append({
            "fraction": float(f),
            "labelled_fraction": float(sizes[n - 1] / total),
            "train": sorted(names[np.setdiff1d(labelled, val)].tolist()),
            "val": sorted(names[val].tolist()),
            "test": sorted(fold["test"]),
            "unlabelled": sorted(names[order[n:]].tolist()),
        })
    return out


def check_budgets(splits: Mapping[str, Mapping[str, Any]], folds: Sequence[Mapping[str, Sequence[str]]]) -> None:
    """Raise :class:`FoldError` unless every budget split keeps its fold's test part,
    partitions its fold's training part into train / val / unlabelled, and the budgets of
    a fold are nested (a smaller budget's labelled subjects inside a larger one's)."""
    by_fold: dict[int, list[Mapping[str, Any]]] = {}
    for key, s in splits.items():
        k, slot = parse_split_key(key)
        if slot is None or k >= len(folds):
            raise FoldError(f"budget split {key!r} names no fold budget")
        fold = folds[k]
        if sorted(s["test"]) != sorted(fold["test"]):
            raise FoldError(f"budget split {key}: its test part is not fold {k}'s")
        parts = [set(s[p]) for p in ("train", "val", "unlabelled")]
        if any(a & b for i, a in enumerate(parts) for b in parts[i + 1:]):
            raise FoldError(f"budget split {key}: train, val and unlabelled share subjects")
        if set().union(*parts) != set(fold["train"]) | set(fold["val"]):
            raise FoldError(f"budget split {key}: train + val + unlabelled are not fold {k}'s training subjects")
        if not s["train"] or not s["val"]:
            raise FoldError(f"budget split {key}: an empty labelled part")
        by_fold.setdefault(k, []).append(s)
    for k, ss in by_fold.items():
        ss = sorted(ss, key=lambda s: s["fraction"])
        for small, large in zip(ss, ss[1:]):
            if not set(small["train"]) | set(small["val"]) <= set(large["train"]) | set(large["val"]):
                raise FoldError(f"fold {k}: budget {small['fraction']:g}'s labelled subjects are not inside "
                                f"budget {large['fraction']:g}'s")


def write_budgets(
    manifest: str | Path, meta: str | Path, folds_path: str | Path, out: str | Path,
    fractions: Sequence[float], val_fraction: float, seed: int,
) -> dict[str, Any]:
    """Draw every fold's budget splits from the aligned manifest and ``folds_path``
    (data/folds.json) and write them (data/budgets.json): ``budgets`` (the fractions, slot
    order), ``splits`` (split key -> parts and fractions) and ``summary`` (labelled,
    validation and unlabelled images per split)."""
    from fer.data.aligned import read_manifest
    from fer.utils.io import read_json, write_json

    rows = read_manifest(manifest)
    classes = list(read_json(meta)["classes"])
    index = {c: i for i, c in enumerate(classes)}
    subjects = [r["subject"] for r in rows]
    labels = [index[r["label"]] for r in rows]
    folds = read_json(folds_path)["folds"]
    if len(set(fractions)) != len(fractions):
        raise FoldError(f"labels.budgets repeats a fraction: {list(fractions)}")
    splits: dict[str, Any] = {}
    for k, fold in enumerate(folds):
        for slot, s in enumerate(budget_splits(subjects, labels, fold, fractions, len(classes), val_fraction,
                                               seed + 2000 + k), start=1):
            splits[split_key(k, slot)] = s
    check_budgets(splits, folds)
    subj = np.asarray(subjects)
    summary = {key: {p: int(np.isin(subj, s[p]).sum()) for p in BUDGET_PARTS} for key, s in splits.items()}
    write_json(out, {"budgets": [float(f) for f in fractions], "splits": splits, "summary": summary, "seed": seed})
    return {"budgets": list(fractions), "splits": len(splits)}


def load_split(path: str | Path, key: str) -> dict[str, list[str]]:
    """The subject lists of split ``key``: from data/folds.json for ``"K"``, from
    data/budgets.json for ``"K-bJ"`` (the file must be the one the key needs)."""
    from fer.utils.io import read_json

    k, slot = parse_split_key(key)
    doc = read_json(path)
    if slot is None:
        if "folds" not in doc:
            raise FoldError(f"{path}: split {key} (all labels) needs data/folds.json")
        return doc["folds"][k]
    if "splits" not in doc or key not in doc["splits"]:
        raise FoldError(f"{path}: has no budget split {key} (labels.budgets has fewer entries, or the file is "
                        "not data/budgets.json)")
    return {p: doc["splits"][key][p] for p in BUDGET_PARTS}
