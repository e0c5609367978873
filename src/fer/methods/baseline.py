"""The supervised baseline, one fold: train a CNN on the fold's training split, select the
epoch on its validation split, and evaluate the selected model once on its test split.

Protocol (shared with every other method): the three index sets must be disjoint
(subject-independent folds are built upstream; this only re-checks disjointness);
training sees ``train`` only, model selection sees ``val`` only (``fer.training.loop``),
and ``test`` is predicted only after training has finished. The last-epoch model's test
accuracy is reported beside the selected model's (``test/last_epoch_acc``) for
information only -- it is never used to choose anything.

Outputs:
* ``out_model``: ``save_weights`` file (``weights_only``-loadable), meta with the
  architecture, classes and input geometry needed to rebuild the model
  (``model_from_weights``);
* ``out_metrics``: JSON with the flat keys of ``METRIC_KEYS``;
* ``out_curve``: CSV, one row per epoch, columns ``CURVE_COLUMNS``.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fer.evaluation.metrics import classification_metrics
from fer.models import build_model
from fer.training.checkpoint import clear_resume, load_weights, save_weights
from fer.training.loop import HISTORY_KEYS, MEAN, STD, FitResult, TrainConfig, fit, predict
from fer.utils.io import atomic_path, write_json

#: Keys of the metrics JSON, in order.
METRIC_KEYS: tuple[str, ...] = (
    "test/acc",
    "test/mean_class_acc",
    "test/macro_f1",
    "test/last_epoch_acc",
    "val/acc",
    "val/mean_class_acc",
    "best_epoch",
    "n_train",
    "n_val",
    "n_test",
    "test/confusion",
)
#: Columns of the learning-curve CSV.
CURVE_COLUMNS: tuple[str, ...] = tuple(k for k in HISTORY_KEYS if k != "seconds")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_split(split: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Validate a fold's index arrays; return them as int64 arrays.

    Raises ValueError if a key is missing, a set is empty, an index is out of [0, n) or
    repeated within a set, or two sets overlap.
    """
    out: dict[str, np.ndarray] = {}
    for key in SPLITS:
        if key not in split:
            raise ValueError(f"split lacks {key!r}")
        idx = np.asarray(split[key])
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"split[{key!r}] must be a non-empty 1-D index array")
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"split[{key!r}] must hold integer indices, got {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"split[{key!r}] has indices outside [0, {n})")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"split[{key!r}] repeats indices")
        out[key] = idx
    for a, b in itertools.combinations(SPLITS, 2):
        common = np.intersect1d(out[a], out[b])
        if common.size:
            raise ValueError(
                f"split sets {a!r} and {b!r} are not disjoint ({common.size} shared indices, "
                f"e.g. {common[:5].tolist()})"
            )
    return out


def write_curve(path: Path, history: list[dict[str, float]], columns: Sequence[str] = CURVE_COLUMNS) -> None:
    """Write the per-epoch learning curve as CSV (atomic); a column missing from a row
    (a loss term that was not computed) is written as 0."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in history:
                writer.writerow([row.get(c, 0.0) for c in columns])


def model_from_weights(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by ``run_baseline_fold`` (eval mode) and return its meta."""
    state, meta = load_weights(path)
    model = build_model(
        meta["arch"],
        meta["num_classes"],
        meta["in_channels"],
        meta["width"],
        input_size=max(meta["input_size"]),
    )
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def check_fold_inputs(
    images: np.ndarray, labels: np.ndarray, split: Mapping[str, np.ndarray], classes: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Validate a fold's images, labels and split (shared by every per-fold method);
    return int64 labels and the checked index arrays."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels shape {labels.shape} does not match {len(images)} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    num_classes = len(classes)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes}) for classes {classes}")
    return labels, check_split(split, len(images))


