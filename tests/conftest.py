"""Shared test set-up: paths, and the builders several test files use (tiny learnable
image data, recogniser parameters, prepared folds and their output paths)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"
PARAMS = ROOT / "params.yaml"

import pytest  # noqa: E402

# Importing workflow_helpers puts SCRIPTS on sys.path, so tests can import the scripts'
# helpers (workflow/scripts/_common.py, dvcgen.py, ...).
from workflow_helpers import MODULE_HOOK, build_repo, built_once, clone_repo, copy_repo, describe, log_tail, run  # noqa: E402

from fer.params import RecognizerParams, build  # noqa: E402
from fer.training.protocol import Fold, FoldOutputs, prepare_fold  # noqa: E402


def quadrant_data(n: int, seed: int, num_classes: int = 3, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size, 1) noise with the quadrant of the label bright (0 top left,
    1 top right, 2 bottom left, 3 bottom right): a task a tiny CNN learns in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    half = size // 2
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, r * half : (r + 1) * half, col * half : (col + 1) * half] += 150
    return x, y


def random_split(n: int, n_train: int, n_val: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Image-level train / val / test indices of ``range(n)`` (for data without subjects)."""
    perm = np.random.default_rng(seed).permutation(n)
    return {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}


def recognizer(**overrides: Any) -> RecognizerParams:
    """Small recogniser parameters (vgg_small at width 4, 2 epochs, no flip: it would swap
    the left/right quadrant classes); ``overrides`` replace keys."""
    base: dict[str, Any] = {
        "arch": "vgg_small",
        "width": 4,
        "epochs": 2,
        "batch_size": 16,
        "optimizer": "adamw",
        "lr": 0.003,
        "warmup_epochs": 1,
        "augment": {"hflip": False, "rotate_deg": 5.0},
    }
    base.update(overrides)
    return build(RecognizerParams, base)


def make_fold(
    images: np.ndarray,
    labels: np.ndarray,
    split: dict[str, np.ndarray],
    classes: list[str],
    *,
    seed: int = 0,
    subjects: np.ndarray | None = None,
) -> Fold:
    """A prepared fold on the CPU."""
    return prepare_fold(images, labels, split, classes, device="cpu", seed=seed, subjects=subjects)


def outputs(tmp_path: Path, stem: str = "fold-0", *, resume: bool = True, log: bool = True) -> FoldOutputs:
    """The fold's output files in ``tmp_path``."""
    return FoldOutputs(
        model=tmp_path / f"{stem}.pt",
        metrics=tmp_path / f"{stem}.json",
        curve=tmp_path / f"{stem}.csv",
        resume=tmp_path / f"{stem}.resume.pt" if resume else None,
        log=tmp_path / f"{stem}.jsonl" if log else None,
    )


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Two state dicts hold bit-identical tensors."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


#: The end-to-end test files, longest first: collected before every other file, so that
#: `make test`'s parallel workers (pytest-xdist, --dist loadfile: whole files per worker,
#: handed out in collection order) start them at once instead of after the quick files.
LONG_FILES: tuple[str, ...] = ("test_workflow.py", "test_workflow_snakemake.py", "test_readers_end_to_end.py",
                               "test_budgets_workflow.py", "test_dataset_workflow.py")


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    """Run the end-to-end files first (:data:`LONG_FILES` order), the rest as collected."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(LONG_FILES)))  # stable: keeps file order


# ----------------------------------------------------------------------------- the tiny pipeline, run once
# Session fixtures of the end-to-end files test_workflow.py (DVC side) and
# test_workflow_snakemake.py (Snakemake side): built once per test session (``built_once``:
# the worker that asks first builds, the other waits and reuses), so the two files run on
# two workers at once and still share one committed repo and one run of each tool. Tests
# that change a repo work on their own copy of it.
@pytest.fixture(scope="session")
def base_repo(tmp_path_factory) -> Path:
    """Committed tiny project (workflow_helpers.TINY params), nothing run."""
    return built_once(tmp_path_factory, "base", lambda home: build_repo(home / "repo")) / "repo"


@pytest.fixture(scope="session")
def stages(base_repo) -> dict:
    """The stages of the tiny project's dvc.yaml."""
    import yaml

    return yaml.safe_load((base_repo / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="session")
def dvc_run(base_repo, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the base repo after one `dvc repro` (dvc.lock committed); its output.
    Every stage's Python process records the modules it loaded in ``<repo>/../modules``
    (``workflow_helpers.MODULE_HOOK``)."""

    def build_run(home: Path) -> None:
        repo = copy_repo(base_repo, home / "repo")
        hook, modules = home / "hook", home / "modules"
        hook.mkdir()
        modules.mkdir()
        (hook / "sitecustomize.py").write_text(MODULE_HOOK)
        proc = run(["dvc", "repro"], repo, check=False,
                   extra_env={"PYTHONPATH": str(hook), "FER_MODULE_LOG": str(modules)})
        assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-q", "-m", "dvc repro"], repo)
        (home / "stdout.txt").write_text(proc.stdout)

    home = built_once(tmp_path_factory, "dvc", build_run)
    return home / "repo", (home / "stdout.txt").read_text()


@pytest.fixture(scope="session")
def smk_run(base_repo, tmp_path_factory) -> tuple[Path, str]:
    """A fresh `git clone` of the base repo after one `snakemake --cores 2 --resources
    gpu=2` (what `make run` runs; its onsuccess handler records the outputs in dvc.lock);
    its output. Nothing else is done to it: no `dvc commit`, no git commit."""

    def build_run(home: Path) -> None:
        repo = clone_repo(base_repo, home / "repo")
        proc = run(["snakemake", "--cores", "2", "--resources", "gpu=2"], repo, check=False)
        assert proc.returncode == 0, describe(proc, "failed") + "\n" + log_tail(repo)
        (home / "stdout.txt").write_text(proc.stdout)

    home = built_once(tmp_path_factory, "smk", build_run)
    return home / "repo", (home / "stdout.txt").read_text()
