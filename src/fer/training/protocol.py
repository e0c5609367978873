"""The per-fold protocol every method follows.

1. **Prepare** (:func:`prepare_fold`): the fold's images, labels, index sets and classes
   are checked (the three sets disjoint and non-empty; with subject ids, no subject in two
   sets), the device and seed fixed, into one :class:`Fold`.
2. **Train** through the shared epoch driver (``fer.training.driver``): training sees the
   train split only, model selection the validation split only.
3. **Test once** (:func:`test_selected`): after training, the selected (best-validation)
   weights are evaluated on the test split -- the reported numbers; the last-epoch model's
   test accuracy is reported beside them (``test/last_epoch_acc``), for information only,
   never used to choose anything.
4. **Write** (:func:`finish_fold`): the model (``save_weights``: state dict + meta that
   rebuilds it, loadable with ``weights_only=True``), the metrics JSON (keys
   :data:`METRIC_KEYS` + the method's own), the learning curve CSV; then the resume file
   is deleted.

A method module contains its networks' wiring, its loss call and its step; this module
holds everything around them.
"""

from __future__ import annotations

import csv
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fer.metrics.classification import classification_metrics
from fer.models import build_model
from fer.params import RecognizerParams, to_dict
from fer.training.batches import MEAN, STD, ImageStore, Split
from fer.training.checkpoint import clear_resume, load_weights, save_weights
from fer.training.driver import HISTORY_KEYS, FitResult
from fer.training.init import load_start
from fer.training.inference import forward_store
from fer.training.optim import EvalSetup
from fer.utils.io import atomic_path, write_json

log = logging.getLogger(__name__)

__all__ = [
    "CURVE_COLUMNS",
    "METRIC_KEYS",
    "SPLITS",
    "UNLABELLED",
    "Fold",
    "FoldOutputs",
    "check_indices",
    "finish_fold",
    "model_from_weights",
    "prepare_fold",
    "recognizer_meta",
    "still_rising",
    "test_selected",
    "write_curve",
]

#: Keys of the metrics JSON every method writes first, in order.
METRIC_KEYS: tuple[str, ...] = (
    "test/acc",
    "test/mean_class_acc",
    "test/macro_f1",
    "test/last_epoch_acc",
    "val/acc",
    "val/mean_class_acc",
    "best_epoch",
    "epochs",
    "val/still_rising",
    "n_train",
    "n_val",
    "n_test",
    "test/confusion",
)
#: Columns of the learning-curve CSV every method writes first.
CURVE_COLUMNS: tuple[str, ...] = tuple(k for k in HISTORY_KEYS if k != "seconds")
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: The label of an image of a budget's unlabelled part in ``Fold.labels``: its expression
#: label is hidden from every method (fer.data.budgets).
UNLABELLED = -1


def check_indices(split: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
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
    if "unlabelled" in split:  # a label-budget split: the training part whose labels are hidden (may be empty)
        idx = np.asarray(split["unlabelled"], dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)) or np.unique(idx).size != idx.size:
            raise ValueError("split['unlabelled'] must be distinct indices in [0, n)")
        out["unlabelled"] = idx
    for a, b in itertools.combinations(list(out), 2):
        common = np.intersect1d(out[a], out[b])
        if common.size:
            raise ValueError(
                f"split sets {a!r} and {b!r} are not disjoint ({common.size} shared indices, "
                f"e.g. {common[:5].tolist()})"
            )
    return out


@dataclass
class Fold:
    """One prepared fold: the whole aligned set, its checked labels and index sets."""

    images: np.ndarray  # uint8 (N, H, W, C), every image of the set
    labels: np.ndarray  # int64 (N,), indices into classes; UNLABELLED (-1) on a budget's unlabelled part
    idx: dict[str, np.ndarray]  # "train" / "val" / "test" (+ "unlabelled" at a label budget) -> disjoint indices
    classes: list[str]
    device: torch.device
    seed: int  # the fold's seed (every method of a fold starts from it)
    subjects: np.ndarray | None = None  # (N,) subject ids, when the method pairs images
    start: Path | None = None  # the recognisers' start weights (params init; None: scratch)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def part(self, name: str) -> Split:
        """(images, labels) of one split."""
        return self.images[self.idx[name]], self.labels[self.idx[name]]

    def build_recognizer(self, cfg: RecognizerParams) -> nn.Module:
        """A freshly initialised recogniser of ``cfg`` for this fold's images and classes
        (seeded with the fold's seed); with a ``start`` file its backbone is loaded from it
        (``fer.training.init.load_start``: the head stays freshly initialised)."""
        torch.manual_seed(self.seed)
        model = build_model(cfg.arch, self.num_classes, self.channels, cfg.width,
                            input_size=max(self.height, self.width))
        if self.start is not None:
            log.info("recogniser start: %s", load_start(model, self.start))
        return model


def prepare_fold(
    images: np.ndarray,
    labels: np.ndarray,
    split: Mapping[str, np.ndarray],
    classes: Sequence[str],
    *,
    device: torch.device | str,
    seed: int,
    subjects: np.ndarray | None = None,
) -> Fold:
    """Check a fold's inputs (shared by every per-fold method) and bundle them.

    ``subjects`` (one id per image) is given by the methods that pair images of one
    subject; then no subject may appear in two of train / val / test.
    """
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
        raise ValueError(f"labels outside [0, {num_classes}) for classes {list(classes)}")
    idx = check_indices(split, len(images))
    if subjects is not None:
        subjects = np.asarray(subjects)
        if subjects.shape != (len(images),):
            raise ValueError(f"subjects shape {subjects.shape} does not match {len(images)} images")
        for a, b in itertools.combinations(list(idx), 2):
            if np.intersect1d(subjects[idx[a]], subjects[idx[b]]).size:
                raise ValueError(f"splits {a!r} and {b!r} share subjects (not subject-independent)")
    if "unlabelled" in idx:
        # A label budget: the unlabelled part's expression labels never reach a method.
        labels = labels.copy()
        labels[idx["unlabelled"]] = UNLABELLED
    return Fold(images, labels, idx, list(classes), torch.device(device), int(seed), subjects)


