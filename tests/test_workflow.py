"""The pipeline end to end under both tools, on a tiny copy of the project: the DVC side,
the checks before any job, and the comparison of the two tools' outputs.

One temporary git + DVC repo is built per test session (project files, tiny params,
dvc.yaml rendered for them, one commit); it is run once by `dvc repro` and once by
`snakemake` in a fresh `git clone` of it, as a new user would (session fixtures of
conftest.py, shared with test_workflow_snakemake.py, which has the Snakemake side), and
tests that change a repo work on their own copy of it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import dvcgen
from workflow_helpers import (
    ALWAYS_CHANGED,
    CHECK,
    ROOT,
    artifact_md5s,
    clone_repo,
    copy_repo,
    declared_outputs,
    describe,
    env as run_env,
    job_stats,
    log_tail,
    only_always_changed,
    output_md5s,
    read_params,
    render_dvc_yaml,
    run,
    running_stages,
    set_key,
    skipped_stages,
    snakemake_rules,
    stage_rule,
    write_params,
)

pytestmark = pytest.mark.slow

BIN_PYTHON = Path(sys.executable)

DATA_RULES = {"make_demo", "align", "make_folds", "align_corpus"}
#: What a change of the AC-CNN's settings (params section accnn) must re-run: its row, the
#: corpus row fine-tuned from it, their summaries, the fine-tuning rounds' pseudo-label
#: quality, the report.
ACCNN_DEPENDENTS = {"train_accnn", "finetune_accnn", "summarize", "report", "pseudo_quality"}
#: What it must not: everything upstream or beside it.
ACCNN_INDEPENDENT = DATA_RULES | {"train_identity", "train_fesgan", "train_baseline", "synthesize", "train_joint",
                                  "cluster_corpus", "train_dgcn", "train_fersnet", "probe_fersnet"}
#: The one allowed difference between two runs with the same params: the report says when
#: it was generated (README, "Snakemake and DVC on the same workspace").
REPORT_TIMESTAMP = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
#: The report's wall times (read from the job logs: they differ from run to run).
REPORT_WALL_TIMES = re.compile(r'<span class="wall">[^<]*</span>')


# ----------------------------------------------------------------------------- 1
def test_dry_run_plans_every_rule(base_repo, stages):
    proc = run(["snakemake", "-n", "--cores", "1"], base_repo)
    planned = job_stats(proc.stdout)
    # train_identity_fold only without a corpus (below); the budget rules only with labels.budgets
    # (tests/test_budgets_workflow.py)
    # check_dag: no Snakemake job depends on it (the Snakefile runs it in onstart); dvc.yaml has it;
    # continue_accnn only with finetune.start: accnn (the tiny params keep scratch; tests/test_corpus_start.py)
    rules = snakemake_rules(base_repo) - {"train_identity_fold", "make_budgets", "summarize_budget",
                                          "pseudo_quality_budget", "check_dag", "continue_accnn"}
    assert set(planned) == rules, describe(proc, f"planned {sorted(planned)}, Snakefile has {sorted(rules)}")
    n_folds = read_params(base_repo)["folds"]["n_folds"]
    assert planned["train_baseline"] == n_folds, describe(proc)
    # and dvc.yaml has one stage per planned job (the `all` target excepted), plus the check
    per_rule: dict[str, int] = {}
    for name in stages:
        per_rule[stage_rule(name)] = per_rule.get(stage_rule(name), 0) + 1
    assert per_rule == {"check_dag": 1} | {r: n for r, n in planned.items() if r != "all"}


# ----------------------------------------------------------------------------- 2
def test_dvc_repro_runs_every_stage_then_nothing(dvc_run, stages):
    repo, first = dvc_run
    assert sorted(running_stages(first)) == sorted(stages), first
    for path in ("reports/index.html", "metrics/baseline/summary.json", "reports/figures/baseline_confusion.png",
                 "metrics/full/summary.json", "results/fesgan/fold-0/grids/final_prior.png"):
        assert (repo / path).is_file(), f"{path} missing after dvc repro:\n{first}"
    # the curve CSVs have the columns the top-level plots of dvc.yaml name
    for st in stages.values():
        for entry in st.get("plots", []):
            (path,) = entry
            with open(repo / path) as f:
                header = next(csv.reader(f))
            for columns in dvcgen.CURVE_PLOTS.values():
                assert set(columns) | {dvcgen.CURVE_X} <= set(header), (path, header)

    assert {n for n, st in stages.items() if st.get("always_changed")} == ALWAYS_CHANGED
    second = run(["dvc", "repro"], repo)
    assert set(running_stages(second.stdout)) == ALWAYS_CHANGED, describe(second, "re-ran stages")
    assert sorted(skipped_stages(second.stdout)) == sorted(set(stages) - ALWAYS_CHANGED), describe(second)
    status = run(["dvc", "status"], repo)
    assert only_always_changed(status.stdout), describe(status)


# ----------------------------------------------------------------------------- 3
def test_exp_run_reruns_only_what_depends_on_the_param(dvc_run, tmp_path):
    """`dvc exp run -S accnn.lr=...` re-runs the AC-CNN rows (trained, and fine-tuned on the
    corpus) on every fold and, where what they make changed, their summaries, the
    pseudo-label quality of the fine-tuning rounds and the report; nothing else. (The
    recogniser's own settings fan out to most of the pipeline; the README's sequence test
    below covers rdbp.lambda, this one a second section at CI's cost of a few stages.)"""
    repo = copy_repo(dvc_run[0], tmp_path / "repo")
    proc = run(["dvc", "exp", "run", "-S", "accnn.lr=0.02"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    ran = running_stages(proc.stdout)
    ran_rules = {stage_rule(s) for s in ran}
    assert {"train_accnn", "finetune_accnn", CHECK} <= ran_rules <= ACCNN_DEPENDENTS | ALWAYS_CHANGED | {CHECK}, \
        describe(proc, f"ran {ran}")
    n_folds = read_params(repo)["folds"]["n_folds"]
    for rule in ("train_accnn", "finetune_accnn"):
        assert len([s for s in ran if stage_rule(s) == rule]) == n_folds, describe(proc)
    # a summary re-runs only where its fold metrics changed (with tiny settings they may not)
    assert {s for s in ran if stage_rule(s) == "summarize"} <= {"summarize__method-accnn", "summarize__method-accnn_corpus"}
    assert not ran_rules & ACCNN_INDEPENDENT, describe(proc)
    assert read_params(repo)["accnn"]["lr"] == 0.02


# ----------------------------------------------------------------------------- 4
def test_handover_dvc_then_snakemake(dvc_run, tmp_path):
    repo = copy_repo(dvc_run[0], tmp_path / "repo")
    run(["snakemake", "--touch", "--cores", "1"], repo)
    proc = run(["snakemake", "-n", "--cores", "1"], repo)
    assert job_stats(proc.stdout) == {}, describe(proc, "plans jobs after --touch")
    assert "Nothing to be done" in proc.stdout, describe(proc)


# ----------------------------------------------------------------------------- 5
@pytest.mark.parametrize(
    ("key", "value", "named"),
    [("baseline.lrr", 1, "lrr"), ("baseline.epochs", "ten", "epochs"),
     ("folds.n_folds", 2.0, "folds.n_folds: 2.0 is not of type 'integer'")],  # was a TypeError in common.smk
    ids=["unknown-key", "wrong-type", "integral-float"],
)
def test_invalid_params_fail_before_any_job(base_repo, tmp_path, key, value, named):
    repo = copy_repo(base_repo, tmp_path / "repo")
    params = read_params(repo)
    set_key(params, key, value)
    write_params(repo, params)

    smk = run(["snakemake", "-n", "--cores", "1"], repo, check=False)
    assert smk.returncode != 0, describe(smk, "accepted invalid params")
    assert named in smk.stdout and "params.yaml is invalid" in smk.stdout, describe(smk)
    assert job_stats(smk.stdout) == {}, describe(smk, "planned jobs")

    # DVC has no hook before its stages: the first stage's script validates the whole
    # params.yaml before doing anything, so the run stops there with nothing written.
    dvc = run(["dvc", "repro"], repo, check=False)
    assert dvc.returncode != 0, describe(dvc, "accepted invalid params")
    assert len(running_stages(dvc.stdout)) == 1, describe(dvc)
    logs = log_tail(repo)
    assert named in dvc.stdout + logs and "params.yaml is invalid" in dvc.stdout + logs, describe(dvc) + logs
    produced = [p for st in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values()
                for e in st.get("outs", []) + st.get("metrics", []) + st.get("plots", [])
                for p in ([e] if isinstance(e, str) else list(e)) if (repo / p).exists()]
    assert produced == [], f"outputs written despite invalid params: {produced}\n{dvc.stdout}"
    assert not (repo / "dvc.lock").exists()


# ----------------------------------------------------------------------------- no stale DAG
def test_stale_dvc_yaml_stops_dvc_at_once_naming_the_fix(base_repo, tmp_path):
    """The issue's reproduction: dvc.yaml rendered with 2 folds, params.yaml set to 3.
    `dvc repro summarize__method-baseline` used to exit 0 with a 2-fold summary of a
    3-fold split; now the DAG check, its first stage, fails naming `make dvc-yaml`, and
    nothing else runs. Snakemake stops the same way (its DAG is right, but a run whose
    outputs DVC would then record against a stale dvc.yaml is refused). After
    `make dvc-yaml` the check passes."""
    repo = copy_repo(base_repo, tmp_path / "repo")
    params = read_params(repo)
    assert params["folds"]["n_folds"] == 2
    set_key(params, "folds.n_folds", 3)
    write_params(repo, params)

    proc = run(["dvc", "repro", "summarize__method-baseline"], repo, check=False)
    assert proc.returncode != 0, describe(proc, "ran with a stale dvc.yaml")
    assert running_stages(proc.stdout) == [CHECK], describe(proc)
    assert "make dvc-yaml" in proc.stdout and "fold-2" in proc.stdout, describe(proc)
    assert not (repo / "data" / "demo").exists() and not (repo / "data" / "folds.json").exists()

    smk = run(["snakemake", "--cores", "1"], repo, check=False)
    assert smk.returncode != 0, describe(smk, "ran with a stale dvc.yaml")
    assert "make dvc-yaml" in smk.stdout + log_tail(repo), describe(smk) + log_tail(repo)
    assert not (repo / "data" / "demo").exists(), describe(smk)

    render_dvc_yaml(repo)
    ok = run(["dvc", "repro", CHECK], repo)
    assert running_stages(ok.stdout) == [CHECK] and (repo / dvcgen.DAG_CHECK_STAMP).is_file(), describe(ok)


def test_summarize_refuses_a_fold_set_that_differs_from_folds_json(dvc_run, tmp_path):
    """summarize gets data/folds.json and refuses metrics of another set of folds (the
    stale-DAG symptom: a summary over 2 of 3 folds)."""
    repo = dvc_run[0]
    folds = json.loads((repo / "data" / "folds.json").read_text())
    three = tmp_path / "folds.json"
    three.write_text(json.dumps({**folds, "n_folds": 3, "folds": folds["folds"] + folds["folds"][:1]}))
    base = [str(BIN_PYTHON), "workflow/scripts/summarize.py", "--method", "baseline", "--meta", "data/aligned/meta.json",
            "--out", str(tmp_path / "summary.json"), "--figure", str(tmp_path / "c.png")]
    metrics = ["metrics/baseline/fold-0.json", "metrics/baseline/fold-1.json"]
    bad = subprocess.run([*base, "--folds", str(three), *metrics], cwd=repo, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "3 folds" in bad.stderr and "make dvc-yaml" in bad.stderr, bad.stderr
    assert not (tmp_path / "summary.json").exists()
    good = subprocess.run([*base, "--folds", "data/folds.json", *metrics], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert good.returncode == 0, good.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["n_folds"] == 2


def test_a_stage_run_by_a_python_without_the_project_says_so_in_one_line(base_repo, tmp_path):
    """`python` on PATH is not the environment's (the issue: a failed `dvc exp run` after
    which outputs were gone): the first stage stops with one line telling the user to
    activate the environment, and nothing is written."""
    repo = copy_repo(base_repo, tmp_path / "repo")
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    dvc = str(BIN_PYTHON.parent / "dvc")
    proc = run([dvc, "repro"], repo, check=False, extra_env={"PATH": f"{bare / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode != 0, describe(proc)
    lines = [line for line in proc.stdout.splitlines() if "cannot import the project" in line]
    assert len(lines) == 1 and "source .venv/bin/activate" in lines[0], describe(proc)
    assert "Traceback" not in proc.stdout, describe(proc)
    assert not (repo / "data").exists()


def test_config_override_is_refused(base_repo):
    proc = run(["snakemake", "-n", "--cores", "1", "--config", "seed=3"], base_repo, check=False)
    assert proc.returncode != 0, describe(proc, "accepted --config")
    assert re.search(r"--config.*refused", proc.stdout), describe(proc)


# ----------------------------------------------------------------------------- report in a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_report_renders_offline_in_a_browser(dvc_run, tmp_path):
    """Open reports/index.html in headless Chromium with the network off: every figure
    decodes, the results table shows the baseline's fold-averaged numbers."""
    repo = dvc_run[0]
    html = (repo / "reports" / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "report references a remote resource"
    summary = json.loads((repo / "metrics" / "baseline" / "summary.json").read_text())
    acc = summary["metrics"]["test/acc"]
    expected = f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}"
    # A probe script counts decoded images after load; the DOM dump then carries the count.
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace(
        "</body>",
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.images=i.length;"
        "document.body.dataset.decoded=i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script></body>",
    ))
    cmd = [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0 and "<table" in dom, proc.stderr[-2000:]
    m = re.search(r'data-images="(\d+)" data-decoded="(\d+)"', dom)
    assert m, dom[:2000]
    n_images, n_decoded = int(m.group(1)), int(m.group(2))
    assert n_images >= 3 and n_decoded == n_images  # confusion matrix, curves, face grid
    assert expected in dom
    for heading in ("Aligned faces per class", "Alignment QA", "Folds", "Parameters", "Provenance"):
        assert heading in dom
    shot = tmp_path / "report.png"
    proc = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
                           "--window-size=1100,1600", f"--screenshot={shot}", probe.as_uri()],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # not a blank page


# ----------------------------------------------------------------------------- code dependencies at run time
def test_stages_import_only_declared_code(dvc_run, stages):
    """Every project file (a fer module, a script or its helper) that a stage's process
    loaded during the real `dvc repro` is among that stage's deps: its code inputs, the
    import closure codedeps derives, miss nothing the stage runs (a hand-typed list that
    forgot a module would fail here, and so would a gap in the closure)."""
    repo = dvc_run[0]
    code_by_script: dict[str, set[str]] = {}
    for name, st in stages.items():
        script = re.search(r"\bpython (workflow/scripts/\w+\.py)", st["cmd"]).group(1)
        deps = {d for d in st.get("deps", []) if d.endswith(".py")}
        assert code_by_script.setdefault(script, deps) == deps, f"{name}: other code deps than another {script} stage"
    seen: set[str] = set()
    for log in sorted((repo.parent / "modules").glob("*.json")):
        record = json.loads(log.read_text())
        script = os.path.relpath(record["script"], repo)
        loaded = set()
        for f in record["files"]:
            for base in (repo, ROOT):
                rel = os.path.relpath(f, base)
                if not rel.startswith(".." + os.sep) and rel.split(os.sep)[0] in ("src", "workflow"):
                    loaded.add(rel)
                    break
        assert "src/fer/params/core.py" in loaded, (script, sorted(loaded))  # the hook saw the project's modules
        missing = sorted(loaded - code_by_script[script])
        assert not missing, f"{script} imported {missing} at run time, which its stages do not declare"
        seen.add(script)
    assert seen == set(code_by_script), f"no record of {sorted(set(code_by_script) - seen)}"


# ----------------------------------------------------------------------------- remote storage
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path):
    """A real S3 API on loopback: moto's standalone server, started and stopped here.
    Yields (endpoint URL, environment with its credentials)."""
    port = _free_port()
    log = open(tmp_path / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "fer-test", "AWS_SECRET_ACCESS_KEY": "fer-test-secret",
             "AWS_DEFAULT_REGION": "us-east-1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"moto server did not start:\n{(tmp_path / 'moto.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield url, creds
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_remote_round_trip_restores_every_artifact(dvc_run, stages, s3_server, tmp_path):
    """`dvc push` to an S3 remote (a real S3 API on loopback), then `dvc pull` into a fresh
    clone, restores every artifact byte for byte, and `dvc status` is clean there."""
    import boto3

    url, creds = s3_server
    boto3.client("s3", endpoint_url=url, aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                 region_name=creds["AWS_DEFAULT_REGION"]).create_bucket(Bucket="fer-artifacts")
    origin = copy_repo(dvc_run[0], tmp_path / "origin")
    # the README's commands: a default remote, its endpoint (any S3-compatible store)
    run(["dvc", "remote", "add", "-d", "store", "s3://fer-artifacts/cache"], origin)
    run(["dvc", "remote", "modify", "store", "endpointurl", url], origin)
    run(["git", "add", ".dvc/config"], origin)
    run(["git", "commit", "-q", "-m", "S3 remote"], origin)
    push = run(["dvc", "push"], origin, extra_env=creds)
    assert re.search(r"\d+ files? pushed", push.stdout), describe(push)

    clone = clone_repo(origin, tmp_path / "clone")
    missing = [p for p in declared_outputs(stages) if not (clone / p).exists()]
    assert missing, "the clone already had the cached outputs"
    pull = run(["dvc", "pull"], clone, extra_env=creds)
    # the fingerprints are not stored (cache: false): `dvc repro` recomputes them from the
    # pulled data in seconds, and nothing else runs
    repro = run(["dvc", "repro"], clone, extra_env=creds)
    assert set(running_stages(repro.stdout)) == ALWAYS_CHANGED, describe(repro) + "\n" + pull.stdout
    status = run(["dvc", "status"], clone, extra_env=creds)
    assert only_always_changed(status.stdout), describe(status) + "\n" + pull.stdout
    expected = output_md5s(origin, stages)
    assert output_md5s(clone, stages) == expected
    assert any(k.endswith(".pt") for k in expected) and "data/aligned/images.npy" in expected
    cloud = run(["dvc", "status", "--cloud"], clone, extra_env=creds)
    assert "Cache and remote 'store' are in sync" in cloud.stdout, describe(cloud)


# ----------------------------------------------------------------------------- protocol: no test subject leaks
def test_gan_and_synthetic_set_never_see_test_subjects(dvc_run):
    """For every fold k: FESGAN was trained on fold k's training subjects only (not its
    validation or test subjects), and every synthetic image is a prior identity or a
    re-expressed training subject of fold k."""
    repo = dvc_run[0]
    folds = json.loads((repo / "data" / "folds.json").read_text())["folds"]
    for k, fold in enumerate(folds):
        trained = json.loads((repo / "results" / "fesgan" / f"fold-{k}" / "training_subjects.json").read_text())
        assert set(trained["subjects"]) == set(fold["train"]), k
        assert not set(trained["subjects"]) & (set(fold["test"]) | set(fold["val"])), k
        with open(repo / "data" / "synthetic" / f"fold-{k}" / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows
        for r in rows:
            if r["source"] == "prior":
                assert r["subject"].startswith("prior-"), r
            else:
                assert r["subject"] in fold["train"], (k, r)
        # every demo subject has a neutral image: every edit into an expression starts from it
        meta = json.loads((repo / "data" / "synthetic" / f"fold-{k}" / "meta.json").read_text())
        metrics = json.loads((repo / "metrics" / "synthetic" / f"fold-{k}.json").read_text())
        n_to_expressions = sum(r["source"] == "reexpressed" and r["label"] != "neutral" for r in rows)
        assert meta["reexpress_from"] == "neutral"
        assert meta["n_neutral_sources"] == metrics["synth/n_neutral_sources"] == n_to_expressions > 0, k


# ----------------------------------------------------------------------------- protocol: the corpus method
def test_corpus_clustering_sees_only_training_subjects(dvc_run):
    """For every fold k, every clustering round embedded the labelled images of fold k's
    training subjects only (their class means guide the clusters), never a validation or
    test subject's image or label."""
    repo = dvc_run[0]
    folds = json.loads((repo / "data" / "folds.json").read_text())["folds"]
    for k, fold in enumerate(folds):
        for d in (repo / "results" / "pseudo" / f"fold-{k}", repo / "results" / "accnn_corpus" / f"fold-{k}"):
            used = json.loads((d / "labelled_subjects.json").read_text())
            assert set(used["subjects"]) == set(fold["train"]), (d, used)
            assert not set(used["subjects"]) & (set(fold["test"]) | set(fold["val"])), d


_OPEN_HOOK = """
import os, sys
_log = os.environ["FER_OPEN_LOG"]
_busy = []
def _hook(event, args):
    if event != "open" or _busy or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    _busy.append(1)  # the log's own open raises an audit event too: do not recurse
    try:
        name = args[0].decode(errors="replace") if isinstance(args[0], bytes) else os.fspath(args[0])
        with open(_log, "a") as f:
            f.write(name + "\\n")
    finally:
        _busy.pop()
sys.addaudithook(_hook)
"""


def test_training_never_reads_the_corpus_truth(dvc_run, stages, tmp_path):
    """The corpus's hidden expression labels are read by the pseudo-label evaluation only:
    no other stage names them, and the stages that touch the corpus (alignment,
    clustering, AC-CNN training and fine-tuning) never open the file (every `open` of
    their processes is recorded through a Python audit hook)."""
    truth = read_params(dvc_run[0])["corpus"]["truth"]
    assert truth.endswith("corpus_truth.csv")
    readers = {name for name, st in stages.items() if "corpus.truth" in str(st.get("params", []))
               or "corpus_truth" in st["cmd"]}
    assert {stage_rule(n) for n in readers} == {"pseudo_quality"}, readers
    repo = copy_repo(dvc_run[0], tmp_path / "repo")
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(_OPEN_HOOK)
    checked = [n for n in stages if stage_rule(n) in {"align_corpus", "cluster_corpus", "train_accnn", "finetune_accnn"}]
    assert len(checked) >= 4, checked
    for name in checked:
        log = tmp_path / f"{name}.opens"
        env = {"PYTHONPATH": str(hook_dir), "FER_OPEN_LOG": str(log)}
        proc = subprocess.run(["bash", "-c", stages[name]["cmd"]], cwd=repo, env={**run_env(), **env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{log_tail(repo)}"
        opened = log.read_text().splitlines()
        assert any("aligned" in o for o in opened), (name, opened[:20])  # the hook saw the stage's reads
        assert not [o for o in opened if "corpus_truth" in o], name


# ----------------------------------------------------------------------------- same bytes under both tools
def test_every_output_is_byte_identical_under_both_tools(dvc_run, smk_run, stages):
    """Same params, same machine, same bytes: two runs, one by `dvc repro` and one by
    `snakemake --cores 2` (two jobs at once) in a fresh clone, give every file under
    data/, models/, metrics/, plots/, results/ and reports/ the same md5 (every declared
    output, and any other file a stage writes there). The one exception is the report's
    "Generated <date time>" line and its training wall times (README)."""
    dvc_repo, smk_repo = dvc_run[0], smk_run[0]
    a, b = artifact_md5s(dvc_repo), artifact_md5s(smk_repo)
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    declared = output_md5s(dvc_repo, stages)
    assert set(declared) <= set(a) and "missing" not in declared.values()
    assert any(k.endswith(".pt") for k in a) and any(k.startswith("results/accnn_corpus/") for k in a)
    differ = sorted(k for k in a if a[k] != b[k])
    assert differ in (["reports/index.html"], []), f"files differ between dvc repro and snakemake: {differ}"
    html_a, html_b = ((r / "reports" / "index.html").read_text() for r in (dvc_repo, smk_repo))
    assert REPORT_TIMESTAMP.search(html_a) and REPORT_TIMESTAMP.search(html_b)
    from fer.params import plan_rows

    walls = REPORT_WALL_TIMES.findall(html_a)
    rows = plan_rows(read_params(dvc_repo)).full_rows  # every row but accnn_continued (the tiny params' start: scratch)
    assert len(walls) == len(rows) >= 15 and not any("n/a" in w for w in walls), walls  # every row's, from its logs

    def timeless(text: str) -> str:
        return REPORT_WALL_TIMES.sub("", REPORT_TIMESTAMP.sub("", text))

    assert timeless(html_a) == timeless(html_b), "the reports differ beyond the time and the wall times"
