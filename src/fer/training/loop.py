"""Supervised training with validation-based model selection and exact resume.

Design (shared by every method that trains a CNN):

* **Data.** Images arrive as compact uint8 arrays (N, H, W, C), decoded once. They are
  kept as a uint8 tensor (N, C, H, W) -- on the device when it fits in
  ``DEVICE_STORE_MAX_BYTES``, else on the host -- and each batch is converted to float
  on the device: x / 255, augmentation (``fer.training.augment``), then (x - 0.5) / 0.5.
  No DataLoader, no workers, no re-decoding. Each epoch's batch order is a permutation
  drawn from a seeded CPU ``torch.Generator``; a last batch of a single sample is dropped
  (BatchNorm cannot train on it), any other partial batch is kept.
* **Optimisation.** SGD (momentum) or AdamW; weight decay applies to conv/linear weights
  only, not to BatchNorm parameters and biases. Per-step LR schedule: linear warm-up over
  ``warmup_epochs``, then cosine to 0, step decay (x0.1 at 50 % and 75 % of the
  post-warm-up steps) or constant. Cross-entropy with label smoothing, optionally with
  inverse-frequency class weights ``n / (K * n_k)`` computed from the TRAINING labels
  only (weight 0 for a class absent from training).
* **Selection.** After every epoch the model is evaluated on the validation split; the
  state with the best ``select_metric`` is kept (ties -> earlier epoch; ``val/loss`` is
  minimised, the others maximised). The validation loss is the plain NLL (no smoothing,
  no class weights). The test split is never an argument of ``fit``.
* **Resume.** After every epoch a resume file (``resume_path``, atomic) stores the model,
  optimizer, scheduler and GradScaler states, the completed epoch, the best state and
  metric, the history, both generators' states, the python/numpy/torch(/CUDA) RNG
  states, and a fingerprint of config + seed + data shapes/labels + model layout. A
  restarted ``fit`` with a matching fingerprint continues at the next epoch and ends with
  bit-identical weights to an uninterrupted run (same machine; on CUDA only when the
  caller enables ``torch.use_deterministic_algorithms``, as cuDNN/cuBLAS kernels are
  otherwise not bitwise reproducible); a mismatching one logs a warning and starts fresh. The file loads with ``torch.load(weights_only=True)``. The
  caller deletes it with ``clear_resume`` once its outputs are written.
* **Device.** Everything follows the ``device`` argument. On CUDA: autocast (bf16 where
  supported, else fp16 with a GradScaler) when ``amp``; channels_last when
  ``channels_last``. Both are ignored on CPU. ``torch.set_num_threads`` is the caller's.
* **Logging.** One ``logging`` INFO line per epoch, and the same row dicts as JSON lines
  in ``log_path`` (rewritten from the restored history on resume, so no duplicates).

``fit`` leaves ``model`` holding the LAST epoch's weights (in eval mode);
``FitResult.best_state`` holds the selected ones (CPU tensors).

Shared pieces (other trainers, e.g. ``fer.methods.joint``, reuse them instead of copying
the loop): ``setup_training`` (device, optimizer, per-step scheduler, GradScaler,
criterion), ``make_lr_scheduler``, ``train_epoch`` (one pass over the training set with a
caller-supplied per-batch loss and any extra optimizers), ``train_with_selection`` (the
epoch driver: resume, validation, selection, logging, with extra state saved in the
resume file and extra modules snapshotted at the selected epoch), ``fingerprint``,
``seed_everything``, ``check_split``, ``ImageStore``, ``model_input``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.evaluation.metrics import classification_metrics
from fer.training.augment import AugmentConfig, augment_batch
from fer.training.checkpoint import clear_resume, cpu_state_dict, load_resume, save_resume
from fer.utils.io import write_text

log = logging.getLogger(__name__)

__all__ = [
    "DEVICE_STORE_MAX_BYTES",
    "HISTORY_KEYS",
    "SELECT_METRICS",
    "FitResult",
    "ImageStore",
    "StepOutput",
    "TrainConfig",
    "TrainSetup",
    "amp_autocast",
    "amp_dtype_for",
    "check_split",
    "clear_resume",
    "coerce_fields",
    "embed",
    "fingerprint",
    "fit",
    "forward_store",
    "iter_batches",
    "lr_factor",
    "make_lr_scheduler",
    "make_optimizer",
    "model_input",
    "normalize",
    "num_steps",
    "predict",
    "seed_everything",
    "setup_training",
    "train_epoch",
    "train_with_selection",
]

#: Normalisation applied after x / 255 (and after augmentation).
MEAN: float = 0.5
STD: float = 0.5
#: uint8 image tensors up to this size are kept on the training device.
DEVICE_STORE_MAX_BYTES: int = 2 * 1024**3
#: Selectable metrics and whether larger is better.
SELECT_METRICS: dict[str, bool] = {
    "val/mean_class_acc": True,
    "val/acc": True,
    "val/macro_f1": True,
    "val/loss": False,
}
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

Split = tuple[np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one supervised training run."""

    arch: str = "resnet18"
    width: int = 32
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9  # SGD momentum; AdamW uses (momentum, 0.999) as betas
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    class_weighting: str = "none"  # none | balanced
    select_metric: str = "val/mean_class_acc"
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        from fer.models import ARCHS

        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine|step|constant, got {self.schedule!r}")
        if self.class_weighting not in ("none", "balanced"):
            raise ValueError(f"class_weighting must be none|balanced, got {self.class_weighting!r}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {list(SELECT_METRICS)}")
        if self.width < 1 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("width and epochs must be >= 1, batch_size >= 2")
        if self.warmup_epochs < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("warmup_epochs and weight_decay must be >= 0, lr > 0")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.momentum < 1:
            raise ValueError("label_smoothing and momentum must be in [0, 1)")
        if not isinstance(self.augment, AugmentConfig):
            raise TypeError("augment must be an AugmentConfig (use TrainConfig.from_mapping)")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a (YAML) mapping; ``augment`` may be a nested mapping.

        Unknown keys (at either level) raise ValueError naming the key; values are coerced
        to the field types (an integral float for an int field, an int for a float field).
        """
        kw = coerce_fields(cls, d, "train")
        aug = kw.get("augment")
        if aug is None:
            kw.pop("augment", None)
        elif isinstance(aug, Mapping):
            kw["augment"] = AugmentConfig(**coerce_fields(AugmentConfig, aug, "train.augment"))
        elif not isinstance(aug, AugmentConfig):
            raise ValueError(f"train.augment must be a mapping, got {type(aug).__name__}")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready)."""
        return dataclasses.asdict(self)


