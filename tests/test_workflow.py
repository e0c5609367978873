"""The pipeline end to end under both tools, on a tiny copy of the project.

One temporary git + DVC repo is built per module (project files, tiny params, dvc.yaml
rendered for them, one commit); it is run once by `dvc repro` and once by `snakemake`
(module fixtures), and tests that change a repo work on their own copy of it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

import dvcgen
from workflow_helpers import (
    build_repo,
    copy_repo,
    describe,
    env as run_env,
    job_stats,
    log_tail,
    read_params,
    run,
    running_stages,
    set_key,
    skipped_stages,
    snakemake_rules,
    stage_rule,
    write_params,
)

pytestmark = pytest.mark.slow

DATA_RULES = {"make_demo", "align", "make_folds", "align_corpus"}
#: What a change of the recogniser's settings (params section baseline) must re-run.
#: (The generative-contrastive rows use the recogniser's settings; the corpus is clustered
#: with the joint recogniser, which uses them too.)
BASELINE_DEPENDENTS = {"train_baseline", "synthesize", "train_joint", "summarize", "report", "train_dgcn",
                       "cluster_corpus", "finetune_accnn", "pseudo_quality"}
#: What it must not: data, the identity network, the GAN, the AC-CNN, FERSNet.
BASELINE_INDEPENDENT = DATA_RULES | {"train_identity", "train_fesgan", "train_accnn", "train_fersnet"}
#: What the rdbp.lambda change may re-run beyond the intra-class rows: the corpus is
#: clustered with the full row's recogniser.
RDBP_DOWNSTREAM = {"train_joint", "summarize", "report", "cluster_corpus", "finetune_accnn", "pseudo_quality"}
#: Stages DVC runs on every `dvc repro` (always_changed): the content fingerprints of the
#: dataset and the corpus, which rewrite their file only when the content changed.
ALWAYS_CHANGED = {"fingerprint_dataset", "fingerprint_corpus"}


def only_always_changed(status: str) -> bool:
    """`dvc status` reports nothing but the always-changed fingerprint stages."""
    lines = [line.strip() for line in status.splitlines() if line.strip()]
    names = {line.rstrip(":") for line in lines if line.endswith(":")}
    return names == ALWAYS_CHANGED and set(lines) == {f"{n}:" for n in ALWAYS_CHANGED} | {"always changed"}


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory) -> Path:
    """Committed tiny project, nothing run."""
    return build_repo(tmp_path_factory.mktemp("base") / "repo")


@pytest.fixture(scope="module")
def stages(base_repo) -> dict:
    return yaml.safe_load((base_repo / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="module")
def dvc_run(base_repo, tmp_path_factory):
    """A copy of the base repo after one `dvc repro` (dvc.lock committed); its output."""
    repo = copy_repo(base_repo, tmp_path_factory.mktemp("dvc") / "repo")
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "dvc repro"], repo)
    return repo, proc.stdout


@pytest.fixture(scope="module")
def smk_run(base_repo, tmp_path_factory):
    """A copy of the base repo after one `snakemake --cores 2 --resources gpu=2`."""
    repo = copy_repo(base_repo, tmp_path_factory.mktemp("smk") / "repo")
    proc = run(["snakemake", "--cores", "2", "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    return repo, proc.stdout


# ----------------------------------------------------------------------------- 1
def test_dry_run_plans_every_rule(base_repo, stages):
    proc = run(["snakemake", "-n", "--cores", "1"], base_repo)
    planned = job_stats(proc.stdout)
    rules = snakemake_rules(base_repo)
    assert set(planned) == rules, describe(proc, f"planned {sorted(planned)}, Snakefile has {sorted(rules)}")
    n_folds = read_params(base_repo)["folds"]["n_folds"]
    assert planned["train_baseline"] == n_folds, describe(proc)
    # and dvc.yaml has one stage per planned job (the `all` target excepted)
    per_rule: dict[str, int] = {}
    for name in stages:
        per_rule[stage_rule(name)] = per_rule.get(stage_rule(name), 0) + 1
    assert per_rule == {r: n for r, n in planned.items() if r != "all"}


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
    repo = copy_repo(dvc_run[0], tmp_path / "repo")
    proc = run(["dvc", "exp", "run", "-S", "baseline.lr=0.02"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    ran = running_stages(proc.stdout)
    ran_rules = {stage_rule(s) for s in ran}
    assert ran_rules == BASELINE_DEPENDENTS | ALWAYS_CHANGED, describe(proc, f"ran {ran}")
    n_folds = read_params(repo)["folds"]["n_folds"]
    assert len([s for s in ran if stage_rule(s) == "train_baseline"]) == n_folds, describe(proc)
    assert not ran_rules & BASELINE_INDEPENDENT, describe(proc)
    assert read_params(repo)["baseline"]["lr"] == 0.02


def test_exp_run_rdbp_lambda_reruns_only_the_intra_class_rows(dvc_run, tmp_path):
    """`dvc exp run -S rdbp.lambda=0.5` re-runs the rows that use the intra-class loss
    (joint_intra, full), their summaries and the report; not alignment, FESGAN
    pretraining, the baseline, or the rows without the intra-class loss."""
    repo = copy_repo(dvc_run[0], tmp_path / "repo")
    proc = run(["dvc", "exp", "run", "-S", "rdbp.lambda=0.5"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    ran = running_stages(proc.stdout)
    ran_rules = {stage_rule(s) for s in ran}
    assert {"train_joint", "report"} <= ran_rules <= RDBP_DOWNSTREAM | ALWAYS_CHANGED, describe(proc, f"ran {ran}")
    n_folds = read_params(repo)["folds"]["n_folds"]
    joint_ran = sorted(s for s in ran if stage_rule(s) == "train_joint")
    assert len(joint_ran) == 2 * n_folds, describe(proc)
    assert all("variant-full" in s or "variant-joint_intra" in s for s in joint_ran), joint_ran
    # a summary re-runs only where its fold metrics changed (with tiny settings they may not)
    summaries = {s for s in ran if stage_rule(s) == "summarize"}
    assert summaries <= {"summarize__method-full", "summarize__method-joint_intra",
                         "summarize__method-accnn_corpus"}, summaries


# ----------------------------------------------------------------------------- 4
def test_handover_snakemake_then_dvc(smk_run, stages, tmp_path):
    repo = copy_repo(smk_run[0], tmp_path / "repo")
    # Snakemake ran exactly the commands of dvc.yaml (its metadata records each job's command)
    summary = run(["snakemake", "--detailed-summary", "--cores", "1"], repo)
    recorded = {}
    for line in summary.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) >= 6 and cols[0] != "output_file":
            recorded[cols[0]] = cols[5]
    for name, st in stages.items():
        for entry in st.get("outs", []) + st.get("metrics", []) + st.get("plots", []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            assert recorded.get(path) == st["cmd"], f"{name}: {path}\n{summary.stdout}"

    commit = run(["dvc", "commit", "-f"], repo)
    status = run(["dvc", "status"], repo)
    assert only_always_changed(status.stdout), describe(status) + "\n" + commit.stdout
    repro = run(["dvc", "repro"], repo)
    assert set(running_stages(repro.stdout)) == ALWAYS_CHANGED, describe(repro, "re-ran stages after dvc commit -f")


def test_handover_dvc_then_snakemake(dvc_run, tmp_path):
    repo = copy_repo(dvc_run[0], tmp_path / "repo")
    run(["snakemake", "--touch", "--cores", "1"], repo)
    proc = run(["snakemake", "-n", "--cores", "1"], repo)
    assert job_stats(proc.stdout) == {}, describe(proc, "plans jobs after --touch")
    assert "Nothing to be done" in proc.stdout, describe(proc)


def test_same_params_same_numbers_under_both_tools(dvc_run, smk_run):
    """Same seed, same machine, same results: the `dvc repro` run and the `snakemake
    --cores 2` run (two jobs at once) produce identical metrics, models and synthetic sets."""
    dvc_repo, smk_repo = dvc_run[0], smk_run[0]
    compared = 0
    for pattern in ("metrics/*/fold-*.json", "metrics/synthetic/fold-*.json", "data/synthetic/fold-*/images.npy",
                    "data/aligned/images.npy", "data/folds.json"):
        for a in sorted(dvc_repo.glob(pattern)):
            rel = a.relative_to(dvc_repo)
            b = smk_repo / rel
            if rel.parts[1] == "fesgan":
                continue  # FESGAN's metrics carry wall-clock seconds
            assert b.is_file(), rel
            assert a.read_bytes() == b.read_bytes(), f"{rel} differs between dvc repro and snakemake"
            compared += 1
    assert compared >= 10


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


def test_config_override_is_refused(base_repo):
    proc = run(["snakemake", "-n", "--cores", "1", "--config", "seed=3"], base_repo, check=False)
    assert proc.returncode != 0, describe(proc, "accepted --config")
    assert re.search(r"--config.*refused", proc.stdout), describe(proc)


# ----------------------------------------------------------------------------- 6
def test_snakemake_report_is_self_contained(smk_run, tmp_path):
    repo = copy_repo(smk_run[0], tmp_path / "repo")
    proc = run(["snakemake", "--report", "report.html", "--cores", "1"], repo)
    html = repo / "report.html"
    assert html.is_file() and html.stat().st_size > 10_000, describe(proc)
    text = html.read_text(errors="replace")
    assert not re.search(r"""src\s*=\s*["']?https?:""", text), "report loads remote resources"


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


