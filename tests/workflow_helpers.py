"""Helpers of the workflow tests: a tiny copy of the project in a temporary git + DVC repo,
and running Snakemake / DVC / git in it with their output kept for assertion messages."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "workflow" / "scripts") not in sys.path:  # the scripts' helpers (dvcgen.py, ...)
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import dvcgen  # noqa: E402
#: The environment's bin folder (snakemake, dvc, python): works in a fresh CI .venv too.
BIN = Path(sys.executable).parent

#: Tiny parameters: the whole pipeline runs in well under a minute on 2 cores.
TINY: dict[str, Any] = {
    "demo.n_subjects": 6,
    "demo.images_per_expression": 1,
    "demo.corpus_subjects": 4,
    "demo.corpus_images_per_subject": 2,
    "demo.image_size": 64,
    "align.size": 32,
    "folds.n_folds": 2,
    "folds.val_fraction": 0.34,
    "labels.budgets": [],  # all labels only; tests/test_budgets_workflow.py runs budgets
    "baseline.epochs": 2,  # every row: 2 epochs (equal budgets are checked)
    "baseline.width": 4,
    "baseline.arch": "vgg_small",
    "baseline.batch_size": 16,
    "report.faces_per_class": 2,
    "identity.epochs": 1,
    "identity.width": 4,
    "identity.batch_size": 16,
    "fesgan.iterations": 4,
    "fesgan.d_warmup": 2,
    "fesgan.width": 8,
    "fesgan.batch_size": 8,
    "fesgan.grid_every": 2,
    "synthesis.per_class": 4,
    "clustering.balance": False,  # 8 corpus faces for 7 classes: some class may get none
    "clustering.niter": 4,
    "accnn.epochs": 2,
    "accnn.width": 4,
    "accnn.batch_size": 16,
    "finetune.epochs": 1,
    "finetune.rounds": 1,
    # the pipelines every workflow test copies keep the from-scratch corpus row with its
    # re-clustering round (CI's time: no control row); the shipped start: accnn runs end to
    # end, under both tools, in tests/test_corpus_start.py
    "finetune.start": "scratch",
    "finetune.keep_start": False,
    "dgcn.gen_epochs": 1,
    "dgcn.cls_epochs": 1,
    "dgcn.e2e_epochs": 1,
    "dgcn.gen_width": 4,
    "fersnet.epochs": 2,
    "fersnet.width": 4,
    "fersnet.batch_size": 8,
}

#: What the temporary project holds (besides .dvc/config and .dvc/.gitignore).
PROJECT_FILES = ("Snakefile", "workflow", "params.yaml", ".dvcignore", ".gitignore", "src")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".snakemake")

DEFAULT_TIMEOUT = 900  # a hang guard, not a speed limit: the tiny pipeline is ~50 jobs, slow on a busy 2-core CI machine


#: Stages DVC runs on every `dvc repro` (always_changed): the content fingerprints of the
#: dataset and the corpus, which rewrite their file only when the content changed.
ALWAYS_CHANGED = {"fingerprint_dataset", "fingerprint_corpus"}
#: The check that dvc.yaml is a fresh render: it runs whenever params.yaml changes
#: (seconds; its output never changes, so it re-runs nothing else).
CHECK = dvcgen.DAG_CHECK_RULE


def only_always_changed(status: str) -> bool:
    """`dvc status` reports nothing but the always-changed fingerprint stages."""
    lines = [line.strip() for line in status.splitlines() if line.strip()]
    names = {line.rstrip(":") for line in lines if line.endswith(":")}
    return names == ALWAYS_CHANGED and set(lines) == {f"{n}:" for n in ALWAYS_CHANGED} | {"always changed"}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(
        GIT_AUTHOR_NAME="fer tests",
        GIT_AUTHOR_EMAIL="fer-tests@example.invalid",
        GIT_COMMITTER_NAME="fer tests",
        GIT_COMMITTER_EMAIL="fer-tests@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        DVC_NO_ANALYTICS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    e.pop("VIRTUAL_ENV_PROMPT", None)
    return e


def run(
    cmd: Sequence[str],
    cwd: str | Path,
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; stdout and stderr together in ``.stdout``. With ``check``,
    a non-zero exit fails the test with the command's output. ``extra_env`` adds to (or
    replaces in) the environment of :func:`env`."""
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env={**env(), **(extra_env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(describe(proc, f"exited with {proc.returncode}"))
    return proc


def describe(proc: subprocess.CompletedProcess, what: str = "") -> str:
    """A failed command, its exit code and its output, for an assertion message."""
    return f"`{' '.join(map(str, proc.args))}` {what} (rc={proc.returncode}); output:\n{proc.stdout}"


def log_tail(repo: Path, n: int = 60) -> str:
    """The ends of the job logs in ``repo/logs`` (for assertion messages)."""
    out = []
    for log in sorted((repo / "logs").rglob("*.log")) if (repo / "logs").exists() else []:
        lines = log.read_text(errors="replace").splitlines()[-n:]
        out.append(f"--- {log.relative_to(repo)}\n" + "\n".join(lines))
    return "\n".join(out)


# ----------------------------------------------------------------------------- params
def set_key(params: dict[str, Any], dotted: str, value: Any) -> None:
    node = params
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def tiny_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out = yaml.safe_load(yaml.safe_dump(dict(params)))
    for key, value in TINY.items():
        set_key(out, key, value)
    return out


def read_params(repo: Path) -> dict[str, Any]:
    return yaml.safe_load((repo / "params.yaml").read_text())


def write_params(repo: Path, params: Mapping[str, Any]) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(dict(params), sort_keys=False))


def configure(repo: Path, keys: Mapping[str, Any], render: bool = True) -> None:
    """Set params.yaml keys (dotted: ``data.root``) in ``repo`` and, with ``render``,
    re-render its dvc.yaml for them (what `make dvc-yaml` does, in-process)."""
    params = read_params(repo)
    for key, value in keys.items():
        set_key(params, key, value)
    write_params(repo, params)
    if render:
        (repo / "dvc.yaml").write_text(dvcgen.dump(dvcgen.render(repo)))


def report_text(html_file: Path) -> str:
    """The visible text of an HTML report (tags dropped, entities decoded, whitespace runs
    as one space), for assertions on what it says."""
    import html

    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", html_file.read_text())))


# ----------------------------------------------------------------------------- repos
def build_repo(dest: Path, src_root: Path = ROOT) -> Path:
    """A committed git + DVC repo at ``dest`` with the project files, tiny params and a
    dvc.yaml rendered for them. Nothing is run."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        s = src_root / name
        if s.is_dir():
            shutil.copytree(s, dest / name, ignore=_IGNORE)
        else:
            shutil.copy2(s, dest / name)
    write_params(dest, tiny_params(read_params(src_root)))
    (dest / "dvc.yaml").write_text(dvcgen.dump(dvcgen.render(dest)))

    run(["git", "-c", "init.defaultBranch=main", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    for name in ("config", ".gitignore"):  # analytics and update checks off, as in the project
        shutil.copy2(src_root / ".dvc" / name, dest / ".dvc" / name)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "tiny project"], dest)
    return dest


#: A sitecustomize.py that records, at exit, every module a stage's Python process loaded
#: (PYTHONPATH=<its folder>, FER_MODULE_LOG=<folder>): what each stage really imports.
MODULE_HOOK = """
import atexit, json, os, sys
def _record():
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.sep + os.path.join("workflow", "scripts") + os.sep not in script:
        return  # dvc, snakemake, bash: not a stage's script
    files = sorted({os.path.abspath(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    with open(os.path.join(os.environ["FER_MODULE_LOG"], f"{os.getpid()}.json"), "w") as f:
        json.dump({"script": script, "files": files}, f)
atexit.register(_record)
"""


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``shared-<name>`` of this test session after ``build(folder)`` ran in it
    ONCE, whichever pytest-xdist worker asked first: the others wait on a file lock and
    reuse the folder. So the end-to-end test files, split across workers to run at once,
    share one tiny repo and one run of each tool (the report names the repo's commit, so
    the two tools' runs must come from the same one). A build that failed is not retried:
    every later request fails with its error."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-xdist: every worker's temporary folder is in this one
    home, done, failed = (base / f"shared-{name}{suffix}" for suffix in ("", ".done", ".failed"))
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if failed.exists():
            pytest.fail(f"building the shared {name!r} failed in another test:\n{failed.read_text()}", pytrace=False)
        if not done.exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            try:
                build(home)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}"[-20000:])
                raise
            done.touch()
    return home


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a repo (git, DVC cache, Snakemake metadata, outputs and all)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def clone_repo(src: Path, dest: Path) -> Path:
    """A fresh `git clone` of a repo: what a new user gets (committed files only, no DVC
    cache, no outputs, no Snakemake metadata)."""
    run(["git", "clone", "-q", str(src), str(dest)], src.parent)
    return dest


def render_dvc_yaml(repo: Path) -> None:
    """`make dvc-yaml` in ``repo`` (after editing what shapes the DAG in its params.yaml)."""
    run([str(BIN / "python"), "workflow/scripts/render_dvc_yaml.py", "--out", "dvc.yaml"], repo)


# ----------------------------------------------------------------------------- outputs
#: Where the pipeline writes its artifacts.
ARTIFACT_DIRS = ("data", "models", "metrics", "plots", "results", "reports")
#: Files in those folders that are not artifacts: DVC's per-folder .gitignore and the
#: marker Snakemake writes into directory outputs (in .dvcignore, so DVC never sees it).
NOT_ARTIFACTS = (".gitignore", ".snakemake_timestamp")


def declared_outputs(stages: Mapping[str, Any]) -> list[str]:
    """Every output path of dvc.yaml's stages (outs, metrics, plots; folders as given)."""
    out = []
    for st in stages.values():
        for entry in st.get("outs", []) + st.get("metrics", []) + st.get("plots", []):
            out.extend([entry] if isinstance(entry, str) else list(entry))
    return sorted(out)


def output_md5s(repo: Path, stages: Mapping[str, Any]) -> dict[str, str]:
    """md5 of every file of every declared output (the files inside folder outputs)."""
    md5s = {}
    for rel in declared_outputs(stages):
        path = repo / rel
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.name in NOT_ARTIFACTS:
                continue
            md5s[str(f.relative_to(repo))] = hashlib.md5(f.read_bytes()).hexdigest() if f.is_file() else "missing"
    return md5s


def artifact_md5s(repo: Path) -> dict[str, str]:
    """md5 of every file under the artifact folders (declared outputs or not), the
    non-artifacts aside."""
    return {
        str(f.relative_to(repo)): hashlib.md5(f.read_bytes()).hexdigest()
        for d in ARTIFACT_DIRS
        if (repo / d).is_dir()
        for f in sorted((repo / d).rglob("*"))
        if f.is_file() and f.name not in NOT_ARTIFACTS
    }


# ----------------------------------------------------------------------------- parsing output
def snakemake_rules(repo: Path) -> set[str]:
    """Rule names of the Snakefile (`snakemake --list-rules`)."""
    proc = run(["snakemake", "--list-rules"], repo)
    # one rule a line, `name` or `name (docstring...)`; docstring continuations are indented
    return {m.group(1) for line in proc.stdout.splitlines() if (m := re.match(r"([A-Za-z_]\w*)(?: \(|$)", line))}


def job_stats(output: str) -> dict[str, int]:
    """rule -> job count from Snakemake's "Job stats" table (empty when nothing to do)."""
    stats: dict[str, int] = {}
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return stats
    for line in lines[start + 1 :]:
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(\d+)\s*", line)
        if m:
            if m.group(1) == "total":
                break
            if m.group(1) != "job":
                stats[m.group(1)] = int(m.group(2))
        elif line.strip() and not set(line.strip()) <= {"-", " "} and not line.strip().startswith("job"):
            break
    return stats


def running_stages(output: str) -> list[str]:
    """Stages DVC ran ("Running stage 'x':")."""
    return re.findall(r"Running stage '([^']+)'", output)


def skipped_stages(output: str) -> list[str]:
    """Stages DVC found unchanged ("Stage 'x' didn't change, skipping")."""
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)


def stage_rule(name: str) -> str:
    return name.split("__", 1)[0]
