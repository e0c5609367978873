"""A user's own dataset under both tools (issue 9, points 3, 6, 7, 8): its content changes
re-run alignment and nothing else changes when nothing changed; bad input stops the run
before any job with a message naming the file or key; a failed alignment keeps its
evidence and leaves no partial output.

Cheap on purpose: one tiny csv-format dataset and corpus (the demo generator's images,
re-laid out inside the temporary repo at my_data/, git-ignored, as a user's would be), and
the runs stop after alignment (targets, `dvc repro align align_corpus`).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
import yaml

from workflow_helpers import (
    build_repo,
    configure,
    copy_repo,
    describe,
    job_stats,
    log_tail,
    run,
    running_stages,
    skipped_stages,
)

pytestmark = pytest.mark.slow

ALIGN_TARGETS = ["data/aligned/meta.json", "data/aligned_corpus/meta.json"]
FINGERPRINTS = {"fingerprint_dataset", "fingerprint_corpus"}
DATASET = Path("my_data/expr")
CORPUS = Path("my_data/corpus")


def _configure(repo: Path, render: bool = True, **keys) -> None:
    """Set params.yaml keys (``a__b`` for ``a.b``) and re-render dvc.yaml for them."""
    configure(repo, {key.replace("__", "."): value for key, value in keys.items()}, render)


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory) -> Path:
    """The tiny project with data.format csv on a dataset and a corpus of the user's (the
    demo's images, copied), corpus.truth '' as for a real corpus; committed, nothing run."""
    from fer.data.demo import generate_demo
    from fer.params import DemoParams

    repo = build_repo(tmp_path_factory.mktemp("user") / "repo")
    raw = repo.parent / "raw"
    generate_demo(raw, DemoParams(n_subjects=6, images_per_expression=1, corpus_subjects=4,
                                  corpus_images_per_subject=2, image_size=64), seed=3)
    shutil.copytree(raw / "expr", repo / DATASET)
    shutil.copytree(raw / "corpus", repo / CORPUS)
    with open(repo / ".gitignore", "a") as f:
        f.write("/my_data/\n")
    _configure(repo, data__format="csv", data__root=str(DATASET), corpus__root=str(CORPUS), corpus__truth="")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "my own dataset"], repo)
    return repo


@pytest.fixture(scope="module")
def smk_aligned(user_repo, tmp_path_factory) -> tuple[Path, str]:
    repo = copy_repo(user_repo, tmp_path_factory.mktemp("smk_aligned") / "repo")
    proc = run(["snakemake", "--cores", "2", *ALIGN_TARGETS], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    return repo, proc.stdout


@pytest.fixture(scope="module")
def dvc_aligned(user_repo, tmp_path_factory) -> Path:
    repo = copy_repo(user_repo, tmp_path_factory.mktemp("dvc_aligned") / "repo")
    proc = run(["dvc", "repro", "align", "align_corpus"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "aligned"], repo)
    return repo


# ----------------------------------------------------------------------------- changes
def _rows(table: Path) -> list[str]:
    return table.read_text().splitlines(keepends=True)


def _add_image(root: Path) -> None:
    rows = _rows(root / "labels.csv")
    image, *rest = rows[1].strip().split(",")
    shutil.copy2(root / image, root / "images" / "extra.png")
    (root / "labels.csv").write_text("".join(rows) + ",".join(["images/extra.png", *rest]) + "\n")


def _remove_image(root: Path) -> None:
    rows = _rows(root / "labels.csv")
    (root / "labels.csv").write_text("".join(rows[:-1]))


def _edit_image(root: Path) -> None:
    """Another picture under the same name, its modification time put back (as `cp -p`
    or `rsync -t` would leave it)."""
    rows = _rows(root / "labels.csv")
    a, b = (root / rows[1].split(",")[0]), (root / rows[2].split(",")[0])
    st = a.stat()
    a.write_bytes(b.read_bytes())
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))


def _relabel_in_place(root: Path) -> None:
    """One row's label changed, same file size, modification time put back: the folder's
    and the file's times say nothing happened."""
    table = root / "labels.csv"
    st = table.stat()
    text = table.read_text()
    row = next(r for r in text.splitlines() if r.endswith(",disgust"))
    table.write_text(text.replace(row, row[: -len("disgust")] + "sadness", 1))
    assert table.stat().st_size == st.st_size
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))


CHANGES = {"add": _add_image, "remove": _remove_image, "edit": _edit_image, "relabel": _relabel_in_place}


