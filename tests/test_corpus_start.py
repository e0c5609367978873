"""finetune.start: accnn -- the corpus row continues the fold's TRAINED AC-CNN, and the row
accnn_continued (the same extra rounds, epochs, seeds and schedule on the labelled images
only) is its control at equal budget: the start weights, the control's equivalence, resume,
the refusals, the row plan and budget rule, the report's pairing, and the DAG under both
tools (tiny data as tests/test_corpus.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import dvcgen
import fer.methods.corpus as corpus
from conftest import make_fold
from fer.methods.corpus import CONTINUED_METRIC_KEYS, CORPUS_CURVE_COLUMNS, run_continue_fold, train_round
from fer.params import FinetuneParams, build
from fer.params.core import ParamsError
from fer.params.rows import budget_problems, continued_budget, plan_rows, row_plan_problems
from fer.report.html import paired_cells, unequal_budget
from fer.report.sections import budget_section, corpus_ablation
from fer.training.batches import check_synthetic
from fer.training.checkpoint import cpu_state_dict, load_weights
from fer.training.protocol import FoldOutputs
from fer.utils.digest import digest
from fer.utils.seed import derived_seed
from test_corpus import CLASSES, CLUSTER, SPLIT, X, Y, make_pseudo0, read_curve, run, train_cfg
from workflow_helpers import build_repo, configure, describe, job_stats, log_tail, output_md5s, report_text
from workflow_helpers import run as sh

ROOT = Path(__file__).resolve().parents[1]
START_FT = {"epochs": 1, "rounds": 1, "pseudo_ratio": 0.5, "pseudo_weight": 0.5, "start": "accnn",
            "keep_start": True}


def trained_state() -> dict[str, torch.Tensor]:
    """An AC-CNN state unlike a fresh network's (as a trained one would be)."""
    model = make_fold(X, Y, SPLIT, CLASSES).build_recognizer(train_cfg())
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cpu_state_dict(model.state_dict())