# ----------------------------------------------------------------------------- your own dataset
def test_folder_per_class_dataset_runs_by_editing_params_only(base_repo, tmp_path):
    """A user's dataset laid out as <root>/<class folder>/<subject>_<...>.png (CK+-style
    names, folder names in the dataset's own spelling, landmark files for some images only)
    runs end to end after editing params.yaml: nothing else changes."""
    repo = copy_repo(base_repo, tmp_path / "repo")
    # Make a dataset outside the repo from the demo generator's images, re-laid out.
    from fer.data.demo import generate_demo
    from fer.params import DemoParams

    raw = tmp_path / "raw"
    generate_demo(raw, DemoParams(n_subjects=6, images_per_expression=1, corpus_subjects=4,
                                  corpus_images_per_subject=2, image_size=64), seed=5)
    spelling = {"anger": "angry", "disgust": "disgusted", "fear": "fearful", "happiness": "happy",
                "sadness": "sad", "surprise": "surprised", "neutral": "neutral"}
    root = tmp_path / "my_dataset"
    with open(raw / "expr" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for n, row in enumerate(rows):
        src = raw / "expr" / row["image"]
        dst = root / spelling[row["expression"]] / f"{row['subject']}_{n:03d}_00000011.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        if n % 2 == 0:  # half the images come with annotations
            shutil.copy2(src.with_name(src.stem + ".landmarks.txt"), dst.with_name(dst.stem + ".landmarks.txt"))

    # The face-recognition corpus (identity labels only) is the user's too: the demo's, copied.
    corpus = tmp_path / "my_corpus"
    shutil.copytree(raw / "corpus", corpus)

    params = read_params(repo)
    set_key(params, "corpus.root", str(corpus))
    set_key(params, "corpus.truth", "")  # a real corpus has no expression truth
    set_key(params, "data.format", "folders")
    set_key(params, "data.root", str(root))
    set_key(params, "data.subject_regex", r"^(S\d+)_")
    # Images without a landmark file go to the detector; generated faces are not always
    # detected, and such failures are reported, not hidden: allow them for this test.
    set_key(params, "align.max_failure_fraction", 0.75)
    write_params(repo, params)
    proc = run(["snakemake", "--cores", "2", "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    assert "make_demo" not in job_stats(proc.stdout)
    with open(repo / "data" / "aligned" / "qa.csv", newline="") as f:
        qa = list(csv.DictReader(f))
    assert len(qa) == len(rows)  # every input image is accounted for
    sources = {r["landmark_source"] for r in qa if r["status"] == "ok"}
    assert "annotation" in sources
    assert all(r["reason"] for r in qa if r["status"] != "ok")
    meta = json.loads((repo / "data" / "aligned" / "meta.json").read_text())
    assert meta["classes"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert (repo / "reports" / "index.html").is_file()
    summary = json.loads((repo / "metrics" / "baseline" / "summary.json").read_text())
    assert summary["n_folds"] == 2


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


# ----------------------------------------------------------------------------- issue 9: dataset changes
def _downstream(stages: dict, rule: str) -> set[str]:
    """Every rule after ``rule`` in the stage graph of dvc.yaml."""
    edges = dvcgen.rule_edges({"stages": stages})
    found, todo = set(), [rule]
    while todo:
        up = todo.pop()
        for a, b in edges:
            if a == up and b not in found:
                found.add(b)
                todo.append(b)
    return found


def test_a_changed_image_reruns_alignment_and_everything_after_it(smk_run, stages, tmp_path):
    """Snakemake judged the dataset folder by its own modification time, so an edited
    image re-ran nothing. Here one image of the fully run pipeline's dataset (the demo's
    images stand for a user's: tests/test_dataset_workflow.py runs a csv dataset of the
    user's, up to alignment, under both tools) gets one pixel changed, its own and its
    folder's modification times put back: alignment and every rule after it re-run, and
    nothing else (not the demo, the corpus, the identity network, the fingerprints)."""
    from PIL import Image

    repo = copy_repo(smk_run[0], tmp_path / "repo")
    proc = run(["snakemake", "-n", "--cores", "1"], repo)
    assert job_stats(proc.stdout) == {}, describe(proc, "plans jobs with nothing changed")
    image = sorted((repo / "data" / "demo" / "expr" / "images").glob("*.png"))[0]
    folder_st, st = image.parent.stat(), image.stat()
    pixels = np.array(Image.open(image))
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(image.parent, ns=(folder_st.st_atime_ns, folder_st.st_mtime_ns))

    proc = run(["snakemake", "-n", "--cores", "1"], repo)
    planned = set(job_stats(proc.stdout)) - {"all"}
    expected = {"align"} | _downstream(stages, "align")
    assert planned == expected, describe(proc, f"planned {sorted(planned)}, expected {sorted(expected)}")
    assert not planned & {"make_demo", "align_corpus", "train_identity", *ALWAYS_CHANGED}
