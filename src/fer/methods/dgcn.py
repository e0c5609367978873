"""Deep generative-contrastive networks (M2) as a comparison method, one fold.

Follows Kim, Yoo, Kwak, Choi, Kim, "Deep Generative-Contrastive Networks for Facial
Expression Recognition", arXiv 1703.07140 (v3 2019): an encoder-decoder generates a
reference face from the query; a contrastive encoder compares query and reference at the
embedding layer; a classifier works on that representation; generator and contrastive
encoder are learned in two steps, then end to end [paper]. Networks: ``fer.models.dgcn``.
Everything below that the abstract does not fix is the project's reading (``methods.md``
M2 [open]); the choices that matter are ``DGCNConfig`` fields.

Reference targets (``reference_target``; ``reference_targets``):

* "neutral": the query's reference is the MEAN of its subject's neutral images in the
  same split (deterministic; with one neutral onset frame per sequence it is that frame).
  A neutral query's reference is the mean of the subject's OTHER neutral images (itself
  when it is the subject's only one), so a neutral query is compared with a different
  neutral face rather than with itself. Needs a class named "neutral" and, for every
  subject whose references are needed, at least one neutral image: else ValueError.
* "subject_mean": the mean aligned face of all the subject's images in the split (for
  datasets without neutral images; label-free, transductive at val/test time).
Means are rounded to uint8 (the pipeline's image format). For training, the split is the
fold's TRAIN split only: a training query's target never comes from another subject or
another split.

Rows (``REFERENCES``):

* "generated" -- three steps, each driven by ``fer.training.driver.train_epochs``
  (exact resume from ``<resume_path>.step<k>``, one JSON-lines log per step, merged into
  ``log_path`` at the end):
  1. the generator alone, ``gen_epochs`` epochs, L1 between generator(query) and the
     query's reference target (both augmented by the SAME random transform: query and
     target are stacked on the channel axis before ``augment_batch``), Adam ``gen_lr``,
     betas (0.5, 0.999), the recogniser's LR schedule shape. Step 1 has no classifier, so
     there is no selection: the last epoch's generator is kept; the validation L1
     (``gen/val_l1``, against the val split's own reference targets; a diagnostic only) is
     logged each epoch; the classification columns of step-1 rows are NaN.
  2. contrastive encoder + classifier on (query, generator(query)), generator frozen (no
     gradient, not in the optimizer), ``cls_epochs`` epochs with the recogniser's
     section (optimizer, lr, schedule, augmentation, criterion); selection on the
     val split by ``cfg.select_metric``.
  3. end to end from step 2's selected state, ``e2e_epochs`` epochs: loss = CE +
     ``rec_weight`` * L1(generator(query), target); the recogniser's optimizer at
     ``cfg.lr * e2e_lr_scale`` (no warm-up) and the generator's Adam at
     ``gen_lr * e2e_lr_scale``, both on the recogniser's schedule shape; selection on val.
  The reported model is step 3's selected one unless step 2's selected one is strictly
  better on the val metric (``selected_step``); both are val-only choices.
* "real" -- no generator; the reference is the subject's real reference target: in
  training from the train split; at validation/test time the subject's own neutral
  image(s) from THAT split. That is the paper's oracle ablation: on sequence datasets the
  neutral onset frame is known without expression labels; here it is picked with the
  split's labels, which a deployed system would not have (with ``subject_mean`` it is
  label-free). ``cls_epochs + e2e_epochs`` epochs, one step (step 2 in the curve).
* "none" -- E(query) only, the same epoch count: the no-reference ablation.

The recogniser section's ``epochs`` is NOT used: the epoch counts are the ``dgcn`` section's.

Protocol (``fer.training.protocol``): training sees the train split only, selection the
val split only; the test split is predicted once after training (``test_selected`` on the
single-input ``DGCN`` module).

Outputs:
* ``out_model``: ``save_weights`` file of the selected ``DGCN`` (generator inside the same
  state dict, keys ``generator.*``); ``load_dgcn`` rebuilds it;
* ``out_metrics``: ``DGCN_METRIC_KEYS`` = baseline ``METRIC_KEYS`` + ``reference``,
  ``reference_target``, ``contrast``, ``selected_step``, ``gen/val_l1`` (val L1 of the
  reported generator, None without one); ``best_epoch`` counts epochs over all steps;
* ``out_curve``: ``DGCN_CURVE_COLUMNS`` = baseline ``CURVE_COLUMNS`` + ``step``,
  ``train/cls``, ``G/l1``, ``gen/val_l1`` (unweighted epoch means; 0 where a term is not
  computed, e.g. ``G/l1`` in the "real" and "none" rows; the classification columns of
  step-1 rows are NaN); one row per epoch of every step, ``epoch`` counted over all steps;
* ``out_dir``: ``references.png`` (a mosaic, one row each for query / generated reference
  / real target -- the rows present are listed in ``summary.json`` ``grid_rows`` -- for up
  to 8 validation images) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fer.models.dgcn import DGCN, ContrastiveNet, ReferenceGenerator
from fer.params import DGCN_REFERENCES, SELECT_METRICS, DgcnParams, RecognizerParams, build, to_dict
from fer.params.sections import REFERENCE_TARGETS
from fer.training.augment import augment_batch
from fer.training.batches import MEAN, STD, ImageStore, model_input, to_uint8
from fer.training.checkpoint import clear_resume, cpu_state_dict, load_weights
from fer.training.driver import EpochContext, FitResult, StepOutput, fingerprint, train_epochs
from fer.training.optim import make_lr_scheduler, setup_training
from fer.training.protocol import CURVE_COLUMNS, METRIC_KEYS, Fold, FoldOutputs, finish_fold
from fer.utils.digest import digest
from fer.utils.images import save_png, tile_grid
from fer.utils.io import write_json, write_text
from fer.utils.precision import amp_autocast
from fer.utils.seed import derived_seed

__all__ = [
    "DGCN_CURVE_COLUMNS",
    "DGCN_METRIC_KEYS",
    "DGCN_TERMS",
    "REFERENCES",
    "REFERENCE_TARGETS",
    "build_dgcn",
    "load_dgcn",
    "reference_targets",
    "run_dgcn_fold",
    "train_dgcn",
]

#: The rows (params ``fer.params.DGCN_REFERENCES``).
REFERENCES: tuple[str, ...] = DGCN_REFERENCES
#: Per-epoch loss terms added to the history rows and the curve (``gen/val_l1`` is the
#: generator's validation L1, a diagnostic; the name is shared with the metrics JSON).
DGCN_TERMS: tuple[str, ...] = ("train/cls", "G/l1", "gen/val_l1")
DGCN_METRIC_KEYS: tuple[str, ...] = (
    *METRIC_KEYS, "reference", "reference_target", "contrast", "selected_step", "gen/val_l1",
)
DGCN_CURVE_COLUMNS: tuple[str, ...] = (*CURVE_COLUMNS, "step", *DGCN_TERMS)
#: Validation images shown in ``references.png``.
N_SHOW = 8


# ------------------------------------------------------------------------ references
def reference_targets(
    images: np.ndarray,
    labels: np.ndarray,
    subjects: np.ndarray,
    indices: np.ndarray,
    classes: Sequence[str],
    target: str,
    *,
    split_name: str,
) -> np.ndarray:
    """Reference target of every image of one split, from that split only.

    Args:
        images: uint8 (N, H, W, C); labels: int (N,); subjects: (N,) subject ids.
        indices: the split's indices into them.
        classes: class names (``target="neutral"`` needs "neutral").
        target: "neutral" or "subject_mean" (module docstring).
        split_name: named in error messages.
    Returns:
        uint8 (len(indices), H, W, C): row i is the reference of ``images[indices[i]]``.
    """
    if target not in REFERENCE_TARGETS:
        raise ValueError(f"reference target must be one of {REFERENCE_TARGETS}, got {target!r}")
    idx = np.asarray(indices, dtype=np.int64)
    x = np.asarray(images[idx], dtype=np.float64)  # n, H, W, C
    subj = np.asarray(subjects)[idx]
    y = np.asarray(labels)[idx]
    out = np.empty_like(x)
    if target == "neutral":
        if "neutral" not in classes:
            raise ValueError(
                f"reference_target 'neutral' needs a 'neutral' class, classes are {list(classes)}; "
                "use reference_target: subject_mean"
            )
        neutral = list(classes).index("neutral")
    for s in np.unique(subj):
        mine = np.flatnonzero(subj == s)
        if target == "subject_mean":
            out[mine] = x[mine].mean(axis=0)
            continue
        neu = mine[y[mine] == neutral]
        if neu.size == 0:
            raise ValueError(
                f"subject {str(s)!r} has no neutral image in the {split_name} split: it has no "
                "neutral reference (use reference_target: subject_mean)"
            )
        total = x[neu].sum(axis=0)
        out[mine] = total / neu.size
        if neu.size > 1:  # a neutral query: mean of the subject's OTHER neutral images
            out[neu] = (total[None] - x[neu]) / (neu.size - 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _pairs(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Query and reference stacked on the channel axis: (n, H, W, C) x2 -> (n, H, W, 2C)."""
    return np.ascontiguousarray(np.concatenate([x, ref], axis=3))


