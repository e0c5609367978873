"""Plumbing of the per-fold scripts: the fold's arguments, its prepared data and device,
its output paths. Only the per-fold scripts import it, so the alignment or the summaries
do not depend on the training code."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _common import parser

import numpy as np

from fer.data.aligned import AlignedSet, load_aligned
from fer.data.budgets import load_split, parse_split_key
from fer.data.folds import split_indices
from fer.params import DeclaredParams
from fer.training.protocol import Fold, FoldOutputs, prepare_fold
from fer.utils.device import select_device
from fer.utils.seed import seed_everything


def split_arg(text: str) -> int | str:
    """``--fold``: an int for fold K with all labels (as before budgets existed, so its
    outputs keep their bytes), the key itself for a budget split ``K-bJ``."""
    k, slot = parse_split_key(text)
    return k if slot is None else text


def fold_parser(description: str, *outputs: str) -> argparse.ArgumentParser:
    """The parser of a per-fold training script: the aligned set, the folds, the fold
    number, and ``outputs`` (more required path options, e.g. ``"out-dir"``)."""
    p = parser(description)
    for name in ("images", "manifest", "meta", "folds", *outputs):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--fold", required=True, type=split_arg,
                   help="split key: K (fold K, all labels; --folds data/folds.json) or K-bJ (fold K at budget slot J "
                        "of labels.budgets; --folds data/budgets.json)")
    p.add_argument("--start", help="start weights of the fold's recogniser (params init: identity or a file)")
    return p


def add_corpus_options(p: argparse.ArgumentParser) -> None:
    """``--corpus-images --corpus-manifest --corpus-meta``: the aligned face-recognition
    corpus, all three or none (no corpus: ``corpus.root: ''``)."""
    for name in ("images", "manifest", "meta"):
        p.add_argument(f"--corpus-{name}", help="the aligned corpus (all three or none: no corpus)")


def add_synthetic_option(p: argparse.ArgumentParser) -> None:
    """``--synthetic-dir``: the fold's FESGAN synthetic set (when finetune.synthetic_weight > 0)."""
    p.add_argument("--synthetic-dir", help="the fold's synthetic set (when finetune.synthetic_weight > 0)")


def load_synthetic(args: argparse.Namespace, weight: float, classes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The synthetic set of ``add_synthetic_option`` as (images, labels) when its weight is
    > 0 (then ``--synthetic-dir`` is required and its classes must be the dataset's), else None."""
    if weight <= 0:
        return None
    if not args.synthetic_dir:
        raise SystemExit("finetune.synthetic_weight > 0 needs --synthetic-dir")
    return read_synthetic_dir(args.synthetic_dir, classes)


def read_synthetic_dir(path: str | Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic set folder (aligned-set format: images.npy, manifest.csv, meta.json) as
    (images, labels); its classes must be the dataset's ``classes``."""
    d = Path(path)
    syn = load_aligned(d / "images.npy", d / "manifest.csv", d / "meta.json")
    if syn.classes != classes:
        raise SystemExit(f"synthetic classes {syn.classes} differ from the dataset's {classes}")
    return syn.images, syn.labels


def load_corpus(args: argparse.Namespace) -> tuple[np.ndarray | None, list[str]]:
    """The images and paths of the aligned corpus of ``add_corpus_options`` (unlabelled),
    as ``fer.methods.corpus.clustering_pool`` takes them: ``(None, [])`` without one."""
    given = [args.corpus_images, args.corpus_manifest, args.corpus_meta]
    if not any(given):
        return None, []
    if not all(given):
        raise SystemExit("--corpus-images, --corpus-manifest and --corpus-meta go together (all three or none)")
    corpus = load_aligned(args.corpus_images, args.corpus_manifest, args.corpus_meta, labelled=False)
    return corpus.images, list(corpus.paths)


def fold_context(args: argparse.Namespace, p: DeclaredParams, *, subjects: bool = False) -> tuple[Fold, AlignedSet]:
    """The set-up every per-fold script shares: claim the device (compute section), seed
    with the fold's seed (``seed + fold``: every method of a fold starts from the same
    seed), load the aligned set and the fold's split, check them. Returns the ``Fold``
    (with subject ids when ``subjects``) and the aligned set, whose labels are the fold's
    (a label budget's unlabelled part masked: no script can read them)."""
    compute = p.section("compute")
    device = select_device(compute.device, compute.threads)
    seed = p.get("seed") + parse_split_key(str(args.fold))[0]  # every budget of a fold shares its seed
    seed_everything(seed)
    data = load_aligned(args.images, args.manifest, args.meta)
    split = split_indices(data.subjects, load_split(args.folds, str(args.fold)))
    fold = prepare_fold(data.images, data.labels, split, data.classes, device=device, seed=seed,
                        subjects=data.subjects if subjects else None)
    if getattr(args, "start", None):
        fold.start = Path(args.start)
    return fold, dataclasses.replace(data, labels=fold.labels)


def fold_outputs(args: argparse.Namespace, *, resume: bool = True) -> FoldOutputs:
    """The fold's output paths from ``--model --metrics --curve --train-log`` and the resume
    file ``<--resume-dir>/fold-K.pt`` (``resume=False``: the method keeps its own resume
    files in that folder)."""
    resume_dir = getattr(args, "resume_dir", None)
    log = getattr(args, "train_log", None)
    return FoldOutputs(
        model=Path(args.model),
        metrics=Path(args.metrics),
        curve=Path(args.curve),
        resume=Path(resume_dir) / f"fold-{args.fold}.pt" if resume and resume_dir else None,
        log=Path(log) if log else None,
    )


def log_test_metrics(name: str, fold: int | str, metrics: Mapping[str, Any]) -> None:
    logging.info("fold %s %s: %s", fold, name,
                 {k: v for k, v in metrics.items() if k.startswith("test/") and k != "test/confusion"})