def coerce_fields(cls: type, d: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check a mapping against a dataclass's fields: unknown keys -> ValueError naming the
    key; bool/int/float/str values checked and coerced (integral float -> int, int ->
    float). Other field types pass through unchanged."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(d).__name__}")
    types = {f.name: str(f.type) for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key not in types:
            raise ValueError(f"unknown option {where}.{key!r} (known: {sorted(types)})")
        typ = types[key]
        if typ == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{key} must be a bool, got {value!r}")
        elif typ == "int":
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise ValueError(f"{where}.{key} must be an integer, got {value!r}")
            value = int(value)
        elif typ == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where}.{key} must be a number, got {value!r}")
            value = float(value)
        elif typ == "str" and not isinstance(value, str):
            raise ValueError(f"{where}.{key} must be a string, got {value!r}")
        out[key] = value
    return out


@dataclass
class FitResult:
    """Outcome of ``fit``."""

    best_state: dict[str, Tensor]  # model state at the best validation epoch (CPU)
    best_epoch: int  # 1-based
    best_metric: float  # value of cfg.select_metric at best_epoch
    history: list[dict[str, float]]  # one row per epoch, keys HISTORY_KEYS
    resumed_epochs: int = 0  # epochs restored from a resume file (0: fresh run)
    #: states of ``train_with_selection``'s ``best_modules`` at best_epoch (CPU); {} for fit
    best_extra: dict[str, dict[str, Tensor]] = field(default_factory=dict)


