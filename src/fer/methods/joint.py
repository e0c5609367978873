"""Joint training of the recogniser with an expression-conditioned generator (M1, stage 2),
with the intra-class loss and real data-guided back-propagation (RDBP), one fold.

Follows Yan, Huang, Chen, Shen, Wang, "Joint Deep Learning of Facial Expression
Synthesis and Recognition", IEEE Trans. Multimedia 22(11), 2020 (arXiv 2002.02194):
stage 1 pre-trains FESGAN (``fer.models.fesgan``); stage 2 -- this module -- trains the
recognition network on real images plus images the pre-trained generator synthesises from
prior identities, and the recogniser's classification loss updates the generator too.
Details the paper leaves open are the project's reading (``methods.md``, M1).

Each training step (one real batch of B images; the epoch is one pass over the REAL
training images, exactly as in the baseline, so every variant takes the same number of
steps with the same LR schedule):

1. Ns = max(1, round(synth_ratio * B)) synthetic images (``n_synthetic_per_step`` is Ns
   for a full batch):
   - static set (``synthetic=``): the next Ns images of a pre-generated uint8 set, which is
     cycled through without replacement (a fresh permutation per pass; each epoch starts
     a new pass);
   - generator (``generator=``): z ~ U(-1, 1)^z_dim and target expressions drawn
     uniformly from the classes present in the training split; the labels of the
     generated images ARE these target expressions. The generator's output in [-1, 1] is
     mapped to [0, 1] (inverse of ``normalize``).
2. Real and synthetic images form ONE batch [real; synthetic] that gets the real
   augmentation (differentiable, so the generator still receives gradients) and ONE
   forward pass: BatchNorm sees the mixed batch, as it would for a dataset that is the
   union of both.
3. Loss = CE(real) + CE(synthetic) + intra_lambda * intra + gen_anchor_weight * anchor:
   - CE(real) is the baseline's criterion (label smoothing, class weights when
     configured); CE(synthetic) uses the same label smoothing but NO class weights (the
     synthetic labels are class-balanced by construction);
   - intra = ``fer.losses.intra_class_loss`` between the synthetic and real penultimate
     features (``model.features``) of the batch; with ``stop_gradient`` (RDBP) the real
     anchors are detached. Note that BatchNorm statistics of the mixed batch still couple
     the two halves; no term pulls the real features toward the synthetic ones;
   - anchor = L1 between the trained generator's output and a frozen copy of the
     pre-trained generator's output for the same (z, e) (``gen_anchor_weight``; keeps the
     jointly trained generator near faces; its gradient reaches only the generator).
4. The recogniser's optimizer (``TrainConfig``) and, with ``update_generator``, the
   generator's Adam (``gen_lr``, betas (0.5, 0.999)) both step on that loss. The
   generator's LR follows the same per-step schedule shape as the recogniser's (warm-up,
   cosine), so it settles as the recogniser does. The generator runs in eval mode (its
   normalisation layers use stored statistics; the frozen copy and the trained one agree
   at step 0) and the caller's module is never modified (a copy is trained).

Selection, resume, logging and the test protocol are those of ``fer.training.loop`` /
``fer.methods.baseline`` (the epoch driver is ``train_with_selection``); the generator,
its optimizer and scheduler and the synthetic-sampling generator travel in the resume
file, and the generator of the selected epoch is saved next to the recogniser.

Outputs (same kinds and keys as ``run_baseline_fold``, so reports treat every method
alike):
* ``out_model``: ``save_weights`` file of the selected recogniser (``model_from_weights``
  rebuilds it);
* ``generator_path(out_model)`` = ``<out_model stem>.generator.pt``: the generator at the
  selected epoch (``save_weights`` format), written only when a generator was used;
* ``out_metrics``: ``JOINT_METRIC_KEYS`` = the baseline's keys + ``n_synthetic_per_step``;
* ``out_curve``: ``JOINT_CURVE_COLUMNS`` = the baseline's columns + the loss terms
  ``train/cls_real``, ``train/cls_syn``, ``train/intra``, ``gen/anchor`` (unweighted
  epoch means; 0 when a term is off). ``train/loss`` is the full weighted objective.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.losses.rdbp import ANCHORS, intra_class_loss
from fer.methods.baseline import (
    CURVE_COLUMNS,
    METRIC_KEYS,
    check_fold_inputs,
    recognizer_meta,
    test_selected,
    write_curve,
)
from fer.models import build_model
from fer.training.augment import augment_batch
from fer.training.checkpoint import clear_resume, cpu_state_dict, save_weights
from fer.training.loop import (
    MEAN,
    STD,
    FitResult,
    ImageStore,
    StepOutput,
    TrainConfig,
    amp_autocast,
    check_split as check_arrays,
    coerce_fields,
    fingerprint,
    make_lr_scheduler,
    model_input,
    seed_everything,
    setup_training,
    train_epoch,
    train_with_selection,
)
from fer.utils.io import write_json

__all__ = [
    "JOINT_CURVE_COLUMNS",
    "JOINT_METRIC_KEYS",
    "JOINT_TERMS",
    "GeneratedSynthetic",
    "JointConfig",
    "JointResult",
    "StaticSynthetic",
    "generator_path",
    "n_synthetic",
    "run_joint_fold",
    "train_joint",
]

#: Per-epoch loss terms the joint trainer adds to the history rows and the curve.
JOINT_TERMS: tuple[str, ...] = ("train/cls_real", "train/cls_syn", "train/intra", "gen/anchor")
#: Keys of the metrics JSON: the baseline's plus the synthetic batch size.
JOINT_METRIC_KEYS: tuple[str, ...] = (*METRIC_KEYS, "n_synthetic_per_step")
#: Columns of the learning-curve CSV: the baseline's plus the loss terms.
JOINT_CURVE_COLUMNS: tuple[str, ...] = (*CURVE_COLUMNS, *JOINT_TERMS)


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class JointConfig:
    """Hyper-parameters of joint training (on top of the recogniser's ``TrainConfig``)."""

    synth_ratio: float = 0.5  # synthetic samples per real sample in each batch
    update_generator: bool = True  # CE on generated images also updates the generator
    gen_lr: float = 1e-4  # generator Adam, betas (0.5, 0.999)
    gen_anchor_weight: float = 1.0  # L1 to the frozen pre-trained generator (0: off)
    intra_lambda: float = 0.0  # weight of the intra-class loss (rdbp.lambda); 0: off
    stop_gradient: bool = True  # RDBP: real anchors detached (only with intra_lambda > 0)
    anchor: str = "class_mean"  # class_mean | per_sample

    def __post_init__(self) -> None:
        if not (math.isfinite(self.synth_ratio) and self.synth_ratio > 0):
            raise ValueError(f"joint.synth_ratio must be > 0, got {self.synth_ratio}")
        if not self.gen_lr > 0:
            raise ValueError(f"joint.gen_lr must be > 0, got {self.gen_lr}")
        if self.gen_anchor_weight < 0 or self.intra_lambda < 0:
            raise ValueError("joint.gen_anchor_weight and joint.intra_lambda must be >= 0")
        if self.anchor not in ANCHORS:
            raise ValueError(f"joint.anchor must be one of {ANCHORS}, got {self.anchor!r}")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> JointConfig:
        """Build from a (YAML) mapping; unknown keys raise ValueError naming the key."""
        return cls(**coerce_fields(cls, d, "joint"))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def n_synthetic(batch_size: int, synth_ratio: float) -> int:
    """Synthetic samples added to a real batch of ``batch_size``: max(1, round(r * B))."""
    return max(1, math.floor(synth_ratio * batch_size + 0.5))


def generator_path(out_model: Path) -> Path:
    """Where ``run_joint_fold`` saves the generator: ``<stem>.generator.pt`` beside it."""
    return Path(out_model).with_suffix(".generator.pt")


# --------------------------------------------------------------------- synthetic data
class StaticSynthetic:
    """A fixed uint8 synthetic set, cycled through without replacement.

    Each pass is a fresh permutation drawn from ``g``; ``start_epoch`` begins a new pass,
    so the stream depends only on ``g``'s state at the epoch start (exact resume).
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, device: torch.device, g: torch.Generator
    ) -> None:
        self.store = ImageStore(images, device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.g = g
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def start_epoch(self) -> None:
        """Forget the current pass (the next ``sample`` draws a new permutation)."""
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """The next ``n`` images: (float (n, C, H, W) in [0, 1], labels (n,), None)."""
        parts: list[Tensor] = []
        need = n
        while need > 0:
            if self._pos >= self._perm.numel():
                self._perm = torch.randperm(len(self.store), generator=self.g)
                self._pos = 0
            take = self._perm[self._pos : self._pos + need]
            self._pos += take.numel()
            need -= take.numel()
            parts.append(take)
        idx = torch.cat(parts)  # n
        return self.store.batch(idx), self.labels[idx.to(self.labels.device)], None


class GeneratedSynthetic:
    """Images generated on the fly from prior identities and random target expressions.

    ``sample(n)`` draws z ~ U(-1, 1)^z_dim and target classes uniformly from
    ``class_pool`` (CPU generator ``g``), runs ``generator(z, one_hot(e))`` and returns the
    images mapped to [0, 1], the target classes as labels, and -- when a frozen
    ``reference`` generator is given and the generator is trained -- the L1 distance
    between the two generators' outputs for the same (z, e).
    """

    def __init__(
        self,
        generator: nn.Module,
        *,
        num_classes: int,
        class_pool: np.ndarray,
        image_shape: tuple[int, int, int],
        device: torch.device,
        g: torch.Generator,
        trainable: bool,
        reference: nn.Module | None = None,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        z_dim = getattr(generator, "z_dim", None)
        if not isinstance(z_dim, int) or z_dim < 1:
            raise ValueError("the generator must expose an integer attribute z_dim >= 1")
        if len(class_pool) == 0:
            raise ValueError("class_pool is empty")
        self.generator = generator
        self.reference = reference
        self.z_dim = z_dim
        self.num_classes = int(num_classes)
        self.class_pool = torch.as_tensor(np.asarray(class_pool, dtype=np.int64))
        self.image_shape = tuple(int(s) for s in image_shape)  # C, H, W
        self.device = device
        self.g = g
        self.trainable = trainable
        self.amp_dtype = amp_dtype

    def start_epoch(self) -> None:
        """Nothing to reset (the stream is ``g``)."""

    def codes(self, n: int) -> tuple[Tensor, Tensor]:
        """Prior codes and target classes on the device: z (n, z_dim) in [-1, 1), e (n,)."""
        e = self.class_pool[torch.randint(len(self.class_pool), (n,), generator=self.g)]  # n
        z = torch.rand((n, self.z_dim), generator=self.g) * 2 - 1  # n, z_dim
        return z.to(self.device), e.to(self.device)

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """(images float (n, C, H, W) in [0, 1], target classes (n,), anchor L1 or None)."""
        z, e = self.codes(n)
        onehot = F.one_hot(e, self.num_classes).float()  # n, K
        with torch.set_grad_enabled(self.trainable), amp_autocast(self.device, self.amp_dtype):
            out = self.generator(z, onehot)  # n, C, H, W in [-1, 1]
        if tuple(out.shape) != (n, *self.image_shape):
            raise ValueError(
                f"generator output {tuple(out.shape)} does not match the real images "
                f"(n, C, H, W) = {(n, *self.image_shape)}"
            )
        out = out.float()
        anchor = None
        if self.trainable and self.reference is not None:
            with torch.no_grad(), amp_autocast(self.device, self.amp_dtype):
                ref = self.reference(z, onehot)  # n, C, H, W
            anchor = (out - ref.float()).abs().mean()
        return out * STD + MEAN, e, anchor  # inverse of normalize: [-1, 1] -> [0, 1]


# ------------------------------------------------------------------------- training
def _features_and_logits(model: nn.Module) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """x -> (penultimate features, logits) in ONE pass through the backbone.

    Uses ``model.classify(features)`` when the model has it, else the layout of the
    project's backbones: ``fc(dropout(features))`` (``dropout`` optional).
    """
    head = getattr(model, "classify", None)
    if head is None:
        fc = getattr(model, "fc", None)
        if not isinstance(fc, nn.Module) or not callable(getattr(model, "features", None)):
            raise TypeError(f"{type(model).__name__} exposes no features()/fc head")
        dropout = getattr(model, "dropout", None)
        head = (lambda f: fc(dropout(f))) if isinstance(dropout, nn.Module) else fc

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        feats = model.features(x)  # type: ignore[operator]  # N, D
        return feats, head(feats)  # N, K

    return run


def _check_head(model: nn.Module, run: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor) -> None:
    """Verify that features + head reproduce ``model(x)`` (eval mode, no RNG used)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ok = torch.allclose(run(x)[1].float(), model(x).float(), atol=1e-4, rtol=1e-4)
    finally:
        model.train(was_training)
    if not ok:
        raise TypeError(
            f"{type(model).__name__}: features() + head does not reproduce forward(); give "
            "the model a classify(features) method"
        )


def _digest_state(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(f"{name}:{list(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digest_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}:{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _synthetic_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 0x5E7]).generate_state(1)[0])


@dataclass
class JointResult:
    """Outcome of ``train_joint``."""

    fit: FitResult  # the recogniser: best_state, best_epoch, history (with JOINT_TERMS)
    generator: nn.Module | None  # the trained COPY, last-epoch weights (None: static set)
    generator_best_state: dict[str, Tensor] | None  # its state at fit.best_epoch (CPU)
    n_synthetic_per_step: int  # Ns for a full real batch


def train_joint(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    joint_cfg: JointConfig,
    *,
    num_classes: int,
    generator: nn.Module | None,
    synthetic: tuple[np.ndarray, np.ndarray] | None,
    device: torch.device | str,
    seed: int,
    resume_path: Path | None,
    log_path: Path | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> JointResult:
    """Train ``model`` on real + synthetic images, select on ``val`` (module docstring).

    Args:
        model: a freshly built recogniser (initial weights are the caller's, seeded).
        train, val: (uint8 images (N, H, W, C), int labels (N,)).
        cfg: the recogniser's hyper-parameters (as the baseline's).
        joint_cfg: joint-training hyper-parameters.
        num_classes: K.
        generator: pre-trained ``generator(z, one_hot) -> (N, C, H, W) in [-1, 1]`` with a
            ``z_dim`` attribute, or None. Not modified (a copy is trained).
        synthetic: a pre-generated (uint8 (M, H, W, C), labels (M,)) set, or None.
            Exactly one of ``generator`` and ``synthetic`` must be given.
        device, seed, resume_path, log_path, on_epoch_end: as in ``fit``.
    """
    device = torch.device(device)
    if (generator is None) == (synthetic is None):
        raise ValueError("give exactly one of generator= (joint) and synthetic= (static)")
    xtr, ytr = check_arrays(train, "train", num_classes)
    xva, yva = check_arrays(val, "val", num_classes)
    if synthetic is not None:
        xsy, ysy = check_arrays(synthetic, "synthetic", num_classes)
        if xsy.shape[1:] != xtr.shape[1:]:
            raise ValueError(
                f"synthetic images {xsy.shape[1:]} differ from the real ones {xtr.shape[1:]}"
            )
    setup = setup_training(model, cfg, ytr, num_classes=num_classes, device=device)
    forward = _features_and_logits(model)
    _check_head(model, forward, model_input(ImageStore(xtr[:2], device).batch(torch.arange(2)),
                                            setup.channels_last))

    update_gen = generator is not None and joint_cfg.update_generator
    extra: dict[str, Any] = {"joint": joint_cfg.to_dict()}
    if generator is not None:
        extra["generator"] = _digest_state(generator)
    else:
        extra["synthetic"] = _digest_arrays(xsy, ysy)
    fp = fingerprint(cfg, model, (xtr, ytr), (xva, yva), num_classes, seed, extra)
    g_data, g_aug = seed_everything(seed)
    g_syn = torch.Generator().manual_seed(_synthetic_seed(seed))

    gen: nn.Module | None = None
    extra_state: dict[str, Any] = {}
    extra_optimizers: tuple[torch.optim.Optimizer, ...] = ()
    extra_schedulers: tuple[torch.optim.lr_scheduler.LRScheduler, ...] = ()
    source: StaticSynthetic | GeneratedSynthetic
    if generator is not None:
        gen = copy.deepcopy(generator).to(device).eval().requires_grad_(update_gen)
        reference = None
        if update_gen and joint_cfg.gen_anchor_weight > 0:
            reference = copy.deepcopy(generator).to(device).eval().requires_grad_(False)
        source = GeneratedSynthetic(
            gen,
            num_classes=num_classes,
            class_pool=np.unique(ytr),
            image_shape=(xtr.shape[3], xtr.shape[1], xtr.shape[2]),
            device=device,
            g=g_syn,
            trainable=update_gen,
            reference=reference,
            amp_dtype=setup.amp_dtype,
        )
        if update_gen:
            gen_opt = torch.optim.Adam(gen.parameters(), lr=joint_cfg.gen_lr, betas=(0.5, 0.999))
            gen_sched = make_lr_scheduler(gen_opt, cfg, setup.steps_per_epoch)
            extra_state = {"generator": gen, "gen_optimizer": gen_opt, "gen_scheduler": gen_sched}
            extra_optimizers, extra_schedulers = (gen_opt,), (gen_sched,)
    else:
        source = StaticSynthetic(xsy, ysy, device, g_syn)

    store_tr = ImageStore(xtr, device)
    ytr_t = torch.from_numpy(ytr).to(device)
    syn_criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    lam, w_anchor = joint_cfg.intra_lambda, joint_cfg.gen_anchor_weight

    def step(idx: Tensor) -> StepOutput:
        b = idx.numel()
        x_real = store_tr.batch(idx)  # B, C, H, W in [0, 1]
        y_real = ytr_t[idx.to(device)]  # B
        x_syn, y_syn, anchor = source.sample(n_synthetic(b, joint_cfg.synth_ratio))  # Ns, ...
        x = augment_batch(torch.cat([x_real, x_syn]), cfg.augment, g_aug)  # B+Ns, C, H, W
        x = model_input(x, setup.channels_last)
        with amp_autocast(device, setup.amp_dtype):
            feats, logits = forward(x)  # B+Ns, D / B+Ns, K
        feats, logits = feats.float(), logits.float()
        cls_real = setup.criterion(logits[:b], y_real)
        cls_syn = syn_criterion(logits[b:], y_syn)
        loss = cls_real + cls_syn
        zero = torch.zeros((), device=device)
        intra = zero
        if lam > 0:
            intra, _ = intra_class_loss(
                feats[b:], y_syn, feats[:b], y_real,
                stop_gradient=joint_cfg.stop_gradient, anchor=joint_cfg.anchor,
                num_classes=num_classes,
            )
            loss = loss + lam * intra
        if anchor is not None:
            loss = loss + w_anchor * anchor
        terms = {
            "train/cls_real": cls_real,
            "train/cls_syn": cls_syn,
            "train/intra": intra,
            "gen/anchor": anchor if anchor is not None else zero,
        }
        return StepOutput(loss=loss, logits=logits[:b], labels=y_real, terms=terms)

    def run_epoch(epoch: int) -> dict[str, float]:
        source.start_epoch()
        return train_epoch(
            model, setup, len(ytr), cfg.batch_size, g_data, step,
            extra_optimizers=extra_optimizers, extra_schedulers=extra_schedulers,
        )

    result = train_with_selection(
        model,
        setup,
        (xva, yva),
        cfg,
        num_classes=num_classes,
        fingerprint=fp,
        rngs={"data": g_data, "aug": g_aug, "syn": g_syn},
        run_epoch=run_epoch,
        extra_state=extra_state,
        best_modules={"generator": gen} if update_gen and gen is not None else None,
        resume_path=resume_path,
        log_path=log_path,
        on_epoch_end=on_epoch_end,
    )
    gen_best = None
    if gen is not None:
        gen_best = result.best_extra.get("generator") or cpu_state_dict(gen.state_dict())
    return JointResult(
        fit=result,
        generator=gen,
        generator_best_state=gen_best,
        n_synthetic_per_step=n_synthetic(cfg.batch_size, joint_cfg.synth_ratio),
    )


# ------------------------------------------------------------------------- one fold
def run_joint_fold(
    images: np.ndarray,
    labels: np.ndarray,
    split: Mapping[str, np.ndarray],
    classes: list[str],
    train_cfg: TrainConfig,
    joint_cfg: JointConfig,
    *,
    generator: nn.Module | None,
    synthetic: tuple[np.ndarray, np.ndarray] | None,
    seed: int,
    device: torch.device | str,
    out_model: Path,
    out_metrics: Path,
    out_curve: Path,
    resume_path: Path | None,
    log_path: Path | None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Joint (or static-synthetic) training, selection and test on one fold.

    The protocol and arguments are ``run_baseline_fold``'s (disjoint splits re-checked;
    train/val only during training; test predicted once at the end, last-epoch accuracy
    for information), plus:

    Args:
        joint_cfg: joint-training hyper-parameters.
        generator: the fold's pre-trained generator (learned from this fold's training
            part only), or None for the static variant.
        synthetic: the static variant's pre-generated class-balanced uint8 set (from this
            fold's training part only), or None.
        on_epoch_end: called with each epoch's row (as in ``fit``).
    Returns:
        The metrics dict written to ``out_metrics`` (keys ``JOINT_METRIC_KEYS``).
    """
    labels, idx = check_fold_inputs(images, labels, split, classes)
    num_classes = len(classes)
    device = torch.device(device)
    _, height, width, channels = images.shape

    torch.manual_seed(seed)
    model = build_model(
        train_cfg.arch, num_classes, channels, train_cfg.width, input_size=max(height, width)
    )
    res = train_joint(
        model,
        (images[idx["train"]], labels[idx["train"]]),
        (images[idx["val"]], labels[idx["val"]]),
        train_cfg,
        joint_cfg,
        num_classes=num_classes,
        generator=generator,
        synthetic=synthetic,
        device=device,
        seed=seed,
        resume_path=resume_path,
        log_path=log_path,
        on_epoch_end=on_epoch_end,
    )
    result = res.fit

    metrics = test_selected(model, result, images, labels, idx, train_cfg, device, num_classes)
    metrics["n_synthetic_per_step"] = int(res.n_synthetic_per_step)
    assert tuple(metrics) == JOINT_METRIC_KEYS

    gen_file = generator_path(Path(out_model)) if res.generator is not None else None
    gen_training = (
        {"lr": joint_cfg.gen_lr, "anchor_weight": joint_cfg.gen_anchor_weight}
        if generator is not None and joint_cfg.update_generator else None
    )
    rdbp = (
        {"lambda": joint_cfg.intra_lambda, "stop_gradient": joint_cfg.stop_gradient, "anchor": joint_cfg.anchor}
        if joint_cfg.intra_lambda > 0 else None
    )
    meta = {
        **recognizer_meta("joint", train_cfg, classes, images.shape, result, seed),
        "synth_ratio": joint_cfg.synth_ratio,
        "synthetic_source": "generator" if generator is not None else "static",
        "n_synthetic_set": int(len(synthetic[0])) if synthetic is not None else None,
        "generator": None if gen_file is None else {"file": gen_file.name, "training": gen_training},
        "rdbp": rdbp,
    }
    if gen_file is not None:
        assert res.generator_best_state is not None and generator is not None
        save_weights(
            gen_file,
            res.generator_best_state,
            {
                "method": "joint",
                "role": "generator",
                "z_dim": int(getattr(generator, "z_dim")),
                "num_classes": num_classes,
                "classes": list(classes),
                "image_shape": [int(channels), int(height), int(width)],
                "epoch": int(result.best_epoch),
                "seed": int(seed),
                "training": gen_training,
            },
        )
    save_weights(out_model, result.best_state, meta)
    write_curve(Path(out_curve), result.history, JOINT_CURVE_COLUMNS)
    write_json(out_metrics, metrics)
    clear_resume(resume_path)
    return metrics