class Spy:
    """Records every train_round call: the model's weights on entry, the pseudo set, the
    seed and whether the start competes in the selection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        orig = corpus.train_round

        def spy(model: Any, *a: Any, **k: Any) -> Any:
            self.calls.append({"state": cpu_state_dict(model.state_dict()), "pseudo": k["pseudo"] is not None,
                               "seed": k["seed"], "start_candidate": k["start_candidate"]})
            return orig(model, *a, **k)

        monkeypatch.setattr(corpus, "train_round", spy)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def control(tmp_path: Path, name: str, start: dict[str, torch.Tensor], ft: FinetuneParams) -> dict[str, Any]:
    out = tmp_path / name
    outputs = FoldOutputs(model=out / "model.pt", metrics=out / "metrics.json", curve=out / "curve.csv",
                          log=out / "log.jsonl")
    return run_continue_fold(make_fold(X, Y, SPLIT, CLASSES), train_cfg(), ft, outputs, start_state=start,
                             synthetic=None, resume_dir=out / "resume")


# ------------------------------------------------------------------------------ the fold functions
def test_the_corpus_row_starts_from_exactly_the_trained_accnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pseudo0, feats0 = make_pseudo0(tmp_path)
    start = trained_state()
    spy = Spy(monkeypatch)
    ft = build(FinetuneParams, START_FT)
    m = run(tmp_path, "a", pseudo0, feats0, ft=ft, start_state=start)
    assert same(spy.calls[0]["state"], start)  # round 0 starts from the given weights, bit for bit
    assert [c["start_candidate"] for c in spy.calls] == [True, True]  # keep_start from round 0 on
    assert [c["pseudo"] for c in spy.calls] == [True, True]
    source = json.loads((tmp_path / "a" / "rounds" / "round-0" / "source.json").read_text())
    assert source["init"] == digest(start)
    assert m["epochs"] == train_cfg().epochs + (ft.rounds + 1) * ft.epochs  # the AC-CNN's own epochs counted
    assert "start_row" in json.loads((tmp_path / "a" / "rounds" / "round-0" / "round.json").read_text())
    # start: scratch starts from a fresh network; the two settings refuse the wrong start
    with pytest.raises(ValueError, match="start_state"):
        run(tmp_path, "b", pseudo0, feats0, ft=ft)
    with pytest.raises(ValueError, match="not used"):
        run(tmp_path, "c", pseudo0, feats0, ft=FinetuneParams(epochs=1, rounds=0), start_state=start)
    wrong = dict(list(start.items())[1:]) | {"extra.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"(?s)Missing key.*Unexpected key"):
        run(tmp_path, "d", pseudo0, feats0, ft=ft, start_state=wrong)


def test_the_control_is_the_corpus_rounds_without_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same start, seeds and selection rule as the corpus row, no pseudo-labelled image; with
    one round it is exactly train_round on the labelled images from the trained AC-CNN."""
    pseudo0, feats0 = make_pseudo0(tmp_path)
    start = trained_state()
    ft = build(FinetuneParams, START_FT)
    spy = Spy(monkeypatch)
    run(tmp_path, "corpus", pseudo0, feats0, ft=ft, start_state=start)
    with_corpus, spy.calls = spy.calls, []
    m = control(tmp_path, "ctl", start, ft)
    assert tuple(m) == CONTINUED_METRIC_KEYS and m["epochs"] == train_cfg().epochs + 2 * ft.epochs
    assert [c["pseudo"] for c in spy.calls] == [False, False]
    assert [c["seed"] for c in spy.calls] == [c["seed"] for c in with_corpus] == [
        derived_seed(0, 0xAC, r) for r in (0, 1)]
    assert [c["start_candidate"] for c in spy.calls] == [True, True]
    assert same(spy.calls[0]["state"], with_corpus[0]["state"])
    assert list(read_curve(tmp_path / "ctl" / "curve.csv")[0]) == list(CORPUS_CURVE_COLUMNS)
    assert {float(r["train/cls_pseudo"]) for r in read_curve(tmp_path / "ctl" / "curve.csv")} == {0.0}
    # one round: bit-equal to training the start by hand with the corpus row's round-0 seed
    one = build(FinetuneParams, {**START_FT, "rounds": 0})
    monkeypatch.setattr(corpus, "train_round", train_round)
    control(tmp_path, "one", start, one)
    fold = make_fold(X, Y, SPLIT, CLASSES)
    cfg = train_cfg(epochs=one.epochs)
    model = fold.build_recognizer(cfg)
    model.load_state_dict(start)
    res = train_round(model, fold.part("train"), fold.part("val"), cfg, one, num_classes=len(CLASSES), pseudo=None,
                      synthetic=None, device=torch.device("cpu"), seed=derived_seed(0, 0xAC, 0), fp="by hand",
                      resume_path=None, log_path=None, on_epoch_end=None, start_candidate=True)
    assert same(load_weights(tmp_path / "one" / "model.pt")[0], cpu_state_dict(res.best_state))
    assert not list((tmp_path / "one" / "resume").glob("*"))  # the round files are gone once the outputs exist
    with pytest.raises(ValueError, match="finetune.start"):
        control(tmp_path, "scratch", start, FinetuneParams(epochs=1, rounds=0))


def test_the_synthetic_set_is_checked_as_the_joint_rows_check_it() -> None:
    """The corpus row and its control read the fold's synthetic set only when
    finetune.synthetic_weight > 0, then require it with the real images' shape
    (fer.training.batches.check_synthetic, which the static joint row uses too)."""
    off, on = build(FinetuneParams, START_FT), build(FinetuneParams, {**START_FT, "synthetic_weight": 0.5})
    syn = (X[:4], Y[:4])
    assert corpus._checked_synthetic(syn, off, X, len(CLASSES)) is None
    with pytest.raises(ValueError, match="needs the fold's synthetic set"):
        corpus._checked_synthetic(None, on, X, len(CLASSES))
    with pytest.raises(ValueError, match="synthetic images"):
        corpus._checked_synthetic((X[:4, :, :-1], Y[:4]), on, X, len(CLASSES))
    with pytest.raises(ValueError, match="synthetic labels outside"):
        check_synthetic((X[:4], np.full(4, len(CLASSES))), len(CLASSES), X.shape[1:])
    xs, ys = corpus._checked_synthetic(syn, on, X, len(CLASSES))
    assert xs is syn[0] and ys.dtype == np.int64 and (ys == syn[1]).all()


