"""FERSNet (M3) as a comparison method, one fold: multi-task expression recognition +
synthesis with selective feature sharing, and the authors' four ablation rows.

Follows Zhao, Liu, Xiao, Lun, Lam, "Deep Multi-task Learning for Facial Expression
Recognition and Synthesis Based on Selective Feature Sharing", ICPR 2020 (arXiv
2007.04514) and the authors' published code (``methods.md``, M3). Network:
``fer.models.fersnet``. Rows (``VARIANTS``), as in the authors' README:

* ``single``: the recognition branch alone (CE only);
* ``hard``: one shared encoder for classifier and decoder (no gates);
* ``gated``: FERSNet (ConvFLU exchange after every stage);
* ``synth``: the fold's ``gated`` model (``init_weights``) synthesises a class-balanced
  set from the training images with its synthesis branch; a fresh gated FERSNet then
  trains exactly as the gated row (the same epochs, losses and schedule) with
  ``synth_ratio`` synthetic images per real one added to every batch's classification
  loss.

Training step of ``hard`` / ``gated`` (one batch of B training images x with labels a):

1. **Pairs.** For each x a target image t is drawn (seeded generator ``pairs``) among the
   REAL training images of the same subject with a different expression b; the target
   one-hot is b. Images whose subject has no other expression in the training split get
   no pair: their synthesis terms are masked out (they still give CE).
2. **Augmentation** (``fer.training.augment``): x and t receive the SAME random transform
   (the generator state is replayed), so L1(I_syn, t) compares aligned faces. Project's
   reading; the authors crop/flip with the data loader.
3. **Losses** (authors' weights as defaults)::

       CE(logits(x), a) + w_l1 * L1(I_syn, t) + w_id * ID + w_adv * LSGAN_G
       + w_cycle * MSE(G(I_syn, a), x) + w_expr * CE(R(I_syn), b)

   with (logits, I_syn) = net(x, onehot(b)) in ONE forward pass. ID = mean over the batch
   of ||e(I_syn) - e(t)||^2 with e the frozen identity embedder
   (``fer.methods.identity``; the authors used a pretrained face network that is not
   available offline, this is the project's substitute; its embedding is L2-normalised,
   so the squared distance -- not the per-dimension mean -- keeps the term on a useful
   scale). The cycle pass runs the whole network again on I_syn (in the gated model the
   recognition branch is needed for the gates; its BatchNorm therefore also sees the
   synthetic images in train mode -- inherent to the design). ``w_expr`` (project's; 0 =
   the authors' objective) scores I_syn with the network's own recognition path R in
   eval mode (running BatchNorm statistics, no dropout: the recogniser as it reads faces
   at test time) with its parameters detached (``functional_call``), so the term's
   gradient reaches the synthesis path through I_syn only and the recogniser learns
   nothing from synthetic faces (StarGAN's domain-classification loss, with R as the
   auxiliary classifier).
4. **Discriminator** (``PatchDiscriminator``, conditional on b): ``d_steps`` LSGAN updates
   per generator step on (t, b) real vs (I_syn detached, b) fake, before the generator's
   adversarial term is computed with the updated, frozen discriminator. The authors use 3;
   the demo preset uses 1 for the CPU budget.
5. Adam (lr, betas (beta1, beta2), L2 weight decay on all parameters, as the authors'
   ``torch.optim.Adam``) for network and discriminator; LR x0.1 at each epoch of
   ``lr_milestones`` (authors: 150 and 400 of 500).

A weight of 0 skips its term's computation (``w_adv = 0``: no discriminator at all).

``synthesis = "residual"`` (project's departure, the demo default; ``"unet"`` is the
authors' decoder): I_syn = x + U-Net output + ``offsets[b] - offsets[a]``, the class
offsets started at ``proto_scale`` x the expression prototypes of the TRAIN split
(``fer.training.prototypes``, subject-normalised) and exempt from weight decay (they are
images, not weights); the cycle pass edits I_syn from b back to a. The losses are the
same.

``synth`` row (project's reading of "+21K synthetic images ... to enlarge and balance the
training set"): every training image is re-expressed into each OTHER expression present
in the training split (``synth_per_image = 0``), so class b receives N - n_b synthetic
images and real + synthetic has exactly N images per class (balanced); with
``synth_per_image = m > 0`` m of the other expressions are drawn uniformly per image
(seeded). Synthesis runs in eval mode with the fold's gated model, once, before training.
The row then trains a FRESH gated network for the same epochs as every other row (equal
budgets: the authors continued training the gated model, which would give this row more
epochs than the rows it is compared with): each batch of B real images (all FERSNet
losses, as the gated row) gets ``n_per_batch(B, synth_ratio)`` synthetic images whose
classification loss is added (the synthetic images have no synthesis targets).
``synth/expr_acc`` = share of the synthetic images the gated model's own classifier
assigns to their target expression.

Protocol (``fer.training.protocol``): training sees the train split only (pairs too);
every row trains through ``fer.training.driver.train_epochs`` (epoch selection on
the validation split by classification only; discriminator, its optimizer, scheduler and
GradScaler travel in the resume file, so a killed run resumes exactly); the test split is
predicted once after training (``test_selected``, with ``classify``). The authors kept
the best TEST epoch (optimistic); we select on val and also report the last epoch's test
accuracy (``test/last_epoch_acc``).

Outputs: ``out_model`` (``save_weights``; ``load_fersnet`` rebuilds it), ``out_metrics``
(``FERSNET_METRIC_KEYS``), ``out_curve`` (``FERSNET_CURVE_COLUMNS``, unweighted epoch means
of the loss terms; ``train/loss`` is the weighted objective), ``out_dir``:
``synthesis_grid.png`` (rows: validation faces; columns: source, then one synthesised
face per expression in class order) and ``synthesis.json`` (validation synthesis checks;
no PNG for ``single``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from fer.losses.fersnet import SYNTHESIS_TERMS, lsgan_discriminator_loss, synthesis_loss
from fer.models.fersnet import FERSNet, FERSNetRecognizer, PatchDiscriminator
from fer.params import FERSNET_VARIANTS, FersnetParams, to_dict
from fer.training.augment import augment_batch
from fer.training.batches import MEAN, STD, ImageStore, model_input, normalize, num_steps, to_uint8
from fer.training.checkpoint import load_weights
from fer.training.driver import EpochContext, FitResult, StepOutput, fingerprint, train_epochs
from fer.training.inference import predict
from fer.training.optim import TrainSetup, eval_batch_size, grad_scaler, place_model
from fer.training.prototypes import expression_prototypes
from fer.training.protocol import CURVE_COLUMNS, METRIC_KEYS, Fold, FoldOutputs, finish_fold
from fer.training.samplers import CycledSet, n_per_batch
from fer.utils.digest import digest
from fer.utils.images import save_png, tile_grid
from fer.utils.io import write_json
from fer.utils.precision import Precision
from fer.utils.seed import derived_seed

__all__ = [
    "FERSNET_CURVE_COLUMNS",
    "FERSNET_METRIC_KEYS",
    "FERSNET_TERMS",
    "VARIANTS",
    "draw_targets",
    "forward_classes",
    "frozen_recognition",
    "load_fersnet",
    "pair_candidates",
    "run_fersnet_fold",
    "synthesise_set",
]

#: Ablation rows (the authors' README order; ``fer.params.FERSNET_VARIANTS``).
VARIANTS: tuple[str, ...] = FERSNET_VARIANTS
#: Network sharing of each row.
SHARING_OF: dict[str, str] = {"single": "single", "hard": "hard", "gated": "gated", "synth": "gated"}
#: Per-epoch terms added to the history rows and the curve (0 where a term is off).
FERSNET_TERMS: tuple[str, ...] = ("train/cls", "train/cls_syn", *SYNTHESIS_TERMS, "D/adv", "gate/z_rec", "gate/z_syn")
FERSNET_CURVE_COLUMNS: tuple[str, ...] = (*CURVE_COLUMNS, *FERSNET_TERMS)
#: Keys of the metrics JSON: the baseline's plus the row and synthesis checks (None when
#: not applicable).
FERSNET_METRIC_KEYS: tuple[str, ...] = (
    *METRIC_KEYS, "variant", "synth/n_images", "synth/expr_acc", "synth_val/l1", "synth_val/expr_acc",
)
GRID_FILE = "synthesis_grid.png"
SYNTHESIS_JSON = "synthesis.json"


# ------------------------------------------------------------------- expression term
def frozen_recognition(model: FERSNetRecognizer, prec: Precision = Precision()) -> Callable[[Tensor], Tensor]:
    """The critic of the ``w_expr`` term: images -> logits (N, K) of the model's
    recognition path in eval mode (running BatchNorm statistics, no dropout) with its
    parameters detached, so a loss on them sends gradient to the images only; the model's
    weights, BatchNorm statistics and train/eval mode are left as they were, and the gate
    means this pass records are discarded (the epoch's gate log is the training pass's)."""

    def score(images: Tensor) -> Tensor:
        frozen = {k: p.detach() for k, p in model.named_parameters()}
        was_training = model.training
        model.eval()
        try:
            with prec.autocast():
                out = functional_call(model, frozen, (images,)).float()  # N, K
        finally:
            model.train(was_training)
        model.net.gate_means()  # this pass's gates are not logged
        return out

    return score


# ------------------------------------------------------------------------------ pairs
def pair_candidates(labels: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Synthesis targets of every image: the images of the SAME subject with a DIFFERENT
    expression, among the arrays given (pass the training split only).

    Returns:
        (candidates int64 (N, M) padded with -1, counts int64 (N,)); M = max count (>= 1).
    """
    labels, subjects = np.asarray(labels), np.asarray(subjects)
    if labels.shape != subjects.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and subjects {subjects.shape} must be equal 1-D arrays")
    lists = []
    for i in range(len(labels)):
        lists.append(np.flatnonzero((subjects == subjects[i]) & (labels != labels[i])))
    counts = np.array([len(c) for c in lists], dtype=np.int64)
    cand = np.full((len(labels), max(1, int(counts.max(initial=0)))), -1, dtype=np.int64)
    for i, c in enumerate(lists):
        cand[i, : len(c)] = c
    return cand, counts