# -------------------------------------------------------------------------- networks
def build_dgcn(
    cfg: RecognizerParams, dg: DgcnParams, reference: str, num_classes: int, image_shape: Sequence[int]
) -> DGCN:
    """A freshly initialised DGCN (uses the global torch RNG; seed it first).
    ``image_shape`` is one image's (H, W, C)."""
    height, width, channels = (int(s) for s in image_shape)
    contrast = "none" if reference == "none" else dg.contrast
    contrastive = ContrastiveNet(
        cfg.arch, num_classes, channels, cfg.width, input_size=max(height, width),
        contrast=contrast, dropout=dg.dropout,
    )
    generator = None
    if reference == "generated":
        generator = ReferenceGenerator(channels, dg.gen_width, (height, width), dg.latent_dim)
    return DGCN(contrastive, reference, channels, generator)


def load_dgcn(path: str | Path, device: torch.device | str = "cpu") -> tuple[DGCN, dict[str, Any]]:
    """Rebuild a DGCN saved by ``run_dgcn_fold`` (eval mode) and return its meta."""
    state, meta = load_weights(path)
    if meta.get("method") != "dgcn":
        raise ValueError(f"{path}: not a DGCN weights file (method {meta.get('method')!r})")
    model = build_dgcn(
        build(RecognizerParams, meta["train_config"], "train_config"),
        build(DgcnParams, meta["dgcn_config"], "dgcn_config"),
        meta["reference"],
        meta["num_classes"],
        (*meta["input_size"], meta["in_channels"]),
    )
    model.load_state_dict(state)
    return model.to(device).eval(), meta