class Killed(Exception):
    pass


def test_the_control_resumes_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = trained_state()
    ft = build(FinetuneParams, {**START_FT, "epochs": 2})
    ref = control(tmp_path, "ref", start, ft)
    orig = corpus.train_epochs
    rounds: list[int] = []

    def killing(*a: Any, **k: Any) -> Any:
        r = int(re.search(r"round-(\d)", str(k["log_path"])).group(1))  # type: ignore[union-attr]
        rounds.append(r)

        def on_end(row: dict[str, float]) -> None:
            if r == 1 and row["epoch"] == 1:
                raise Killed

        k["on_epoch_end"] = on_end
        return orig(*a, **k)

    monkeypatch.setattr(corpus, "train_epochs", killing)
    with pytest.raises(Killed):
        control(tmp_path, "k", start, ft)
    assert {p.name for p in (tmp_path / "k" / "resume").iterdir()} == {"round-0.best.pt", "round-0.last.pt",
                                                                       "round-1.pt"}
    monkeypatch.setattr(corpus, "train_epochs", orig)
    assert control(tmp_path, "k", start, ft) == ref  # round 0 reused, round 1 resumed
    assert rounds == [0, 1]
    assert same(load_weights(tmp_path / "k" / "model.pt")[0], load_weights(tmp_path / "ref" / "model.pt")[0])


# ------------------------------------------------------------------------------ params and rows
def test_start_accnn_refuses_first_round_real_and_unknown_starts() -> None:
    with pytest.raises(ValueError, match="first_round"):
        build(FinetuneParams, {**START_FT, "first_round": "real"})
    with pytest.raises(ValueError, match="finetune.start"):
        build(FinetuneParams, {**START_FT, "start": "identity"})


def _params(**finetune: Any) -> dict[str, Any]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["finetune"].update(finetune)
    return params


def test_the_control_row_is_planned_with_start_accnn_only() -> None:
    plan = plan_rows(_params(start="accnn"))
    assert plan.rows[plan.rows.index("accnn_corpus") + 1] == "accnn_continued" and not plan.absent
    assert "accnn_continued" not in plan_rows(_params(start="scratch")).rows
    explicit = _params(start="accnn")
    explicit["methods"] = ["baseline", "full", "accnn", "accnn_corpus"]
    assert any("add accnn_continued" in p for p in row_plan_problems(explicit))
    scratch = _params(start="scratch")
    scratch["methods"] = ["baseline", "full", "accnn", "accnn_corpus", "accnn_continued"]
    assert any("finetune.start is scratch" in p for p in row_plan_problems(scratch))
    with pytest.raises(ParamsError, match="accnn_continued"):
        plan_rows(scratch)
    # no corpus, a label budget and in-domain clustering: both run at the budgets only
    budget_only = _params(start="accnn")
    budget_only["corpus"]["root"] = ""
    budget_only["labels"]["budgets"] = [0.25]
    budget_only["clustering"]["in_domain"] = True
    assert set(plan_rows(budget_only).budget_only) == {"accnn_corpus", "accnn_continued"}