def draw_targets(cand: Tensor, counts: Tensor, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """One uniformly drawn candidate per index (CPU tensors; one draw per index whatever
    the counts, so the stream is reproducible). Indices without a candidate map to
    themselves with ``valid = False``. Returns (targets (B,), valid (B,) bool)."""
    u = torch.rand(idx.numel(), generator=g)  # B
    n = counts[idx]  # B
    valid = n > 0
    k = torch.minimum((u * n).long(), (n - 1).clamp(min=0))  # B
    picked = cand[idx, k]  # B
    return torch.where(valid, picked, idx), valid


# --------------------------------------------------------------------- optimisation
def _milestone_factor(step: int, *, steps_per_epoch: int, milestones: tuple[int, ...]) -> float:
    """LR factor of optimizer step ``step``: x0.1 for each milestone epoch completed."""
    done = step // steps_per_epoch
    return 0.1 ** sum(done >= m for m in milestones)


def _adam(params: Any, fc: FersnetParams, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(fc.beta1, fc.beta2), weight_decay=fc.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, steps_per_epoch: int, milestones: tuple[int, ...]) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(_milestone_factor, steps_per_epoch=steps_per_epoch, milestones=milestones)
    )


def _setup(
    model: nn.Module, fc: FersnetParams, n_train: int, *, lr: float, milestones: tuple[int, ...], device: torch.device
) -> TrainSetup:
    """The shared driver's ``TrainSetup`` with this method's Adam and milestone schedule."""
    prec = place_model(model, device, amp=fc.amp, channels_last=fc.channels_last)
    spe = num_steps(n_train, fc.batch_size)
    # the class offsets (any parameter named ``offsets``, wherever the model wraps the
    # network) are images, not weights: no L2 pull towards a blank edit
    no_decay = [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "offsets"]
    if not no_decay:
        opt = _adam(model.parameters(), fc, lr)
    else:
        rest = [p for p in model.parameters() if all(p is not q for q in no_decay)]
        opt = _adam([{"params": rest}, {"params": no_decay, "weight_decay": 0.0}], fc, lr)
    return TrainSetup(
        device=device,
        optimizer=opt,
        scheduler=_scheduler(opt, spe, milestones),
        scaler=grad_scaler(prec.amp_dtype),
        criterion=nn.CrossEntropyLoss(label_smoothing=fc.label_smoothing),
        amp_dtype=prec.amp_dtype,
        channels_last=prec.channels_last,
        steps_per_epoch=spe,
        eval_batch_size=eval_batch_size(fc.batch_size),
    )