# ------------------------------------------------------------------------------- data
class ImageStore:
    """uint8 (N, C, H, W) images, on the device when small enough, batched to float.

    Built from uint8 (N, H, W, C); ``batch(idx)`` returns float (B, C, H, W) in [0, 1].
    """

    def __init__(self, x_nhwc: np.ndarray, device: torch.device) -> None:
        if x_nhwc.ndim != 4 or x_nhwc.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {x_nhwc.dtype} {x_nhwc.shape}"
            )
        t = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2).contiguous()
        if device.type != "cpu" and t.numel() <= DEVICE_STORE_MAX_BYTES:
            t = t.to(device)
        self.images = t  # N, C, H, W uint8
        self.device = device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: Tensor) -> Tensor:
        """Float images in [0, 1] on the device: (B,) indices -> (B, C, H, W)."""
        xb = self.images[idx.to(self.images.device)]
        return xb.to(self.device, non_blocking=True).float().div_(255.0)


def normalize(x: Tensor) -> Tensor:
    """(x - 0.5) / 0.5 for x in [0, 1]."""
    return (x - MEAN) / STD


def iter_batches(perm: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of ``perm``; a last batch of one sample is dropped (n > 1)."""
    n = perm.numel()
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        if idx.numel() == 1 and n > 1:
            return  # a single-sample batch breaks BatchNorm in train mode
        yield idx


def num_steps(n: int, batch_size: int) -> int:
    """Number of batches ``iter_batches`` yields for ``n`` samples."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and n == 1) else 0)


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bf16 (fp16 without bf16 support) on CUDA when enabled, else None."""
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def amp_autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def forward_store(
    model: nn.Module,
    store: ImageStore,
    batch_size: int,
    *,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    fn: Callable[[Tensor], Tensor] | None = None,
) -> np.ndarray:
    """``fn`` (default: ``model``) over a whole store in eval mode -> float32 (N, ...)."""
    was_training = model.training
    model.eval()
    fn = fn or model
    outs: list[Tensor] = []
    try:
        for start in range(0, len(store), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(store)))
            xb = normalize(store.batch(idx))  # B, C, H, W
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with amp_autocast(store.device, amp_dtype):
                outs.append(fn(xb).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy()


def predict(
    model: nn.Module,
    x_uint8: np.ndarray,
    device: torch.device | str,
    batch_size: int = 256,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> np.ndarray:
    """Logits of uint8 images (N, H, W, C) -> float32 array (N, K), model in eval mode.

    ``amp``/``channels_last`` take effect on CUDA only. The model's train/eval mode is
    restored afterwards.
    """
    device = torch.device(device)
    store = ImageStore(x_uint8, device)
    return forward_store(
        model,
        store,
        batch_size,
        amp_dtype=amp_dtype_for(device, amp),
        channels_last=channels_last and device.type == "cuda",
    )


def embed(
    model: nn.Module,
    x_uint8: np.ndarray,
    device: torch.device | str,
    batch_size: int = 256,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> np.ndarray:
    """Penultimate embeddings ``model.features`` of uint8 images (N, H, W, C) -> (N, D)."""
    device = torch.device(device)
    store = ImageStore(x_uint8, device)
    return forward_store(
        model,
        store,
        batch_size,
        amp_dtype=amp_dtype_for(device, amp),
        channels_last=channels_last and device.type == "cuda",
        fn=model.features,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------- optimisation
def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``lr_factor`` schedule of ``cfg`` (warm-up, then cosine/step/constant).

    Any optimizer can follow it (the joint trainer's generator optimizer does), so every
    optimizer of a run shares one step count and one schedule shape.
    """
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = min(cfg.warmup_epochs, max(0, cfg.epochs - 1)) * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        functools.partial(
            lr_factor, total=total_steps, warmup=warmup_steps, schedule=cfg.schedule
        ),
    )