def test_budget_rule_with_start_accnn() -> None:
    """The continued rows train accnn.epochs + (rounds + 1) x epochs and are paired with each
    other: finetune.epochs no longer has to fill the baseline's budget; the AC-CNN still must."""
    p = _params(start="accnn", rounds=0, epochs=20)
    assert budget_problems(p) == [] and continued_budget(p) == p["accnn"]["epochs"] + 20
    assert budget_problems(_params(start="scratch", rounds=0, epochs=20))  # 20 != the baseline's 40
    p["accnn"]["epochs"] = 30
    assert any("accnn.epochs = 30" in line for line in budget_problems(p))
    assert continued_budget(_params(start="scratch")) is None


# ------------------------------------------------------------------------------ the report
def _summary(method: str, accs: list[float], epochs: list[int]) -> dict[str, Any]:
    return {"method": method, "metrics": {"test/acc": {"mean": sum(accs) / len(accs), "std": 0.01, "values": accs},
                                          "test/mean_class_acc": {"mean": 0.5, "std": 0.0, "values": accs}},
            "per_fold": [{"epochs": e, "best_epoch": 1} for e in epochs]}


def test_the_report_pairs_the_corpus_row_with_its_equal_budget_control() -> None:
    by = {"accnn": _summary("accnn", [0.5, 0.6, 0.55], [40] * 3),
          "accnn_continued": _summary("accnn_continued", [0.52, 0.61, 0.56], [60] * 3),
          "accnn_corpus": _summary("accnn_corpus", [0.56, 0.64, 0.6], [60] * 3)}
    rows = {r[0]: r for r in corpus_ablation(by, "accnn")}
    assert list(rows) == ["accnn", "accnn_continued", "accnn_corpus"]
    assert rows["accnn_continued"][3] == "reference"
    assert rows["accnn"][3] == "not paired: budget 40 epochs vs 60"
    assert rows["accnn_corpus"][3] == "+3.67"  # against the control (against the 40-epoch AC-CNN: +5.00)
    assert [r[0] for r in corpus_ablation({"accnn": by["accnn"], "accnn_corpus": by["accnn"]}, "scratch")] == \
        ["accnn", "accnn_corpus"]
    stale = dict(by, accnn_continued=_summary("accnn_continued", [0.5, 0.6, 0.5], [60, 60, 59]))
    with pytest.raises(ValueError, match="re-run"):
        corpus_ablation(stale, "accnn")
    assert unequal_budget(by["accnn_corpus"]["per_fold"], by["accnn"]["per_fold"]) == "budget 60 epochs vs 40"
    assert unequal_budget(by["accnn"]["per_fold"], by["accnn"]["per_fold"]) == ""
    # one cell builder for every table: an unequal budget wins over a test that was computed
    pt = {"mean_diff": 0.05, "wins": 2, "losses": 1, "t_p": 0.2, "wilcoxon_p": 0.5}
    assert paired_cells(pt, wins=True, unpaired="budget 60 epochs vs 40") == \
        ["not paired: budget 60 epochs vs 40", "", "", ""]
    assert paired_cells(pt, unpaired="") == ["+5.00", "0.200", "0.500"]
    assert paired_cells(None) == ["", "", ""]
    # the budget tables give an unequal row no paired test against the baseline either
    base = _summary("baseline", [0.5, 0.5, 0.5], [40] * 3)
    budgets = {"budgets": [0.5], "splits": {}, "summary": {}}
    at = [dict(s, labels={"slot": 1, "labelled_fraction": [0.5] * 3}) for s in (base, by["accnn_corpus"])]
    html = budget_section([base, by["accnn_corpus"]], budgets, at, [])
    assert html.count("not paired: budget 60 epochs vs 40") == 2  # all labels and the budget