class _Discriminator:
    """The conditional PatchGAN with its optimiser, schedule and GradScaler: ``update``
    takes its ``d_steps`` LSGAN steps on (real target, fake) pairs, ``score`` rates
    synthesised images with the updated weights frozen (gradient to the images only)."""

    def __init__(self, channels: int, num_classes: int, fc: FersnetParams, steps_per_epoch: int,
                 milestones: tuple[int, ...], prec: Precision, device: torch.device) -> None:
        self.net = PatchDiscriminator(channels, num_classes, fc.disc_width, fc.disc_layers).to(device)
        self.opt = _adam(self.net.parameters(), fc, fc.lr)
        self.sched = _scheduler(self.opt, steps_per_epoch, milestones)
        self.scaler = grad_scaler(prec.amp_dtype)
        self.d_steps, self.prec = fc.d_steps, prec

    def state(self) -> dict[str, Any]:
        """The objects the resume file carries."""
        return {"discriminator": self.net, "d_optimizer": self.opt, "d_scheduler": self.sched, "d_scaler": self.scaler}

    def update(self, real: Tensor, fake: Tensor, cond: Tensor) -> Tensor:
        """``d_steps`` optimiser steps on the LSGAN loss; returns the last loss (detached)."""
        loss = torch.zeros((), device=real.device)
        for _ in range(self.d_steps):
            self.opt.zero_grad(set_to_none=True)
            with self.prec.autocast():
                d_real, d_fake = self.net(real, cond).float(), self.net(fake, cond).float()
            loss = lsgan_discriminator_loss(d_real, d_fake)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        self.sched.step()
        return loss.detach()

    def score(self, images: Tensor, cond: Tensor) -> Tensor:
        """Patch scores of ``images`` under the current weights, which get no gradient."""
        frozen = {k: p.detach() for k, p in self.net.named_parameters()}
        with self.prec.autocast():
            return functional_call(self.net, frozen, (images, cond)).float()  # V, 1, h, w


