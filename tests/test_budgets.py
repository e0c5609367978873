"""Label budgets (fer.data.budgets): nested, subject-grouped, class-stratified subsets of a
fold's training part with validation carved from the labelled subjects only, and the
unlabelled rest whose labels no method sees (prepare_fold masks them)."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer.data.budgets import (
    budget_splits,
    check_budgets,
    load_split,
    parse_split_key,
    split_key,
    write_budgets,
)
from fer.data.folds import FoldError, make_folds, split_indices
from fer.params import ParamsError, section
from fer.training.protocol import UNLABELLED, prepare_fold

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = [0.1, 0.25, 0.5]


def posed_like(n_subjects: int = 60, num_classes: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image subject ids and labels shaped like a posed set (CK+): each subject shows a
    few of the classes, a few frames each; class sizes differ (one rare class)."""
    rng = np.random.default_rng(seed)
    subjects, labels = [], []
    p = np.array([0.25, 0.1, 0.15, 0.05, 0.2, 0.1, 0.15])[:num_classes]
    for s in range(n_subjects):
        shown = rng.choice(num_classes, size=rng.integers(1, 5), replace=False, p=p / p.sum())
        for c in shown:
            for _ in range(int(rng.integers(2, 5))):
                subjects.append(f"S{s:03d}")
                labels.append(int(c))
    return np.asarray(subjects), np.asarray(labels)


@pytest.fixture(scope="module")
def posed():
    subjects, labels = posed_like()
    folds = make_folds(subjects, labels, n_folds=5, val_fraction=0.2, seed=0)
    splits = {split_key(k, j): s for k, fold in enumerate(folds)
              for j, s in enumerate(budget_splits(subjects, labels, fold, FRACTIONS, 7, 0.2, 2000 + k), start=1)}
    return subjects, labels, folds, splits


def labelled(s) -> set[str]:
    return set(s["train"]) | set(s["val"])


def test_budgets_are_nested_and_partition_the_training_part(posed):
    subjects, labels, folds, splits = posed
    check_budgets(splits, folds)  # raises on any violation
    for k, fold in enumerate(folds):
        pool = set(fold["train"]) | set(fold["val"])
        per = [splits[split_key(k, j)] for j in (1, 2, 3)]
        assert labelled(per[0]) <= labelled(per[1]) <= labelled(per[2]) < pool
        for s in per:
            assert not set(s["train"]) & set(s["val"]) and not labelled(s) & set(s["unlabelled"])
            assert labelled(s) | set(s["unlabelled"]) == pool
            assert s["test"] == sorted(fold["test"])  # the fold's own test part, never touched
            assert not (labelled(s) | set(s["unlabelled"])) & set(fold["test"])


def test_every_class_has_a_labelled_training_subject_and_validation_is_labelled(posed):
    subjects, labels, folds, splits = posed
    for key, s in splits.items():
        idx = split_indices(subjects, s)
        assert set(labels[idx["train"]].tolist()) == set(range(7)), key
        assert len(s["val"]) >= 1 and set(s["val"]) <= labelled(s)


def test_the_labelled_share_meets_the_budget_and_stays_close_to_it(posed):
    subjects, labels, folds, splits = posed
    for key, s in splits.items():
        k, slot = parse_split_key(key)
        f = FRACTIONS[slot - 1]
        pool = np.isin(subjects, sorted(labelled(s) | set(s["unlabelled"])))
        lab = np.isin(subjects, sorted(labelled(s)))
        share = lab.sum() / pool.sum()
        assert share == pytest.approx(s["labelled_fraction"])
        assert share >= f
        # whole subjects: at most the coverage subjects (one per class) or one subject above the target
        assert share <= max(f, 7 * 16 / pool.sum()) + 16 / pool.sum(), (key, share)


def test_class_shares_of_the_labelled_part_follow_the_pool(posed):
    subjects, labels, folds, splits = posed
    for k in range(len(folds)):
        s = splits[split_key(k, 3)]  # 50 %: enough subjects for shares to mean something
        pool = np.bincount(labels[np.isin(subjects, sorted(labelled(s) | set(s["unlabelled"])))], minlength=7)
        lab = np.bincount(labels[np.isin(subjects, sorted(labelled(s)))], minlength=7)
        assert np.abs(lab / lab.sum() - pool / pool.sum()).max() < 0.04, (lab, pool)


