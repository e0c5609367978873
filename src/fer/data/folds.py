"""Folds: subject-independent stratified k-fold, or the dataset's own split.

``folds.protocol: subject_kfold``: no subject ever appears in two parts (train / val /
test) of one fold: the test part of fold k comes from scikit-learn's
``StratifiedGroupKFold`` with subjects as groups, and the validation subjects (used for
model selection) are drawn, again by subject and stratified, from the remaining training
subjects. A dataset without subject ids (``has_subjects`` false in the aligned set's
meta.json) is refused (:data:`NO_SUBJECTS`).

``folds.protocol: official``: ONE fold from the dataset's official split (the manifest's
``split`` column): its test part is the ``test`` images, its validation part the ``val``
images (FER2013's PublicTest) or, where the dataset has none, a validation split carved
from the training part by subject (by image where there are no subject ids), as in k-fold
(:func:`official_fold`). folds.json keeps its shape (a list of folds of subject lists),
plus ``protocol`` and ``split_sizes`` (images per part).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PARTS = ("train", "val", "test")

#: The largest folds.val_fraction suggested (the schema's bound is exclusive 0.5; 0.45
#: gives a validation split of 1/2).
MAX_SUGGESTED_VAL_FRACTION = 0.45


class FoldError(ValueError):
    """The data cannot be split as asked."""


#: Why subject_kfold refuses a dataset without subject ids, and what to use.
NO_SUBJECTS = (
    "the dataset has no subject ids (has_subjects false: every image is its own subject), so folds.protocol "
    "subject_kfold would put near-duplicate images of one person (frames of one sequence, several photos of one "
    "face) in both the training and the test part, and the test accuracy would be inflated by that leak; set "
    "folds.protocol: official in params.yaml (the dataset's own train/test split)"
)


def official_fold(
    subjects: Sequence[str], labels: Sequence[int], splits: Sequence[str | None], val_fraction: float, seed: int
) -> dict[str, list[str]]:
    """The one fold of the official protocol (module docstring) as subject lists.

    Every image needs a split; a subject in two official parts is an error (it would leak);
    without ``val`` images the validation subjects are drawn from the ``train`` ones
    (stratified, by subject, 1/:func:`val_splits` of them)."""
    subj = np.asarray(subjects)
    y = np.asarray(labels)
    split = np.array([s or "" for s in splits])
    if not (len(subj) == len(y) == len(split)):
        raise FoldError("subjects, labels and splits differ in length")
    if not split.any():
        raise FoldError(
            "folds.protocol is 'official' but the dataset has no official split (the manifest's split column is "
            "empty): use folds.protocol: subject_kfold, or a layout with the split (for example "
            "data.format folders with train/ and test/ folders)"
        )
    missing = int((split == "").sum())
    if missing:
        raise FoldError(f"folds.protocol 'official': {missing} image(s) have no official split, the others have one")
    unknown = sorted(set(split.tolist()) - set(PARTS))
    if unknown:
        raise FoldError(f"folds.protocol 'official': split names {unknown} are not {list(PARTS)}")
    parts = {p: set(subj[split == p].tolist()) for p in PARTS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(parts[a] & parts[b])
        if both:
            raise FoldError(
                f"folds.protocol 'official': subjects {both[:5]} have images in both the official {a} and {b} "
                "parts, which would leak; the official split must separate subjects"
            )
    for p in ("train", "test"):
        if not parts[p]:
            raise FoldError(f"folds.protocol 'official': the dataset's official split has no {p} images")
    if not parts["val"]:
        from sklearn.model_selection import StratifiedGroupKFold

        n = val_splits(val_fraction)
        idx = np.flatnonzero(split == "train")
        if len(parts["train"]) < n:
            raise FoldError(
                f"folds.protocol 'official': {len(parts['train'])} training subjects cannot give a validation "
                f"split of 1/{n} (folds.val_fraction = {val_fraction:g})"
            )
        inner = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed + 1000)
        tr, va = next(_split(inner, y[idx], subj[idx], f"the validation split of 1/{n} of the official train part"))
        parts["train"], parts["val"] = set(subj[idx][tr].tolist()), set(subj[idx][va].tolist())
    return {p: sorted(parts[p]) for p in PARTS}


def val_splits(val_fraction: float) -> int:
    """The inner split's number of parts: the validation split is 1/n of a fold's training
    subjects, n = max(2, round(1 / val_fraction)), so it needs at least n of them (a
    SMALLER val_fraction needs MORE training subjects)."""
    return max(2, int(round(1.0 / val_fraction)))


def _training_subjects(n_subjects: int, n_folds: int) -> int:
    """Training subjects (train + val) of a fold whose test part has its even share."""
    return n_subjects - math.ceil(n_subjects / n_folds)


def _advice(n_subjects: int, n_folds: int, val_fraction: float, n_train: int) -> str:
    """What helps when ``n_train`` training subjects cannot give the validation split."""
    need = val_splits(val_fraction)
    ways = []
    # More folds make each test part smaller and so each training part larger.
    more = [k for k in range(n_folds + 1, n_subjects + 1) if _training_subjects(n_subjects, k) >= need]
    if more:
        ways.append(f"more folds (folds.n_folds: {more[0]} or more: smaller test parts leave more training subjects)")
    if n_train >= 2:
        vf = min(math.ceil(100 / n_train) / 100, MAX_SUGGESTED_VAL_FRACTION)
        if val_splits(vf) <= n_train and vf > val_fraction:
            ways.append(f"a larger validation fraction (folds.val_fraction: {vf:g} or more; a smaller one needs more subjects)")
    ways.append("more subjects")
    return "use " + ", or ".join(ways)


def fold_plan_problems(n_subjects: int, n_folds: int, val_fraction: float) -> list[str]:
    """Problems that the subject count alone shows before any fold is drawn (empty when
    none). The folds drawn later may still have fewer training subjects than the even
    share assumed here; :func:`make_folds` checks each fold."""
    if n_subjects < n_folds:
        return [
            f"{n_subjects} subjects cannot make {n_folds} subject-independent folds: set folds.n_folds to "
            f"{n_subjects} or less (at least 2), or use more subjects"
        ]
    n_train = _training_subjects(n_subjects, n_folds)
    need = val_splits(val_fraction)
    if n_train < need:
        return [
            f"{n_subjects} subjects in {n_folds} folds leave about {n_train} training subjects per fold, but "
            f"folds.val_fraction = {val_fraction:g} takes the validation split as 1/{need} of them, which needs at "
            f"least {need}: {_advice(n_subjects, n_folds, val_fraction, n_train)}"
        ]
    return []


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
        raise FoldError(fold_plan_problems(len(uniq), n_folds, val_fraction)[0])
    from sklearn.model_selection import StratifiedGroupKFold

    n_val_splits = val_splits(val_fraction)
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (trval_idx, test_idx) in enumerate(_split(outer, y, subj, f"folds.n_folds = {n_folds}")):
        tv_subjects = np.unique(subj[trval_idx])
        if len(tv_subjects) < n_val_splits:
            raise FoldError(
                f"fold {k}: {len(tv_subjects)} training subjects cannot give a validation split of "
                f"1/{n_val_splits} (folds.val_fraction = {val_fraction:g} needs at least {n_val_splits}): "
                + _advice(len(uniq), n_folds, val_fraction, len(tv_subjects))
            )
        inner = StratifiedGroupKFold(n_splits=n_val_splits, shuffle=True, random_state=seed + 1000 + k)
        tr_rel, va_rel = next(
            _split(inner, y[trval_idx], subj[trval_idx], f"fold {k}'s validation split of 1/{n_val_splits}")
        )
        folds.append(
            {
                "train": sorted(set(subj[trval_idx][tr_rel].tolist())),
                "val": sorted(set(subj[trval_idx][va_rel].tolist())),
                "test": sorted(set(subj[test_idx].tolist())),
            }
        )
    check_folds(folds, uniq.tolist())
    return folds


def _split(splitter: Any, y: np.ndarray, groups: np.ndarray, what: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``splitter.split`` (lazily, as scikit-learn yields them) with its refusals as
    :class:`FoldError`."""
    splits = splitter.split(np.zeros(len(y)), y, groups=groups)
    while True:
        try:
            item = next(splits)
        except StopIteration:
            return
        except ValueError as e:
            raise FoldError(
                f"cannot split {len(y)} images of {len(np.unique(groups))} subjects for {what}: {e} "
                "(use fewer folds or more images per class)"
            ) from e
        yield item


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
    """Image indices of each part of ``fold`` given the per-image subject ids (plus
    ``unlabelled`` for a label-budget split, :mod:`fer.data.budgets`)."""
    subj = np.asarray(subjects)
    parts = PARTS + (("unlabelled",) if "unlabelled" in fold else ())
    out = {p: np.flatnonzero(np.isin(subj, fold[p])) for p in parts}
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
    manifest: str | Path,
    meta: str | Path,
    out: str | Path,
    n_folds: int,
    val_fraction: float,
    seed: int,
    protocol: str = "subject_kfold",
) -> dict[str, Any]:
    """Make folds from the aligned manifest and write them as JSON (subject lists per part
    plus per-part image and class counts, the protocol and the images per part)."""
    from fer.data.aligned import read_manifest
    from fer.utils.io import read_json, write_json

    rows = read_manifest(manifest)
    info = read_json(meta)
    classes = list(info["classes"])
    index = {c: i for i, c in enumerate(classes)}
    subjects = [r["subject"] for r in rows]
    labels = [index[r["label"]] for r in rows]
    if protocol == "official":
        folds = [official_fold(subjects, labels, [r.get("split") for r in rows], val_fraction, seed)]
    elif protocol == "subject_kfold":
        if not info.get("has_subjects", True):
            raise FoldError(f"{meta}: {NO_SUBJECTS}")
        folds = make_folds(subjects, labels, n_folds, val_fraction, seed)
    else:
        raise FoldError(f"unknown folds.protocol {protocol!r}")
    summary = fold_summary(subjects, labels, folds, classes)
    doc = {
        "protocol": protocol,
        "n_folds": len(folds),
        "val_fraction": val_fraction,
        "seed": seed,
        "classes": classes,
        "folds": folds,
        "summary": summary,
    }
    if protocol == "official":
        doc["split_sizes"] = {p: summary[0][p]["images"] for p in PARTS}
    write_json(out, doc)
    return {"protocol": protocol, "n_folds": len(folds), "subjects": len(set(subjects)), "images": len(rows)}
