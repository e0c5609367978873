"""FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency
and Confidence", NeurIPS 2020) as a row of the comparison, one fold.

The recogniser is the baseline's (params section ``baseline``: architecture, width,
optimiser, schedule, epochs, start weights); the FixMatch settings are in section
``fixmatch``. Each step takes a batch of B labelled training images and
``unlabelled_ratio`` x B images of the fold's **unlabelled in-domain part** (a label
budget's training subjects whose labels are hidden, ``fer.data.budgets``; their labels
are masked before this code sees the fold and are never read):

* labelled: plain cross-entropy (the paper's; the baseline's label smoothing is left out,
  because it caps the model's confidence at 1 - s + s/K, below the usual threshold of
  0.95, so no pseudo-label would ever pass) on a weak view (horizontal flip and a shift of
  up to ``weak_shift`` of the side, the paper's weak augmentation);
* unlabelled: the model's prediction on a weak view gives a hard pseudo-label where its
  confidence is at least ``threshold``; the cross-entropy of the prediction on a strong
  view (``fer.training.randaugment``: RandAugment-style operations + Cutout) against it,
  averaged over all unlabelled images (masked ones count as 0), weighted ``lambda_u``;
* one forward pass over the concatenated batch (shared BatchNorm statistics, as the
  authors' interleaving intends).

An epoch is one pass over the labelled training images, so the row trains
``baseline.epochs`` epochs like every compared row (equal budgets); model selection on the
fold's labelled validation subjects, as everywhere. With all labels the fold has no
unlabelled part: the row then trains on the labelled images alone with the weak view
(the report says so). Departures from the paper: no EMA model for evaluation (the
selected epoch's weights are tested, as for every row), the baseline's optimiser and
schedule instead of SGD with Nesterov momentum and a cosine decay over 2^20 steps, and
the demo's smaller ``unlabelled_ratio`` (the paper: 7).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fer.params import AugmentParams, FixmatchParams, RecognizerParams, to_dict
from fer.training.augment import augment_batch
from fer.training.batches import check_arrays, model_input
from fer.training.driver import EpochContext, StepOutput, fingerprint, supervised_step, train_epochs
from fer.training.optim import EvalSetup, setup_training
from fer.training.protocol import UNLABELLED, Fold, FoldOutputs, finish_fold, recognizer_meta
from fer.training.randaugment import strong_augment
from fer.training.samplers import CycledSet, n_per_batch
from fer.utils.digest import digest
from fer.utils.precision import amp_autocast

__all__ = ["fixmatch_loss", "run_fixmatch_fold", "weak_augment"]


def weak_augment(fm: FixmatchParams) -> AugmentParams:
    """The paper's weak augmentation: horizontal flip and a shift of up to ``weak_shift``."""
    return AugmentParams(hflip=True, rotate_deg=0.0, scale=0.0, shift=fm.weak_shift, brightness=0.0, contrast=0.0,
                         erasing=0.0)