def test_same_seed_same_budgets_other_seed_other_subjects(posed):
    subjects, labels, folds, splits = posed
    again = budget_splits(subjects, labels, folds[0], FRACTIONS, 7, 0.2, 2000)
    assert again == [splits[split_key(0, j)] for j in (1, 2, 3)]
    other = budget_splits(subjects, labels, folds[0], FRACTIONS, 7, 0.2, 2001)
    assert [labelled(s) for s in other] != [labelled(s) for s in again]


def test_without_subject_ids_the_budget_is_by_image():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 400)
    subjects = np.array([f"img{i:04d}" for i in range(400)])  # has_subjects false: one subject per image
    fold = {"train": list(subjects[:240]), "val": list(subjects[240:300]), "test": list(subjects[300:])}
    (s,) = budget_splits(subjects, labels, fold, [0.1], 7, 0.2, 0)
    assert len(labelled(s)) == 30  # ceil(0.1 x 300) images, exactly
    assert len(s["val"]) == 6


def test_a_pool_too_small_for_train_and_validation_is_an_error():
    subjects = np.array(["A"] * 7)
    labels = np.arange(7)
    with pytest.raises(FoldError, match="at least one validation subject"):
        budget_splits(subjects, labels, {"train": ["A"], "val": [], "test": []}, [0.5], 7, 0.2, 0)


def test_check_budgets_refuses_leaks_and_unnested_budgets(posed):
    subjects, labels, folds, splits = posed
    bad = json.loads(json.dumps(splits))
    bad["0-b1"]["val"].append(folds[0]["test"][0])
    with pytest.raises(FoldError):
        check_budgets(bad, folds)
    bad = json.loads(json.dumps(splits))
    s1, s2 = bad["0-b1"], bad["0-b2"]
    moved = s2["unlabelled"][0]
    s1["unlabelled"].remove(moved)
    s1["train"].append(moved)  # labelled at 10 %, unlabelled at 25 %
    with pytest.raises(FoldError, match="not inside"):
        check_budgets(bad, folds)


def test_prepare_fold_hides_the_unlabelled_labels(posed):
    """The training code gets the fold through prepare_fold: the unlabelled part's labels
    are UNLABELLED there, the labelled and test parts' labels untouched."""
    subjects, labels, folds, splits = posed
    idx = split_indices(subjects, splits["0-b1"])
    images = np.zeros((len(labels), 8, 8, 1), np.uint8)
    fold = prepare_fold(images, labels, idx, [f"c{i}" for i in range(7)], device="cpu", seed=0, subjects=subjects)
    assert np.all(fold.labels[idx["unlabelled"]] == UNLABELLED)
    for part in ("train", "val", "test"):
        assert np.array_equal(fold.labels[idx[part]], labels[idx[part]])
        assert np.all(fold.part(part)[1] >= 0)
    assert labels[idx["unlabelled"]].min() >= 0  # the caller's array is not modified


def test_split_keys_and_load_split(posed, tmp_path):
    assert parse_split_key("3") == (3, None) and parse_split_key("3-b2") == (3, 2)
    with pytest.raises(FoldError):
        parse_split_key("3-b")
    subjects, labels, folds, splits = posed
    (tmp_path / "folds.json").write_text(json.dumps({"folds": folds}))
    (tmp_path / "budgets.json").write_text(json.dumps({"budgets": FRACTIONS, "splits": splits}))
    assert load_split(tmp_path / "folds.json", "2") == folds[2]
    assert load_split(tmp_path / "budgets.json", "2-b3")["unlabelled"] == splits["2-b3"]["unlabelled"]
    with pytest.raises(FoldError, match="no budget split 2-b4"):
        load_split(tmp_path / "budgets.json", "2-b4")
    with pytest.raises(FoldError, match="needs data/folds.json"):
        load_split(tmp_path / "budgets.json", "2")