def check_fold_subjects(subjects: np.ndarray, idx: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Validate the per-image subject ids of a fold (methods that pair images of one
    subject): one id per image, and no subject in two of train / val / test. Returns the
    ids as an array."""
    subjects = np.asarray(subjects)
    if subjects.shape != (n,):
        raise ValueError(f"subjects shape {subjects.shape} does not match {n} images")
    for a, b in itertools.combinations(SPLITS, 2):
        if np.intersect1d(subjects[idx[a]], subjects[idx[b]]).size:
            raise ValueError(f"splits {a!r} and {b!r} share subjects (not subject-independent)")
    return subjects


def test_selected(
    model: nn.Module,
    result: FitResult,
    images: np.ndarray,
    labels: np.ndarray,
    idx: Mapping[str, np.ndarray],
    cfg: TrainConfig,
    device: torch.device,
    num_classes: int,
) -> dict[str, Any]:
    """Evaluate on the test split, once, after training and selection are over: the
    selected (best-validation) weights give the reported numbers; the model as it is now
    (last epoch) gives ``test/last_epoch_acc``, for information only. Leaves the selected
    weights loaded. Returns the metrics dict with the keys of ``METRIC_KEYS``."""
    x_test, y_test = images[idx["test"]], labels[idx["test"]]
    pred_kw = {"amp": cfg.amp, "channels_last": cfg.channels_last}
    eval_bs = max(2 * cfg.batch_size, 128)
    last_pred = predict(model, x_test, device, eval_bs, **pred_kw).argmax(1)
    model.load_state_dict(result.best_state)
    test = classification_metrics(y_test, predict(model, x_test, device, eval_bs, **pred_kw).argmax(1), num_classes)
    best_row = result.history[result.best_epoch - 1]
    return {
        "test/acc": test["acc"],
        "test/mean_class_acc": test["mean_class_acc"],
        "test/macro_f1": test["macro_f1"],
        "test/last_epoch_acc": float((last_pred == y_test).mean()),
        "val/acc": float(best_row["val/acc"]),
        "val/mean_class_acc": float(best_row["val/mean_class_acc"]),
        "best_epoch": int(result.best_epoch),
        "n_train": int(idx["train"].size),
        "n_val": int(idx["val"].size),
        "n_test": int(idx["test"].size),
        "test/confusion": test["confusion"],
    }


def recognizer_meta(
    method: str, cfg: TrainConfig, classes: Sequence[str], shape: Sequence[int], result: FitResult, seed: int
) -> dict[str, Any]:
    """Checkpoint metadata of a recogniser: what ``model_from_weights`` needs to rebuild it,
    plus how it was selected. ``shape`` is the image array's (N, H, W, C)."""
    _, height, width, channels = shape
    return {
        "method": method,
        "arch": cfg.arch,
        "width": cfg.width,
        "num_classes": len(classes),
        "classes": list(classes),
        "in_channels": int(channels),
        "input_size": [int(height), int(width)],
        "normalization": {"mean": MEAN, "std": STD},
        "best_epoch": int(result.best_epoch),
        "best_metric": float(result.best_metric),
        "select_metric": cfg.select_metric,
        "seed": int(seed),
        "train_config": cfg.to_dict(),
    }


def run_baseline_fold(
    images: np.ndarray,
    labels: np.ndarray,
    split: Mapping[str, np.ndarray],
    classes: list[str],
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device | str,
    out_model: Path,
    out_metrics: Path,
    out_curve: Path,
    resume_path: Path | None,
    log_path: Path | None,
    method: str = "baseline",
) -> dict[str, Any]:
    """Train, select and test the supervised baseline on one fold; write its outputs.

    Args:
        images: uint8 (N, H, W, C), C in {1, 3}.
        labels: int (N,), indices into ``classes``.
        split: {"train", "val", "test"} -> disjoint index arrays into ``images``.
        classes: class names; the model has ``len(classes)`` outputs.
        cfg: training configuration.
        seed: seeds model initialisation and training.
        device: where to train and predict.
        out_model, out_metrics, out_curve: output files (written atomically).
        resume_path: per-epoch resume file (deleted once the outputs exist).
        log_path: JSON-lines training log.
        method: the ``method`` name recorded in the checkpoint meta (``recognizer_meta``),
            e.g. "accnn" for the AC-CNN real-only row (``cfg.arch == "accnn"``).
    Returns:
        The metrics dict written to ``out_metrics``.
    """
    labels, idx = check_fold_inputs(images, labels, split, classes)
    num_classes = len(classes)
    device = torch.device(device)
    _, height, width, channels = images.shape

    torch.manual_seed(seed)
    model = build_model(cfg.arch, num_classes, channels, cfg.width, input_size=max(height, width))
    result = fit(
        model,
        (images[idx["train"]], labels[idx["train"]]),
        (images[idx["val"]], labels[idx["val"]]),
        cfg,
        num_classes=num_classes,
        device=device,
        seed=seed,
        resume_path=resume_path,
        log_path=log_path,
    )

    metrics = test_selected(model, result, images, labels, idx, cfg, device, num_classes)
    meta = recognizer_meta(method, cfg, classes, images.shape, result, seed)
    save_weights(out_model, result.best_state, meta)
    write_curve(Path(out_curve), result.history)
    write_json(out_metrics, metrics)
    clear_resume(resume_path)
    return metrics