def test_nothing_changed_nothing_runs(smk_aligned, dvc_aligned):
    repo, first = smk_aligned
    assert set(job_stats(first)) == {"fingerprint_dataset", "fingerprint_corpus", "align", "align_corpus"}, first
    proc = run(["snakemake", "-n", "--cores", "1", *ALIGN_TARGETS], repo)
    assert job_stats(proc.stdout) == {} and "Nothing to be done" in proc.stdout, describe(proc)
    assert "missing provenance" not in proc.stdout, describe(proc)  # the fingerprint jobs ran under Snakemake
    # corpus.truth '' is no input at all (it was an empty path Snakemake warned about on every run)
    assert "Empty file path" not in proc.stdout, describe(proc)

    repro = run(["dvc", "repro", "align", "align_corpus"], dvc_aligned)
    assert set(running_stages(repro.stdout)) == FINGERPRINTS, describe(repro)
    assert {"align", "align_corpus"} <= set(skipped_stages(repro.stdout)), describe(repro)


@pytest.mark.parametrize(
    ("which", "change"),
    [("dataset", c) for c in sorted(CHANGES)] + [("corpus", c) for c in sorted(CHANGES) if c != "relabel"],
)
def test_snakemake_sees_a_change_inside_the_dataset(smk_aligned, tmp_path, which, change):
    """Snakemake judged the dataset folder by its own modification time: an edited,
    relabelled or replaced image re-ran nothing ("Nothing to be done")."""
    repo = copy_repo(smk_aligned[0], tmp_path / "repo")
    root = repo / (DATASET if which == "dataset" else CORPUS)
    dir_mtime = root.stat().st_mtime_ns
    CHANGES[change](root)
    os.utime(root, ns=(dir_mtime, dir_mtime))  # the folder's own time says nothing either
    proc = run(["snakemake", "-n", "--cores", "1", *ALIGN_TARGETS], repo)
    expected = {"align": 1} if which == "dataset" else {"align_corpus": 1}
    assert job_stats(proc.stdout) == expected, describe(proc)


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_dvc_sees_a_change_inside_the_dataset(dvc_aligned, tmp_path, change):
    repo = copy_repo(dvc_aligned, tmp_path / "repo")
    CHANGES[change](repo / DATASET)
    proc = run(["dvc", "repro", "align", "align_corpus"], repo)
    assert set(running_stages(proc.stdout)) == FINGERPRINTS | {"align"}, describe(proc)
    assert "align_corpus" in skipped_stages(proc.stdout), describe(proc)
    status = run(["dvc", "status", "make_folds"], repo)  # what comes after alignment sees it
    assert "make_folds" in status.stdout and "modified" in status.stdout, describe(status)


# ----------------------------------------------------------------------------- checks before any job
def _escaping_row(repo: Path) -> str:
    table = repo / DATASET / "labels.csv"
    rows = _rows(table)
    shutil.copy2(repo / DATASET / rows[1].split(",")[0], repo / "my_data" / "outside.png")
    table.write_text("".join(rows) + "../outside.png,S001,happiness\n")
    return "leaves the dataset root"


def _no_neutral(repo: Path) -> str:
    table = repo / DATASET / "labels.csv"
    table.write_text("".join(r for r in _rows(table) if not r.strip().endswith(",neutral")))
    return "Set dgcn.reference_target: subject_mean"


def _too_many_folds(repo: Path) -> str:
    _configure(repo, render=False, folds__n_folds=7)  # (dvc.yaml cannot be rendered for it either)
    return "6 subjects cannot make 7 subject-independent folds"


def _no_corpus(repo: Path) -> str:
    shutil.rmtree(repo / CORPUS)
    return "corpus.root in params.yaml is 'my_data/corpus', which does not exist"


PROBLEMS = {"escaping-path": _escaping_row, "no-neutral": _no_neutral, "folds": _too_many_folds,
            "no-corpus": _no_corpus}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_bad_input_fails_before_any_job_under_both_tools(user_repo, tmp_path, problem):
    repo = copy_repo(user_repo, tmp_path / "repo")
    needle = PROBLEMS[problem](repo)
    smk = run(["snakemake", "-n", "--cores", "1"], repo, check=False)
    assert smk.returncode != 0 and needle in smk.stdout, describe(smk)
    assert job_stats(smk.stdout) == {}, describe(smk, "planned jobs")

    # DVC: the DAG check (which parses the Snakefile, preflight included) and the
    # fingerprint stages come first and make the same checks; the message is the data
    # error itself, not a Python traceback
    dvc = run(["dvc", "repro"], repo, check=False)
    assert dvc.returncode != 0, describe(dvc)
    ran = running_stages(dvc.stdout)
    assert set(ran) <= FINGERPRINTS | {"check_dag"} and ran, describe(dvc)
    assert needle in dvc.stdout, describe(dvc)
    logs = {p.name: p.read_text() for p in (repo / "logs").glob("*.log") if p.name.startswith(("fingerprint_", "check_dag"))}
    failed = [text for text in logs.values() if needle in text]
    assert failed and all("Traceback" not in t and "error: " in t for t in failed), logs
    assert not (repo / "data" / "aligned").exists() and not (repo / "data" / "aligned_corpus").exists()
    if (repo / "dvc.lock").exists():  # a fingerprint stage that passed its checks is recorded
        assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) <= FINGERPRINTS | {"check_dag"}