def test_write_budgets_from_the_aligned_manifest(tmp_path):
    subjects, labels = posed_like(30)
    classes = [f"c{i}" for i in range(7)]
    with open(tmp_path / "manifest.csv", "w") as f:
        f.write("index,image,subject,label\n")
        for i, (s, y) in enumerate(zip(subjects, labels)):
            f.write(f"{i},{s}_{i}.png,{s},{classes[y]}\n")
    (tmp_path / "meta.json").write_text(json.dumps({"classes": classes}))
    folds = make_folds(subjects, labels, 3, 0.2, 0)
    (tmp_path / "folds.json").write_text(json.dumps({"folds": folds}))
    write_budgets(tmp_path / "manifest.csv", tmp_path / "meta.json", tmp_path / "folds.json", tmp_path / "b.json",
                  [0.5, 0.2], 0.2, 0)
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["budgets"] == [0.5, 0.2] and sorted(doc["splits"]) == sorted(f"{k}-b{j}" for k in range(3) for j in (1, 2))
    for key, s in doc["splits"].items():
        n = doc["summary"][key]
        assert n["train"] + n["val"] + n["unlabelled"] + n["test"] == len(labels)
        assert n["train"] == int(np.isin(subjects, s["train"]).sum())
    with pytest.raises(FoldError, match="repeats"):
        write_budgets(tmp_path / "manifest.csv", tmp_path / "meta.json", tmp_path / "folds.json", tmp_path / "c.json",
                      [0.5, 0.5], 0.2, 0)


@pytest.mark.parametrize("value, message", [
    ([1.0], "fractions in \\(0, 1\\)"),
    ([0.0], "fractions in \\(0, 1\\)"),
    ([0.2, 0.2], "repeats"),
    (["0.2"], "must be a number"),
])
def test_labels_params_refuse_bad_budgets(value, message):
    with pytest.raises(ParamsError, match=message):
        section({"labels": {"budgets": value}}, "labels")


