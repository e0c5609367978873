"""Expression-guided corpus fine-tuning of the AC-CNN (method M4), one fold.

Follows Fang, Zhao, Han, He, "Expression-Guided Deep Joint Learning for Facial Expression
Recognition", Sensors 23(16):7148, 2023 (methods.md, M4): deep features of an unlabelled
face-recognition corpus are clustered under the guidance of the labelled expression data
(``fer.clustering.guided``), the clusters become expression pseudo-labels, and the
efficient AC-CNN (``fer.models.accnn``) is fine-tuned on the enlarged training set with a
combined loss; features are re-clustered as the network learns. The paper's schedule and
loss are not available; everything below is THE PROJECT'S READING (``fer.params.FinetuneParams``):

**Rounds** (DeepCluster-style alternation, Caron et al. ECCV 2018, with the expression
guidance of the clustering instead of free k-means). ``pseudo0`` -- the round-0
pseudo-labels -- is made by the pipeline with ``cluster_corpus_fold`` and the fold's joint
recogniser. For r = 0 .. ``rounds``:

1. train the AC-CNN on the fold's real TRAIN images + the KEPT pseudo-labelled corpus
   images of round r (a face the clustering REJECTED as of no labelled class,
   ``clustering.reject_quantile``, has no pseudo-label and is never kept) (+ the fold's synthetic set when ``synthetic_weight > 0``) for
   ``finetune.epochs`` epochs through the shared driver (the epoch is selected on the VAL
   split only). Round 0 starts from a freshly initialised network (seeded), round r > 0
   from round r-1's SELECTED weights; every round has a fresh optimizer and LR schedule
   (warm-up, cosine: warm restarts) with the accnn section's settings. The row's budget is
   ``(rounds + 1) * finetune.epochs`` epochs over the real training images, the same as
   every other row's (the parameters are checked to say so), so the comparison with the
   AC-CNN trained on real data only is at equal budget;
2. when r < ``rounds``: re-embed the corpus and the TRAIN split with round r's selected
   network and re-cluster (``cluster_corpus_fold``) -> pseudo-labels of round r+1.

Two settings make the row a fine-tuning in the strict sense (both off by default, which
keeps the reading above):

* ``first_round: real``: round 0 trains on the real TRAIN images only (no pseudo-labelled
  batch part; ``pseudo0`` is recorded in round-0/ but not trained on), so round 1's
  pseudo-labels come from clustering with the AC-CNN learned on labelled data, and rounds
  1.. fine-tune that network (needs ``rounds >= 1``; the budget rule is unchanged);
* ``keep_start``: in rounds r >= 1 the start weights (round r-1's selected network)
  compete in the round's validation selection as epoch 0
  (``train_with_selection(start_candidate=True)``): a round that never beats them on the
  VAL split returns them unchanged (its ``best_epoch`` is 0). With ``first_round: real``
  this bounds what pseudo-labels of faces of no labelled class can cost on validation.

**Start** (``finetune.start``). ``scratch`` (above): round 0 starts from a fresh network
and the row trains the baseline's budget. ``accnn``: round 0 starts from the fold's TRAINED
AC-CNN (row ``accnn``; ``keep_start`` then applies from round 0), so the row trains
``accnn.epochs + (rounds + 1) * epochs`` epochs in all, and its control is row
``accnn_continued`` (:func:`run_continue_fold`): the same extra rounds, seeds and schedule
on the labelled images only. The two are compared with each other, at equal budget, not
with the baseline (``benchmarks/finetune_extra.py`` measured this design first).

The final round's selected network is evaluated ONCE on the test split (``test_selected``).
Nothing here reads the corpus's expression truth: the pseudo-labels are the only labels of
corpus images, and the clustering sees the TRAIN split's images and labels only.

**Batches** (as ``fer.methods.joint``): a real batch of B images + Np = max(1,
round(pseudo_ratio * B)) pseudo-labelled images (+ Ns = max(1, round(synthetic_ratio * B))
synthetic images), each extra set cycled through without replacement (a fresh seeded
permutation per pass, a new pass every epoch); one concatenated batch, the same
augmentation, ONE forward pass (BatchNorm sees the mixed batch). The epoch is one pass over
the REAL training images, so every variant takes the same number of steps.

**Loss** = CE(real) + pseudo_weight * CE_pseudo + synthetic_weight * CE(synthetic), where
CE(real) is the baseline criterion (label smoothing, class weights when configured),
CE(synthetic) uses label smoothing only, and CE_pseudo is the label-smoothed CE of each
pseudo-labelled image, multiplied by its clustering confidence when
``confidence_weighting`` (mean over the batch, not renormalised: a batch of doubtful
pseudo-labels weighs less).

**Validation weighting** (``validation_weighting``, THE PROJECT'S addition; on in the
shipped params). Every clustering is also given the fold's VALIDATION faces
(``cluster_corpus_fold(check=)``): they move no centroid and count in no selection, they
get pseudo-labels exactly as corpus faces would, and their labels score them
(``stats["check"]``, ``fer.clustering.guided.pseudo_label_check``). A round's
pseudo_weight is multiplied by that score's reliability, the chance-corrected accuracy
``clip((acc - 1/K) / (1 - 1/K), 0, 1)`` (``round_pseudo_weight``): pseudo-labels that are
all right count fully, pseudo-labels no better than chance count not at all, and then the
round trains on the labelled images only, exactly as the control row's round (same seed,
batches and selection). Why: on the demo with 25 % of the labels, the pseudo-labels
anchored on 84 labelled faces were 19-29 % right on validation (chance 14 %), and training
on them at the full weight put the row 2.7 points below its control over four
continuation seeds (-0.4 with the weighting; measured with the first AC-CNN design, v1;
README "Two commands"). The validation split is also where the epoch is selected; it is
inside the training part, and the test fold is never read. Validation faces are of
labelled classes, so for a corpus of many faces of no labelled class the score is an upper
bound; rejection (``clustering.reject_quantile``) is the guard there.

Outputs:
* ``out_model``: the final round's selected AC-CNN (``save_weights``; meta of
  ``recognizer_meta("accnn_corpus", ...)`` + the fine-tuning and clustering configs, so
  ``model_from_weights`` rebuilds it);
* ``out_metrics``: ``CORPUS_METRIC_KEYS`` = the baseline's ``METRIC_KEYS`` + ``n_pseudo``
  (kept pseudo-labels used in the final round) + ``rounds``;
* ``out_curve``: ``CORPUS_CURVE_COLUMNS`` = the baseline's columns + the loss terms
  ``train/cls_real``, ``train/cls_pseudo``, ``train/cls_syn`` (unweighted epoch means; 0
  when off) + ``round`` + ``round_epoch``; one row per epoch of every round, ``epoch``
  counting on across rounds (``r * epochs + round_epoch``) so curves plot as one line;
* ``out_dir/round-R/`` for R = 0 .. rounds: ``labels.csv`` + ``stats.json``
  (``write_pseudo_labels``: the pseudo-labels round R trains on, with the assigned, kept
  and rejected counts per class that the report tabulates), ``map.npz`` (``idx``,
  ``xy`` of ``embedding_map`` of the corpus features those pseudo-labels were made from,
  with ``label``/``kept`` of the mapped points and ``features`` naming their source),
  ``source.json`` (what made the pseudo-labels; written last), ``model.pt`` / ``last.pt``
  (the round's selected / last-epoch weights) and ``round.json`` (the round's fingerprint
  and history without wall-clock times, so that the same run gives the same bytes;
  written when the round is complete). The round's training log, with each epoch's
  ``seconds``, is not an output: it goes beside ``out.log`` (``<log stem>.round-R.jsonl``,
  :func:`round_log`), and ``out.log`` gathers every round's rows.
  Round 0's map uses ``pseudo0_feats`` (the features ``pseudo0`` was clustered from);
  when they are not given, the corpus is embedded with round 0's INITIAL network and
  ``map.npz["features"]`` says so.

**Resume.** Each round trains through ``train_with_selection`` with its own resume file
``resume_dir/round-R.pt`` (exact resume after a kill). A completed round is reused from
``out_dir/round-R`` when its ``round.json`` fingerprint matches the current run (config,
seed, data, the round's initial weights and pseudo-labels), and the next round's
pseudo-labels are read back (``read_pseudo_labels``, exact float32) when their
``source.json`` names that round; anything that does not match is recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.clustering.embed import embed_to_memmap
from fer.clustering.guided import (
    IN_DOMAIN_PREFIX,
    PseudoLabels,
    guided_pseudo_labels,
    read_pseudo_labels,
    write_pseudo_labels,
)
from fer.clustering.map2d import embedding_map
from fer.params import ClusteringParams, FinetuneParams, RecognizerParams, to_dict
from fer.training.augment import augment_batch
from fer.training.batches import check_arrays, check_synthetic, model_input
from fer.training.checkpoint import clear_resume, cpu_state_dict, load_weights, save_weights
from fer.training.driver import EpochContext, FitResult, StepOutput, fingerprint, train_epochs
from fer.training.optim import EvalSetup, setup_training
from fer.training.protocol import CURVE_COLUMNS, METRIC_KEYS, Fold, FoldOutputs, finish_fold, recognizer_meta
from fer.training.samplers import CycledSet, n_per_batch
from fer.utils.digest import digest
from fer.utils.io import read_json, save_npz, write_json, write_text
from fer.utils.precision import amp_autocast
from fer.utils.seed import derived_seed

log = logging.getLogger(__name__)

__all__ = [
    "CONTINUED_METRIC_KEYS",
    "CORPUS_CURVE_COLUMNS",
    "CORPUS_METRIC_KEYS",
    "CORPUS_TERMS",
    "IN_DOMAIN_PREFIX",
    "cluster_corpus_fold",
    "clustering_pool",
    "kept_pseudo",
    "round_dir",
    "run_continue_fold",
    "run_corpus_finetune_fold",
    "train_round",
    "trained_accnn",
]

#: Per-epoch loss terms added to the history rows and the curve.
CORPUS_TERMS: tuple[str, ...] = ("train/cls_real", "train/cls_pseudo", "train/cls_syn")
#: Keys of the metrics JSON: the baseline's + kept pseudo-labels trained on in the final round
#: + the final round's effective pseudo_weight + rounds.
CORPUS_METRIC_KEYS: tuple[str, ...] = (*METRIC_KEYS, "n_pseudo", "pseudo_weight", "rounds")
#: Columns of the learning-curve CSV.
CORPUS_CURVE_COLUMNS: tuple[str, ...] = (*CURVE_COLUMNS, *CORPUS_TERMS, "round", "round_epoch")
METHOD = "accnn_corpus"


def clustering_pool(
    fold: Fold, paths: Sequence[str], corpus_images: np.ndarray | None, corpus_paths: Sequence[str], in_domain: bool
) -> tuple[np.ndarray, list[str]]:
    """The unlabelled images a fold clusters and fine-tunes on: the face-recognition
    corpus, followed (``in_domain``, at a label budget) by the fold's unlabelled in-domain
    faces (``fold.idx["unlabelled"]``, whose labels the fold has masked), named
    ``IN_DOMAIN_PREFIX + path``. ``paths``: the aligned set's path of every image.
    ``corpus_images`` None: no corpus (``corpus.root: ''``), the in-domain faces alone.
    Raises ValueError when the pool would be empty (nothing to cluster)."""
    idx = fold.idx.get("unlabelled") if in_domain else None
    has_in_domain = idx is not None and len(idx) > 0
    if corpus_images is None:
        if not has_in_domain:
            raise ValueError("nothing to cluster: no face-recognition corpus (corpus.root is '') and no unlabelled "
                             "in-domain faces in this split (a label budget with clustering.in_domain: true has them)")
        assert idx is not None
        return fold.images[idx], [IN_DOMAIN_PREFIX + paths[i] for i in idx]
    if not has_in_domain:
        return corpus_images, list(corpus_paths)
    assert idx is not None
    images = np.concatenate([np.asarray(corpus_images), fold.images[idx]])
    return images, [*corpus_paths, *(IN_DOMAIN_PREFIX + paths[i] for i in idx)]


def round_dir(out_dir: Path, r: int) -> Path:
    """``out_dir/round-R``: the outputs of round R."""
    return Path(out_dir) / f"round-{r}"


# ------------------------------------------------------------------------ clustering
def cluster_corpus_fold(
    model: nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    corpus_images: np.ndarray,
    num_classes: int,
    clustering: ClusteringParams,
    *,
    seed: int,
    device: torch.device | str,
    work_dir: Path,
    threads: int | None = None,
    check: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[PseudoLabels, np.ndarray]:
    """Pseudo-label the corpus with ``model``'s features, guided by the fold's TRAIN split.

    Embeds the corpus (``embed_to_memmap`` into ``work_dir/corpus_features.npy``) and the
    labelled training images (``work_dir/train_features.npy``) with ``model.features``
    (eval mode), then runs ``guided_pseudo_labels``. The clusters are guided by the TRAIN
    split only; ``check`` = the fold's VALIDATION split (images, labels), embedded into
    ``work_dir/check_features.npy``, moves nothing: its faces get pseudo-labels as corpus
    faces would and ``stats["check"]`` scores them (the estimate
    ``finetune.validation_weighting`` weighs the pseudo-labels by). No test image is seen.

    Args:
        model: the embedding network (any model with ``features``).
        train_images, train_labels: the fold's labelled training split (uint8 (M, H, W, C),
            int (M,) in [0, num_classes)).
        corpus_images: uint8 (N, H, W, C), same image geometry as ``train_images``.
        num_classes: K.
        clustering: the clustering configuration.
        seed: seeds the clustering.
        device: where to embed.
        work_dir: folder for the feature files (created).
        threads: faiss threads (None: faiss's default).
        check: the fold's validation split (uint8 images, labels), or None (no check).
    Returns:
        (pseudo-labels of every corpus image, the corpus features (N, D) float32 in memory).
    """
    x, y = check_arrays((train_images, train_labels), "train", num_classes)
    if not isinstance(corpus_images, np.ndarray) or corpus_images.ndim != 4 or corpus_images.dtype != np.uint8:
        raise ValueError(
            f"corpus images must be uint8 (N, H, W, C), got "
            f"{getattr(corpus_images, 'dtype', type(corpus_images))} {getattr(corpus_images, 'shape', '')}"
        )
    if corpus_images.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"corpus images {corpus_images.shape[1:]} differ from the training images {x.shape[1:]}"
        )
    if len(corpus_images) < num_classes:
        raise ValueError(f"the corpus has {len(corpus_images)} images, fewer than {num_classes} classes")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    corpus_feats = embed_to_memmap(model, corpus_images, work_dir / "corpus_features.npy", device)
    train_feats = embed_to_memmap(model, x, work_dir / "train_features.npy", device)
    check_fy = None
    if check is not None:
        xc, yc = check_arrays(check, "validation (check)", num_classes)
        if xc.shape[1:] != x.shape[1:]:
            raise ValueError(f"validation (check) images {xc.shape[1:]} differ from the training images {x.shape[1:]}")
        check_fy = (np.asarray(embed_to_memmap(model, xc, work_dir / "check_features.npy", device)), yc)
    pl = guided_pseudo_labels(
        corpus_feats, np.asarray(train_feats), y, num_classes, clustering, seed=seed, threads=threads, check=check_fy
    )
    return pl, np.array(corpus_feats, dtype=np.float32)


# --------------------------------------------------------------------------- helpers
def _digest_pseudo(pl: PseudoLabels) -> str:
    return digest(np.asarray(pl.label), np.asarray(pl.confidence), np.asarray(pl.kept), pl.rejected_mask)


def _check_pseudo(pl: PseudoLabels, n: int, num_classes: int, what: str) -> None:
    for name in ("label", "confidence", "kept", "cluster"):
        arr = np.asarray(getattr(pl, name))
        if arr.shape != (n,):
            raise ValueError(f"{what}: {name} has shape {arr.shape}, expected ({n},) (one per corpus image)")
    if np.asarray(pl.kept).dtype != np.bool_:
        raise ValueError(f"{what}: kept must be a bool array")
    if pl.rejected_mask.shape != (n,):
        raise ValueError(f"{what}: rejected has shape {pl.rejected_mask.shape}, expected ({n},)")
    if (pl.rejected_mask & np.asarray(pl.kept)).any():
        raise ValueError(f"{what}: a rejected corpus image is marked kept")
    label = np.asarray(pl.label)
    if not np.issubdtype(label.dtype, np.integer) or (n and (label.min() < 0 or label.max() >= num_classes)):
        raise ValueError(f"{what}: labels must be integers in [0, {num_classes})")
    conf = np.asarray(pl.confidence, dtype=np.float64)
    if not np.all(np.isfinite(conf)) or (n and (conf.min() < 0 or conf.max() > 1)):
        raise ValueError(f"{what}: confidences must lie in [0, 1]")


def _write_round_pseudo(
    rdir: Path,
    pl: PseudoLabels,
    feats: np.ndarray,
    features_from: str,
    corpus_paths: Sequence[str],
    classes: Sequence[str],
    seed: int,
    source: Mapping[str, Any],
) -> None:
    """labels.csv + stats.json, map.npz, then source.json (the completion marker)."""
    write_pseudo_labels(rdir, pl, corpus_paths, classes)
    idx, xy = embedding_map(np.asarray(feats, dtype=np.float32), seed=seed)
    save_npz(
        rdir / "map.npz",
        idx=idx,
        xy=xy,
        label=np.asarray(pl.label)[idx],
        kept=np.asarray(pl.kept)[idx],
        features=np.array(features_from),
    )
    write_json(rdir / "source.json", dict(source))


def _read_json_or_none(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


# ------------------------------------------------------------------------- one round
def kept_pseudo(pl: PseudoLabels, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The KEPT pseudo-labelled faces of ``pool`` (the images ``pl`` labels, in its row
    order) as ``train_round`` takes them: (images, labels, clustering confidences float32)."""
    kept = np.flatnonzero(np.asarray(pl.kept))
    return pool[kept], np.asarray(pl.label)[kept], np.asarray(pl.confidence, dtype=np.float32)[kept]


# ------------------------------------------------------------------------- one round
def train_round(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: RecognizerParams,
    ft: FinetuneParams,
    *,
    num_classes: int,
    pseudo: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    synthetic: tuple[np.ndarray, np.ndarray] | None,
    device: torch.device,
    seed: int,
    fp: str,
    resume_path: Path | None,
    log_path: Path | None,
    on_epoch_end: Callable[[dict[str, float]], None] | None,
    start_candidate: bool = False,
) -> FitResult:
    """Train one round on real + kept pseudo-labelled (+ synthetic) images (module
    docstring) for ``cfg.epochs`` epochs from the model's current weights, selecting on
    ``val``; ``pseudo`` None: on the real (+ synthetic) images only (``first_round:
    real``); ``start_candidate``: the current weights compete in the selection as epoch 0.
    ``pseudo`` is (images, labels, clustering confidences) of the kept corpus faces.
    ``benchmarks/finetune_extra.py`` calls it to continue a trained AC-CNN."""
    setup = setup_training(model, cfg, train[1], num_classes=num_classes, device=device)
    pseudo_seed, syn_seed = np.random.SeedSequence([seed, 0x95E]).generate_state(2)
    g_pseudo = torch.Generator().manual_seed(int(pseudo_seed))
    g_syn = torch.Generator().manual_seed(int(syn_seed))
    pseudo_set = None
    if pseudo is not None:
        x_ps, y_ps, w_ps = pseudo
        pseudo_set = CycledSet(x_ps, y_ps, device, g_pseudo, weights=w_ps if ft.confidence_weighting else None)
    syn_set = CycledSet(synthetic[0], synthetic[1], device, g_syn) if synthetic is not None else None
    smoothing = cfg.label_smoothing

    def make_step(ctx: EpochContext) -> Callable[[Tensor], StepOutput]:
        def step(idx: Tensor) -> StepOutput:
            b = idx.numel()
            x_real = ctx.store.batch(idx)  # B, C, H, W in [0, 1]
            y_real = ctx.labels_of(idx)  # B
            parts, n_ps, n_sy = [x_real], 0, 0
            if pseudo_set is not None:
                n_ps = n_per_batch(b, ft.pseudo_ratio)
                xp, yp, wp = pseudo_set.sample(n_ps)  # Np, C, H, W
                parts.append(xp)
            if syn_set is not None:
                n_sy = n_per_batch(b, ft.synthetic_ratio)
                xs, ys, _ = syn_set.sample(n_sy)  # Ns, C, H, W
                parts.append(xs)
            x = augment_batch(torch.cat(parts), cfg.augment, ctx.g_aug)  # B+Np(+Ns), C, H, W
            x = model_input(x, setup.channels_last)
            with amp_autocast(device, setup.amp_dtype):
                logits = model(x)  # B+Np(+Ns), K
            logits = logits.float()
            cls_real = setup.criterion(logits[:b], y_real)
            loss = cls_real
            cls_pseudo = torch.zeros((), device=device)
            if pseudo_set is not None:
                ce_ps = F.cross_entropy(logits[b : b + n_ps], yp, reduction="none", label_smoothing=smoothing)
                cls_pseudo = (ce_ps * wp).mean()
                loss = loss + ft.pseudo_weight * cls_pseudo
            cls_syn = torch.zeros((), device=device)
            if syn_set is not None:
                cls_syn = F.cross_entropy(logits[b + n_ps :], ys, label_smoothing=smoothing)
                loss = loss + ft.synthetic_weight * cls_syn
            terms = {"train/cls_real": cls_real, "train/cls_pseudo": cls_pseudo, "train/cls_syn": cls_syn}
            return StepOutput(loss=loss, logits=logits[:b], labels=y_real, terms=terms)

        return step

    def before_epoch() -> None:
        if pseudo_set is not None:
            pseudo_set.start_epoch()
        if syn_set is not None:
            syn_set.start_epoch()

    return train_epochs(
        model, setup, train, val,
        epochs=cfg.epochs, batch_size=cfg.batch_size, select_metric=cfg.select_metric, num_classes=num_classes,
        seed=seed, fingerprint=fp, make_step=make_step, extra_rngs={"pseudo": g_pseudo, "syn": g_syn},
        before_epoch=before_epoch, resume_path=resume_path, log_path=log_path, on_epoch_end=on_epoch_end,
        start_candidate=start_candidate,
    )


def round_log(log_path: Path | None, r: int) -> Path | None:
    """Round ``r``'s training log beside the fold's log (None without a fold log): the
    epochs' wall-clock ``seconds`` stay in the logs, out of the declared outputs."""
    if log_path is None:
        return None
    log_path = Path(log_path)
    return log_path.with_name(f"{log_path.stem}.round-{r}{log_path.suffix}")


def combine_round_logs(log_path: Path | None, upto: int) -> None:
    """Write the fold's training log ``log_path``: the rows of rounds 0..``upto``'s logs
    (``round_log``), in order, each with its ``round``; nothing when ``log_path`` is None.
    (The corpus row calls it after every epoch, so the fold's log follows the training.)"""
    if log_path is None:
        return
    rows = [{**row, "round": r} for r in range(upto + 1) for row in _read_jsonl(round_log(log_path, r))]
    write_text(log_path, "".join(json.dumps(row) + "\n" for row in rows))


def _without_timings(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """History rows without the wall-clock ``seconds`` (which differ from run to run)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _read_jsonl(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------- one fold
def _start_model(fold: Fold, cfg_ft: RecognizerParams, ft: FinetuneParams,
                 start_state: Mapping[str, Tensor] | None) -> nn.Module:
    """Round 0's network: a fresh one (``finetune.start: scratch``; seeded, or the section's
    ``init``) or the fold's trained AC-CNN (``start: accnn``), loaded strictly (a state dict
    of another architecture or width fails naming the keys)."""
    if (ft.start == "accnn") != (start_state is not None):
        raise ValueError(f"finetune.start is {ft.start!r}: the trained AC-CNN's weights (start_state) are "
                         f"{'required' if ft.start == 'accnn' else 'not used'}, got "
                         f"{'none' if start_state is None else 'a state dict'}")
    model = fold.build_recognizer(cfg_ft)
    if start_state is not None:
        model.load_state_dict(dict(start_state))
    return model


def _checked_synthetic(synthetic: tuple[np.ndarray, np.ndarray] | None, ft: FinetuneParams, images: np.ndarray,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The fold's synthetic set as the corpus row and its control train on it: checked and
    required when ``finetune.synthetic_weight > 0``, None (ignored) otherwise."""
    if ft.synthetic_weight <= 0:
        return None
    if synthetic is None:
        raise ValueError("finetune.synthetic_weight > 0 needs the fold's synthetic set (synthetic=)")
    return check_synthetic(synthetic, num_classes, images.shape[1:])


