"""Your own data, first class (issue 10): every reader's replica of a real dataset's
distributed layout (tests/replicas.py) runs align -> folds -> baseline -> report under
Snakemake with params.yaml edited and nothing else (methods: [baseline], no corpus), and
every aligned image carries the label its dataset's own code gives it, image by image.
``methods`` selects the jobs under both Snakemake and DVC. (A class-folder dataset with
subject ids and no corpus running every other row to the report: tests/test_workflow.py,
test_folder_per_class_dataset_runs_by_editing_params_only.)
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

import dvcgen
import replicas
from workflow_helpers import (
    build_repo,
    clone_repo,
    configure,
    copy_repo,
    describe,
    job_stats,
    log_tail,
    read_params,
    report_text,
    run,
    running_stages,
)

pytestmark = pytest.mark.slow


def _results_rows(repo: Path) -> list[str]:
    """The method names of the report's comparison table, in order."""
    return [s["method"] for s in (json.loads(p.read_text()) for p in sorted((repo / "metrics").glob("*/summary.json")))]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """The demo's faces at 128 px (the size the face detector finds all of them at), 6
    subjects x 7 expressions x 2 images, as the replicas' source."""
    from fer.data.demo import generate_demo
    from fer.params import DemoParams

    raw = tmp_path_factory.mktemp("faces")
    generate_demo(raw, DemoParams(n_subjects=6, images_per_expression=2, corpus_subjects=2,
                                  corpus_images_per_subject=1, image_size=128), seed=5)
    return raw / "expr"


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory) -> Path:
    return build_repo(tmp_path_factory.mktemp("readers") / "repo")


def _user_repo(base_repo: Path, dest: Path, fmt: str, faces: Path, **extra) -> tuple[Path, dict[str, str]]:
    """A copy of the tiny project with the ``fmt`` replica at my_data/<fmt> (git-ignored, as
    a user's dataset would be) and params.yaml pointing at it; dvc.yaml re-rendered."""
    repo = copy_repo(base_repo, dest)
    builder, keys, _ = replicas.REPLICAS[fmt]
    expected = builder(faces, repo / "my_data" / fmt)
    with open(repo / ".gitignore", "a") as f:
        f.write("/my_data/\n")
    configure(repo, {**keys, "data.root": f"my_data/{fmt}", "corpus.root": "", "corpus.truth": "", **extra})
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", f"my {fmt} copy"], repo)
    return repo, expected


@pytest.mark.parametrize("fmt", sorted(replicas.REPLICAS))
def test_every_reader_runs_to_the_report_by_editing_params_only(base_repo, faces, tmp_path, fmt):
    repo, expected = _user_repo(base_repo, tmp_path / "repo", fmt, faces, methods=["baseline"])
    proc = run(["snakemake", "--cores", "2", "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    assert set(job_stats(proc.stdout)) == {"fingerprint_dataset", "align", "make_folds",
                                           "train_baseline", "summarize", "report", "all"}, describe(proc)

    with open(repo / "data" / "aligned" / "manifest.csv", newline="") as f:
        got = {replicas.manifest_key(fmt, r["path"]): r["label"] for r in csv.DictReader(f)}
    with open(repo / "data" / "aligned" / "qa.csv", newline="") as f:
        qa = [r for r in csv.DictReader(f) if r["status"] != "skipped"]
    # every image read, with the label its dataset's own code gives it; every one aligned,
    # but for Oulu (the detector misses some of the demo's synthetic faces: listed as failed)
    assert {replicas.manifest_key(fmt, r["path"]): r["label"] for r in qa} == expected
    failed = {replicas.manifest_key(fmt, r["path"]) for r in qa if r["status"] == "failed"}
    assert got == {k: v for k, v in expected.items() if k not in failed}
    assert not failed or fmt == "oulu", failed

    meta = json.loads((repo / "data" / "aligned" / "meta.json").read_text())
    official = replicas.REPLICAS[fmt][1].get("folds.protocol") == "official"
    folds = json.loads((repo / "data" / "folds.json").read_text())
    assert folds["protocol"] == ("official" if official else "subject_kfold")
    assert len(folds["folds"]) == (1 if official else read_params(repo)["folds"]["n_folds"])
    if fmt in ("fer2013", "rafdb", "affectnet"):
        assert meta["has_subjects"] is False
    if fmt == "affectnet":
        assert meta["skipped_reasons"] == {"AffectNet code 8 (none)": 1}
    if fmt in ("ckplus", "oulu", "folders"):  # the readme / label list beside the images (RAF-DB: list-driven)
        assert meta["skipped_reasons"].get("not an image") == 1, meta["skipped_reasons"]

    assert _results_rows(repo) == ["baseline"]
    text = report_text(repo / "reports" / "index.html")
    assert "Rows not in this report" in text and "fersnet_gated not selected (params.yaml methods)" in text
    assert ("official" in text) == official


def test_methods_select_the_jobs_under_snakemake_and_dvc(base_repo, tmp_path):
    """methods: [baseline, fersnet_gated] on the demo: only those rows' jobs (and what they
    need: the identity network, the probe of the gated model's synthesis) run, under
    Snakemake and under `dvc repro` in a fresh clone; the report shows only those rows.
    With baseline.init: identity, the baseline's fold jobs start from the identity network
    and depend on it under both tools; the fold's log says what was loaded."""
    repo = copy_repo(base_repo, tmp_path / "repo")
    width = read_params(repo)["baseline"]["width"]
    configure(repo, {"methods": ["baseline", "fersnet_gated"], "baseline.init": "identity", "identity.width": width})
    deps = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train_baseline__fold-0"]["deps"]
    assert "models/identity/identity.pt" in deps, deps
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "two rows"], repo)
    clone = clone_repo(repo, tmp_path / "clone")
    expected = {"check_dag", "make_demo", "fingerprint_dataset", "fingerprint_corpus", "align", "align_corpus",
                "make_folds", "train_identity", "train_baseline", "train_fersnet", "probe_fersnet", "summarize",
                "report"}

    proc = run(["snakemake", "--cores", "2", "--resources", "gpu=2"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    # the DAG check is a DVC stage; Snakemake runs it in onstart, not as a job
    assert set(job_stats(proc.stdout)) == (expected - {"check_dag"}) | {"all"}, describe(proc)
    assert _results_rows(repo) == ["baseline", "fersnet_gated"]
    text = report_text(repo / "reports" / "index.html")
    assert "FERSNet synthesis" in text and "Expression-guided clustering" not in text
    assert "dgcn_none not selected (params.yaml methods)" in text
    assert "the baseline, FESGAN and FixMatch rows from the identity network trained on the corpus (init: identity)" in text
    log = (repo / "logs" / "train_baseline" / "fold-0.log").read_text()
    assert "recogniser start: {'init/file': 'models/identity/identity.pt'" in log, log

    proc = run(["dvc", "repro"], clone, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(clone)
    stages = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]
    assert not [n for n, st in stages.items() if "  " in st["cmd"]]  # dvc.lock would not keep a double space
    assert {dvcgen.stage_rule(name) for name in running_stages(proc.stdout)} == expected
    assert {dvcgen.stage_rule(name) for name in stages} == expected
    assert _results_rows(clone) == ["baseline", "fersnet_gated"]
    shutil.rmtree(clone)
