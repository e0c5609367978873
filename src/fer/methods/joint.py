"""Joint training of the recogniser with an expression-conditioned generator (M1, stage 2),
with the intra-class loss and real data-guided back-propagation (RDBP), one fold.

Follows Yan, Huang, Chen, Shen, Wang, "Joint Deep Learning of Facial Expression
Synthesis and Recognition", IEEE Trans. Multimedia 22(11), 2020 (arXiv 2002.02194):
stage 1 pre-trains FESGAN (``fer.methods.fesgan``); stage 2 -- this module -- trains the
recognition network on real images plus images the pre-trained generator synthesises from
prior identities, and the recogniser's classification loss updates the generator too.
Details the paper leaves open are the project's reading (``methods.md``, M1). The rows
(``fer.params.JOINT_ROWS``) differ by their synthetic source and intra-class loss.

Each training step (one real batch of B images; the epoch is one pass over the REAL
training images, exactly as in the baseline, so every row takes the same number of
steps with the same LR schedule):

1. Ns = max(1, round(synth_ratio * B)) synthetic images (``n_per_batch(B, r)``):
   - static set (``synthetic=``): the next Ns images of a pre-generated uint8 set, cycled
     through without replacement (``fer.training.samplers.CycledSet``; each epoch starts
     a new pass);
   - generator (``generator=``): z ~ U(-1, 1)^z_dim and target expressions drawn
     uniformly from the classes present in the training split; the labels of the
     generated images ARE these target expressions. The generator's output in [-1, 1] is
     mapped to [0, 1] (inverse of ``normalize``).
2. Real and synthetic images form ONE batch [real; synthetic] that gets the real
   augmentation (differentiable, so the generator still receives gradients) and ONE
   forward pass: BatchNorm sees the mixed batch, as it would for a dataset that is the
   union of both.
3. Loss = CE(real) + CE(synthetic) + rdbp.lambda * intra + anchor_weight * anchor:
   - CE(real) is the baseline's criterion (label smoothing, class weights when
     configured); CE(synthetic) uses the same label smoothing but NO class weights (the
     synthetic labels are class-balanced by construction);
   - intra = ``fer.losses.rdbp_loss`` between the synthetic and real penultimate
     features (``model.features``) of the batch (rows with an ``rdbp`` section; with
     ``stop_gradient`` -- RDBP -- the real anchors are detached). BatchNorm statistics of
     the mixed batch still couple the two halves; no term pulls the real features toward
     the synthetic ones;
   - anchor = L1 between the trained generator's output and a frozen copy of the
     pre-trained generator's output for the same (z, e) (``joint.gen_anchor_weight``;
     keeps the jointly trained generator near faces; its gradient reaches only the
     generator).
4. The recogniser's optimizer (its params section) and the generator's Adam
   (``joint.gen_lr``, betas (0.5, 0.999)) both step on that loss. The generator's LR
   follows the recogniser's per-step schedule shape (warm-up, cosine). The generator runs
   in eval mode (its normalisation layers use stored statistics; the frozen copy and the
   trained one agree at step 0) and the caller's module is never modified (a copy is
   trained).

The generator, its optimizer and scheduler and the synthetic-sampling generator travel in
the resume file, and the generator of the selected epoch is saved next to the recogniser.

Outputs (the shared protocol's, so reports treat every method alike):
* the recogniser (``model_from_weights`` rebuilds it); its meta records ``synth_ratio``,
  the source, the generator's training settings and the ``rdbp`` section used (or None);
* ``generator_path(model)`` = ``<model stem>.generator.pt``: the generator at the
  selected epoch, written only when a generator was used;
* metrics: ``JOINT_METRIC_KEYS`` = ``METRIC_KEYS`` + ``n_synthetic_per_step``;
* curve: ``JOINT_CURVE_COLUMNS`` = ``CURVE_COLUMNS`` + the loss terms ``train/cls_real``,
  ``train/cls_syn``, ``train/intra``, ``train/intra_skipped`` (share of synthetic samples
  whose class had no real sample in the batch), ``G/anchor`` (unweighted epoch means; 0
  when a term is off). ``train/loss`` is the full weighted objective.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.losses.rdbp import rdbp_loss
from fer.params import RdbpParams, RecognizerParams, to_dict
from fer.training.augment import augment_batch
from fer.training.batches import MEAN, STD, ImageStore, check_arrays, check_synthetic, model_input
from fer.training.checkpoint import cpu_state_dict, save_weights
from fer.training.driver import EpochContext, FitResult, StepOutput, fingerprint, train_epochs
from fer.training.optim import EvalSetup, make_lr_scheduler, setup_training
from fer.training.protocol import CURVE_COLUMNS, METRIC_KEYS, Fold, FoldOutputs, finish_fold, recognizer_meta
from fer.training.samplers import CycledSet, n_per_batch
from fer.utils.digest import digest
from fer.utils.precision import amp_autocast
from fer.utils.seed import derived_seed

__all__ = [
    "JOINT_CURVE_COLUMNS",
    "JOINT_METRIC_KEYS",
    "JOINT_TERMS",
    "GeneratedSynthetic",
    "GeneratorTraining",
    "JointResult",
    "generator_path",
    "run_joint_fold",
    "train_joint",
]

#: Per-epoch loss terms the joint trainer adds to the history rows and the curve.
JOINT_TERMS: tuple[str, ...] = ("train/cls_real", "train/cls_syn", "train/intra", "train/intra_skipped", "G/anchor")
#: Keys of the metrics JSON: the protocol's plus the synthetic batch size.
JOINT_METRIC_KEYS: tuple[str, ...] = (*METRIC_KEYS, "n_synthetic_per_step")
#: Columns of the learning-curve CSV: the protocol's plus the loss terms.
JOINT_CURVE_COLUMNS: tuple[str, ...] = (*CURVE_COLUMNS, *JOINT_TERMS)


@dataclass(frozen=True)
class GeneratorTraining:
    """How the joint rows keep training the pre-trained generator (params ``joint``)."""

    lr: float  # Adam, betas (0.5, 0.999)
    anchor_weight: float  # L1 to the frozen pre-trained generator (0: off)


def generator_path(out_model: Path) -> Path:
    """Where ``run_joint_fold`` saves the generator: ``<stem>.generator.pt`` beside it."""
    return Path(out_model).with_suffix(".generator.pt")


# --------------------------------------------------------------------- synthetic data
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


class _StaticSource:
    """A fixed synthetic set as a source: ``sample(n)`` -> (images, labels, None)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, g: torch.Generator) -> None:
        self.set = CycledSet(images, labels, device, g)

    def start_epoch(self) -> None:
        self.set.start_epoch()

    def sample(self, n: int) -> tuple[Tensor, Tensor, None]:
        x, y, _ = self.set.sample(n)
        return x, y, None


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
    cfg: RecognizerParams,
    *,
    synth_ratio: float,
    num_classes: int,
    generator: nn.Module | None = None,
    training: GeneratorTraining | None = None,
    synthetic: tuple[np.ndarray, np.ndarray] | None = None,
    rdbp: RdbpParams | None = None,
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
        cfg: the recogniser's parameters (as the baseline's).
        synth_ratio: synthetic samples per real sample in each batch.
        num_classes: K.
        generator: pre-trained ``generator(z, one_hot) -> (N, C, H, W) in [-1, 1]`` with a
            ``z_dim`` attribute, or None. Not modified (a copy is trained).
        training: how the generator is trained further (None: it stays frozen).
        synthetic: a pre-generated (uint8 (M, H, W, C), labels (M,)) set, or None.
            Exactly one of ``generator`` and ``synthetic`` must be given.
        rdbp: the intra-class loss's settings (None: no intra-class loss).
        device, seed, resume_path, log_path, on_epoch_end: as in ``fit``.
    """
    device = torch.device(device)
    if (generator is None) == (synthetic is None):
        raise ValueError("give exactly one of generator= (joint) and synthetic= (static)")
    if not (math.isfinite(synth_ratio) and synth_ratio > 0):
        raise ValueError(f"synth_ratio must be > 0, got {synth_ratio}")
    xtr, ytr = check_arrays(train, "train", num_classes)
    xva, yva = check_arrays(val, "val", num_classes)
    if synthetic is not None:
        xsy, ysy = check_synthetic(synthetic, num_classes, xtr.shape[1:])
    setup = setup_training(model, cfg, ytr, num_classes=num_classes, device=device)
    forward = _features_and_logits(model)
    _check_head(model, forward, model_input(ImageStore(xtr[:2], device).batch(torch.arange(2)), setup.channels_last))

    update_gen = generator is not None and training is not None
    extra: dict[str, Any] = {
        "synth_ratio": synth_ratio,
        "training": None if training is None else [training.lr, training.anchor_weight],
        "rdbp": None if rdbp is None else to_dict(rdbp),
        "source": digest(generator) if generator is not None else digest(xsy, ysy),
    }
    fp = fingerprint(cfg, model, (xtr, ytr), (xva, yva), num_classes, seed, extra)
    g_syn = torch.Generator().manual_seed(derived_seed(seed, 0x5E7))

    gen: nn.Module | None = None
    extra_state: dict[str, Any] = {}
    extra_optimizers: tuple[torch.optim.Optimizer, ...] = ()
    extra_schedulers: tuple[torch.optim.lr_scheduler.LRScheduler, ...] = ()
    source: _StaticSource | GeneratedSynthetic
    if generator is not None:
        gen = copy.deepcopy(generator).to(device).eval().requires_grad_(update_gen)
        reference = None
        if update_gen and training.anchor_weight > 0:  # type: ignore[union-attr]
            reference = copy.deepcopy(generator).to(device).eval().requires_grad_(False)
        source = GeneratedSynthetic(
            gen, num_classes=num_classes, class_pool=np.unique(ytr),
            image_shape=(xtr.shape[3], xtr.shape[1], xtr.shape[2]), device=device, g=g_syn,
            trainable=update_gen, reference=reference, amp_dtype=setup.amp_dtype,
        )
        if update_gen:
            assert training is not None
            gen_opt = torch.optim.Adam(gen.parameters(), lr=training.lr, betas=(0.5, 0.999))
            gen_sched = make_lr_scheduler(gen_opt, cfg, setup.steps_per_epoch)
            extra_state = {"generator": gen, "gen_optimizer": gen_opt, "gen_scheduler": gen_sched}
            extra_optimizers, extra_schedulers = (gen_opt,), (gen_sched,)
    else:
        source = _StaticSource(xsy, ysy, device, g_syn)

    syn_criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    w_anchor = training.anchor_weight if training is not None else 0.0

    def make_step(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
        def step(idx: Tensor) -> StepOutput:
            b = idx.numel()
            x_real = ctx.store.batch(idx)  # B, C, H, W in [0, 1]
            y_real = ctx.labels_of(idx)  # B
            x_syn, y_syn, anchor = source.sample(n_per_batch(b, synth_ratio))  # Ns, ...
            x = augment_batch(torch.cat([x_real, x_syn]), cfg.augment, ctx.g_aug)  # B+Ns, C, H, W
            x = model_input(x, setup.channels_last)
            with amp_autocast(device, setup.amp_dtype):
                feats, logits = forward(x)  # B+Ns, D / B+Ns, K
            feats, logits = feats.float(), logits.float()
            cls_real = setup.criterion(logits[:b], y_real)
            cls_syn = syn_criterion(logits[b:], y_syn)
            loss = cls_real + cls_syn
            zero = torch.zeros((), device=device)
            terms = {"train/cls_real": cls_real, "train/cls_syn": cls_syn, "train/intra": zero,
                     "train/intra_skipped": zero}
            if rdbp is not None and rdbp.lambda_ > 0:
                weighted, intra_terms = rdbp_loss(feats[b:], y_syn, feats[:b], y_real, rdbp, num_classes=num_classes)
                loss = loss + weighted
                terms.update(intra_terms)
            if anchor is not None:
                loss = loss + w_anchor * anchor
            terms["G/anchor"] = anchor if anchor is not None else zero
            return StepOutput(loss=loss, logits=logits[:b], labels=y_real, terms=terms)

        return step

    result = train_epochs(
        model, setup, (xtr, ytr), (xva, yva),
        epochs=cfg.epochs, batch_size=cfg.batch_size, select_metric=cfg.select_metric, num_classes=num_classes,
        seed=seed, fingerprint=fp, make_step=make_step, extra_rngs={"syn": g_syn},
        extra_optimizers=extra_optimizers, extra_schedulers=extra_schedulers, extra_state=extra_state,
        best_modules={"generator": gen} if update_gen and gen is not None else None,
        before_epoch=source.start_epoch, resume_path=resume_path, log_path=log_path, on_epoch_end=on_epoch_end,
    )
    gen_best = None
    if gen is not None:
        gen_best = result.best_extra.get("generator") or cpu_state_dict(gen.state_dict())
    return JointResult(fit=result, generator=gen, generator_best_state=gen_best,
                       n_synthetic_per_step=n_per_batch(cfg.batch_size, synth_ratio))


# ------------------------------------------------------------------------- one fold
def run_joint_fold(
    fold: Fold,
    cfg: RecognizerParams,
    out: FoldOutputs,
    *,
    synth_ratio: float,
    generator: nn.Module | None = None,
    training: GeneratorTraining | None = None,
    synthetic: tuple[np.ndarray, np.ndarray] | None = None,
    rdbp: RdbpParams | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Joint (or static-synthetic) training, selection and test on one fold.

    The protocol is the shared one (``fer.training.protocol``); the arguments are
    ``train_joint``'s: ``generator`` (the fold's pre-trained generator, learned from this
    fold's training part only) with its ``training`` settings, or ``synthetic`` (the
    fold's fixed class-balanced set, from this fold's training part only), and ``rdbp``.
    Returns the metrics written (keys ``JOINT_METRIC_KEYS``).
    """
    model = fold.build_recognizer(cfg)
    res = train_joint(
        model, fold.part("train"), fold.part("val"), cfg,
        synth_ratio=synth_ratio, num_classes=fold.num_classes, generator=generator, training=training,
        synthetic=synthetic, rdbp=rdbp, device=fold.device, seed=fold.seed,
        resume_path=out.resume, log_path=out.log, on_epoch_end=on_epoch_end,
    )
    result = res.fit
    gen_file = generator_path(Path(out.model)) if res.generator is not None else None
    gen_training = None if training is None or generator is None else {"lr": training.lr,
                                                                        "anchor_weight": training.anchor_weight}
    meta = {
        **recognizer_meta("joint", cfg, fold.classes, fold.images.shape, result, fold.seed),
        "synth_ratio": synth_ratio,
        "synthetic_source": "generator" if generator is not None else "static",
        "n_synthetic_set": int(len(synthetic[0])) if synthetic is not None else None,
        "generator": None if gen_file is None else {"file": gen_file.name, "training": gen_training},
        "rdbp": None if rdbp is None or rdbp.lambda_ <= 0 else to_dict(rdbp),
    }
    if gen_file is not None:
        assert res.generator_best_state is not None and generator is not None
        save_weights(gen_file, res.generator_best_state, {
            "method": "joint",
            "role": "generator",
            "z_dim": int(getattr(generator, "z_dim")),
            "num_classes": fold.num_classes,
            "classes": list(fold.classes),
            "image_shape": [fold.channels, fold.height, fold.width],
            "epoch": int(result.best_epoch),
            "seed": int(fold.seed),
            "training": gen_training,
        })
    ev = EvalSetup.for_params(cfg, fold.device)
    metrics = finish_fold(fold, model, result, ev, out, meta=meta,
                          extra_metrics={"n_synthetic_per_step": int(res.n_synthetic_per_step)},
                          curve_columns=JOINT_CURVE_COLUMNS)
    assert tuple(metrics) == JOINT_METRIC_KEYS
    return metrics