def _class_weights(y: np.ndarray, num_classes: int) -> Tensor:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = np.divide(len(y), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)
    return torch.tensor(w, dtype=torch.float32)


@dataclass
class TrainSetup:
    """The optimisation pieces of one run (built by ``setup_training``)."""

    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module  # CE with label smoothing (and class weights when configured)
    amp_dtype: torch.dtype | None  # autocast dtype (CUDA + cfg.amp), else None
    channels_last: bool  # CUDA + cfg.channels_last
    steps_per_epoch: int


def setup_training(
    model: nn.Module,
    cfg: TrainConfig,
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
    model.to(device)
    use_cl = device.type == "cuda" and cfg.channels_last
    if use_cl:
        model.to(memory_format=torch.channels_last)
    amp_dtype = amp_dtype_for(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    steps_per_epoch = num_steps(len(y_train), cfg.batch_size)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_lr_scheduler(optimizer, cfg, steps_per_epoch)
    weight = (
        _class_weights(y_train, num_classes).to(device)
        if cfg.class_weighting == "balanced"
        else None
    )
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    return TrainSetup(
        device=device,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        criterion=criterion,
        amp_dtype=amp_dtype,
        channels_last=use_cl,
        steps_per_epoch=steps_per_epoch,
    )


def model_input(x01: Tensor, channels_last: bool) -> Tensor:
    """Float images in [0, 1] (N, C, H, W) -> normalised model input (channels_last opt.)."""
    x = normalize(x01)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# ------------------------------------------------------------------------------ epoch
@dataclass
class StepOutput:
    """What one training step's loss function returns to ``train_epoch``."""

    loss: Tensor  # scalar objective to back-propagate
    logits: Tensor  # (B, K) logits of the batch's REAL samples (train/acc)
    labels: Tensor  # (B,) their labels
    terms: dict[str, Tensor] = field(default_factory=dict)  # scalar terms averaged per epoch


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
def _fingerprint(
    cfg: TrainConfig,
    model: nn.Module,
    train: Split,
    val: Split,
    num_classes: int,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> str:
    desc = {
        "config": cfg.to_dict(),
        "num_classes": num_classes,
        "seed": seed,
        "model": type(model).__name__,
        "params": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "train": [list(train[0].shape), str(train[0].dtype)],
        "val": [list(val[0].shape), str(val[0].dtype)],
    }
    if extra:
        desc["extra"] = dict(extra)
    h = hashlib.sha256(json.dumps(desc, sort_keys=True).encode())
    for x, y in (train, val):
        h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
        step = max(1, len(x) // 32)  # a cheap sample of the pixels
        h.update(np.ascontiguousarray(x[::step]).tobytes())
    return h.hexdigest()


def fingerprint(
    cfg: TrainConfig,
    model: nn.Module,
    train: Split,
    val: Split,
    num_classes: int,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Hash of config + seed + data shapes/labels/sampled pixels + model layout (+ a
    JSON-able ``extra`` description a trainer adds: its own config, other inputs' hashes).

    A resume file is used only when its fingerprint equals the current run's.
    """
    return _fingerprint(cfg, model, train, val, num_classes, seed, extra)


def _rng_states(device: torch.device) -> dict[str, Any]:
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": {"version": py[0], "internal": list(py[1]), "gauss": py[2]},
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
    }


def _set_rng_states(states: Mapping[str, Any], device: torch.device) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npst = states["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            np.asarray(npst["keys"], dtype=np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Seed python/numpy/torch global RNGs; return the (batch order, augmentation) CPU
    generators derived from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    data_seed, aug_seed = np.random.SeedSequence(seed).generate_state(2)
    g_data = torch.Generator().manual_seed(int(data_seed))
    g_aug = torch.Generator().manual_seed(int(aug_seed))
    return g_data, g_aug


# ------------------------------------------------------------------ selection loop
def check_split(split: Split, name: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate (uint8 images (N, H, W, C), int labels in [0, K)); labels -> int64."""
    x, y = split
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} labels must be integers, got {y.dtype}")
    y = y.astype(np.int64)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(f"{name} images must be uint8 (N, H, W, C), got {x.dtype} {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    min_size = 2 if name == "train" else 1
    if len(y) < min_size:
        raise ValueError(f"{name} split is too small ({len(y)} samples)")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"{name} labels outside [0, {num_classes})")
    return x, y


def _is_better(value: float, best: float, maximize: bool) -> bool:
    if math.isnan(value):
        return False
    return value > best if maximize else value < best


def _log_row(row: Mapping[str, float], epochs: int, marker: str) -> None:
    terms = " ".join(
        f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "lr", "seconds")
    )
    log.info(
        "epoch %d/%d %s lr=%.3g %.1fs%s",
        row["epoch"],
        epochs,
        terms,
        row["lr"],
        row["seconds"],
        marker,
    )


def train_with_selection(
    model: nn.Module,
    setup: TrainSetup,
    val: Split,
    cfg: TrainConfig,
    *,
    num_classes: int,
    fingerprint: str,
    rngs: Mapping[str, torch.Generator],
    run_epoch: Callable[[int], dict[str, float]],
    extra_state: Mapping[str, Any] | None = None,
    best_modules: Mapping[str, nn.Module] | None = None,
    resume_path: Path | None,
    log_path: Path | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """The epoch driver shared by every trainer: resume, validation, selection, logging.

    For each epoch ``e`` from the one after the last completed one to ``cfg.epochs``:
    ``run_epoch(e)`` trains (returns ``train/loss``, ``train/acc``, optional extra
    terms and ``lr``, see ``train_epoch``); the model is evaluated on ``val``; the best
    ``cfg.select_metric`` state is kept; the row is logged (``logging`` + JSON lines);
    the resume file is written; ``on_epoch_end(row)`` is called.

    Args:
        model: the network evaluated and selected (already set up by ``setup_training``).
        setup: its optimisation pieces.
        val: validated (uint8 images, int64 labels).
        cfg: ``epochs``, ``select_metric`` and ``batch_size`` (evaluation batch) are used.
        num_classes: K.
        fingerprint: identifies the run (``fingerprint``); a resume file with another
            one is ignored with a warning.
        rngs: named CPU generators whose states go into the resume file (``gen_<name>``).
        run_epoch: trains one epoch.
        extra_state: more objects with ``state_dict``/``load_state_dict`` (another
            network, its optimizer and scheduler) saved in and restored from the resume
            file.
        best_modules: more modules snapshotted (CPU state dicts) together with the model
            at the selected epoch; returned in ``FitResult.best_extra``.
        resume_path, log_path, on_epoch_end: as in ``fit``.
    Row order: ``epoch, train/loss, train/acc, <extra terms>, val/loss, val/acc,
    val/mean_class_acc, val/macro_f1, lr, seconds``.
    """
    device = setup.device
    xva, yva = val
    maximize = SELECT_METRICS[cfg.select_metric]
    extra_state = dict(extra_state or {})
    best_modules = dict(best_modules or {})
    history: list[dict[str, float]] = []
    best_state: dict[str, Tensor] | None = None
    best_extra: dict[str, dict[str, Tensor]] = {}
    best_epoch, best_metric = 0, (-math.inf if maximize else math.inf)
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
            log.warning(
                "resume file %s does not match this run (config/data/model changed); "
                "starting fresh",
                resume_path,
            )
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
            history = [dict(r) for r in payload["history"]]
            for name, gen in rngs.items():
                gen.set_state(payload[f"gen_{name}"])
            _set_rng_states(payload["rng"], device)
            start_epoch = int(payload["epoch"])
            log.info("resuming from %s after epoch %d/%d", resume_path, start_epoch, cfg.epochs)
    if log_path is not None:
        write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

    store_va = ImageStore(xva, device)
    eval_bs = max(2 * cfg.batch_size, 128)

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_row = run_epoch(epoch)
        if not math.isfinite(train_row["train/loss"]):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}")

        logits_va = forward_store(
            model, store_va, eval_bs, amp_dtype=setup.amp_dtype, channels_last=setup.channels_last
        )  # Nv, K
        val_loss = F.cross_entropy(torch.from_numpy(logits_va), torch.from_numpy(yva)).item()
        m = classification_metrics(yva, logits_va.argmax(1), num_classes)
        row: dict[str, float] = {"epoch": epoch}
        row.update({k: v for k, v in train_row.items() if k != "lr"})
        row.update(
            {
                "val/loss": val_loss,
                "val/acc": m["acc"],
                "val/mean_class_acc": m["mean_class_acc"],
                "val/macro_f1": m["macro_f1"],
                "lr": float(train_row["lr"]),
                "seconds": time.perf_counter() - t0,
            }
        )
        history.append(row)
        improved = best_state is None or _is_better(row[cfg.select_metric], best_metric, maximize)
        if improved:
            best_state = cpu_state_dict(model.state_dict())
            best_extra = {
                name: cpu_state_dict(mod.state_dict()) for name, mod in best_modules.items()
            }
            best_epoch, best_metric = epoch, float(row[cfg.select_metric])
        _log_row(row, cfg.epochs, " *" if improved else "")
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
                "rng": _rng_states(device),
            }
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
    )


# ------------------------------------------------------------------------------ fit
def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    *,
    num_classes: int,
    device: torch.device | str,
    seed: int,
    resume_path: Path | None,
    log_path: Path | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train``, select on ``val``; see the module docstring.

    Args:
        model: a freshly built model (its initial weights are the caller's, seeded).
        train, val: (uint8 images (N, H, W, C), int labels (N,)).
        cfg: hyper-parameters.
        num_classes: K, the model's output size.
        device: where to train.
        seed: seeds batch order, augmentation, dropout (python/numpy/torch global RNGs).
        resume_path: resume file to continue from / write after each epoch (None: off).
        log_path: JSON-lines file receiving one row per epoch.
        on_epoch_end: called with each epoch's row after the resume file is written.
    """
    device = torch.device(device)
    xtr, ytr = check_split(train, "train", num_classes)
    xva, yva = check_split(val, "val", num_classes)
    setup = setup_training(model, cfg, ytr, num_classes=num_classes, device=device)
    fp = _fingerprint(cfg, model, (xtr, ytr), (xva, yva), num_classes, seed)
    g_data, g_aug = seed_everything(seed)

    store_tr = ImageStore(xtr, device)
    ytr_t = torch.from_numpy(ytr).to(device)

    def step(idx: Tensor) -> StepOutput:
        xb = augment_batch(store_tr.batch(idx), cfg.augment, g_aug)  # B, C, H, W
        xb = model_input(xb, setup.channels_last)
        yb = ytr_t[idx.to(device)]  # B
        with amp_autocast(device, setup.amp_dtype):
            logits = model(xb)  # B, K
        return StepOutput(loss=setup.criterion(logits.float(), yb), logits=logits, labels=yb)

    return train_with_selection(
        model,
        setup,
        (xva, yva),
        cfg,
        num_classes=num_classes,
        fingerprint=fp,
        rngs={"data": g_data, "aug": g_aug},
        run_epoch=lambda epoch: train_epoch(model, setup, len(ytr), cfg.batch_size, g_data, step),
        resume_path=resume_path,
        log_path=log_path,
        on_epoch_end=on_epoch_end,
    )