# ------------------------------------------------------------------------------ the DAG, both tools
@pytest.mark.slow
def test_the_dag_continues_the_trained_accnn_under_both_tools(tmp_path: Path) -> None:
    """With finetune.start: accnn the corpus row and its control depend on the fold's
    trained AC-CNN (an edge under Snakemake and under DVC, which reads dvc.yaml itself); a
    Snakemake run starts the corpus row from exactly that file's weights, its report pairs
    the two rows with each other, and DVC re-runs both stages to the same bytes."""
    repo = build_repo(tmp_path / "repo")
    configure(repo, {"methods": ["baseline", "accnn", "accnn_corpus", "accnn_continued"], "corpus.truth": "",
                     "clustering.embedder": "baseline", "finetune.start": "accnn", "finetune.rounds": 0,
                     "finetune.keep_start": True})
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for k in (0, 1):
        for rule in ("finetune_accnn", "continue_accnn"):
            st = stages[f"{rule}__fold-{k}"]
            assert f"models/accnn/fold-{k}.pt" in st["deps"] and f"--accnn-model models/accnn/fold-{k}.pt" in st["cmd"]
            assert " --start " not in st["cmd"]
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "start accnn"], repo)
    dot = sh(["dvc", "dag", "--dot"], repo).stdout
    edges = set(re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot))
    assert edges == dvcgen.stage_edges(yaml.safe_load((repo / "dvc.yaml").read_text()))
    assert {("train_accnn__fold-0", "finetune_accnn__fold-0"), ("train_accnn__fold-0", "continue_accnn__fold-0")} <= edges
    dry = sh(["snakemake", "-n", "--cores", "1", "metrics/accnn_corpus/summary.json",
              "metrics/accnn_continued/summary.json"], repo)
    counts = job_stats(dry.stdout)
    assert (counts["train_accnn"], counts["finetune_accnn"], counts["continue_accnn"]) == (2, 2, 2), dry.stdout
    proc = sh(["snakemake", "metrics/accnn_corpus/fold-0.json", "metrics/accnn_continued/fold-0.json", "--cores", "2",
               "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "snakemake failed") + "\n" + log_tail(repo)
    start, _ = load_weights(repo / "models" / "accnn" / "fold-0.pt")
    source = json.loads((repo / "results" / "accnn_corpus" / "fold-0" / "round-0" / "source.json").read_text())
    assert source["init"] == digest(start)
    budget = read_yaml_epochs(repo)
    for row in ("accnn_corpus", "accnn_continued"):
        assert json.loads((repo / "metrics" / row / "fold-0.json").read_text())["epochs"] == budget
    # the report: neither continued row is paired with the (shorter) baseline; the corpus
    # section pairs the corpus row with its control
    proc = sh(["snakemake", "reports/index.html", "--cores", "2", "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "snakemake failed") + "\n" + log_tail(repo)
    text = report_text(repo / "reports" / "index.html")
    base = json.loads((repo / "metrics" / "baseline" / "fold-0.json").read_text())["epochs"]
    assert text.count(f"not paired: budget {budget} epochs vs {base}") == 2, text
    assert "finetune.start = accnn: the corpus row continued each fold's trained AC-CNN" in text
    assert re.search(rf"accnn_continued [\d.]+ ± [\d.]+ {budget} \(\d+\) reference", text), text
    # DVC re-runs the two stages (forced, alone: their inputs are the files Snakemake
    # made) to the same bytes
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    two = {n: stages[n] for n in ("finetune_accnn__fold-0", "continue_accnn__fold-0")}
    before = output_md5s(repo, two)
    for name in two:
        sh(["dvc", "repro", "-s", "-f", name], repo)
    assert output_md5s(repo, two) == before


def read_yaml_epochs(repo: Path) -> int:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    budget = continued_budget(p)
    assert budget is not None
    return budget


def test_the_dataset_checks_plan_the_rows_from_their_declared_keys() -> None:
    """The fingerprint rule plans the rows from the keys it declares (CHECK_KEYS): they
    include finetune.start, which decides whether accnn_continued runs."""
    from _dataset import CHECK_KEYS

    from fer.params import DeclaredParams

    p = _params(start="accnn")
    p["methods"] = ["baseline", "full", "accnn", "accnn_corpus", "accnn_continued"]
    assert plan_rows(DeclaredParams(p, CHECK_KEYS["dataset"]).as_dict()).rows == plan_rows(p).rows
