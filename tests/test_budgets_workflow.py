"""Label budgets as a dimension of the DAG, under both tools, on a tiny copy of the project
(methods: the baseline and FixMatch, so that the test stays cheap; every per-fold rule
takes the budget splits the same way, see tests/test_budgets.py, where the corpus row's
clustering pool with the in-domain faces is tested, and the README)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from workflow_helpers import (
    build_repo,
    configure,
    describe,
    job_stats,
    log_tail,
    read_params,
    report_text,
    run,
    running_stages,
    stage_rule,
)

pytestmark = pytest.mark.slow

#: What a change of labels.budgets may re-run: the budgets, every job of a budget split, the
#: budget summaries, the report (and the DAG check, which runs first in every dvc exp run,
#: and the dataset's fingerprint, which runs every time: `always_changed`).
BUDGET_DEPENDENTS = {"check_dag", "fingerprint_dataset", "make_budgets", "train_baseline", "train_fixmatch",
                     "summarize_budget", "report"}


def test_budgets_run_under_snakemake_and_a_changed_budget_reruns_only_its_jobs_under_dvc(tmp_path):
    repo = build_repo(tmp_path / "repo")
    configure(repo, {"methods": ["baseline", "fixmatch"], "labels.budgets": [0.5], "corpus.root": "",
                     "corpus.truth": ""})
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "one budget"], repo)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert {"make_budgets", "train_baseline__fold-0-b1", "train_baseline__fold-1-b1"} <= set(stages)
    assert stages["train_baseline__fold-0-b1"]["deps"].count("data/budgets.json") == 1
    assert "data/budgets.json" not in stages["train_baseline__fold-0"]["deps"]  # all labels: no budget dependency
    assert "labels" not in str(stages["train_baseline__fold-0"].get("params", []))

    proc = run(["snakemake", "--cores", "2", "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "snakemake failed") + "\n" + log_tail(repo)
    budgets = json.loads((repo / "data" / "budgets.json").read_text())
    assert budgets["budgets"] == [0.5]
    for k in (0, 1):
        key = f"{k}-b1"
        metrics = json.loads((repo / "metrics" / "baseline" / f"fold-{key}.json").read_text())
        full = json.loads((repo / "metrics" / "baseline" / f"fold-{k}.json").read_text())
        # the budget job trained on exactly the labelled training subjects' images, and
        # was tested on the fold's own test part
        assert metrics["n_train"] == budgets["summary"][key]["train"] < full["n_train"]
        assert metrics["n_val"] == budgets["summary"][key]["val"]
        assert metrics["n_test"] == full["n_test"] == budgets["summary"][key]["test"]
        # FixMatch learns from the budget's unlabelled part, and has none with all labels
        fixmatch = json.loads((repo / "metrics" / "fixmatch" / f"fold-{key}.json").read_text())
        assert fixmatch["n_unlabelled"] == budgets["summary"][key]["unlabelled"] > 0
        assert fixmatch["n_train"] == metrics["n_train"]
        assert json.loads((repo / "metrics" / "fixmatch" / f"fold-{k}.json").read_text())["n_unlabelled"] == 0
    summary = json.loads((repo / "metrics" / "baseline" / "summary-b1.json").read_text())
    assert summary["labels"]["fraction"] == 0.5 and summary["labels"]["splits"] == ["0-b1", "1-b1"]
    text = report_text(repo / "reports" / "index.html")
    assert "Label budgets: accuracy against the labelled fraction" in text
    assert "50 % labels (slot 1)" in text and "all labels" in text

    # The README's experiment: another fraction, same DAG (slots, not values, name the jobs).
    proc = run(["dvc", "exp", "run", "-S", "labels.budgets=[0.34]"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "dvc exp run failed") + "\n" + log_tail(repo)
    ran = running_stages(proc.stdout)
    assert {"make_budgets", "train_baseline__fold-0-b1", "train_baseline__fold-1-b1", "train_fixmatch__fold-0-b1",
            "train_fixmatch__fold-1-b1"} <= set(ran), describe(proc)
    assert {stage_rule(s) for s in ran} <= BUDGET_DEPENDENTS, ran
    assert not [s for s in ran if s in ("train_baseline__fold-0", "train_baseline__fold-1", "train_fixmatch__fold-0",
                                        "train_fixmatch__fold-1", "make_folds", "align")]
    assert read_params(repo)["labels"]["budgets"] == [0.34]
    assert json.loads((repo / "data" / "budgets.json").read_text())["budgets"] == [0.34]


def test_a_different_number_of_budgets_stops_at_the_dag_check(tmp_path):
    """A budget more or fewer changes the DAG: like folds.n_folds, the DAG check stops the
    run before any job, naming `make dvc-yaml`."""
    repo = build_repo(tmp_path / "repo")
    configure(repo, {"methods": ["baseline"], "corpus.root": "", "corpus.truth": ""})
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "no budgets"], repo)
    proc = run(["dvc", "exp", "run", "-S", "labels.budgets=[0.5]"], repo, check=False)
    assert proc.returncode != 0
    assert "make dvc-yaml" in proc.stdout, describe(proc)
    assert "train_baseline" not in " ".join(running_stages(proc.stdout))


def test_without_a_corpus_the_corpus_row_clusters_the_in_domain_faces_at_the_budgets_only(tmp_path):
    """corpus.root '' with a label budget: the corpus row runs on the budget splits only,
    clustering each split's unlabelled in-domain faces alone (exactly them, by path), and
    nothing reads or aligns a corpus; its pseudo-labels are scored against their hidden
    labels. (Snakemake builds the row's budget summary and the in-domain quality only, for
    CI's time; tests/test_budgets.py checks what the report says of a budget-only row.)"""
    repo = build_repo(tmp_path / "repo")
    configure(repo, {"methods": ["baseline", "accnn", "accnn_corpus"], "labels.budgets": [0.5], "corpus.root": "",
                     "corpus.truth": "", "clustering.embedder": "baseline"})
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    corpus_stages = sorted(n for n in stages if stage_rule(n) in ("cluster_corpus", "finetune_accnn"))
    assert corpus_stages == ["cluster_corpus__fold-0-b1", "cluster_corpus__fold-1-b1", "finetune_accnn__fold-0-b1",
                             "finetune_accnn__fold-1-b1"], corpus_stages
    assert not [n for n in stages if "corpus" in stage_rule(n) and stage_rule(n) not in ("cluster_corpus", "finetune_accnn")]
    assert "--corpus-images" not in stages["cluster_corpus__fold-0-b1"]["cmd"]
    assert not [n for n, st in stages.items() if "  " in st["cmd"]]  # dvc.lock would not keep a double space
    proc = run(["snakemake", "metrics/accnn_corpus/summary-b1.json", "metrics/pseudo_quality-b1.json", "--cores", "2",
                "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "snakemake failed") + "\n" + log_tail(repo)
    assert not {"align_corpus", "fingerprint_corpus"} & set(job_stats(proc.stdout)), describe(proc)
    budgets = json.loads((repo / "data" / "budgets.json").read_text())
    with open(repo / "data" / "aligned" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    for k in (0, 1):
        key = f"{k}-b1"
        hidden = {r["path"] for r in manifest if r["subject"] in budgets["splits"][key]["unlabelled"]}
        with open(repo / "results" / "pseudo" / f"fold-{key}" / "labels.csv", newline="") as f:
            pool = [r["path"] for r in csv.DictReader(f)]
        assert sorted(pool) == sorted(f"in-domain/{p}" for p in hidden) and hidden, (key, pool)
        assert json.loads((repo / "metrics" / "accnn_corpus" / f"fold-{key}.json").read_text())["n_train"] == \
            budgets["summary"][key]["train"]
        assert not (repo / "metrics" / "accnn_corpus" / f"fold-{k}.json").exists()
    quality = json.loads((repo / "metrics" / "pseudo_quality-b1.json").read_text())
    assert [rows[0]["n_in_domain"] for rows in quality["folds"]] == [budgets["summary"][f"{k}-b1"]["unlabelled"]
                                                                    for k in (0, 1)]
    assert not (repo / "data" / "aligned_corpus").exists()
    assert json.loads((repo / "metrics" / "accnn_corpus" / "summary-b1.json").read_text())["labels"]["splits"] == \
        ["0-b1", "1-b1"]