@torch.no_grad()
def synthesise_set(
    net: FERSNet,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    per_image: int,
    seed: int,
    device: torch.device | str,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-express every image into other expressions with the synthesis branch (eval).

    Targets of an image of class a: every class present in ``labels`` other than a
    (``per_image = 0``), else ``per_image`` of them drawn uniformly without replacement
    (seeded; all of them when fewer exist). Returns (uint8 (M, H, W, C), target labels
    (M,), source index (M,)); with all targets and all classes present, real + synthetic
    has exactly len(labels) images per class.
    """
    if not net.has_synthesis:
        raise ValueError("the model has no synthesis branch (sharing='single')")
    device = torch.device(device)
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    rng = np.random.default_rng(derived_seed(seed, 0x5A17))
    src, tgt = [], []
    for i, a in enumerate(labels):
        others = present[present != a]
        if 0 < per_image < len(others):
            others = np.sort(rng.choice(others, size=per_image, replace=False))
        src += [i] * len(others)
        tgt += others.tolist()
    src_a, tgt_a = np.asarray(src, dtype=np.int64), np.asarray(tgt, dtype=np.int64)
    if len(src_a) == 0:
        raise ValueError("no synthesis target: the training split holds a single expression")
    was_training = net.training
    net.eval()
    store = ImageStore(images, device)
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(src_a), batch_size):
            s = torch.from_numpy(src_a[start : start + batch_size])
            e = F.one_hot(torch.from_numpy(tgt_a[start : start + batch_size]), num_classes).float().to(device)  # B, K
            a = F.one_hot(torch.from_numpy(labels[s.numpy()]), num_classes).float().to(device)  # B, K
            out.append(to_uint8(net.synthesise(normalize(store.batch(s)), e, a)))
    finally:
        net.train(was_training)
    return np.concatenate(out), tgt_a, src_a


@torch.no_grad()
def _validation_synthesis(
    net: FERSNet, x_val: np.ndarray, y_val: np.ndarray, s_val: np.ndarray, num_classes: int,
    device: torch.device, grid_rows: int,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Synthesis checks on the validation split (after training; never used to select):
    ``synth_val/l1`` = mean L1 (in [-1, 1] units, as ``G/l1``) between G(x, b) and every
    real validation image of x's subject with expression b != a; ``synth_val/expr_acc`` =
    share of G(x, b), b != a, that the model classifies as b. Returns them and the grid."""
    net.eval()
    store = ImageStore(x_val, device)
    n = len(y_val)
    syn = torch.empty((num_classes, n, x_val.shape[3], x_val.shape[1], x_val.shape[2]))  # K, N, C, H, W
    pred = torch.empty((num_classes, n), dtype=torch.long)  # K, N
    for start in range(0, n, 128):
        idx = torch.arange(start, min(start + 128, n))
        x = normalize(store.batch(idx))  # B, C, H, W
        a = F.one_hot(torch.from_numpy(np.asarray(y_val, dtype=np.int64)[idx.numpy()]), num_classes).float().to(device)
        for b in range(num_classes):
            e = F.one_hot(torch.full((len(idx),), b, dtype=torch.long), num_classes).float().to(device)
            out = net.synthesise(x, e, a).float().clamp(-1, 1)  # B, C, H, W (a residual edit may leave the range)
            syn[b, idx] = out.cpu()
            pred[b, idx] = net.classify(out).argmax(1).cpu()
    real = torch.from_numpy(np.ascontiguousarray(x_val)).permute(0, 3, 1, 2).float() / 255 * 2 - 1  # N, C, H, W
    l1s: list[float] = []
    hits, total = 0, 0
    for i in range(n):
        for b in range(num_classes):
            if b == y_val[i]:
                continue
            hits += int(pred[b, i] == b)
            total += 1
            for j in np.flatnonzero((s_val == s_val[i]) & (y_val == b)):
                l1s.append(float((syn[b, i] - real[j]).abs().mean()))
    checks = {
        "synth_val/l1": float(np.mean(l1s)) if l1s else None,
        "synth_val/n_pairs": len(l1s),
        "synth_val/expr_acc": hits / total if total else None,
    }
    grid = None
    if grid_rows > 0:
        rows = np.unique(np.linspace(0, n - 1, min(grid_rows, n)).round().astype(int))
        tiles = [[x_val[r]] + [to_uint8(syn[b, r : r + 1])[0] for b in range(num_classes)] for r in rows]
        grid = tile_grid(tiles)
        checks["grid_rows"] = rows.tolist()
    return checks, grid


# ------------------------------------------------------------------------- weights
def _meta(net: FERSNet, fc: FersnetParams, variant: str, classes: Sequence[str], result: FitResult, seed: int) -> dict[str, Any]:
    return {
        "method": "fersnet",
        "variant": variant,
        "sharing": net.sharing,
        "num_classes": net.num_classes,
        "classes": list(classes),
        "in_channels": net.in_channels,
        "input_size": [net.input_size, net.input_size],
        "width": net.width,
        "stages": net.stages,
        "gate_kernel": net.gate_kernel,
        "dropout": float(net.dropout.p),
        "synthesis": net.synthesis,
        "normalization": {"mean": MEAN, "std": STD},
        "best_epoch": int(result.best_epoch),
        "best_metric": float(result.best_metric),
        "select_metric": fc.select_metric,
        "seed": int(seed),
        "fersnet_config": to_dict(fc),
    }


def load_fersnet(path: str | Path, device: torch.device | str = "cpu") -> tuple[FERSNet, dict[str, Any]]:
    """Rebuild a FERSNet saved by ``run_fersnet_fold`` (eval mode) and return its meta.
    ``FERSNetRecognizer(net)`` gives the plain ``forward(x) -> logits`` recogniser."""
    state, meta = load_weights(path)
    if meta.get("method") != "fersnet":
        raise ValueError(f"{path}: not a FERSNet weights file (method={meta.get('method')!r})")
    net = FERSNet(
        meta["num_classes"], meta["in_channels"], meta["width"], input_size=int(meta["input_size"][0]),
        sharing=meta["sharing"], gate_kernel=meta["gate_kernel"], stages=meta["stages"], dropout=meta["dropout"],
        synthesis=str(meta.get("synthesis", "unet")),
    )
    net.load_state_dict(state)
    return net.to(device).eval(), meta


def _strip(state: Mapping[str, Tensor], prefix: str = "net.") -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


# ------------------------------------------------------------------------- one fold
def run_fersnet_fold(
    fold: Fold,
    fc: FersnetParams,
    out: FoldOutputs,
    *,
    variant: str,
    identity: nn.Module | None,
    init_weights: Path | None,
    out_dir: Path,
    on_epoch_end: Callable[[FERSNet, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train, select (val) and test (once) one FERSNet ablation row on one fold.

    Args:
        fold: the fold, with subject ids (training pairs: same subject, other
            expression); square images, side divisible by 2**fc.stages.
        fc: hyper-parameters.
        out: model, metrics, curve, resume file, JSON-lines log.
        variant: one of ``VARIANTS``.
        identity: frozen identity embedder ((N, C, H, W) in [-1, 1] -> (N, D);
            ``fer.methods.identity.load_identity_net``) for the identity term of
            ``hard``/``gated``; may be None for ``single`` and ``synth`` (no synthesis
            losses there) or when ``fc.w_id == 0``.
        init_weights: the fold's ``gated`` model file for ``synth``; must be None otherwise.
        out_dir: directory for the synthesis grid and JSON.
        on_epoch_end: called with (the network as it is after the epoch, the epoch's row)
            after each epoch (the generator benchmark probes the synthesis branch there;
            it must leave the network's mode and the random generators as it found them).
    Returns:
        The metrics dict written (keys ``FERSNET_METRIC_KEYS``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if fold.subjects is None:
        raise ValueError("FERSNet needs the fold's subject ids (synthesis pairs)")
    num_classes, device, seed = fold.num_classes, fold.device, fold.seed
    height, width, channels = fold.height, fold.width, fold.channels
    if height != width:
        raise ValueError(f"FERSNet needs square images, got {height}x{width}")
    if (variant == "synth") != (init_weights is not None):
        raise ValueError("init_weights (the fold's gated model) is required for variant 'synth' and only there")
    synth_losses = variant in ("hard", "gated", "synth")
    if synth_losses and identity is None and fc.w_id > 0:
        raise ValueError(f"variant {variant!r} needs the identity network (or fersnet.w_id = 0)")

    (xtr, ytr), (xva, yva) = fold.part("train"), fold.part("val")
    str_ = fold.subjects[fold.idx["train"]]

    torch.manual_seed(seed)
    net = FERSNet(
        num_classes, channels, fc.width, input_size=height, sharing=SHARING_OF[variant],
        gate_kernel=fc.gate_kernel, stages=fc.stages, dropout=fc.dropout,
        synthesis=fc.synthesis,
    )
    if net.offsets is not None:  # the class offsets start at the class-typical change of the training faces
        net.init_offsets(fc.proto_scale * expression_prototypes(xtr, ytr, num_classes, str_))
    extra_fp: dict[str, Any] = {"fersnet": to_dict(fc), "variant": variant}
    synth_info: dict[str, Any] = {"synth/n_images": None, "synth/expr_acc": None}
    synthetic: tuple[np.ndarray, np.ndarray] | None = None
    if init_weights is not None:
        state, meta = load_weights(init_weights)
        want = {"method": "fersnet", "sharing": "gated", "num_classes": num_classes, "in_channels": channels,
                "input_size": [height, width], "width": fc.width, "stages": fc.stages, "gate_kernel": fc.gate_kernel,
                "synthesis": fc.synthesis}
        bad = {k: meta.get(k) for k, v in want.items() if meta.get(k) != v}
        if bad:
            raise ValueError(f"{init_weights}: not this fold's gated FERSNet ({bad} differ from {want})")
        source = FERSNet(num_classes, channels, fc.width, input_size=height, sharing="gated",
                         gate_kernel=fc.gate_kernel, stages=fc.stages, dropout=fc.dropout,
                         synthesis=fc.synthesis)
        source.load_state_dict(state)
        source.to(device)
        extra_fp["init"] = digest(source)
        xsy, ysy, _ = synthesise_set(source, xtr, ytr, num_classes=num_classes, per_image=fc.synth_per_image,
                                     seed=seed, device=device)
        ok = (forward_classes(source, xsy, device) == ysy).mean()
        synth_info = {"synth/n_images": int(len(ysy)), "synth/expr_acc": float(ok)}
        synthetic = (xsy, ysy)
        extra_fp["synthetic"] = digest(xsy, ysy, sample=True)

    model = FERSNetRecognizer(net)
    setup = _setup(model, fc, len(ytr), lr=fc.lr, milestones=fc.lr_milestones, device=device)
    prec = setup.evaluation.precision
    g_pair = torch.Generator().manual_seed(derived_seed(seed, 0xFE25))
    eye = torch.eye(num_classes, device=device)

    disc: _Discriminator | None = None
    disc_state: dict[str, Any] = {}  # filled once the discriminator exists (resume file)
    use_id = synth_losses and fc.w_id > 0
    if synth_losses:
        cand_np, counts_np = pair_candidates(ytr, str_)
        if counts_np.max(initial=0) == 0:
            raise ValueError("no training subject has two expressions: no synthesis pairs")
        cand, counts = torch.from_numpy(cand_np), torch.from_numpy(counts_np)
        if use_id:
            assert identity is not None
            identity = identity.to(device).eval().requires_grad_(False)
            try:
                with torch.no_grad():
                    identity(model_input(ImageStore(xtr[:2], device).batch(torch.arange(2)), False))
            except Exception as exc:  # noqa: BLE001 - re-raised with context
                raise ValueError(f"the identity network does not accept these {channels}x{height}x{width} images: {exc}") from exc
            extra_fp["identity"] = digest(identity)
    fp = fingerprint(fc, model, (xtr, ytr), (xva, yva), num_classes, seed, extra_fp)
    g_syn = torch.Generator().manual_seed(derived_seed(seed, 0x5E7))
    syn_set = CycledSet(synthetic[0], synthetic[1], device, g_syn) if synthetic is not None else None
    zero = torch.zeros((), device=device)
    expression = frozen_recognition(model, prec)

    def gate_terms() -> dict[str, Tensor]:
        z = net.gate_means()
        return {} if z is None else {"gate/z_rec": z[0], "gate/z_syn": z[1]}

    def make_step(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
        nonlocal disc
        if synth_losses and fc.w_adv > 0:  # its initial weights come from the freshly seeded RNG
            disc = _Discriminator(channels, num_classes, fc, setup.steps_per_epoch, fc.lr_milestones, prec, device)
            disc_state.update(disc.state())

        def augmented(ib: Tensor) -> Tensor:
            return model_input(augment_batch(ctx.store.batch(ib), fc.augment, ctx.g_aug), setup.channels_last)

        def step_cls(ib: Tensor) -> StepOutput:
            x, y = augmented(ib), ctx.labels_of(ib)
            with prec.autocast():
                logits = net.classify(x)  # B, K
            cls = setup.criterion(logits.float(), y)
            return StepOutput(loss=cls, logits=logits, labels=y, terms={"train/cls": cls, **gate_terms()})

        def step_syn(ib: Tensor) -> StepOutput:
            tgt, valid = draw_targets(cand, counts, ib, g_pair)  # B, B
            y = ctx.labels_of(ib)  # B
            b_lab = torch.where(valid.to(device), ctx.labels_of(tgt), y)  # B
            state = ctx.g_aug.get_state()
            x = augmented(ib)
            ctx.g_aug.set_state(state)  # the target gets the source's transform
            t = augmented(tgt)
            with prec.autocast():
                logits, syn = net(x, eye[b_lab], eye[y])  # B, K / B, C, H, W
            cls = setup.criterion(logits.float(), y)
            terms = {"train/cls": cls, **gate_terms()}
            if not bool(valid.any()):
                terms.update({k: zero for k in (*SYNTHESIS_TERMS, "D/adv")})
                return StepOutput(loss=cls, logits=logits, labels=y, terms=terms)
            v = valid.to(device)
            sv, tv, ev = syn[v].float(), t[v], eye[b_lab[v]]  # V, C, H, W / V, K
            d_loss = [zero]

            def adversary(images: Tensor) -> Tensor:  # the discriminator's steps, then its frozen scores
                assert disc is not None
                d_loss[0] = disc.update(tv, images.detach(), ev)
                return disc.score(images, ev)

            def cycle(images: Tensor) -> Tensor:
                with prec.autocast():
                    back = net.synthesise(images, eye[y[v]], eye[b_lab[v]]).float()  # V, C, H, W
                net.gate_means()  # the cycle pass's gates are not logged
                return back

            loss, syn_terms = synthesis_loss(cls, sv, tv, fp=fc, identity=identity if use_id else None,
                                             adversary=adversary if disc is not None else None,
                                             cycle=cycle if fc.w_cycle > 0 else None, source=x[v],
                                             expression=expression if fc.w_expr > 0 else None,
                                             target_labels=b_lab[v], prec=prec)
            terms.update({**syn_terms, "D/adv": d_loss[0]})
            if syn_set is not None:  # the synth row: classification of the fold's synthetic images
                xs, ys, _ = syn_set.sample(n_per_batch(len(ib), fc.synth_ratio))
                xs = model_input(augment_batch(xs, fc.augment, ctx.g_aug), setup.channels_last)
                with prec.autocast():
                    cls_syn = setup.criterion(net.classify(xs).float(), ys)
                loss = loss + cls_syn
                terms["train/cls_syn"] = cls_syn
            return StepOutput(loss=loss, logits=logits, labels=y, terms=terms)

        return step_syn if synth_losses else step_cls

    result = train_epochs(
        model, setup, (xtr, ytr), (xva, yva),
        epochs=fc.epochs, batch_size=fc.batch_size, select_metric=fc.select_metric, num_classes=num_classes,
        seed=seed, fingerprint=fp, make_step=make_step, extra_rngs={"pairs": g_pair, "syn": g_syn},
        before_epoch=syn_set.start_epoch if syn_set is not None else None,
        extra_state=disc_state, resume_path=out.resume, log_path=out.log,
        on_epoch_end=None if on_epoch_end is None else (lambda row: on_epoch_end(net, row)),
    )

    out_dir = Path(out_dir)

    def validation_synthesis(selected: nn.Module) -> dict[str, Any]:
        """Synthesis checks of the selected model on the validation split, its grid and JSON."""
        out_dir.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {"variant": variant, "classes": list(fold.classes), "has_synthesis": net.has_synthesis}
        if net.has_synthesis:
            checks, grid = _validation_synthesis(net, xva, yva, fold.subjects[fold.idx["val"]], num_classes, device,
                                                 fc.grid_rows)
            report.update(checks)
            if grid is not None:
                save_png(out_dir / GRID_FILE, grid)
                report["grid"] = GRID_FILE
                report["grid_columns"] = ["source", *fold.classes]
        write_json(out_dir / SYNTHESIS_JSON, report)
        return {"synth_val/l1": report.get("synth_val/l1"), "synth_val/expr_acc": report.get("synth_val/expr_acc")}

    metrics = finish_fold(
        fold, model, result, setup.evaluation, out, meta=_meta(net, fc, variant, fold.classes, result, seed),
        extra_metrics={"variant": variant, **synth_info}, curve_columns=FERSNET_CURVE_COLUMNS,
        weights=_strip(result.best_state), after_test=validation_synthesis,
    )
    assert tuple(metrics) == FERSNET_METRIC_KEYS
    return metrics


def forward_classes(net: FERSNet, images: np.ndarray, device: torch.device, batch_size: int = 128) -> np.ndarray:
    """Predicted classes (argmax of ``classify``, eval mode) of uint8 images (N, H, W, C)."""
    return predict(net, images, device, batch_size, fn=net.classify).argmax(1)
