"""The epoch driver every epoch-based trainer shares: batches, validation-based model
selection, exact resume, logging.

* **Batches.** Each epoch's batch order is a permutation drawn from a seeded CPU
  ``torch.Generator``; a last batch of a single sample is dropped (BatchNorm cannot train
  on it), any other partial batch is kept. A trainer supplies only its per-batch loss: a
  ``step(indices) -> StepOutput`` function.
* **Selection.** After every epoch the model is evaluated on the validation split; the
  state with the best ``select_metric`` is kept (ties -> earlier epoch; ``val/loss`` is
  minimised, the others maximised). The validation loss is the plain NLL (no smoothing,
  no class weights). The test split is never an argument here.
* **Resume.** After every epoch a resume file (``resume_path``, atomic) stores the model,
  optimizer, scheduler and GradScaler states, the completed epoch, the best state and
  metric, the history, the run's generators' states, the python/numpy/torch(/CUDA) RNG
  states, and the run's fingerprint (:func:`fingerprint`). A restarted run with a
  matching fingerprint continues at the next epoch and ends with bit-identical weights to
  an uninterrupted run (same machine; on CUDA only when the caller enables
  ``torch.use_deterministic_algorithms``); a mismatching one logs a warning and starts
  fresh. The file loads with ``torch.load(weights_only=True)``; the per-fold protocol
  (``fer.training.protocol``) deletes it once its outputs are written.
* **Logging.** One ``logging`` INFO line per epoch, and the same row dicts as JSON lines
  in ``log_path`` (rewritten from the restored history on resume, so no duplicates).

Entry points: :func:`train_epochs` (the usual recipe: seeded generators, the training
images on the device, a step built from them, the epoch loop) and
:func:`train_with_selection` (the loop itself, for trainers that build their own epoch);
:func:`fit` trains a plain supervised recogniser with them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.metrics.classification import classification_metrics
from fer.params import SELECT_METRICS, AugmentParams, RecognizerParams, to_dict
from fer.training.augment import augment_batch
from fer.training.batches import ImageStore, Split, check_arrays, iter_batches, model_input
from fer.training.checkpoint import cpu_state_dict, load_resume, save_resume
from fer.training.inference import forward_store
from fer.training.optim import TrainSetup, setup_training
from fer.training.rng import rng_states, set_rng_states, training_generators
from fer.utils.digest import digest
from fer.utils.io import write_text
from fer.utils.precision import amp_autocast

log = logging.getLogger(__name__)

__all__ = [
    "HISTORY_KEYS",
    "EpochContext",
    "FitResult",
    "StepOutput",
    "fingerprint",
    "fit",
    "supervised_step",
    "train_epoch",
    "train_epochs",
    "train_with_selection",
]

#: Keys of one history row, in order.
HISTORY_KEYS: tuple[str, ...] = (
    "epoch",
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/mean_class_acc",
    "val/macro_f1",
    "lr",
    "seconds",
)
_RESUME_VERSION = 1


@dataclass
class FitResult:
    """Outcome of a selected training run."""

    best_state: dict[str, Tensor]  # model state at the best validation epoch (CPU)
    best_epoch: int  # 1-based; 0: the start weights won (``start_candidate``)
    best_metric: float  # value of the select metric at best_epoch
    history: list[dict[str, float]]  # one row per epoch, keys HISTORY_KEYS (+ loss terms)
    resumed_epochs: int = 0  # epochs restored from a resume file (0: fresh run)
    #: states of ``train_with_selection``'s ``best_modules`` at best_epoch (CPU)
    best_extra: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    #: validation row (``epoch`` 0 + the val/ keys) of the start weights when they were a
    #: selection candidate (``start_candidate``), else None
    start_row: dict[str, float] | None = None

    def selected_row(self) -> dict[str, float]:
        """The row of the selected epoch: ``history[best_epoch - 1]``, or the start's
        validation row when the start weights won (``best_epoch`` 0)."""
        if self.best_epoch == 0:
            if self.start_row is None:
                raise ValueError("best_epoch 0 (the start weights) but no start_row recorded")
            return self.start_row
        return self.history[self.best_epoch - 1]


@dataclass
class StepOutput:
    """What one training step's loss function returns to ``train_epoch``."""

    loss: Tensor  # scalar objective to back-propagate
    logits: Tensor  # (B, K) logits of the batch's REAL samples (train/acc)
    labels: Tensor  # (B,) their labels
    terms: dict[str, Tensor] = field(default_factory=dict)  # scalar terms averaged per epoch