# ----------------------------------------------------------------------------- evidence of a failed alignment
@pytest.mark.parametrize("tool", ["snakemake", "dvc"])
def test_failed_alignment_keeps_its_evidence_and_no_partial_output(user_repo, tmp_path, tool):
    """Images without landmark files under align.landmarks: annotation fail; with too many
    of them the stage fails. Snakemake deleted data/aligned/qa.csv that the message named,
    and a failed `dvc repro align` left a partial images.npy behind."""
    repo = copy_repo(user_repo, tmp_path / "repo")
    removed = sorted((repo / DATASET / "images").glob("S00[1-3]_*.landmarks.txt"))
    for f in removed:
        f.unlink()
    _configure(repo, align__landmarks="annotation")
    if tool == "snakemake":
        proc = run(["snakemake", "--cores", "1", "data/aligned/meta.json"], repo, check=False)
    else:
        proc = run(["dvc", "repro", "align"], repo, check=False)
    assert proc.returncode != 0, describe(proc)
    output = proc.stdout + (repo / "logs" / "align.log").read_text()
    assert "logs/align/qa.csv" in output and f"all {len(removed)} failures are listed in logs/align/failures.txt" in output
    aligned = repo / "data" / "aligned"
    assert not aligned.exists() or not any(aligned.iterdir()), list(aligned.iterdir())
    assert not (repo / "metrics" / "align.json").exists()
    with open(repo / "logs" / "align" / "qa.csv", newline="") as f:
        qa = list(csv.DictReader(f))
    n_images = len(_rows(repo / DATASET / "labels.csv")) - 1
    assert len(qa) == n_images and sum(r["status"] == "failed" for r in qa) == len(removed)
    failures = (repo / "logs" / "align" / "failures.txt").read_text().splitlines()
    assert len(failures) == 1 + len(removed) and all("no landmark file" in line for line in failures[1:])
    assert "Traceback" not in (repo / "logs" / "align.log").read_text()


# ----------------------------------------------------------------------------- a real layout
# (every reader's replica end to end, CK+ included: tests/test_readers_end_to_end.py)


def test_split_first_folders_layout_runs_the_official_protocol(user_repo, tmp_path):
    """The export layout train/<class>/, test/<class>/ (a label list beside them) with
    folds.protocol official: one fold whose test part is the test/ folder's subjects, and a
    DAG of one fold (dry run)."""
    repo = copy_repo(user_repo, tmp_path / "repo")
    expr, root = repo / DATASET, repo / "my_data" / "split"
    with open(expr / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    subjects = sorted({r["subject"] for r in rows})
    test_subjects = set(subjects[-2:])
    for r in rows:
        split = "test" if r["subject"] in test_subjects else "train"
        dest = root / split / r["expression"] / f"{r['subject']}_{Path(r['image']).name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(expr / r["image"], dest)
        marks = expr / (r["image"][: -len(".png")] + ".landmarks.txt")
        shutil.copy2(marks, dest.with_name(dest.stem + ".landmarks.txt"))
    (root / "labels.txt").write_text("anger disgust fear happiness sadness surprise neutral\n")
    # one fold instead of folds.n_folds: the DAG changes, so dvc.yaml is re-rendered (`make dvc-yaml`)
    _configure(repo, data__format="folders", data__root="my_data/split", data__subject_regex=r"^(.+?)_",
               folds__protocol="official")
    proc = run(["snakemake", "--cores", "2", "data/folds.json"], repo, check=False)
    assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
    folds = yaml.safe_load((repo / "data" / "folds.json").read_text())
    assert folds["protocol"] == "official" and len(folds["folds"]) == 1
    assert set(folds["folds"][0]["test"]) == test_subjects
    assert folds["split_sizes"]["test"] == sum(r["subject"] in test_subjects for r in rows)
    with open(repo / "data" / "aligned" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert {(r["subject"], r["split"]) for r in manifest} == {
        (s, "test" if s in test_subjects else "train") for s in subjects}
    dry = run(["snakemake", "-n", "--cores", "1"], repo, check=False)
    assert dry.returncode == 0, describe(dry, "dry run failed")
    assert "fold-1" not in (repo / "dvc.yaml").read_text() and "fold-0" in (repo / "dvc.yaml").read_text()
    assert "fold=1" not in dry.stdout and "fold=0" in dry.stdout