def _continued_epochs(cfg: RecognizerParams, ft: FinetuneParams, curve: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """With ``finetune.start: accnn`` the row's budget counts the AC-CNN's own epochs
    (``cfg.epochs``) before the continuation's: ``{"epochs": ...}``; else nothing."""
    return {"epochs": int(cfg.epochs) + len(curve)} if ft.start == "accnn" else {}


def round_pseudo_weight(ft: FinetuneParams, pl: PseudoLabels, what: str) -> tuple[float, float | None]:
    """(The weight of the pseudo-labelled CE in a round, the reliability it was scaled by).

    ``finetune.validation_weighting`` off: (``pseudo_weight``, None). On: ``pseudo_weight``
    times ``pl.stats["check"]["reliability"]``, the chance-corrected accuracy of the
    round's pseudo-labels on the fold's validation faces (``cluster_corpus_fold(check=)``);
    pseudo-labels made without that check fail naming ``what``."""
    if not ft.validation_weighting:
        return float(ft.pseudo_weight), None
    check = pl.stats.get("check")
    rel = check.get("reliability") if isinstance(check, dict) else None
    if not isinstance(rel, (int, float)) or isinstance(rel, bool) or not 0.0 <= float(rel) <= 1.0:
        raise ValueError(
            f"{what}: finetune.validation_weighting needs the pseudo-labels' validation check (stats.json "
            f"'check' with a reliability in [0, 1], written by the clustering given the fold's validation "
            f"split); got {check!r}: re-run the clustering stage, or set finetune.validation_weighting: false"
        )
    return float(ft.pseudo_weight) * float(rel), float(rel)


def run_corpus_finetune_fold(
    fold: Fold,
    cfg: RecognizerParams,
    ft: FinetuneParams,
    clustering: ClusteringParams,
    out: FoldOutputs,
    *,
    corpus_images: np.ndarray,
    corpus_paths: Sequence[str],
    pseudo0: PseudoLabels,
    synthetic: tuple[np.ndarray, np.ndarray] | None,
    out_dir: Path,
    resume_dir: Path | None,
    threads: int | None = None,
    pseudo0_feats: np.ndarray | None = None,
    start_state: Mapping[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Corpus fine-tuning of the AC-CNN on one fold (module docstring); write its outputs.

    The protocol is the shared one (``fer.training.protocol``).

    Args:
        fold: the fold's labelled data.
        cfg: the accnn recogniser's parameters (``epochs`` is replaced by
            ``finetune.epochs`` per round; everything else is used as is).
        ft: fine-tuning settings.
        clustering: settings of the re-clustering rounds (r >= 1).
        out: the model, metrics, curve and combined JSON-lines log of every round.
        corpus_images: uint8 (N, H, W, C) corpus faces, same geometry as the fold's.
        corpus_paths: N corpus file names (written into each round's labels.csv).
        pseudo0: round-0 pseudo-labels of the corpus (``cluster_corpus_fold`` with the
            fold's joint recogniser, which saw the fold's TRAIN split only).
        synthetic: the fold's synthetic set (uint8 (M, H, W, C), labels (M,)); required
            when ``ft.synthetic_weight > 0``, ignored otherwise.
        out_dir: per-round outputs (``round-R/``, see the module docstring).
        resume_dir: per-round resume files (None: no resume files).
        threads: faiss threads of the re-clustering.
        pseudo0_feats: (N, D) corpus features ``pseudo0`` was made from (round 0's map);
            None: the corpus is embedded with round 0's initial network for the map.
        start_state: the fold's trained AC-CNN (row accnn's state dict), required with
            ``ft.start == "accnn"`` (round 0 starts from exactly these weights, loaded
            strictly; with ``keep_start`` they compete in round 0's selection), refused
            otherwise. The metrics' ``epochs`` then count the AC-CNN's ``cfg.epochs`` too.
    Returns:
        The metrics dict written (keys ``CORPUS_METRIC_KEYS``).
    """
    images, classes = fold.images, fold.classes
    num_classes, device, seed = fold.num_classes, fold.device, fold.seed
    log_path = out.log
    if not isinstance(corpus_images, np.ndarray) or corpus_images.ndim != 4 or corpus_images.dtype != np.uint8:
        raise ValueError("corpus_images must be a uint8 (N, H, W, C) array")
    if corpus_images.shape[1:] != images.shape[1:]:
        raise ValueError(f"corpus images {corpus_images.shape[1:]} differ from the labelled images {images.shape[1:]}")
    n_corpus = len(corpus_images)
    if len(corpus_paths) != n_corpus:
        raise ValueError(f"{len(corpus_paths)} corpus paths for {n_corpus} corpus images")
    _check_pseudo(pseudo0, n_corpus, num_classes, "pseudo0")
    if pseudo0_feats is not None and (np.ndim(pseudo0_feats) != 2 or len(pseudo0_feats) != n_corpus):
        raise ValueError(f"pseudo0_feats must be (N, D) with N = {n_corpus}, got {np.shape(pseudo0_feats)}")
    syn = _checked_synthetic(synthetic, ft, images, num_classes)

    cfg_ft = dataclasses.replace(cfg, epochs=ft.epochs)
    train, val = fold.part("train"), fold.part("val")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    model = _start_model(fold, cfg_ft, ft, start_state)
    state = cpu_state_dict(model.state_dict())

    common = {
        "method": METHOD,
        "finetune": to_dict(ft),
        "clustering": to_dict(clustering),
        "corpus": digest(corpus_images, sample=True),
        "synthetic": digest(*syn, sample=True) if syn is not None else None,
    }
    pl = pseudo0
    feats0 = pseudo0_feats
    histories: list[list[dict[str, float]]] = []
    result: FitResult | None = None
    last_state: dict[str, Tensor] = state

    for r in range(ft.rounds + 1):
        rdir = round_dir(out_dir, r)
        rdir.mkdir(parents=True, exist_ok=True)
        seed_r = derived_seed(seed, 0xAC, r)
        init_digest = digest(state)
        pseudo_digest = _digest_pseudo(pl)
        if r == 0:
            source = {"made_by": "pseudo0", "pseudo": pseudo_digest, "init": init_digest}
            if _read_json_or_none(rdir / "source.json") != source:
                if feats0 is None:
                    model.load_state_dict(state)
                    with tempfile.TemporaryDirectory(prefix=".embed-", dir=out_dir) as tmp:
                        feats0 = np.array(embed_to_memmap(model, corpus_images, Path(tmp) / "corpus.npy", device))
                    features_from = "round-0 initial network (pseudo0 features not given)"
                else:
                    features_from = "pseudo0 features"
                _write_round_pseudo(rdir, pl, feats0, features_from, corpus_paths, classes, seed_r, source)
        wants_pseudo = not (r == 0 and ft.first_round == "real")
        weight, reliability = round_pseudo_weight(ft, pl, f"round {r} pseudo-labels ({rdir})")
        # a reliability of 0 (pseudo-labels no better than chance on validation): the round
        # trains on the labelled images only, exactly as the control's round
        uses_pseudo = wants_pseudo and weight > 0
        kept = np.flatnonzero(np.asarray(pl.kept)) if uses_pseudo else np.zeros(0, dtype=np.int64)
        if wants_pseudo and not np.asarray(pl.kept).any():
            n_rej = int(pl.rejected_mask.sum())
            raise ValueError(
                f"round {r}: no kept pseudo-labelled corpus image (all filtered out: {n_rej} of {n_corpus} "
                f"rejected as no labelled class, params clustering.reject_quantile={clustering.reject_quantile}); "
                "nothing to fine-tune on"
            )

        model.load_state_dict(state)
        ft_r = dataclasses.replace(ft, pseudo_weight=weight)
        extra = {**common, "round": r, "init": init_digest, "pseudo": pseudo_digest, "pseudo_weight": weight}
        fp = fingerprint(cfg_ft, model, train, val, num_classes, seed_r, extra)
        done = _read_json_or_none(rdir / "round.json")
        if (
            isinstance(done, dict)
            and done.get("fingerprint") == fp
            and (rdir / "model.pt").is_file()
            and (rdir / "last.pt").is_file()
        ):
            log.info("round %d: complete in %s, reused", r, rdir)
            best_state, _ = load_weights(rdir / "model.pt")
            last_state, _ = load_weights(rdir / "last.pt")
            result = FitResult(
                best_state=best_state,
                best_epoch=int(done["best_epoch"]),
                best_metric=float(done["best_metric"]),
                history=[dict(row) for row in done["history"]],
                start_row=done.get("start_row"),
            )
        else:
            if uses_pseudo:
                log.info("round %d/%d: %d kept pseudo-labels, weight %g (reliability on validation: %s)",
                         r, ft.rounds, kept.size, weight, reliability)
            elif wants_pseudo:
                log.info("round %d/%d: pseudo-labels no better than chance on validation (reliability %s): the "
                         "labelled images only, as the control row", r, ft.rounds, reliability)
            else:
                log.info("round %d/%d: the labelled images only (finetune.first_round: real)", r, ft.rounds)
            resume_path = Path(resume_dir) / f"round-{r}.pt" if resume_dir is not None else None
            result = train_round(
                model,
                train,
                val,
                cfg_ft,
                ft_r,
                num_classes=num_classes,
                pseudo=kept_pseudo(pl, corpus_images) if uses_pseudo else None,
                synthetic=syn,
                device=device,
                seed=seed_r,
                fp=fp,
                resume_path=resume_path,
                log_path=round_log(log_path, r),
                on_epoch_end=lambda row, r=r: combine_round_logs(log_path, r),
                start_candidate=ft.keep_start and (r > 0 or ft.start == "accnn"),
            )
            last_state = cpu_state_dict(model.state_dict())
            meta = recognizer_meta(METHOD, cfg_ft, classes, images.shape, result, seed)
            meta.update({"round": r, "n_pseudo": int(kept.size)})
            save_weights(rdir / "model.pt", result.best_state, meta)
            save_weights(rdir / "last.pt", last_state, {**meta, "role": "last_epoch"})
            write_json(
                rdir / "round.json",
                {
                    "fingerprint": fp,
                    "round": r,
                    "best_epoch": int(result.best_epoch),
                    "best_metric": float(result.best_metric),
                    "n_pseudo": int(kept.size),
                    "pseudo_weight": weight,
                    "reliability": reliability,
                    "history": _without_timings(result.history),
                    **({"start_row": result.start_row} if result.start_row is not None else {}),
                },
            )
            clear_resume(resume_path)
        combine_round_logs(log_path, r)
        histories.append(result.history)
        state = result.best_state
        n_pseudo = int(kept.size)
        final_weight = weight if uses_pseudo else 0.0

        if r < ft.rounds:  # re-cluster with this round's selected network
            nxt = round_dir(out_dir, r + 1)
            source = {"made_by": f"round-{r}", "round_fingerprint": fp, "seed": seed_r}
            if _read_json_or_none(nxt / "source.json") == source:
                pl = read_pseudo_labels(nxt, classes, corpus_paths=corpus_paths)
                log.info("round %d: pseudo-labels of round %d reused from %s", r, r + 1, nxt)
            else:
                model.load_state_dict(state)
                with tempfile.TemporaryDirectory(prefix=".cluster-", dir=out_dir) as tmp:
                    pl, feats = cluster_corpus_fold(
                        model, train[0], train[1], corpus_images, num_classes, clustering,
                        seed=seed_r, device=device, work_dir=Path(tmp), threads=threads, check=val,
                    )
                _check_pseudo(pl, n_corpus, num_classes, f"round {r + 1} pseudo-labels")
                _write_round_pseudo(
                    nxt, pl, feats, f"round-{r} selected network", corpus_paths, classes, derived_seed(seed, 0xAC, r + 1), source
                )

    assert result is not None
    model.load_state_dict(last_state)
    meta = {
        **recognizer_meta(METHOD, cfg_ft, classes, images.shape, result, seed),
        "finetune_config": to_dict(ft),
        "clustering_config": to_dict(clustering),
        "n_pseudo": n_pseudo,
        "rounds": int(ft.rounds),
    }
    curve: list[dict[str, float]] = []
    for r, hist in enumerate(histories):
        for row in hist:
            curve.append({**row, "epoch": r * ft.epochs + int(row["epoch"]), "round": r, "round_epoch": int(row["epoch"])})
    metrics = finish_fold(
        fold, model, result, EvalSetup.for_params(cfg_ft, device), out, meta=meta,
        extra_metrics={"n_pseudo": n_pseudo, "pseudo_weight": final_weight, "rounds": int(ft.rounds),
                       **_continued_epochs(cfg, ft, curve)},
        curve_columns=CORPUS_CURVE_COLUMNS, history=curve,
    )
    assert tuple(metrics) == CORPUS_METRIC_KEYS
    return metrics


# ------------------------------------------------------------- the control of start: accnn
#: Keys of the control row's metrics JSON: the baseline's + rounds.
CONTINUED_METRIC_KEYS: tuple[str, ...] = (*METRIC_KEYS, "rounds")
CONTINUED_METHOD = "accnn_continued"


def run_continue_fold(
    fold: Fold,
    cfg: RecognizerParams,
    ft: FinetuneParams,
    out: FoldOutputs,
    *,
    start_state: Mapping[str, Tensor],
    synthetic: tuple[np.ndarray, np.ndarray] | None,
    resume_dir: Path | None,
) -> dict[str, Any]:
    """Row ``accnn_continued``, the corpus row's control with ``finetune.start: accnn``: the
    fold's trained AC-CNN (``start_state``) trained ``finetune.rounds + 1`` more rounds of
    ``finetune.epochs`` epochs each exactly as the corpus row's rounds are trained
    (:func:`train_round`: the same seeds ``derived_seed(seed, 0xAC, r)``, batches of real
    images, augmentation, optimiser, warm-restart schedule and, with ``keep_start``, the
    start weights competing as epoch 0), but with no pseudo-labelled image: the labelled
    images only (+ the fold's synthetic set when ``finetune.synthetic_weight > 0``, as the
    corpus row). The two rows differ by the corpus alone, at equal budget
    (``accnn.epochs + (rounds + 1) * finetune.epochs``, the metrics' ``epochs``).

    Each completed round is kept in ``resume_dir`` (``round-R.best.pt`` / ``round-R.last.pt``
    with the round's fingerprint; a round in progress resumes from ``round-R.pt``), so a
    killed job continues where it stopped; the files are deleted once the outputs are
    written. Outputs as the corpus row's (model, metrics ``CONTINUED_METRIC_KEYS``, curve
    ``CORPUS_CURVE_COLUMNS`` with ``train/cls_pseudo`` 0, ``epoch`` counting on across
    rounds). Returns the metrics dict written."""
    if ft.start != "accnn":
        raise ValueError(f"row {CONTINUED_METHOD} is the corpus row's control with finetune.start: accnn, got "
                         f"start {ft.start!r}")
    images, classes = fold.images, fold.classes
    num_classes, device, seed = fold.num_classes, fold.device, fold.seed
    syn = _checked_synthetic(synthetic, ft, images, num_classes)
    cfg_ft = dataclasses.replace(cfg, epochs=ft.epochs)
    train, val = fold.part("train"), fold.part("val")
    model = _start_model(fold, cfg_ft, ft, start_state)
    state = cpu_state_dict(model.state_dict())
    last_state = state
    histories: list[list[dict[str, float]]] = []
    result: FitResult | None = None
    kept: list[Path] = []
    for r in range(ft.rounds + 1):
        seed_r = derived_seed(seed, 0xAC, r)
        model.load_state_dict(state)
        extra = {"method": CONTINUED_METHOD, "finetune": to_dict(ft), "round": r, "init": digest(state),
                 "synthetic": digest(*syn, sample=True) if syn is not None else None}
        fp = fingerprint(cfg_ft, model, train, val, num_classes, seed_r, extra)
        best_path = last_path = resume_path = None
        if resume_dir is not None:
            best_path, last_path = Path(resume_dir) / f"round-{r}.best.pt", Path(resume_dir) / f"round-{r}.last.pt"
            resume_path = Path(resume_dir) / f"round-{r}.pt"
            kept += [best_path, last_path]
        done = load_weights(best_path)[1] if best_path is not None and best_path.is_file() else None
        if done is not None and done.get("fingerprint") == fp and last_path is not None and last_path.is_file():
            log.info("round %d: complete in %s, reused", r, best_path)
            result = FitResult(best_state=load_weights(best_path)[0], best_epoch=int(done["best_epoch"]),
                               best_metric=float(done["best_metric"]), history=[dict(x) for x in done["history"]],
                               start_row=done.get("start_row"))
            last_state = load_weights(last_path)[0]
        else:
            log.info("round %d/%d: the labelled images only (the corpus row's control)", r, ft.rounds)
            result = train_round(
                model, train, val, cfg_ft, ft, num_classes=num_classes, pseudo=None, synthetic=syn, device=device,
                seed=seed_r, fp=fp, resume_path=resume_path, log_path=round_log(out.log, r), on_epoch_end=None,
                start_candidate=ft.keep_start,
            )
            last_state = cpu_state_dict(model.state_dict())
            if best_path is not None and last_path is not None:
                save_weights(best_path, result.best_state,
                             {"fingerprint": fp, "best_epoch": int(result.best_epoch),
                              "best_metric": float(result.best_metric), "history": result.history,
                              **({"start_row": result.start_row} if result.start_row is not None else {})})
                save_weights(last_path, last_state, {"fingerprint": fp})
            clear_resume(resume_path)
        histories.append(result.history)
        state = result.best_state
    assert result is not None
    combine_round_logs(out.log, ft.rounds)  # every round's rows in the fold's log
    model.load_state_dict(last_state)
    meta = {**recognizer_meta(CONTINUED_METHOD, cfg_ft, classes, images.shape, result, seed),
            "finetune_config": to_dict(ft), "rounds": int(ft.rounds)}
    curve = [{**row, "epoch": r * ft.epochs + int(row["epoch"]), "round": r, "round_epoch": int(row["epoch"])}
             for r, hist in enumerate(histories) for row in hist]
    metrics = finish_fold(
        fold, model, result, EvalSetup.for_params(cfg_ft, device), out, meta=meta,
        extra_metrics={"rounds": int(ft.rounds), **_continued_epochs(cfg, ft, curve)},
        curve_columns=CORPUS_CURVE_COLUMNS, history=curve,
    )
    for path in kept:
        clear_resume(path)
    assert tuple(metrics) == CONTINUED_METRIC_KEYS
    return metrics


def trained_accnn(path: Path, classes: Sequence[str]) -> dict[str, Tensor]:
    """The fold's trained AC-CNN (row accnn's model file) as ``finetune.start: accnn``
    starts from it; a file of another row or another class list fails naming the file."""
    state, meta = load_weights(path)
    if meta.get("method") != "accnn":
        raise ValueError(f"{path}: finetune.start: accnn needs row accnn's model, this file is "
                         f"{meta.get('method')!r}'s")
    if list(meta.get("classes", [])) != list(classes):
        raise ValueError(f"{path}: classes {meta.get('classes')} differ from the fold's {list(classes)}")
    return state