@dataclass(frozen=True)
class FoldOutputs:
    """Where one method writes one fold's results."""

    model: Path
    metrics: Path
    curve: Path
    resume: Path | None = None  # per-epoch resume file (deleted once the outputs exist)
    log: Path | None = None  # JSON-lines training log


def write_curve(path: Path, history: list[dict[str, float]], columns: Sequence[str] = CURVE_COLUMNS) -> None:
    """Write the per-epoch learning curve as CSV (atomic); a column missing from a row
    (a loss term that was not computed) is written as 0."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in history:
                writer.writerow([row.get(c, 0.0) for c in columns])


def still_rising(history: Sequence[Mapping[str, float]], key: str = "val/acc", tail: float = 0.2) -> bool:
    """Was the validation curve still rising over the last fifth of training? True when
    the best ``key`` of the last ``tail`` of the epochs (at least one) beats every earlier
    epoch's: the budget may have stopped a model that was still learning."""
    values = [float(row[key]) for row in history if key in row]
    if len(values) < 2:
        return False
    n_tail = max(1, round(tail * len(values)))
    return max(values[-n_tail:]) > max(values[:-n_tail])


def test_selected(
    model: nn.Module,
    result: FitResult,
    fold: Fold,
    ev: EvalSetup,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Evaluate on the test split, once, after training and selection are over: the
    selected (best-validation) weights give the reported numbers; the model as it is now
    (last epoch) gives ``test/last_epoch_acc``, for information only. Leaves the selected
    weights loaded. ``images`` replaces ``fold.images`` as the model's input (a method
    whose model reads more than the face, e.g. face + reference). Returns the metrics dict
    with the keys of ``METRIC_KEYS``."""
    idx = fold.idx
    x_test = (fold.images if images is None else images)[idx["test"]]
    y_test = fold.labels[idx["test"]]

    def run() -> np.ndarray:
        store = ImageStore(x_test, fold.device)
        logits = forward_store(model, store, ev.batch_size, amp_dtype=ev.precision.amp_dtype,
                               channels_last=ev.precision.channels_last)
        return logits.argmax(1)

    last_pred = run()
    model.load_state_dict(result.best_state)
    test = classification_metrics(y_test, run(), fold.num_classes)
    best_row = result.selected_row()  # (the start's validation row when the start weights won)
    return {
        "test/acc": test["acc"],
        "test/mean_class_acc": test["mean_class_acc"],
        "test/macro_f1": test["macro_f1"],
        "test/last_epoch_acc": float((last_pred == y_test).mean()),
        "val/acc": float(best_row["val/acc"]),
        "val/mean_class_acc": float(best_row["val/mean_class_acc"]),
        "best_epoch": int(result.best_epoch),
        "epochs": len(result.history),
        "val/still_rising": still_rising(result.history),
        "n_train": int(idx["train"].size),
        "n_val": int(idx["val"].size),
        "n_test": int(idx["test"].size),
        "test/confusion": test["confusion"],
    }


def recognizer_meta(
    method: str, cfg: RecognizerParams, classes: Sequence[str], shape: Sequence[int], result: FitResult, seed: int
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
        "train_config": to_dict(cfg),
    }


def model_from_weights(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a recogniser saved with ``recognizer_meta`` (eval mode) and return its meta."""
    state, meta = load_weights(path)
    model = build_model(meta["arch"], meta["num_classes"], meta["in_channels"], meta["width"],
                        input_size=max(meta["input_size"]))
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def finish_fold(
    fold: Fold,
    model: nn.Module,
    result: FitResult,
    ev: EvalSetup,
    out: FoldOutputs,
    *,
    meta: Mapping[str, Any],
    extra_metrics: Mapping[str, Any] | None = None,
    curve_columns: Sequence[str] = CURVE_COLUMNS,
    history: list[dict[str, float]] | None = None,
    budget_history: list[dict[str, float]] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    test_images: np.ndarray | None = None,
    after_test: Callable[[nn.Module], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Steps 3 and 4 of the protocol: test the selected model once, write the model
    (``weights``, default the selected state), the metrics (``METRIC_KEYS``, then
    ``extra_metrics``, then what ``after_test(model)`` returns -- measurements of the
    selected model, which ``model`` holds by then) and the curve (``history``, default the
    run's), delete the resume file. The metrics' ``epochs`` and ``val/still_rising``
    describe the recogniser's budget: ``budget_history`` (the epochs that trained the
    recogniser), else ``history``, else the run's. ``model`` holds the last epoch's weights on entry.
    Returns the metrics."""
    metrics = test_selected(model, result, fold, ev, test_images)
    if budget_history is None:  # the whole run (e.g. every round of the corpus method), not its last part
        budget_history = history
    if budget_history is not None:
        metrics.update({"epochs": len(budget_history), "val/still_rising": still_rising(budget_history)})
    metrics.update(extra_metrics or {})
    if after_test is not None:
        metrics.update(after_test(model))
    save_weights(out.model, result.best_state if weights is None else weights, meta)
    write_curve(Path(out.curve), result.history if history is None else history, curve_columns)
    write_json(out.metrics, metrics)
    clear_resume(out.resume)
    return metrics
