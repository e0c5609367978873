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
    "TrainConfig",
    "clear_resume",
    "embed",
    "fit",
    "normalize",
    "predict",
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
        kw = _coerce_fields(cls, d, "train")
        aug = kw.get("augment")
        if aug is None:
            kw.pop("augment", None)
        elif isinstance(aug, Mapping):
            kw["augment"] = AugmentConfig(**_coerce_fields(AugmentConfig, aug, "train.augment"))
        elif not isinstance(aug, AugmentConfig):
            raise ValueError(f"train.augment must be a mapping, got {type(aug).__name__}")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready)."""
        return dataclasses.asdict(self)


def _coerce_fields(cls: type, d: Mapping[str, Any], where: str) -> dict[str, Any]:
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


# ------------------------------------------------------------------------------- data
class _ImageStore:
    """uint8 (N, C, H, W) images, on the device when small enough, batched to float."""

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


def _batches(perm: Tensor, batch_size: int) -> Iterator[Tensor]:
    n = perm.numel()
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        if idx.numel() == 1 and n > 1:
            return  # a single-sample batch breaks BatchNorm in train mode
        yield idx


def _num_steps(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and n == 1) else 0)


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def _forward_store(
    model: nn.Module,
    store: _ImageStore,
    batch_size: int,
    *,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    fn: Callable[[Tensor], Tensor] | None = None,
) -> np.ndarray:
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
            with _autocast(store.device, amp_dtype):
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
    store = _ImageStore(x_uint8, device)
    return _forward_store(
        model,
        store,
        batch_size,
        amp_dtype=_amp_dtype(device, amp),
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
    store = _ImageStore(x_uint8, device)
    return _forward_store(
        model,
        store,
        batch_size,
        amp_dtype=_amp_dtype(device, amp),
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


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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


def _class_weights(y: np.ndarray, num_classes: int) -> Tensor:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = np.divide(len(y), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)
    return torch.tensor(w, dtype=torch.float32)


# ----------------------------------------------------------------------------- resume
def _fingerprint(
    cfg: TrainConfig,
    model: nn.Module,
    train: Split,
    val: Split,
    num_classes: int,
    seed: int,
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
    h = hashlib.sha256(json.dumps(desc, sort_keys=True).encode())
    for x, y in (train, val):
        h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
        step = max(1, len(x) // 32)  # a cheap sample of the pixels
        h.update(np.ascontiguousarray(x[::step]).tobytes())
    return h.hexdigest()


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


def _seed_everything(seed: int) -> tuple[torch.Generator, torch.Generator]:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    data_seed, aug_seed = np.random.SeedSequence(seed).generate_state(2)
    g_data = torch.Generator().manual_seed(int(data_seed))
    g_aug = torch.Generator().manual_seed(int(aug_seed))
    return g_data, g_aug


# ------------------------------------------------------------------------------ fit
def _check_split(split: Split, name: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
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
    log.info(
        "epoch %d/%d train/loss=%.4f train/acc=%.4f val/loss=%.4f val/acc=%.4f "
        "val/mean_class_acc=%.4f val/macro_f1=%.4f lr=%.3g %.1fs%s",
        row["epoch"],
        epochs,
        row["train/loss"],
        row["train/acc"],
        row["val/loss"],
        row["val/acc"],
        row["val/mean_class_acc"],
        row["val/macro_f1"],
        row["lr"],
        row["seconds"],
        marker,
    )


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
    xtr, ytr = _check_split(train, "train", num_classes)
    xva, yva = _check_split(val, "val", num_classes)
    maximize = SELECT_METRICS[cfg.select_metric]

    model.to(device)
    use_cl = device.type == "cuda" and cfg.channels_last
    if use_cl:
        model.to(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    steps_per_epoch = _num_steps(len(ytr), cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = min(cfg.warmup_epochs, max(0, cfg.epochs - 1)) * steps_per_epoch
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        functools.partial(
            lr_factor, total=total_steps, warmup=warmup_steps, schedule=cfg.schedule
        ),
    )
    weight = _class_weights(ytr, num_classes).to(device) if cfg.class_weighting == "balanced" else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)

    fingerprint = _fingerprint(cfg, model, (xtr, ytr), (xva, yva), num_classes, seed)
    history: list[dict[str, float]] = []
    best_state: dict[str, Tensor] | None = None
    best_epoch, best_metric = 0, (-math.inf if maximize else math.inf)
    start_epoch = 0
    g_data, g_aug = _seed_everything(seed)

    payload = load_resume(resume_path) if resume_path is not None else None
    if payload is not None:
        if payload.get("version") != _RESUME_VERSION or payload.get("fingerprint") != fingerprint:
            log.warning(
                "resume file %s does not match this run (config/data/model changed); "
                "starting fresh",
                resume_path,
            )
        else:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            if payload["scaler"]:
                scaler.load_state_dict(payload["scaler"])
            best_state = payload["best_state"]
            best_epoch = int(payload["best_epoch"])
            best_metric = float(payload["best_metric"])
            history = [dict(r) for r in payload["history"]]
            g_data.set_state(payload["gen_data"])
            g_aug.set_state(payload["gen_aug"])
            _set_rng_states(payload["rng"], device)
            start_epoch = int(payload["epoch"])
            log.info("resuming from %s after epoch %d/%d", resume_path, start_epoch, cfg.epochs)
    if log_path is not None:
        write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

    store_tr = _ImageStore(xtr, device)
    store_va = _ImageStore(xva, device)
    ytr_t = torch.from_numpy(ytr).to(device)
    eval_bs = max(2 * cfg.batch_size, 128)

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        for idx in _batches(torch.randperm(len(ytr), generator=g_data), cfg.batch_size):
            xb = augment_batch(store_tr.batch(idx), cfg.augment, g_aug)  # B, C, H, W
            xb = normalize(xb)
            if use_cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = ytr_t[idx.to(device)]  # B
            with _autocast(device, amp_dtype):
                logits = model(xb)  # B, K
            loss = criterion(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            loss_sum += loss.detach() * idx.numel()
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += idx.numel()
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}")

        logits_va = _forward_store(
            model, store_va, eval_bs, amp_dtype=amp_dtype, channels_last=use_cl
        )  # Nv, K
        val_loss = F.cross_entropy(torch.from_numpy(logits_va), torch.from_numpy(yva)).item()
        m = classification_metrics(yva, logits_va.argmax(1), num_classes)
        row: dict[str, float] = {
            "epoch": epoch,
            "train/loss": train_loss,
            "train/acc": correct.item() / seen,
            "val/loss": val_loss,
            "val/acc": m["acc"],
            "val/mean_class_acc": m["mean_class_acc"],
            "val/macro_f1": m["macro_f1"],
            "lr": float(lr),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        improved = best_state is None or _is_better(row[cfg.select_metric], best_metric, maximize)
        if improved:
            best_state = cpu_state_dict(model.state_dict())
            best_epoch, best_metric = epoch, float(row[cfg.select_metric])
        _log_row(row, cfg.epochs, " *" if improved else "")
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if resume_path is not None:
            save_resume(
                resume_path,
                {
                    "version": _RESUME_VERSION,
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "model": cpu_state_dict(model.state_dict()),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "best_state": best_state,
                    "best_epoch": best_epoch,
                    "best_metric": best_metric,
                    "history": history,
                    "gen_data": g_data.get_state(),
                    "gen_aug": g_aug.get_state(),
                    "rng": _rng_states(device),
                },
            )
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
    )
