"""Subject-independent folds: no subject in two parts of one fold, each tested once."""

import numpy as np
import pytest

from fer.data.folds import FoldError, check_folds, make_folds, official_fold, split_indices, write_folds


def _data(n_subjects=20, per=3, k=7, seed=0):
    rng = np.random.default_rng(seed)
    subjects, labels = [], []
    for s in range(n_subjects):
        for c in range(k):
            for _ in range(rng.integers(1, per + 1)):
                subjects.append(f"S{s:03d}")
                labels.append(c)
    return subjects, labels


@pytest.mark.parametrize("n_folds,val", [(5, 0.2), (10, 0.15), (3, 0.34)])
def test_no_subject_in_two_parts(n_folds, val):
    subjects, labels = _data(n_subjects=30)
    folds = make_folds(subjects, labels, n_folds, val, seed=1)
    assert len(folds) == n_folds
    tested = []
    for fold in folds:
        tr, va, te = (set(fold[p]) for p in ("train", "val", "test"))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == set(subjects)
        tested += fold["test"]
        idx = split_indices(subjects, fold)
        s = np.asarray(subjects)
        assert not set(s[idx["train"]]) & set(s[idx["test"]])
        assert not set(s[idx["val"]]) & set(s[idx["test"]])
        assert sum(len(v) for v in idx.values()) == len(subjects)
    assert sorted(tested) == sorted(set(subjects))


def test_folds_are_stratified_and_deterministic():
    subjects, labels = _data(n_subjects=40)
    a = make_folds(subjects, labels, 5, 0.2, seed=3)
    assert a == make_folds(subjects, labels, 5, 0.2, seed=3)
    assert a != make_folds(subjects, labels, 5, 0.2, seed=4)
    y = np.asarray(labels)
    for fold in a:
        idx = split_indices(subjects, fold)
        assert len(np.unique(y[idx["test"]])) == 7  # every class in every test fold


def test_too_few_subjects():
    with pytest.raises(FoldError, match="cannot make"):
        make_folds(["a", "a", "b"], [0, 1, 0], 3, 0.2, seed=0)


def test_check_folds_catches_leaks():
    good = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    leak = {"train": ["a", "d"], "val": ["c"], "test": ["b", "d"]}
    with pytest.raises(FoldError, match="both train and test"):
        check_folds([good, leak], ["a", "b", "c", "d"])


def test_too_few_training_subjects_gives_advice_that_helps():
    """A smaller folds.val_fraction asks for MORE training subjects (the validation split
    is 1/round(1/val_fraction) of them), and so do FEWER folds (larger test parts): the
    message must not advise lowering val_fraction (it did), and each fix it names must work."""
    from fer.data.folds import fold_plan_problems, val_splits

    subjects, labels = _data(n_subjects=6, per=1)
    with pytest.raises(FoldError) as e:
        make_folds(subjects, labels, 3, 0.2, seed=0)  # 4 training subjects, 1/5 needs 5
    msg = str(e.value)
    assert "lower folds.val_fraction" not in msg
    assert "needs at least 5" in msg and "folds.n_folds: 6 or more" in msg and "folds.val_fraction: 0.25" in msg
    make_folds(subjects, labels, 6, 0.2, seed=0)  # more folds works
    make_folds(subjects, labels, 3, 0.25, seed=0)  # so does the larger fraction named
    # the same arithmetic before any fold is drawn (what the pipeline checks before any job)
    (problem,) = fold_plan_problems(6, 3, 0.2)
    assert "folds.val_fraction: 0.25" in problem and "folds.n_folds: 6" in problem
    assert fold_plan_problems(6, 3, 0.25) == [] and fold_plan_problems(6, 6, 0.2) == []
    assert "set folds.n_folds to 3 or less" in fold_plan_problems(3, 4, 0.2)[0]
    assert val_splits(0.2) == 5 and val_splits(0.45) == 2 and val_splits(0.34) == 3


def test_sklearn_refusals_become_fold_errors():
    with pytest.raises(FoldError, match="folds.n_folds = 4.*fewer folds"):
        make_folds(["a", "b", "c", "d", "e"], [0, 1, 0, 1, 0], 4, 0.2, seed=0)


# ----------------------------------------------------------------------------- official protocol
def _write_aligned(tmp_path, rows, has_subjects):
    import csv
    import json

    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "subject", "label", "split"])
        for i, (subj, label, split) in enumerate(rows):
            w.writerow([i, f"{subj}.png", subj, label, split])
    (tmp_path / "meta.json").write_text(json.dumps({"classes": ["anger", "happiness"], "has_subjects": has_subjects}))


def test_official_fold_keeps_the_split_and_carves_validation_from_train(tmp_path):
    from fer.utils.io import read_json

    rows = [(f"img{i:02d}", ["anger", "happiness"][i % 2], "train") for i in range(20)]
    rows += [(f"img{i:02d}", ["anger", "happiness"][i % 2], "test") for i in range(20, 26)]
    _write_aligned(tmp_path, rows, has_subjects=False)
    write_folds(tmp_path / "manifest.csv", tmp_path / "meta.json", tmp_path / "folds.json", 4, 0.2, 0,
                protocol="official")
    doc = read_json(tmp_path / "folds.json")
    (fold,) = doc["folds"]
    assert doc["protocol"] == "official" and doc["n_folds"] == 1
    assert fold["test"] == [f"img{i:02d}" for i in range(20, 26)]
    assert len(fold["val"]) == 4 and set(fold["train"]) | set(fold["val"]) == {f"img{i:02d}" for i in range(20)}
    assert not set(fold["train"]) & set(fold["val"])
    assert doc["split_sizes"] == {"train": 16, "val": 4, "test": 6}
    # FER2013: the official val part (PublicTest) is the validation split as it is
    rows[:3] = [(s, lab, "val") for s, lab, _ in rows[:3]]
    _write_aligned(tmp_path, rows, has_subjects=False)
    fold = official_fold([r[0] for r in rows], [0] * len(rows), [r[2] for r in rows], 0.2, 0)
    assert fold["val"] == ["img00", "img01", "img02"] and len(fold["train"]) == 17


def test_official_fold_refusals():
    with pytest.raises(FoldError, match="no official split"):
        official_fold(["a", "b"], [0, 1], [None, None], 0.2, 0)
    with pytest.raises(FoldError, match="1 image.*no official split"):
        official_fold(["a", "b"], [0, 1], ["train", None], 0.2, 0)
    with pytest.raises(FoldError, match=r"subjects \['S1'\] have images in both the official train and test"):
        official_fold(["S1", "S1", "S2"], [0, 1, 0], ["train", "test", "test"], 0.2, 0)


def test_subject_kfold_refuses_a_dataset_without_subject_ids(tmp_path):
    rows = [(f"img{i:02d}", ["anger", "happiness"][i % 2], "") for i in range(20)]
    _write_aligned(tmp_path, rows, has_subjects=False)
    with pytest.raises(FoldError, match="near-duplicate.*folds.protocol: official"):
        write_folds(tmp_path / "manifest.csv", tmp_path / "meta.json", tmp_path / "folds.json", 4, 0.2, 0)
    assert not (tmp_path / "folds.json").exists()
