"""Optimisation pieces of a training run: optimiser, per-step LR schedule, GradScaler,
criterion, precision -- built once per run (``setup_training``) and read by the epoch
driver (``fer.training.driver``).

* SGD (momentum) or AdamW; weight decay applies to conv/linear weights only, not to
  BatchNorm parameters and biases.
* Per-step LR schedule: linear warm-up over ``warmup_epochs``, then cosine to 0, step
  decay (x0.1 at 50 % and 75 % of the post-warm-up steps) or constant.
* Cross-entropy with label smoothing, optionally with inverse-frequency class weights
  ``n / (K * n_k)`` computed from the TRAINING labels only (weight 0 for a class absent
  from training).
* On CUDA: autocast (bf16 where supported, else fp16 with a GradScaler) when ``amp``;
  channels_last when ``channels_last``. Both are ignored on CPU.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from fer.params import RecognizerParams
from fer.training.batches import num_steps
from fer.utils.precision import Precision

__all__ = [
    "EvalSetup",
    "TrainSetup",
    "eval_batch_size",
    "grad_scaler",
    "lr_factor",
    "make_lr_scheduler",
    "make_optimizer",
    "place_model",
    "setup_training",
]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: RecognizerParams) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over ``model``; weight decay on conv/linear weights only."""
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """LR multiplier for optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))  # step


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, cfg: RecognizerParams, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``lr_factor`` schedule of ``cfg`` (warm-up, then cosine/step/constant).

    Any optimizer can follow it (the joint trainer's generator optimizer does), so every
    optimizer of a run shares one step count and one schedule shape.
    """
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = min(cfg.warmup_epochs, max(0, cfg.epochs - 1)) * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        functools.partial(lr_factor, total=total_steps, warmup=warmup_steps, schedule=cfg.schedule),
    )


def _class_weights(y: np.ndarray, num_classes: int) -> Tensor:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = np.divide(len(y), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)
    return torch.tensor(w, dtype=torch.float32)


def eval_batch_size(batch_size: int) -> int:
    """Batch size of validation and test passes: twice the training batch, at least 128."""
    return max(2 * batch_size, 128)


def grad_scaler(amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 autocast."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)


def place_model(model: nn.Module, device: torch.device, *, amp: bool, channels_last: bool) -> Precision:
    """Move ``model`` to ``device`` (channels_last on CUDA when asked); return the run's
    precision."""
    prec = Precision.for_device(device, amp, channels_last)
    model.to(device)
    if prec.channels_last:
        model.to(memory_format=torch.channels_last)
    return prec


@dataclass(frozen=True)
class EvalSetup:
    """How a trained network is evaluated (validation, test): precision and batch size."""

    precision: Precision
    batch_size: int

    @classmethod
    def for_params(cls, params: Any, device: torch.device) -> EvalSetup:
        """The evaluation of a run trained with ``params`` (any section with ``amp``,
        ``channels_last`` and ``batch_size``, e.g. a recogniser's or FERSNet's)."""
        prec = Precision.for_device(device, params.amp, params.channels_last)
        return cls(prec, eval_batch_size(params.batch_size))


@dataclass
class TrainSetup:
    """The optimisation pieces of one run (built by ``setup_training`` or by a method
    with its own optimiser, e.g. FERSNet's Adam)."""

    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module  # CE with label smoothing (and class weights when configured)
    amp_dtype: torch.dtype | None  # autocast dtype (CUDA + amp), else None
    channels_last: bool  # CUDA + channels_last
    steps_per_epoch: int
    eval_batch_size: int  # validation / test batch

    @property
    def evaluation(self) -> EvalSetup:
        """The run's evaluation settings (same precision, ``eval_batch_size``)."""
        return EvalSetup(Precision(self.device.type, self.amp_dtype, self.channels_last), self.eval_batch_size)


def setup_training(
    model: nn.Module,
    cfg: RecognizerParams,
    y_train: np.ndarray,
    *,
    num_classes: int,
    device: torch.device,
) -> TrainSetup:
    """Move ``model`` to ``device`` (channels_last on CUDA) and build its optimizer,
    per-step scheduler, GradScaler and training criterion.

    The epoch length is one pass over ``y_train`` in batches of ``cfg.batch_size``;
    class weights (``class_weighting: balanced``) come from ``y_train`` only.
    """
    prec = place_model(model, device, amp=cfg.amp, channels_last=cfg.channels_last)
    steps_per_epoch = num_steps(len(y_train), cfg.batch_size)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_lr_scheduler(optimizer, cfg, steps_per_epoch)
    weight = _class_weights(y_train, num_classes).to(device) if cfg.class_weighting == "balanced" else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    return TrainSetup(
        device=device,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=grad_scaler(prec.amp_dtype),
        criterion=criterion,
        amp_dtype=prec.amp_dtype,
        channels_last=prec.channels_last,
        steps_per_epoch=steps_per_epoch,
        eval_batch_size=eval_batch_size(cfg.batch_size),
    )