# ------------------------------------------------------------------------------ epoch
def train_epoch(
    model: nn.Module,
    setup: TrainSetup,
    n_train: int,
    batch_size: int,
    g_data: torch.Generator,
    step: Callable[[Tensor], StepOutput],
    *,
    extra_optimizers: tuple[torch.optim.Optimizer, ...] = (),
    extra_schedulers: tuple[torch.optim.lr_scheduler.LRScheduler, ...] = (),
) -> dict[str, float]:
    """One pass over the training set: ``step(indices)`` computes the loss of a batch.

    Batches are a permutation of ``range(n_train)`` drawn from ``g_data`` (a last batch
    of one sample is dropped). Every step zeroes the grads of all optimizers, back-props
    through the shared GradScaler, steps ``setup.optimizer`` and ``extra_optimizers``,
    then every scheduler. Loss, accuracy and ``StepOutput.terms`` are averaged over the
    epoch's real samples (weighted by batch size; one device sync per epoch).

    Returns:
        ``{"train/loss", "train/acc", <terms>..., "lr"}`` where ``lr`` is the model
        optimizer's learning rate at the epoch's last step.
    """
    model.train()
    device = setup.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    term_sums: dict[str, Tensor] = {}
    seen = 0
    lr = setup.optimizer.param_groups[0]["lr"]
    optimizers = (setup.optimizer, *extra_optimizers)
    for idx in iter_batches(torch.randperm(n_train, generator=g_data), batch_size):
        out = step(idx)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        setup.scaler.scale(out.loss).backward()
        for opt in optimizers:
            setup.scaler.step(opt)
        setup.scaler.update()
        lr = setup.optimizer.param_groups[0]["lr"]
        setup.scheduler.step()
        for sched in extra_schedulers:
            sched.step()
        b = idx.numel()
        loss_sum += out.loss.detach() * b
        correct += (out.logits.detach().argmax(1) == out.labels).sum()
        for key, value in out.terms.items():
            term = value.detach().float() * b
            term_sums[key] = term_sums[key] + term if key in term_sums else term
        seen += b
    row = {"train/loss": loss_sum.item() / seen, "train/acc": correct.item() / seen}
    row.update({key: v.item() / seen for key, v in term_sums.items()})
    row["lr"] = float(lr)
    return row