class _GeneratorProbe(nn.Module):
    """Step 1's model for the epoch driver: the generator (its state is what is saved and
    resumed). Step 1 has no classifier; ``forward`` returns constant zero logits, so the
    driver's validation columns carry no information and are blanked (NaN) afterwards."""

    def __init__(self, generator: ReferenceGenerator, num_classes: int) -> None:
        super().__init__()
        self.generator = generator
        self.num_classes = int(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Zero logits (N, K)."""
        return x.new_zeros((x.shape[0], self.num_classes))


# -------------------------------------------------------------------------- training
@dataclass
class _Step:
    number: int
    result: FitResult
    setup: Any  # the step's TrainSetup


def _blank_classification(row: dict[str, float]) -> dict[str, float]:
    out = dict(row)
    for key in ("train/acc", "val/loss", "val/acc", "val/mean_class_acc", "val/macro_f1"):
        out[key] = math.nan
    return out


@torch.no_grad()
def _val_l1(generator: ReferenceGenerator, pairs_va: ImageStore | None, batch: int, c: int) -> float:
    """Mean L1 (normalised space) between generator(val query) and its val target."""
    if pairs_va is None:
        return math.nan
    was = generator.training
    generator.eval()
    total, n = 0.0, len(pairs_va)
    try:
        for start in range(0, n, batch):
            xb = model_input(pairs_va.batch(torch.arange(start, min(start + batch, n))), False)
            total += (generator(xb[:, :c]).float() - xb[:, c:]).abs().mean(dim=(1, 2, 3)).sum().item()
    finally:
        generator.train(was)
    return total / n


def _step_log(log_path: Path | None, step: int) -> Path | None:
    return None if log_path is None else Path(f"{log_path}.step{step}")


def _step_resume(resume_path: Path | None, step: int) -> Path | None:
    return None if resume_path is None else Path(f"{resume_path}.step{step}")


def train_dgcn(
    model: DGCN,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    val_pairs: np.ndarray | None,
    cfg: RecognizerParams,
    dg: DgcnParams,
    *,
    num_classes: int,
    device: torch.device,
    seed: int,
    resume_path: Path | None,
    log_path: Path | None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[FitResult, int, list[dict[str, float]], Any]:
    """Train ``model`` by the steps of its row (module docstring).

    Args:
        model: freshly built ``DGCN`` (seeded).
        train: (uint8 query + reference target pairs (N, H, W, 2C), int64 labels).
        val: (uint8 validation inputs of ``model`` -- pairs for "real", queries else,
            int64 labels).
        val_pairs: val queries + their reference targets (N, H, W, 2C) for the
            generator's ``gen/val_l1`` diagnostic, or None.
        cfg, dg: the recogniser's and DGCN's parameters.
        on_epoch_end: called with (step, row) after each epoch (tests use it).
    Returns:
        (FitResult of the reported model with ``best_epoch`` and ``history`` counted over
        all steps, the selected step, the merged history rows, the reported step's
        evaluation settings).
    """
    ytr = train[1]
    c = model.in_channels
    store_vp = ImageStore(val_pairs, device) if val_pairs is not None else None
    eval_bs = max(2 * cfg.batch_size, 128)
    gen = model.generator
    base_extra = {"dgcn": to_dict(dg), "reference": model.reference}
    steps: list[_Step] = []

    def cb(step: int) -> Callable[[dict[str, float]], None] | None:
        return None if on_epoch_end is None else (lambda row: on_epoch_end(step, row))

    def pair_batch(ctx: EpochContext, idx: Tensor) -> tuple[Tensor, Tensor]:
        xb = augment_batch(ctx.store.batch(idx), cfg.augment, ctx.g_aug)  # B, 2C, H, W (same warp)
        xb = model_input(xb, ctx.setup.channels_last)
        return xb[:, :c], xb[:, c:]  # query, reference target: B, C, H, W each

    def add_val_l1(row: dict[str, float]) -> None:
        assert gen is not None
        row["gen/val_l1"] = _val_l1(gen, store_vp, eval_bs, c)

    def run(step: int, net: nn.Module, cfg_k: RecognizerParams, setup: Any, make_step: Any, extra: dict[str, Any],
            **kw: Any) -> FitResult:
        fp = fingerprint(cfg_k, net, train, val, num_classes, seed, {**base_extra, **extra, "step": step})
        result = train_epochs(
            net, setup, train, val, epochs=cfg_k.epochs, batch_size=cfg.batch_size,
            select_metric=cfg_k.select_metric, num_classes=num_classes, seed=derived_seed(seed, 0xD6C, step),
            fingerprint=fp, make_step=make_step, resume_path=_step_resume(resume_path, step),
            log_path=_step_log(log_path, step), on_epoch_end=cb(step), **kw,
        )
        steps.append(_Step(step, result, setup))
        return result

    # ---- step 1: the generator alone (no selection: it keeps its last-epoch weights)
    if gen is not None:
        probe = _GeneratorProbe(gen, num_classes)
        cfg1 = dataclasses.replace(
            cfg, epochs=dg.gen_epochs, optimizer="adamw", lr=dg.gen_lr, momentum=0.5,
            weight_decay=0.0, label_smoothing=0.0, class_weighting="none",
        )
        setup1 = setup_training(probe, cfg1, ytr, num_classes=num_classes, device=device)

        def make_step1(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
            def step1(idx: Tensor) -> StepOutput:
                q, t = pair_batch(ctx, idx)
                with amp_autocast(device, setup1.amp_dtype):
                    r = gen(q)  # B, C, H, W
                l1 = (r.float() - t.float()).abs().mean()
                return StepOutput(loss=l1, logits=q.new_zeros((q.shape[0], num_classes)), labels=ctx.labels_of(idx),
                                  terms={"G/l1": l1})

            return step1

        run(1, probe, cfg1, setup1, make_step1, {}, after_epoch=add_val_l1)
        gen.zero_grad(set_to_none=True)
        gen.requires_grad_(False)

    # ---- step 2: contrastive net + classifier (generator frozen); the only step of
    # the "real" and "none" rows, which get cls_epochs + e2e_epochs epochs
    epochs2 = dg.cls_epochs if gen is not None else dg.cls_epochs + dg.e2e_epochs
    cfg2 = dataclasses.replace(cfg, epochs=epochs2)
    setup2 = setup_training(model, cfg2, ytr, num_classes=num_classes, device=device)

    def make_step2(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
        def step2(idx: Tensor) -> StepOutput:
            q, t = pair_batch(ctx, idx)
            yb = ctx.labels_of(idx)
            terms: dict[str, Tensor] = {}
            with amp_autocast(device, setup2.amp_dtype):
                if model.reference == "generated":
                    assert gen is not None
                    with torch.no_grad():
                        r = gen(q)  # B, C, H, W (frozen)
                    terms["G/l1"] = (r.float() - t.float()).abs().mean()
                    logits = model.contrastive(q, r)
                elif model.reference == "real":
                    logits = model.contrastive(q, t)
                else:
                    logits = model.contrastive(q)
            cls = setup2.criterion(logits.float(), yb)
            terms["train/cls"] = cls
            return StepOutput(loss=cls, logits=logits, labels=yb, terms=terms)

        return step2

    res2 = run(2, model, cfg2, setup2, make_step2,
               {"generator": digest(cpu_state_dict(gen.state_dict()))} if gen is not None else {},
               after_epoch=add_val_l1 if gen is not None else None)

    # ---- step 3: end to end from step 2's selection
    if gen is not None:
        model.load_state_dict(res2.best_state)
        cfg3 = dataclasses.replace(cfg, epochs=dg.e2e_epochs, lr=cfg.lr * dg.e2e_lr_scale, warmup_epochs=0)
        gen.requires_grad_(False)  # keep it out of the recogniser's optimizer
        setup3 = setup_training(model, cfg3, ytr, num_classes=num_classes, device=device)
        gen.requires_grad_(True)
        gen_opt = torch.optim.Adam(gen.parameters(), lr=dg.gen_lr * dg.e2e_lr_scale, betas=(0.5, 0.999))
        gen_sched = make_lr_scheduler(gen_opt, cfg3, setup3.steps_per_epoch)

        def make_step3(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
            def step3(idx: Tensor) -> StepOutput:
                q, t = pair_batch(ctx, idx)
                yb = ctx.labels_of(idx)
                with amp_autocast(device, setup3.amp_dtype):
                    r = gen(q)  # B, C, H, W
                    logits = model.contrastive(q, r)  # B, K
                cls = setup3.criterion(logits.float(), yb)
                rec = (r.float() - t.float()).abs().mean()
                return StepOutput(loss=cls + dg.rec_weight * rec, logits=logits, labels=yb,
                                  terms={"train/cls": cls, "G/l1": rec})

            return step3

        run(3, model, cfg3, setup3, make_step3, {"init": digest(res2.best_state)},
            extra_optimizers=(gen_opt,), extra_schedulers=(gen_sched,),
            extra_state={"gen_optimizer": gen_opt, "gen_scheduler": gen_sched}, after_epoch=add_val_l1)

    # ---- merge the steps' histories; pick the reported step (val only)
    history: list[dict[str, float]] = []
    offsets: dict[int, int] = {}
    for st in steps:
        offsets[st.number] = len(history)
        for row in st.result.history:
            row = _blank_classification(row) if st.number == 1 else dict(row)
            row["epoch"] = len(history) + 1
            row["step"] = st.number
            history.append(row)
    cls_steps = [st for st in steps if st.number > 1]
    chosen = cls_steps[-1]
    maximize = SELECT_METRICS[cfg.select_metric]
    for st in cls_steps[:-1]:  # an earlier step wins only when strictly better
        a, b = st.result.best_metric, chosen.result.best_metric
        if (a > b) if maximize else (a < b):
            chosen = st
    result = FitResult(
        best_state=chosen.result.best_state,
        best_epoch=offsets[chosen.number] + chosen.result.best_epoch,
        best_metric=chosen.result.best_metric,
        history=history,
        resumed_epochs=sum(st.result.resumed_epochs for st in steps),
    )
    if log_path is not None:
        write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))
    return result, chosen.number, history, chosen.setup.evaluation


# ----------------------------------------------------------------------------- outputs
@torch.no_grad()
def _generate(generator: ReferenceGenerator, x_uint8: np.ndarray, device: torch.device) -> np.ndarray:
    """generator over uint8 queries (n, H, W, C) -> uint8 references (n, H, W, C)."""
    generator.eval()
    store = ImageStore(x_uint8, device)
    return to_uint8(generator(model_input(store.batch(torch.arange(len(store))), False)))


# ----------------------------------------------------------------------------- one fold
def run_dgcn_fold(
    fold: Fold,
    cfg: RecognizerParams,
    dg: DgcnParams,
    out: FoldOutputs,
    *,
    reference: str,
    out_dir: Path,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train, select and test one DGCN row on one fold; write its outputs (module doc).

    Args:
        fold: the fold (with subject ids); H and W multiples of 16 for "generated".
        cfg: the recogniser's parameters (the baseline section; ``epochs`` unused).
        dg: DGCN parameters.
        out: model, metrics, curve; resume files are ``<out.resume>.step<k>`` and the
            merged JSON-lines log ``out.log`` (per-step logs ``<log>.step<k>`` meanwhile).
        reference: "generated", "real" or "none" (``REFERENCES``).
        out_dir: figure + summary JSON.
        on_epoch_end: called with (step, row) after each epoch.
    Returns:
        The metrics dict written (keys ``DGCN_METRIC_KEYS``).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if fold.subjects is None:
        raise ValueError("the generative-contrastive network needs the fold's subject ids")
    images, labels, subjects, idx, classes = fold.images, fold.labels, fold.subjects, fold.idx, fold.classes
    num_classes, device = fold.num_classes, fold.device
    height, width, channels = fold.height, fold.width, fold.channels
    if reference == "generated" and (height % 16 or width % 16):
        raise ValueError(f"the reference generator needs H and W multiples of 16, got {(height, width)}")

    def refs(part: str) -> np.ndarray:
        return reference_targets(images, labels, subjects, idx[part], classes,
                                 dg.reference_target, split_name=part)

    x = {p: np.ascontiguousarray(images[idx[p]]) for p in ("train", "val", "test")}
    y = {p: labels[idx[p]] for p in ("train", "val", "test")}
    ref_tr = refs("train") if reference != "none" else x["train"]
    val_pairs: np.ndarray | None = None
    ref_va: np.ndarray | None = None
    if reference == "real":
        ref_va = refs("val")
    else:
        try:  # diagnostics only (gen/val_l1, the figure): absent when val lacks references
            ref_va = refs("val")
        except ValueError:
            ref_va = None
    if ref_va is not None:
        val_pairs = _pairs(x["val"], ref_va)
    inputs = None  # what the model reads at test time (None: the faces themselves)
    if reference == "real":
        inputs = np.zeros((*images.shape[:3], 2 * channels), dtype=np.uint8)
        inputs[idx["test"]] = _pairs(x["test"], refs("test"))
        inputs[idx["val"]] = val_pairs
    val_in = val_pairs if reference == "real" else x["val"]
    assert val_in is not None

    torch.manual_seed(fold.seed)
    model = build_dgcn(cfg, dg, reference, num_classes, (height, width, channels))
    model.to(device)
    result, chosen_step, history, ev = train_dgcn(
        model,
        (_pairs(x["train"], ref_tr), y["train"]),
        (val_in, y["val"]),
        val_pairs if reference == "generated" else None,
        cfg,
        dg,
        num_classes=num_classes,
        device=device,
        seed=fold.seed,
        resume_path=out.resume,
        log_path=out.log,
        on_epoch_end=on_epoch_end,
    )

    meta = {
        "method": "dgcn",
        "reference": reference,
        "arch": cfg.arch,
        "width": cfg.width,
        "num_classes": num_classes,
        "classes": list(classes),
        "in_channels": int(channels),
        "input_size": [int(height), int(width)],
        "input_channels": int(model.input_channels),
        "normalization": {"mean": MEAN, "std": STD},
        "best_epoch": int(result.best_epoch),
        "best_metric": float(result.best_metric),
        "selected_step": int(chosen_step),
        "select_metric": cfg.select_metric,
        "seed": int(fold.seed),
        "train_config": to_dict(cfg),
        "dgcn_config": to_dict(dg),
    }
    def selected_model_checks(selected: nn.Module) -> dict[str, Any]:
        gen_val_l1 = None  # the selected generator's validation L1
        if selected.generator is not None and val_pairs is not None:
            gen_val_l1 = _val_l1(selected.generator, ImageStore(val_pairs, device), 256, channels)
        return {
            "reference": reference,
            "reference_target": dg.reference_target,
            "contrast": "none" if reference == "none" else dg.contrast,
            "selected_step": int(chosen_step),
            "gen/val_l1": gen_val_l1,
        }

    recogniser_rows = [r for r in history if int(r["step"]) > 1]  # step 1 trains the generator alone
    metrics = finish_fold(fold, model, result, ev, out, meta=meta, curve_columns=DGCN_CURVE_COLUMNS,
                          history=history, test_images=inputs, after_test=selected_model_checks,
                          budget_history=recogniser_rows)
    assert tuple(metrics) == DGCN_METRIC_KEYS

    show = np.unique(np.linspace(0, len(x["val"]) - 1, min(N_SHOW, len(x["val"]))).round().astype(int))
    generated = _generate(model.generator, x["val"][show], device) if model.generator is not None else None
    grid_rows = [("query", x["val"][show]), ("generated", generated),
                 ("real target", ref_va[show] if ref_va is not None else None)]
    grid_rows = [(name, imgs) for name, imgs in grid_rows if imgs is not None]
    save_png(Path(out_dir) / "references.png", tile_grid([list(imgs) for _, imgs in grid_rows]))
    write_json(Path(out_dir) / "summary.json", {
        "reference": reference,
        "reference_target": dg.reference_target,
        "contrast": metrics["contrast"],
        "selected_step": int(chosen_step),
        "best_epoch": int(result.best_epoch),
        "epochs_per_step": {str(s): sum(1 for r in history if r["step"] == s)
                            for s in sorted({int(r["step"]) for r in history})},
        "gen/val_l1": metrics["gen/val_l1"],
        "val_shown": [int(i) for i in idx["val"][show]],
        "grid_rows": [name for name, _ in grid_rows],
        "test/acc": metrics["test/acc"],
    })
    for step in (1, 2, 3):
        clear_resume(_step_resume(out.resume, step))
        step_log = _step_log(out.log, step)
        if step_log is not None and step_log.exists():
            step_log.unlink()
    return metrics