def test_summarize_checks_the_budget_splits(tmp_path):
    """summarize.py with --budget-slot must get every fold's K-bJ metrics, in order."""
    budgets = {"budgets": [0.5], "splits": {"0-b1": {"labelled_fraction": 0.5}, "1-b1": {"labelled_fraction": 0.6}}}
    (tmp_path / "budgets.json").write_text(json.dumps(budgets))
    script = ROOT / "workflow" / "scripts" / "summarize.py"
    proc = subprocess.run([sys.executable, str(script), "--method", "baseline", "--meta", "m.json", "--folds",
                           str(tmp_path / "budgets.json"), "--budget-slot", "1", "--out", str(tmp_path / "s.json"),
                           "metrics/baseline/fold-0-b1.json"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "['0-b1', '1-b1']" in proc.stderr, proc.stderr


def test_the_per_fold_scripts_get_masked_labels_everywhere(posed, tmp_path):
    """What every per-fold script gets from its shared set-up (workflow/scripts/_fold.py
    fold_context): at a budget split, neither the Fold nor the aligned set it returns holds
    a label of the unlabelled part; with all labels both hold the true labels."""
    import argparse

    from _fold import fold_context

    from fer.params import DeclaredParams

    subjects, labels, folds, splits = posed
    classes = [f"c{i}" for i in range(7)]
    np.save(tmp_path / "images.npy", np.zeros((len(labels), 8, 8, 1), np.uint8))
    with open(tmp_path / "manifest.csv", "w") as f:
        f.write("index,path,subject,label\n")
        f.writelines(f"{i},{s}_{i}.png,{s},{classes[y]}\n" for i, (s, y) in enumerate(zip(subjects, labels)))
    (tmp_path / "meta.json").write_text(json.dumps({"classes": classes}))
    (tmp_path / "folds.json").write_text(json.dumps({"folds": folds}))
    (tmp_path / "budgets.json").write_text(json.dumps({"budgets": FRACTIONS, "splits": splits}))
    p = DeclaredParams({"seed": 0, "compute": {"device": "cpu", "threads": 1}}, ["seed", "compute"])
    for key, folds_file in (("1-b1", "budgets.json"), ("1", "folds.json")):
        args = argparse.Namespace(images=str(tmp_path / "images.npy"), manifest=str(tmp_path / "manifest.csv"),
                                  meta=str(tmp_path / "meta.json"), folds=str(tmp_path / folds_file), fold=key,
                                  start=None)
        fold, data = fold_context(args, p)
        hidden = np.isin(subjects, splits["1-b1"]["unlabelled"])
        if key == "1-b1":
            assert np.all(fold.labels[hidden] == UNLABELLED) and np.all(data.labels[hidden] == UNLABELLED)
            assert fold.seed == 1  # every budget of fold 1 shares fold 1's seed
        else:
            assert np.array_equal(data.labels, labels) and "unlabelled" not in fold.idx
        assert np.array_equal(fold.labels[~hidden], labels[~hidden])


def test_report_section_pairs_each_row_with_the_baseline_at_the_same_budget():
    from fer.metrics.stats import paired_test
    from fer.report.sections import budget_section

    def summary(method, acc, labels=None):
        s = {"method": method, "metrics": {"test/acc": {"values": acc, "mean": float(np.mean(acc)),
                                                        "std": float(np.std(acc, ddof=1))},
                                           "test/mean_class_acc": {"values": acc, "mean": float(np.mean(acc)),
                                                                   "std": float(np.std(acc, ddof=1))}}}
        if labels:
            s["labels"] = labels
        return s

    lab = {"slot": 1, "fraction": 0.25, "labelled_fraction": [0.27, 0.26, 0.3]}
    full = [summary("baseline", [0.8, 0.7, 0.75]), summary("fixmatch", [0.81, 0.72, 0.74])]
    low = [summary("baseline", [0.5, 0.4, 0.45], lab), summary("fixmatch", [0.6, 0.55, 0.5], lab)]
    budgets = {"budgets": [0.25], "splits": {"0-b1": {"fraction": 0.25, "labelled_fraction": 0.27}},
               "summary": {"0-b1": {"train": 10, "val": 3, "unlabelled": 30, "test": 20}}}
    text = budget_section(full, budgets, low)
    diff = paired_test([0.6, 0.55, 0.5], [0.5, 0.4, 0.45])
    assert f"{100 * diff['mean_diff']:+.2f}" in text and f"{diff['t_p']:.3f}" in text  # vs the 25 % baseline
    assert "+10.00" in text and "25 % labels (slot 1)" in text and "all labels" in text
    assert text.index("25 % labels") < text.index("all labels")  # smallest budget first
    assert 'alt="accuracy against label budget" src="data:image/png;base64,' in text
    assert "<td class=\"l\">0-b1</td>" in text and "0.277" in text  # mean actual labelled share of the folds


def test_the_clustering_pool_adds_the_unlabelled_in_domain_faces_only_at_a_budget(posed):
    from fer.clustering.guided import IN_DOMAIN_PREFIX
    from fer.methods.corpus import clustering_pool

    subjects, labels, folds, splits = posed
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1)
    paths = [f"img/{i}.png" for i in range(len(labels))]
    corpus, corpus_paths = np.full((3, 1, 1, 1), 200, np.uint8), ["c/a.png", "c/b.png", "c/c.png"]
    budget = prepare_fold(images, labels, split_indices(subjects, splits["0-b1"]), [f"c{i}" for i in range(7)],
                          device="cpu", seed=0)
    pool, pool_paths = clustering_pool(budget, paths, corpus, corpus_paths, True)
    hidden = budget.idx["unlabelled"]
    assert pool_paths[:3] == corpus_paths and pool_paths[3:] == [IN_DOMAIN_PREFIX + paths[i] for i in hidden]
    assert np.array_equal(pool[3:, 0, 0, 0], images[hidden, 0, 0, 0]) and len(pool) == 3 + len(hidden)
    assert clustering_pool(budget, paths, corpus, corpus_paths, False)[1] == corpus_paths  # clustering.in_domain off
    full = prepare_fold(images, labels, split_indices(subjects, folds[0]), [f"c{i}" for i in range(7)],
                        device="cpu", seed=0)
    assert clustering_pool(full, paths, corpus, corpus_paths, True)[1] == corpus_paths  # all labels: nothing hidden
    # no corpus (corpus.root ''): the in-domain faces alone; with nothing hidden, nothing to cluster
    alone, alone_paths = clustering_pool(budget, paths, None, [], True)
    assert alone_paths == pool_paths[3:] and np.array_equal(alone, pool[3:])
    for fold, in_domain in ((full, True), (budget, False)):
        with pytest.raises(ValueError, match="nothing to cluster"):
            clustering_pool(fold, paths, None, [], in_domain)


def test_pseudo_quality_scores_only_the_in_domain_rows_against_their_hidden_labels(tmp_path: Path) -> None:
    """pseudo_quality.py --in-domain-manifest (rule pseudo_quality_budget): of a clustering
    pool of corpus faces and in-domain faces, only the ``in-domain/`` rows are scored, each
    against its label in the aligned manifest; corpus rows (no truth here) are ignored."""
    import csv

    from fer.clustering.guided import IN_DOMAIN_PREFIX, PseudoLabels, write_pseudo_labels

    classes = ["anger", "happiness", "neutral"]
    manifest = tmp_path / "manifest.csv"
    truth = {"S1/a.png": "anger", "S1/b.png": "happiness", "S2/c.png": "neutral", "S2/d.png": "anger"}
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "subject", "label"])
        for i, (path, label) in enumerate(truth.items()):
            w.writerow([i, path, path.split("/")[0], label])
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"classes": classes}))
    # pool: 3 corpus faces (all labelled "anger", all kept: wrong or right, they must not count),
    # then the 4 in-domain faces: kept anger (right), kept neutral (wrong: happiness),
    # kept neutral (right), not kept happiness (wrong: anger)
    pool = ["C1/x.png", "C1/y.png", "C2/z.png"] + [IN_DOMAIN_PREFIX + p for p in truth]
    label = np.array([0, 0, 0, 0, 2, 2, 1])
    kept = np.array([1, 1, 1, 1, 1, 1, 0], dtype=bool)
    pl = PseudoLabels(label=label, confidence=np.full(7, 0.9, np.float32), kept=kept,
                      cluster=label.copy(), stats={"n": 7, "n_kept": 6})
    round0 = tmp_path / "pseudo" / "fold-0-b1"
    write_pseudo_labels(round0, pl, pool, classes)
    rounds = tmp_path / "rounds" / "fold-0-b1"
    rounds.mkdir(parents=True)
    out = tmp_path / "q.json"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parents[1] / "workflow" / "scripts" / "pseudo_quality.py"),
         "--params", str(Path(__file__).parents[1] / "params.yaml"), "--keys", "clustering.in_domain",
         "--in-domain-manifest", str(manifest), "--meta", str(meta), "--pseudo", str(round0),
         "--rounds", str(rounds), "--out", str(out)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["truth"] == "in-domain labels (aligned manifest)"
    [[row]] = doc["folds"]
    assert row["round"] == 0 and row["n_in_domain"] == 4
    assert row["pseudo/acc_kept"] == pytest.approx(2 / 3)  # 2 of the 3 kept in-domain labels are right
    assert row["pseudo/acc_all"] == pytest.approx(2 / 4)
    assert row["pseudo/coverage"] == pytest.approx(3 / 4)


def test_the_report_names_a_budget_only_row_and_why():
    """Without a corpus, the corpus row runs at the label budgets only: the report's rows
    section says so, with the reason, instead of listing it as not run."""
    from fer.params import RowPlan
    from fer.report.sections import rows_not_run_section

    why = "label budgets only: corpus.root is '', so with all labels there is nothing unlabelled to cluster"
    plan = RowPlan(("baseline", "accnn", "accnn_corpus"), {}, "none", {"accnn_corpus": why})
    text = html.unescape(rows_not_run_section(plan, "all"))
    assert "Rows at the label budgets only" in text and why in text and "Rows not in this report" not in text
    assert rows_not_run_section(RowPlan(("baseline",), {}, "none"), "all") == ""