# ----------------------------------------------------------------------------- resume
def fingerprint(
    cfg: Any,
    model: nn.Module,
    train: Split,
    val: Split,
    num_classes: int,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Hash of config (a parameter dataclass) + seed + data shapes/labels/sampled pixels
    + model layout (+ a JSON-able ``extra`` description a trainer adds: its own settings,
    other inputs' digests). A resume file is used only when its fingerprint equals the
    current run's."""
    desc = {
        "config": to_dict(cfg),
        "num_classes": num_classes,
        "seed": seed,
        "model": type(model).__name__,
        "params": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "extra": dict(extra or {}),
    }
    parts: list[Any] = [desc]
    for x, y in (train, val):  # labels, and a cheap sample of the pixels
        parts += [np.asarray(y, dtype=np.int64), np.ascontiguousarray(x[:: max(1, len(x) // 32)])]
    return digest(*parts)


# ------------------------------------------------------------------ selection loop
def _is_better(value: float, best: float, maximize: bool) -> bool:
    if math.isnan(value):
        return False
    return value > best if maximize else value < best


def _log_row(row: Mapping[str, float], epochs: int, marker: str) -> None:
    terms = " ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "lr", "seconds"))
    log.info("epoch %d/%d %s lr=%.3g %.1fs%s", row["epoch"], epochs, terms, row["lr"], row["seconds"], marker)


def train_with_selection(
    model: nn.Module,
    setup: TrainSetup,
    val: Split,
    *,
    epochs: int,
    select_metric: str,
    num_classes: int,
    fingerprint: str,
    rngs: Mapping[str, torch.Generator],
    run_epoch: Callable[[int], dict[str, float]],
    extra_state: Mapping[str, Any] | None = None,
    best_modules: Mapping[str, nn.Module] | None = None,
    resume_path: Path | None,
    log_path: Path | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    start_candidate: bool = False,
) -> FitResult:
    """The epoch loop: resume, validation, selection, logging (module docstring).

    For each epoch ``e`` from the one after the last completed one to ``epochs``:
    ``run_epoch(e)`` trains (returns ``train/loss``, ``train/acc``, optional extra terms
    and ``lr``, see ``train_epoch``); the model is evaluated on ``val``; the best
    ``select_metric`` state is kept; the row is logged (``logging`` + JSON lines); the
    resume file is written; ``on_epoch_end(row)`` is called.

    Args:
        model: the network evaluated and selected (already placed by its setup).
        setup: its optimisation pieces (``eval_batch_size`` for validation).
        val: validated (uint8 images, int64 labels).
        epochs, select_metric: the run's length and selection metric.
        num_classes: K.
        fingerprint: identifies the run; a resume file with another one is ignored.
        rngs: named CPU generators whose states go into the resume file (``gen_<name>``).
        run_epoch: trains one epoch.
        extra_state: more objects with ``state_dict``/``load_state_dict`` (another
            network, its optimizer and scheduler) saved in and restored from the resume
            file.
        best_modules: more modules snapshotted (CPU state dicts) together with the model
            at the selected epoch; returned in ``FitResult.best_extra``.
        resume_path: resume file to continue from / write after each epoch (None: off).
        log_path: JSON-lines file receiving one row per epoch.
        on_epoch_end: called with each epoch's row after the resume file is written.
        start_candidate: the model's weights before the first epoch compete in the
            selection as epoch 0 (evaluated on ``val`` first; an epoch is kept only if it
            is strictly better): a run that never beats its start returns the start
            (``best_epoch`` 0). For fine-tuning a network that was already selected.
    Row order: ``epoch, train/loss, train/acc, <extra terms>, val/loss, val/acc,
    val/mean_class_acc, val/macro_f1, lr, seconds``.
    """
    device = setup.device
    xva, yva = val
    maximize = SELECT_METRICS[select_metric]
    extra_state = dict(extra_state or {})
    best_modules = dict(best_modules or {})
    history: list[dict[str, float]] = []
    best_state: dict[str, Tensor] | None = None
    best_extra: dict[str, dict[str, Tensor]] = {}
    best_epoch, best_metric = 0, (-math.inf if maximize else math.inf)
    start_row: dict[str, float] | None = None
    start_epoch = 0

    payload = load_resume(resume_path) if resume_path is not None else None
    if payload is not None:
        matches = (
            payload.get("version") == _RESUME_VERSION
            and payload.get("fingerprint") == fingerprint
            and set(payload.get("extra", {})) == set(extra_state)
            and set(payload.get("best_extra", {})) <= set(best_modules)
            and all(f"gen_{name}" in payload for name in rngs)
        )
        if not matches:
            log.warning("resume file %s does not match this run (config/data/model changed); starting fresh",
                        resume_path)
        else:
            model.load_state_dict(payload["model"])
            setup.optimizer.load_state_dict(payload["optimizer"])
            setup.scheduler.load_state_dict(payload["scheduler"])
            if payload["scaler"]:
                setup.scaler.load_state_dict(payload["scaler"])
            for name, obj in extra_state.items():
                obj.load_state_dict(payload["extra"][name])
            best_state = payload["best_state"]
            best_extra = dict(payload.get("best_extra", {}))
            best_epoch = int(payload["best_epoch"])
            best_metric = float(payload["best_metric"])
            start_row = dict(payload["start_row"]) if payload.get("start_row") is not None else None
            history = [dict(r) for r in payload["history"]]
            for name, gen in rngs.items():
                gen.set_state(payload[f"gen_{name}"])
            set_rng_states(payload["rng"], device)
            start_epoch = int(payload["epoch"])
            log.info("resuming from %s after epoch %d/%d", resume_path, start_epoch, epochs)
    if log_path is not None:
        write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

    store_va = ImageStore(xva, device)

    def validate() -> dict[str, float]:
        logits_va = forward_store(
            model, store_va, setup.eval_batch_size, amp_dtype=setup.amp_dtype, channels_last=setup.channels_last
        )  # Nv, K
        val_loss = F.cross_entropy(torch.from_numpy(logits_va), torch.from_numpy(yva)).item()
        m = classification_metrics(yva, logits_va.argmax(1), num_classes)
        return {"val/loss": val_loss, "val/acc": m["acc"], "val/mean_class_acc": m["mean_class_acc"],
                "val/macro_f1": m["macro_f1"]}

    if start_candidate and start_epoch == 0:  # (a resumed run has its best, the start included, restored)
        start_row = {"epoch": 0, **validate()}
        best_state = cpu_state_dict(model.state_dict())
        best_extra = {name: cpu_state_dict(mod.state_dict()) for name, mod in best_modules.items()}
        best_epoch, best_metric = 0, float(start_row[select_metric])
        log.info("epoch 0 (the start weights, a selection candidate): %s",
                 " ".join(f"{k}={v:.4f}" for k, v in start_row.items() if k != "epoch"))

    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        train_row = run_epoch(epoch)
        if not math.isfinite(train_row["train/loss"]):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}")

        row: dict[str, float] = {"epoch": epoch}
        row.update({k: v for k, v in train_row.items() if k != "lr"})
        row.update(validate())
        row.update({"lr": float(train_row["lr"]), "seconds": time.perf_counter() - t0})
        history.append(row)
        improved = best_state is None or _is_better(row[select_metric], best_metric, maximize)
        if improved:
            best_state = cpu_state_dict(model.state_dict())
            best_extra = {name: cpu_state_dict(mod.state_dict()) for name, mod in best_modules.items()}
            best_epoch, best_metric = epoch, float(row[select_metric])
        _log_row(row, epochs, " *" if improved else "")
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if resume_path is not None:
            resume: dict[str, Any] = {
                "version": _RESUME_VERSION,
                "fingerprint": fingerprint,
                "epoch": epoch,
                "model": cpu_state_dict(model.state_dict()),
                "optimizer": setup.optimizer.state_dict(),
                "scheduler": setup.scheduler.state_dict(),
                "scaler": setup.scaler.state_dict(),
                "extra": {name: obj.state_dict() for name, obj in extra_state.items()},
                "best_state": best_state,
                "best_extra": best_extra,
                "best_epoch": best_epoch,
                "best_metric": best_metric,
                "history": history,
                "rng": rng_states(device),
            }
            if start_row is not None:  # (absent otherwise: resume files of other runs keep their bytes)
                resume["start_row"] = start_row
            resume.update({f"gen_{name}": gen.get_state() for name, gen in rngs.items()})
            save_resume(resume_path, resume)
        if on_epoch_end is not None:
            on_epoch_end(dict(row))

    model.eval()
    assert best_state is not None
    return FitResult(
        best_state=best_state,
        best_epoch=best_epoch,
        best_metric=best_metric,
        history=history,
        resumed_epochs=start_epoch,
        best_extra=best_extra,
        start_row=start_row,
    )


# -------------------------------------------------------------------- the recipe
@dataclass
class EpochContext:
    """What a trainer's step function works with: the training images on the device,
    their labels, the run's optimisation pieces and its augmentation generator."""

    setup: TrainSetup
    store: ImageStore  # training images
    labels: Tensor  # training labels (int64, on the device)
    g_aug: torch.Generator  # augmentation stream

    def labels_of(self, idx: Tensor) -> Tensor:
        """Labels of a batch of training indices: (B,) on the device."""
        return self.labels[idx.to(self.setup.device)]


def train_epochs(
    model: nn.Module,
    setup: TrainSetup,
    train: Split,
    val: Split,
    *,
    epochs: int,
    batch_size: int,
    select_metric: str,
    num_classes: int,
    seed: int,
    fingerprint: str,
    make_step: Callable[[EpochContext], Callable[[Tensor], StepOutput]],
    extra_rngs: Mapping[str, torch.Generator] | None = None,
    extra_optimizers: tuple[torch.optim.Optimizer, ...] = (),
    extra_schedulers: tuple[torch.optim.lr_scheduler.LRScheduler, ...] = (),
    extra_state: Mapping[str, Any] | None = None,
    best_modules: Mapping[str, nn.Module] | None = None,
    before_epoch: Callable[[], None] | None = None,
    after_epoch: Callable[[dict[str, float]], None] | None = None,
    resume_path: Path | None,
    log_path: Path | None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    start_candidate: bool = False,
) -> FitResult:
    """The recipe every epoch-based trainer follows: seed the global RNGs and derive the
    batch-order and augmentation generators from ``seed``, put the training images on the
    device, build the step with ``make_step(context)``, then run the epoch loop
    (``train_epoch`` inside ``train_with_selection``).

    ``make_step`` runs after the seeding: a module whose initial weights come from the
    global RNG (a discriminator) is built there, and may be added to ``extra_state`` (a
    dict the caller passed) to travel in the resume file.

    ``extra_rngs`` (named generators the step draws from) join the resume file;
    ``before_epoch()`` runs before each epoch (e.g. to start a new pass of a
    ``CycledSet``), ``after_epoch(row)`` after its training pass (to add a row entry);
    ``start_candidate``: see ``train_with_selection``.
    """
    g_data, g_aug = training_generators(seed)
    ctx = EpochContext(setup, ImageStore(train[0], setup.device), torch.from_numpy(train[1]).to(setup.device), g_aug)
    step = make_step(ctx)

    def run_epoch(epoch: int) -> dict[str, float]:
        if before_epoch is not None:
            before_epoch()
        row = train_epoch(model, setup, len(train[1]), batch_size, g_data, step,
                          extra_optimizers=extra_optimizers, extra_schedulers=extra_schedulers)
        if after_epoch is not None:
            after_epoch(row)
        return row

    return train_with_selection(
        model, setup, val,
        epochs=epochs, select_metric=select_metric, num_classes=num_classes, fingerprint=fingerprint,
        rngs={"data": g_data, "aug": g_aug, **(extra_rngs or {})}, run_epoch=run_epoch,
        extra_state=extra_state, best_modules=best_modules,
        resume_path=resume_path, log_path=log_path, on_epoch_end=on_epoch_end, start_candidate=start_candidate,
    )


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    cfg: RecognizerParams,
    *,
    num_classes: int,
    device: torch.device | str,
    seed: int,
    resume_path: Path | None,
    log_path: Path | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train a supervised recogniser on ``train``, select on ``val`` (module docstring).

    Args:
        model: a freshly built model (its initial weights are the caller's, seeded).
        train, val: (uint8 images (N, H, W, C), int labels (N,)).
        cfg: the recogniser's parameters.
        num_classes: K, the model's output size.
        device: where to train.
        seed: seeds batch order, augmentation, dropout (python/numpy/torch global RNGs).
        resume_path: resume file to continue from / write after each epoch (None: off).
        log_path: JSON-lines file receiving one row per epoch.
        on_epoch_end: called with each epoch's row after the resume file is written.
    Returns the ``FitResult``; ``model`` holds the LAST epoch's weights (eval mode).
    """
    device = torch.device(device)
    train = check_arrays(train, "train", num_classes)
    val = check_arrays(val, "val", num_classes)
    setup = setup_training(model, cfg, train[1], num_classes=num_classes, device=device)

    return train_epochs(
        model, setup, train, val,
        epochs=cfg.epochs, batch_size=cfg.batch_size, select_metric=cfg.select_metric, num_classes=num_classes,
        seed=seed, fingerprint=fingerprint(cfg, model, train, val, num_classes, seed),
        make_step=supervised_step(model, setup, cfg.augment, device), resume_path=resume_path, log_path=log_path,
        on_epoch_end=on_epoch_end,
    )


def supervised_step(
    model: nn.Module,
    setup: TrainSetup,
    augment: AugmentParams,
    device: torch.device,
    *,
    criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
    loss_term: str | None = None,
) -> Callable[[EpochContext], Callable[[Tensor], StepOutput]]:
    """The plain supervised step as a ``make_step`` for ``train_epochs``: augment the
    batch (``augment``, the epoch's augmentation generator), one forward pass, and
    ``criterion`` (default: the setup's) on float32 logits. ``loss_term``: also log the
    loss under this name (e.g. FixMatch's ``train/loss_x`` when it has no unlabelled
    images)."""
    crit = setup.criterion if criterion is None else criterion

    def make_step(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
        def step(idx: Tensor) -> StepOutput:
            xb = augment_batch(ctx.store.batch(idx), augment, ctx.g_aug)  # B, C, H, W
            xb = model_input(xb, setup.channels_last)
            yb = ctx.labels_of(idx)  # B
            with amp_autocast(device, setup.amp_dtype):
                logits = model(xb)  # B, K
            loss = crit(logits.float(), yb)
            terms = {} if loss_term is None else {loss_term: loss.detach()}
            return StepOutput(loss=loss, logits=logits, labels=yb, terms=terms)

        return step

    return make_step