def fixmatch_loss(
    logits_x: Tensor,
    labels: Tensor,
    logits_weak: Tensor,
    logits_strong: Tensor,
    *,
    threshold: float,
    lambda_u: float,
    criterion: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> tuple[Tensor, dict[str, Tensor]]:
    """FixMatch's objective: ``criterion(logits_x, labels) + lambda_u * L_u`` with
    ``L_u = mean_i 1[max p_i >= threshold] * CE(logits_strong_i, argmax p_i)``, ``p`` the
    softmax of the weak view's logits (no gradient through it). Returns the loss and its
    terms (``train/loss_x``, ``train/loss_u``, ``train/mask_rate``: the share of
    unlabelled images above the threshold)."""
    loss_x = criterion(logits_x, labels)
    with torch.no_grad():
        conf, pseudo = torch.softmax(logits_weak.detach().float(), dim=1).max(dim=1)
        mask = (conf >= threshold).float()
    loss_u = (F.cross_entropy(logits_strong.float(), pseudo, reduction="none") * mask).mean()
    return loss_x + lambda_u * loss_u, {"train/loss_x": loss_x.detach(), "train/loss_u": loss_u.detach(),
                                        "train/mask_rate": mask.mean()}


def run_fixmatch_fold(fold: Fold, cfg: RecognizerParams, fm: FixmatchParams, out: FoldOutputs) -> dict[str, Any]:
    """Train, select and test the FixMatch row on one fold; write its outputs (module
    docstring). Returns the metrics written."""
    device = fold.device
    model = fold.build_recognizer(cfg)
    train = check_arrays(fold.part("train"), "train", fold.num_classes)
    val = check_arrays(fold.part("val"), "val", fold.num_classes)
    unl_idx = fold.idx.get("unlabelled", np.zeros(0, dtype=np.int64))
    x_unl = fold.images[unl_idx]
    if len(unl_idx) and not np.all(fold.labels[unl_idx] == UNLABELLED):
        raise ValueError("the unlabelled part's labels must be masked (prepare_fold) before FixMatch sees it")
    setup = setup_training(model, cfg, train[1], num_classes=fold.num_classes, device=device)
    weak = weak_augment(fm)
    unl_seed, strong_seed = np.random.SeedSequence([fold.seed, 0xF1C]).generate_state(2)
    g_unl = torch.Generator().manual_seed(int(unl_seed))
    g_strong = torch.Generator().manual_seed(int(strong_seed))
    # Labels of the unlabelled images are not passed: the set carries UNLABELLED only.
    unl_set = CycledSet(x_unl, np.full(len(x_unl), UNLABELLED), device, g_unl) if len(x_unl) else None

    labels_only = supervised_step(model, setup, weak, device, criterion=F.cross_entropy, loss_term="train/loss_x")

    def make_step(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
        if unl_set is None:  # no unlabelled images (all labels): the supervised step on weak views
            return labels_only(ctx)

        def step(idx: Tensor) -> StepOutput:
            b = idx.numel()
            x_l = augment_batch(ctx.store.batch(idx), weak, ctx.g_aug)  # B, C, H, W
            y_l = ctx.labels_of(idx)  # B
            nu = n_per_batch(b, fm.unlabelled_ratio)
            xu, _, _ = unl_set.sample(nu)  # Nu, C, H, W in [0, 1]
            xu_weak = augment_batch(xu, weak, ctx.g_aug)
            xu_strong = strong_augment(xu, g_strong, n_ops=fm.strong_ops, magnitude=fm.strong_magnitude,
                                       cutout=fm.cutout)
            x = model_input(torch.cat([x_l, xu_weak, xu_strong]), setup.channels_last)  # B+2Nu, C, H, W
            with amp_autocast(device, setup.amp_dtype):
                logits = model(x).float()  # B+2Nu, K
            loss, terms = fixmatch_loss(logits[:b], y_l, logits[b : b + nu], logits[b + nu :],
                                        threshold=fm.threshold, lambda_u=fm.lambda_u)
            return StepOutput(loss=loss, logits=logits[:b], labels=y_l, terms=terms)

        return step

    def before_epoch() -> None:
        if unl_set is not None:
            unl_set.start_epoch()

    fp = fingerprint(cfg, model, train, val, fold.num_classes, fold.seed,
                     extra={"fixmatch": to_dict(fm), "unlabelled": digest(np.ascontiguousarray(x_unl[::8]))
                            if len(x_unl) else 0, "n_unlabelled": int(len(x_unl))})
    result = train_epochs(
        model, setup, train, val,
        epochs=cfg.epochs, batch_size=cfg.batch_size, select_metric=cfg.select_metric, num_classes=fold.num_classes,
        seed=fold.seed, fingerprint=fp, make_step=make_step, extra_rngs={"unl": g_unl, "strong": g_strong},
        before_epoch=before_epoch, resume_path=out.resume, log_path=out.log,
    )
    ev = EvalSetup.for_params(cfg, device)
    meta = recognizer_meta("fixmatch", cfg, fold.classes, fold.images.shape, result, fold.seed)
    meta["fixmatch"] = {**to_dict(fm), "n_unlabelled": int(len(x_unl))}
    best = result.selected_row()
    extra = {"n_unlabelled": int(len(x_unl)),
             "train/mask_rate": float(best["train/mask_rate"]) if "train/mask_rate" in best else None}
    return finish_fold(fold, model, result, ev, out, meta=meta, extra_metrics=extra)
