"""Expression-guided clustering of an unlabelled face corpus into expression pseudo-labels.

Follows M4: Fang, Zhao, Han, He, "Expression-Guided Deep Joint Learning for Facial
Expression Recognition", Sensors 23(16):7148, 2023 -- deep features of a face-recognition
corpus are clustered under the guidance of labelled expression data and the clusters become
expression pseudo-labels for fine-tuning. The paper does not specify the clustering; every
detail below is the project's reading (methods.md, M4 [open]) and is a config field.

Caller's contract: ``train_feats``/``train_labels`` are features (of the same network as
``corpus_feats``) of the LABELLED TRAINING SPLIT of the current fold only. Validation data
may come in one way only, as the ``check`` of ``guided_pseudo_labels``: faces that move no
centroid and count in no selection, whose labels score the pseudo-labels (the estimate the
corpus fine-tuning weighs them by, ``fer.methods.corpus``); test data must never be given;
the corpus truth is read only by ``fer.clustering.quality`` for evaluation.

Guidance modes (``ClusteringParams.guidance``):

* ``anchored``: k = number of classes, centroids initialised at the class means of the
  (normalised) labelled features, cluster c -> class c. ``anchor_weight`` a in [0, 1] keeps
  the centroids anchored during the Lloyd iterations: each update is
  ``(1 - a) * mean(corpus points of cluster c) + a * mean(labelled points of class c)``
  (a = 0: plain k-means from the class means, through ``faiss.Kmeans``; a = 1: nearest
  class mean, no k-means at all). The anchor keeps clusters from drifting to the corpus's
  dominant non-expression structure (identity), which is what a = 0 does on the demo data.
  Iterations run on the same seeded, announced subsample as ``faiss_kmeans`` (at most
  k * max_points_per_centroid points) and stop early when no assignment changes.
* ``overcluster``: k = clusters_per_class * num_classes clusters by ``faiss_kmeans``; each
  cluster gets the majority expression of the ``neighbours`` labelled training features
  nearest to its centroid (tie: the class of the nearest tied voter); vote share =
  majority votes / neighbours.

Confidence (both modes): ``share(cluster) * (d_other - d_own) / (d_other + d_own)``, where
``d_own`` is the squared distance to the point's own (nearest) centroid and ``d_other`` the
squared distance to the nearest centroid that maps to a DIFFERENT expression (share = 1 in
``anchored``; margin 1 when every centroid maps to the same expression). It lies in [0, 1].

Rejection ("none of these", ``reject_quantile`` q; issue 11): the clustering above puts
every corpus face into some class, but a real face-recognition corpus holds many faces of
no labelled class (neutral, smiling, extreme lighting on a labelled set without them). With
q < 1 a face is REJECTED -- it gets no pseudo-label -- when it lies farther from the
labelled anchor of its best class than the labelled training images of that class
themselves: per class c, the anchor is the mean a_c of the (normalised) training features
of class c (the same class mean the ``anchored`` mode starts and anchors its centroids on)
and the radius r_c is the q-quantile (numpy ``linear``) of the squared distances of those
training features to a_c; corpus face x with best class c (its nearest centroid's class,
the label the clustering gives it) is rejected when ``|x - a_c|^2 > r_c``. The calibration
sees the fold's TRAINING features only (``calibrate_rejection`` is given nothing else; the
radii do not depend on the corpus), per fold, in the feature space of the network that
embeds the corpus. A face inside another class's radius but outside its own best class's is
rejected as well: its assignment and the labelled geometry disagree. A class with
training features is always calibrated; one without (``overcluster`` never votes for it)
has no radius and gets no face. q = 1 switches rejection OFF (every face is assigned, the
behaviour before the option existed), rather than meaning "the farthest training image".
With rejection on, faces outside EVERY class's radius (``RejectionRule.within_any``) do
not pull the centroids: the k-means of either guidance (and the anchored updates) is
fitted on the other faces only (``stats["n_fit"]``; fewer than k of them is an error
naming the param), then every face is assigned and judged as above. Without this a cloud
of faces of no labelled class drags an anchored centroid away from its class (seen on the
far-cloud scene of ``tests/test_rejection.py`` before this filter existed: at anchor
weight 0.75 the cloud pulled class 0's centroid so far that all of class 0's own faces
went to class 2 and were then rejected there).

Why the default is OFF (1.0): the network that embeds the corpus was trained on these very
training images, so their features are tighter around the class anchors than unseen faces
of the same classes; any q < 1 therefore also rejects corpus faces that DO show a labelled
expression, and how many depends on that network's overfit. The right q for a corpus is a
measurement (``pseudo/rejected_unknown`` of ``fer.clustering.quality`` scores it where the
corpus has truth), not yet made on the demo; off keeps the demo's pseudo-labels (labels,
confidences, kept flags) as they were; the files only gain the ``rejected`` column and counts.
The demo corpus has (by construction, ``fer.data.demo``) only faces of the labelled seven
classes, so on it rejection could only drop faces of a labelled class.
Use e.g. 0.95 for a corpus known to hold many faces of no labelled class.

Counts (``stats``): every corpus face is either rejected or ASSIGNED a pseudo-label; an
assigned face is either KEPT or not kept by the selection below. Per class (best class for
a rejected face): ``assigned_per_class = kept_per_class + not_kept_per_class``;
``rejected_per_class`` separately; ``n = n_assigned + n_rejected``.

Selection (``select_pseudo_labels``): per class the round(keep_fraction * n_c) most
confident ASSIGNED points are kept (n_c: the class's assigned, i.e. not rejected, points;
ties: lower index first); with ``balance`` every class is capped at the smallest NON-ZERO
kept count. A rejected face is never kept. A class with zero kept pseudo-labels does not
vanish silently: it is listed in ``stats["empty_classes"]`` and a WARNING is logged; no
error is raised, the caller (the fine-tuning) decides.

Default guidance chosen by measurement on the demo artifacts (4 folds; train split of
each fold embedded by models/<embedder>/fold-k.pt, corpus of 960 images embedded by the same
network; defaults otherwise: keep_fraction 0.5, balance, normalize, niter 20, seed 0;
scored by ``fer.clustering.quality`` against the hidden corpus truth; acc_kept = accuracy of
the kept pseudo-labels, mean over folds, then per fold):

    embedder  guidance (anchor_weight)  acc_kept  per fold                 acc_all  cover  NMI    purity
    full      anchored (0)              0.610     0.740 0.581 0.571 0.547  0.521    0.370  0.395  0.530
    full      anchored (0.25)           0.624     0.725 0.586 0.622 0.563  0.522    0.346  0.388  0.525
    full      anchored (0.5)            0.630     0.718 0.592 0.633 0.578  0.520    0.332  0.389  0.525
    full      anchored (0.75) DEFAULT   0.638     0.718 0.589 0.658 0.586  0.522    0.308  0.389  0.528
    full      anchored (1)              0.648     0.723 0.621 0.667 0.579  0.523    0.283  0.388  0.529
    full      overcluster 10 x 10 nn    0.624     0.714 0.596 0.636 0.550  0.524    0.323  0.342  0.600
    full      overcluster 5 x 10 nn     0.607     0.710 0.574 0.611 0.534  0.508    0.337  0.349  0.570
    baseline  anchored (0)              0.701     0.687 0.723 0.630 0.764  0.596    0.323  0.492  0.602
    baseline  anchored (0.75)           0.743     0.760 0.749 0.681 0.783  0.626    0.383  0.494  0.629
    baseline  anchored (1)              0.746     0.765 0.746 0.690 0.781  0.629    0.376  0.495  0.631
    baseline  overcluster 10 x 10 nn    0.753     0.784 0.784 0.666 0.779  0.621    0.379  0.401  0.672
    baseline  overcluster 5 x 10 nn     0.763     0.798 0.784 0.690 0.782  0.623    0.326  0.417  0.648

Over seeds 0-2 (overcluster depends on the seed; anchored does not while N <= k * 256):
full: overcluster 0.619, anchored(0.75) 0.638; baseline: overcluster 0.752, anchored(0.75)
0.743. Hence ``guidance = "anchored"`` for the default embedder ("full"), where it wins at
every anchor weight >= 0.5 (overcluster wins by ~1 point with the baseline embedder).
Anchoring helps (0.610 at a = 0 -> 0.638 at a = 0.75): free k-means drifts away from the
expression classes. a = 1 (nearest class mean, the corpus does not move the centroids) is
another point higher on the demo data, whose corpus comes from the same generator as the
labelled set; the default 0.75 still lets a corpus with a domain shift pull the centroids,
and the difference (1 point, 4 folds of 480 kept images) is within noise. Clustering time
per fold (1 thread, 960 x 128 features): about 0.03 s.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from fer.clustering.kmeans import (
    check_seed,
    prepare_batch,
    resolve_gpu,
    search_batched,
    set_threads,
    train_centroids,
    training_sample,
)
from fer.params import ClusteringParams, to_dict
from fer.params.sections import EMBEDDERS, GUIDANCE_MODES
from fer.utils.io import write_json, write_text

log = logging.getLogger(__name__)

__all__ = [
    "CSV_COLUMNS",
    "EMBEDDERS",
    "GUIDANCE_MODES",
    "IN_DOMAIN_PREFIX",
    "PseudoLabels",
    "RejectionRule",
    "calibrate_rejection",
    "guided_pseudo_labels",
    "pseudo_label_check",
    "read_pseudo_labels",
    "read_pseudo_labels_with_paths",
    "select_pseudo_labels",
    "write_pseudo_labels",
]

#: ``label`` of a rejected row is its best class (not a pseudo-label: ``kept`` is 0 there).
CSV_COLUMNS: tuple[str, ...] = ("index", "path", "label", "confidence", "cluster", "kept", "rejected")
_EPS = 1e-12


#: Path prefix of a fold's unlabelled in-domain faces in a clustering pool (labels.csv) at a
#: label budget: ``in-domain/<the aligned set's path>`` (fer.methods.corpus.clustering_pool).
IN_DOMAIN_PREFIX = "in-domain/"


@dataclass
class PseudoLabels:
    """Expression pseudo-labels of every corpus image.

    ``label`` is the best (nearest-centroid) class of every image; for a ``rejected`` image
    it is not a pseudo-label (never kept, never trained on). ``rejected`` defaults to
    nothing rejected."""

    label: np.ndarray  # (N,) int64 expression index (best class) for every corpus image
    confidence: np.ndarray  # (N,) float32 in [0, 1]
    kept: np.ndarray  # (N,) bool, survives rejection + confidence filtering + balancing
    cluster: np.ndarray  # (N,) int64 cluster id
    stats: dict  # JSON-ready summary (see guided_pseudo_labels)
    rejected: np.ndarray | None = None  # (N,) bool, "none of these": no pseudo-label

    def __post_init__(self) -> None:
        if self.rejected is None:
            self.rejected = np.zeros(len(self.label), dtype=bool)

    @property
    def rejected_mask(self) -> np.ndarray:
        """``rejected`` as a (N,) bool array."""
        return np.asarray(self.rejected, dtype=bool)


# ------------------------------------------------------------------------ selection
def select_pseudo_labels(
    label: np.ndarray,
    confidence: np.ndarray,
    num_classes: int,
    keep_fraction: float,
    balance: bool,
    rejected: np.ndarray | None = None,
) -> np.ndarray:
    """Kept mask: per class the ``round(keep_fraction * n_c)`` (half up) most confident
    ASSIGNED points, n_c = the class's points that are not ``rejected`` (ties: lower index
    first); with ``balance`` each class keeps at most the smallest non-zero per-class kept
    count. A rejected point is never kept. Returns (N,) bool."""
    label = np.asarray(label)
    confidence = np.asarray(confidence)
    assigned = np.ones(label.shape, dtype=bool) if rejected is None else ~np.asarray(rejected, dtype=bool)
    if assigned.shape != label.shape:
        raise ValueError(f"rejected must have the shape of label {label.shape}, got {assigned.shape}")
    if label.ndim != 1 or confidence.shape != label.shape:
        raise ValueError(f"label and confidence must be equal-length 1-D arrays, got {label.shape} {confidence.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be integers, got {label.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        raise ValueError(f"label values must lie in [0, {num_classes}), got [{label.min()}, {label.max()}]")
    if not np.isfinite(confidence).all():
        raise ValueError("confidence contains NaN or infinite values")
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    counts = np.bincount(label[assigned], minlength=num_classes)
    n_keep = np.floor(keep_fraction * counts + 0.5).astype(np.int64)
    if balance and (n_keep > 0).any():
        n_keep = np.minimum(n_keep, n_keep[n_keep > 0].min())
    # most confident first, ties by index: lexsort's last key is the primary one
    order = np.lexsort((np.arange(len(label)), -confidence.astype(np.float64)))
    order = order[assigned[order]]
    kept = np.zeros(len(label), dtype=bool)
    for c in range(num_classes):
        members = order[label[order] == c]
        kept[members[: n_keep[c]]] = True
    return kept


# -------------------------------------------------------------------------- helpers
def _check_inputs(
    corpus_feats: np.ndarray, train_feats: np.ndarray, train_labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(corpus_feats, np.ndarray) or corpus_feats.ndim != 2:
        raise ValueError(f"corpus_feats must be a 2-D array (N, D), got {getattr(corpus_feats, 'shape', None)}")
    if not np.issubdtype(corpus_feats.dtype, np.floating):
        raise ValueError(f"corpus_feats must be floating point, got {corpus_feats.dtype}")
    train_feats = np.asarray(train_feats)
    if train_feats.ndim != 2 or train_feats.shape[1] != corpus_feats.shape[1]:
        raise ValueError(
            f"train_feats must be (M, {corpus_feats.shape[1]}) like corpus_feats, got {train_feats.shape}"
        )
    if not np.issubdtype(train_feats.dtype, np.floating):
        raise ValueError(f"train_feats must be floating point, got {train_feats.dtype}")
    y = np.asarray(train_labels)
    if y.shape != (len(train_feats),):
        raise ValueError(f"train_labels shape {y.shape} does not match {len(train_feats)} train_feats")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"train_labels must be integers, got {y.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if y.size == 0:
        raise ValueError("train_labels is empty: the guidance needs labelled training features")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"train_labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    if corpus_feats.shape[0] < 1:
        raise ValueError("corpus_feats is empty")
    return train_feats, y.astype(np.int64)


def _class_means(xl: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(
            f"guidance 'anchored' needs labelled training features of every class; classes "
            f"{missing.tolist()} have none"
        )
    means = np.zeros((num_classes, xl.shape[1]), dtype=np.float64)
    np.add.at(means, y, xl.astype(np.float64))
    return (means / counts[:, None]).astype(np.float32)  # C, D


@dataclass(frozen=True)
class RejectionRule:
    """Per-class anchors and squared-distance radii of the rejection (module docstring)."""

    quantile: float
    anchors: np.ndarray  # (C, D) float32: class means of the (normalised) training features
    radius: np.ndarray  # (C,) float64 squared distance; -inf for a class without training features

    def distance(self, xb: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """Squared distance (float64, (B,)) of prepared rows ``xb`` (B, D) to the anchors of
        their classes ``cls`` (B,)."""
        diff = xb.astype(np.float64) - self.anchors[cls].astype(np.float64)  # B, D
        return np.einsum("bd,bd->b", diff, diff)

    def rejects(self, xb: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """(B,) bool: rows farther from their class's anchor than its radius."""
        return self.distance(xb, cls) > self.radius[cls]

    def within_any(self, xb: np.ndarray) -> np.ndarray:
        """(B,) bool: prepared rows ``xb`` (B, D) inside the radius of at least one class."""
        x = xb.astype(np.float64)
        a = self.anchors.astype(np.float64)
        d = (x * x).sum(1)[:, None] - 2.0 * x @ a.T + (a * a).sum(1)[None, :]  # B, C
        return (d <= self.radius[None, :]).any(axis=1)

    def radii_json(self) -> list[float | None]:
        """The radii for the stats (None for a class without training features)."""
        return [float(r) if np.isfinite(r) else None for r in self.radius]


def calibrate_rejection(
    train_feats: np.ndarray, train_labels: np.ndarray, num_classes: int, quantile: float, *, normalize: bool
) -> RejectionRule:
    """The rejection rule of one fold, from the fold's labelled TRAINING features only.

    Per class c: anchor a_c = mean of the (L2-normalised when ``normalize``) training
    features of class c; radius r_c = ``quantile``-quantile (numpy ``linear``) of their
    squared distances to a_c. A class without training features gets radius -inf (any face
    whose best class it is would be rejected). ``quantile`` in (0, 1); 1 means no rejection
    and is handled by the caller (``guided_pseudo_labels`` does not calibrate then)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"reject quantile must be in (0, 1) to calibrate (1 = off), got {quantile}")
    x = prepare_batch(np.asarray(train_feats), normalize, what="train_feats")  # M, D
    y = np.asarray(train_labels)
    if x.ndim != 2 or y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"train_feats (M, D) and integer train_labels (M,) expected, got {x.shape} {y.shape}")
    if y.size == 0 or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"train_labels must be non-empty and lie in [0, {num_classes})")
    y = y.astype(np.int64)
    counts = np.bincount(y, minlength=num_classes)
    sums = np.zeros((num_classes, x.shape[1]), dtype=np.float64)
    np.add.at(sums, y, x.astype(np.float64))
    anchors = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)  # C, D
    rule = RejectionRule(quantile=float(quantile), anchors=anchors, radius=np.full(num_classes, -np.inf))
    d = rule.distance(x, y)  # M
    for c in np.flatnonzero(counts):
        rule.radius[c] = float(np.quantile(d[y == c], quantile))
    return rule


def _nearest(index: faiss.Index, xt: np.ndarray) -> np.ndarray:
    return index.search(xt, 1)[1][:, 0].astype(np.int64)


def _anchored_centroids(
    corpus: np.ndarray, means: np.ndarray, cfg: ClusteringParams, seed: int, gpu: bool
) -> tuple[np.ndarray, int, bool, int]:
    """Anchored Lloyd iterations (anchor_weight > 0) on the seeded training sample.

    Returns (centroids (C, D), n_train, subsampled, iterations run)."""
    k, d = means.shape
    xt, subsampled = training_sample(corpus, k, cfg.max_points_per_centroid, seed, normalize=cfg.normalize)
    a = cfg.anchor_weight
    cent = means.copy()
    prev: np.ndarray | None = None
    it = 0
    for it in range(1, cfg.niter + 1):
        index = faiss.IndexFlatL2(d)
        if gpu:  # pragma: no cover - needs a faiss-gpu build
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(cent)
        assign = _nearest(index, xt)
        if prev is not None and np.array_equal(assign, prev):
            break
        prev = assign
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros((k, d), dtype=np.float64)
        np.add.at(sums, assign, xt.astype(np.float64))
        corpus_mean = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], means)  # C, D
        cent = ((1.0 - a) * corpus_mean + a * means).astype(np.float32)
    return np.ascontiguousarray(cent), int(len(xt)), subsampled, it


def _vote(
    centroids: np.ndarray, xl: np.ndarray, y: np.ndarray, num_classes: int, neighbours: int
) -> tuple[np.ndarray, np.ndarray]:
    """Majority class of the ``neighbours`` labelled points nearest each centroid and its share."""
    if neighbours > len(xl):
        raise ValueError(
            f"clustering.neighbours={neighbours} exceeds the {len(xl)} labelled training features"
        )
    index = faiss.IndexFlatL2(xl.shape[1])
    index.add(xl)
    _, nn = index.search(centroids, neighbours)  # k, neighbours (nearest first)
    votes = y[nn]  # k, neighbours
    cls = np.empty(len(centroids), dtype=np.int64)
    share = np.empty(len(centroids), dtype=np.float32)
    for j in range(len(centroids)):
        counts = np.bincount(votes[j], minlength=num_classes)
        top = np.flatnonzero(counts == counts.max())
        # tie: the tied class whose voter is nearest the centroid
        cls[j] = next(int(v) for v in votes[j] if v in top)
        share[j] = counts.max() / neighbours
    return cls, share


# --------------------------------------------------------------------- main entry
def _assign(
    feats: np.ndarray, centroids: np.ndarray, cluster_class: np.ndarray, share: np.ndarray,
    cfg: ClusteringParams, rule: RejectionRule | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Streamed nearest-centroid assignment of ``feats`` (N, D): (best class, cluster,
    confidence = vote share x margin to the nearest centroid of another class, rejected,
    objective = sum of squared distances to the nearest centroid)."""
    n, k = feats.shape[0], centroids.shape[0]
    rejected = np.zeros(n, dtype=bool)
    label = np.empty(n, dtype=np.int64)
    cluster = np.empty(n, dtype=np.int64)
    confidence = np.empty(n, dtype=np.float32)
    objective = 0.0
    for start, dist, ids in search_batched(
        feats, centroids, k, batch_size=cfg.batch_size, use_gpu=cfg.use_gpu, normalize=cfg.normalize
    ):
        cls = cluster_class[ids]  # B, k
        own = cls[:, 0]
        other = cls != own[:, None]  # B, k
        has_other = other.any(axis=1)
        pos = np.argmax(other, axis=1)
        d_own = dist[:, 0].astype(np.float64)
        d_other = dist[np.arange(len(dist)), pos].astype(np.float64)
        margin = np.where(has_other, (d_other - d_own) / np.maximum(d_other + d_own, _EPS), 1.0)
        sl = slice(start, start + len(ids))
        cluster[sl] = ids[:, 0]
        label[sl] = own
        confidence[sl] = np.clip(share[ids[:, 0]] * margin, 0.0, 1.0)
        objective += float(d_own.sum())
        if rule is not None:
            rejected[sl] = rule.rejects(prepare_batch(feats[sl], cfg.normalize), own)
    return label, cluster, confidence, rejected, objective


def pseudo_label_check(
    check_labels: np.ndarray,
    num_classes: int,
    *,
    assigned: tuple[np.ndarray, np.ndarray, np.ndarray],
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """How right the clustering's pseudo-labels are on labelled faces it did not see.

    ``check_labels`` (M,): the labels of held-out LABELLED faces (the fold's validation
    split), which were given the clustering's pseudo-labels exactly as a corpus face would
    get them (``assigned`` = their (best class, confidence, rejected) from the same
    centroids and rejection rule); their labels are read here only, to score. A check face
    counts as KEPT when it is not rejected and its confidence reaches the lowest confidence
    kept in its class in the pool (``pool`` = the pool's (label, confidence, kept)).

    Returns the JSON-ready ``check`` stats: ``n``, ``n_assigned``, ``n_kept``,
    ``acc_assigned`` / ``acc_kept`` (None when nothing is assigned / kept) and
    ``reliability`` = the chance-corrected accuracy of the assigned pseudo-labels,
    ``clip((acc_assigned - 1/K) / (1 - 1/K), 0, 1)`` (0 when nothing is assigned): 1 =
    every pseudo-label right, 0 = no better than a uniform guess among K classes. The
    assigned (not the kept) faces are scored: more faces, so a steadier estimate on a small
    validation split, and a conservative one (the kept faces are the confident ones)."""
    y = np.asarray(check_labels)
    label, confidence, rejected = (np.asarray(a) for a in assigned)
    pool_label, pool_conf, pool_kept = (np.asarray(a) for a in pool)
    if y.shape != label.shape:
        raise ValueError(f"check labels {y.shape} do not match the {label.shape} check faces")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"check labels must lie in [0, {num_classes})")
    threshold = np.full(num_classes, np.inf)
    for c in range(num_classes):
        kept_c = pool_kept & (pool_label == c)
        if kept_c.any():
            threshold[c] = float(pool_conf[kept_c].min())
    is_assigned = ~rejected
    is_kept = is_assigned & (confidence.astype(np.float64) >= threshold[label])
    right = label == y
    acc_assigned = float(right[is_assigned].mean()) if is_assigned.any() else None
    acc_kept = float(right[is_kept].mean()) if is_kept.any() else None
    chance = 1.0 / num_classes
    reliability = 0.0 if acc_assigned is None or num_classes < 2 else float(
        np.clip((acc_assigned - chance) / (1.0 - chance), 0.0, 1.0))
    return {
        "n": int(len(y)),
        "n_assigned": int(is_assigned.sum()),
        "n_kept": int(is_kept.sum()),
        "acc_assigned": acc_assigned,
        "acc_kept": acc_kept,
        "reliability": reliability,
    }


def guided_pseudo_labels(
    corpus_feats: np.ndarray,
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    num_classes: int,
    cfg: ClusteringParams,
    *,
    seed: int,
    threads: int | None = None,
    check: tuple[np.ndarray, np.ndarray] | None = None,
) -> PseudoLabels:
    """Expression pseudo-labels for every row of ``corpus_feats`` (N, D; may be a memmap).

    ``check``: (features, labels) of held-out labelled faces (the fold's VALIDATION split),
    which never move a centroid nor count in the selection: they get pseudo-labels as corpus
    faces would, and ``stats["check"]`` scores them (``pseudo_label_check``).

    ``train_feats`` (M, D) / ``train_labels`` (M,) must come from the fold's labelled
    TRAINING split only (see the module docstring). ``stats`` holds: n, n_kept,
    kept_per_class, assigned_per_class, n_assigned, n_rejected, not_kept_per_class,
    rejected_per_class, reject_radius (per class, None when off or for a class without
    training features), n_fit (corpus faces the centroids were fitted on: all of them
    without rejection), empty_classes, k, n_train, subsampled, used_gpu,
    objective (sum of squared distances of all N points to their nearest centroid, in the
    normalised space when ``cfg.normalize``), guidance, iterations, cluster_class,
    cluster_share, cluster_sizes, config, seed.
    """
    t0 = time.perf_counter()
    train_feats, y = _check_inputs(corpus_feats, train_feats, train_labels, num_classes)
    check_seed(seed)
    set_threads(threads)
    gpu = resolve_gpu(cfg.use_gpu)
    n = corpus_feats.shape[0]
    xl = prepare_batch(train_feats, cfg.normalize, what="train_feats")  # M, D

    # rejection radii from the labelled TRAINING features only (module docstring); the
    # faces outside every class's radius cannot get a pseudo-label and do not move centroids
    rule = (
        calibrate_rejection(train_feats, y, num_classes, cfg.reject_quantile, normalize=cfg.normalize)
        if cfg.reject_quantile < 1.0 else None
    )
    fit_feats: np.ndarray = corpus_feats
    n_fit = n
    if rule is not None:
        candidates = np.zeros(n, dtype=bool)
        for start in range(0, n, cfg.batch_size):
            sl = slice(start, min(start + cfg.batch_size, n))
            candidates[sl] = rule.within_any(prepare_batch(corpus_feats[sl], cfg.normalize, what="corpus_feats"))
        n_fit = int(candidates.sum())
        k_needed = num_classes if cfg.guidance == "anchored" else cfg.clusters_per_class * num_classes
        if n_fit < k_needed:
            raise ValueError(
                f"clustering.reject_quantile={cfg.reject_quantile}: only {n_fit} of {n} corpus faces lie within "
                f"the training spread of any labelled class, fewer than the {k_needed} clusters to fit; raise "
                "the quantile (1 = no rejection) or check that the corpus and the labelled set share a feature space"
            )
        fit_feats = np.asarray(corpus_feats[np.flatnonzero(candidates)])
        log.info("pseudo-labels: centroids fitted on the %d of %d corpus faces within some class's training spread",
                 n_fit, n)

    iterations = cfg.niter
    if cfg.guidance == "anchored":
        k = num_classes
        if k > n:
            raise ValueError(f"{k} clusters need at least {k} corpus points, got {n}")
        means = _class_means(xl, y, num_classes)
        if cfg.anchor_weight == 0.0:
            centroids, n_train, subsampled, _, _ = train_centroids(
                fit_feats, k, niter=cfg.niter, seed=seed, init_centroids=means,
                max_points_per_centroid=cfg.max_points_per_centroid, use_gpu=cfg.use_gpu,
                normalize=cfg.normalize,
            )
        else:
            centroids, n_train, subsampled, iterations = _anchored_centroids(fit_feats, means, cfg, seed, gpu)
        cluster_class = np.arange(k, dtype=np.int64)
        share = np.ones(k, dtype=np.float32)
    else:
        k = cfg.clusters_per_class * num_classes
        if k > n:
            raise ValueError(
                f"overcluster needs k = clusters_per_class * num_classes = {k} <= N = {n} corpus points"
            )
        centroids, n_train, subsampled, _, _ = train_centroids(
            fit_feats, k, niter=cfg.niter, seed=seed,
            max_points_per_centroid=cfg.max_points_per_centroid, use_gpu=cfg.use_gpu,
            normalize=cfg.normalize,
        )
        cluster_class, share = _vote(centroids, xl, y, num_classes, cfg.neighbours)

    # one streamed pass: nearest centroid, nearest centroid of another class (+ rejection)
    label, cluster, confidence, rejected, objective = _assign(corpus_feats, centroids, cluster_class, share, cfg, rule)

    kept = select_pseudo_labels(label, confidence, num_classes, cfg.keep_fraction, cfg.balance, rejected)
    check_stats = None
    if check is not None:
        check_feats = np.asarray(check[0], dtype=np.float32)
        if check_feats.ndim != 2 or check_feats.shape[1] != corpus_feats.shape[1]:
            raise ValueError(f"check features must be (M, {corpus_feats.shape[1]}), got {check_feats.shape}")
        c_label, _, c_conf, c_rej, _ = _assign(check_feats, centroids, cluster_class, share, cfg, rule)
        check_stats = pseudo_label_check(check[1], num_classes, assigned=(c_label, c_conf, c_rej),
                                         pool=(label, confidence, kept))
    kept_per_class = np.bincount(label[kept], minlength=num_classes)
    assigned_per_class = np.bincount(label[~rejected], minlength=num_classes)
    rejected_per_class = np.bincount(label[rejected], minlength=num_classes)
    if rule is not None:
        log.info(
            "pseudo-labels: %d of %d corpus images rejected (no labelled class within the training spread, "
            "quantile %g); per best class %s", int(rejected.sum()), n, cfg.reject_quantile, rejected_per_class.tolist(),
        )
    empty = np.flatnonzero(kept_per_class == 0).tolist()
    if empty:
        log.warning(
            "pseudo-labels: classes %s have no kept corpus image (guidance %s; rejected per class %s); they "
            "are absent from the pseudo-labelled set", empty, cfg.guidance, rejected_per_class.tolist(),
        )
    stats: dict[str, Any] = {
        "n": int(n),
        "n_kept": int(kept.sum()),
        "kept_per_class": kept_per_class.tolist(),
        "assigned_per_class": assigned_per_class.tolist(),
        "n_assigned": int(n - rejected.sum()),
        "n_rejected": int(rejected.sum()),
        "not_kept_per_class": (assigned_per_class - kept_per_class).tolist(),
        "rejected_per_class": rejected_per_class.tolist(),
        "reject_radius": rule.radii_json() if rule is not None else None,
        "n_fit": n_fit,
        "empty_classes": empty,
        "k": int(k),
        "n_train": int(n_train),
        "subsampled": bool(subsampled),
        "used_gpu": bool(gpu),
        "objective": float(objective),
        "guidance": cfg.guidance,
        "iterations": int(iterations),
        "cluster_class": cluster_class.tolist(),
        "cluster_share": [float(s) for s in share],
        "cluster_sizes": np.bincount(cluster, minlength=k).tolist(),
        "n_labelled": int(len(y)),
        "config": to_dict(cfg),
        "seed": int(seed),
        **({"check": check_stats} if check_stats is not None else {}),
    }
    # wall time is logged, not stored: the stats are a versioned artifact (same seed, same bytes)
    log.info("guided clustering: %d corpus images, k=%d, %.2f s", n, k, time.perf_counter() - t0)
    return PseudoLabels(label=label, confidence=confidence, kept=kept, cluster=cluster, stats=stats, rejected=rejected)


# ------------------------------------------------------------------------------ I/O
def write_pseudo_labels(out_dir: Path, pl: PseudoLabels, corpus_paths: Sequence[str], classes: Sequence[str]) -> None:
    """Write ``out_dir/labels.csv`` (columns ``CSV_COLUMNS``; label as class name, kept and
    rejected as 0/1, confidence with 9 significant digits = exact float32) and
    ``out_dir/stats.json`` (``pl.stats`` plus ``classes``), each atomically."""
    out_dir = Path(out_dir)
    n = len(pl.label)
    if len(corpus_paths) != n:
        raise ValueError(f"{len(corpus_paths)} corpus paths for {n} pseudo-labels")
    for name in ("confidence", "kept", "cluster"):
        if len(getattr(pl, name)) != n:
            raise ValueError(f"pseudo-labels: {name} has {len(getattr(pl, name))} entries, label has {n}")
    if n and (pl.label.min() < 0 or pl.label.max() >= len(classes)):
        raise ValueError(f"pseudo-label values outside [0, {len(classes)}) for classes {list(classes)}")
    rejected = pl.rejected_mask
    if rejected.shape != (n,):
        raise ValueError(f"pseudo-labels: rejected has shape {rejected.shape}, label has {n} entries")
    if (rejected & np.asarray(pl.kept, dtype=bool)).any():
        raise ValueError("pseudo-labels: a rejected corpus image is marked kept")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for i in range(n):
        w.writerow(
            (i, corpus_paths[i], classes[int(pl.label[i])], f"{float(pl.confidence[i]):.9g}",
             int(pl.cluster[i]), int(bool(pl.kept[i])), int(rejected[i]))
        )
    write_text(out_dir / "labels.csv", buf.getvalue())
    write_json(out_dir / "stats.json", {**pl.stats, "classes": list(classes)})


def read_pseudo_labels(out_dir: Path, classes: Sequence[str], *, corpus_paths: Sequence[str] | None = None) -> PseudoLabels:
    """Read what ``write_pseudo_labels`` wrote; any problem -> ValueError naming the file.

    With ``corpus_paths`` the CSV's paths must equal them, in order."""
    pl, paths = read_pseudo_labels_with_paths(out_dir, classes)
    if corpus_paths is not None and list(corpus_paths) != paths:
        raise ValueError(f"{Path(out_dir) / 'labels.csv'}: paths do not match the given corpus paths (order or content)")
    return pl


def read_pseudo_labels_with_paths(out_dir: Path, classes: Sequence[str]) -> tuple[PseudoLabels, list[str]]:
    """``read_pseudo_labels`` and the pool path of every row (``labels.csv``'s ``path``
    column, in row order), from one read of the files."""
    out_dir = Path(out_dir)
    csv_path, stats_path = out_dir / "labels.csv", out_dir / "stats.json"
    for p in (csv_path, stats_path):
        if not p.is_file():
            raise ValueError(f"{p}: pseudo-label file is missing")
    try:
        stats = json.loads(stats_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{stats_path}: not valid JSON ({e})") from e
    if not isinstance(stats, dict):
        raise ValueError(f"{stats_path}: expected a JSON object")
    if "classes" in stats and list(stats["classes"]) != list(classes):
        raise ValueError(f"{stats_path}: written for classes {stats['classes']}, expected {list(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise ValueError(f"{csv_path}: header must be {','.join(CSV_COLUMNS)}, got {header}")
        rows = list(reader)
    n = len(rows)
    label = np.empty(n, dtype=np.int64)
    confidence = np.empty(n, dtype=np.float32)
    cluster = np.empty(n, dtype=np.int64)
    kept = np.empty(n, dtype=bool)
    rejected = np.empty(n, dtype=bool)
    paths: list[str] = []
    for i, row in enumerate(rows):
        where = f"{csv_path}, line {i + 2}"
        if len(row) != len(CSV_COLUMNS):
            raise ValueError(f"{where}: expected {len(CSV_COLUMNS)} fields, got {len(row)}")
        idx, path, name, conf, clus, keep, rej = row
        if idx != str(i):
            raise ValueError(f"{where}: index {idx!r}, expected {i}")
        if name not in index:
            raise ValueError(f"{where}: label {name!r} is not one of {list(classes)}")
        try:
            c = float(conf)
            j = int(clus)
        except ValueError as e:
            raise ValueError(f"{where}: bad number ({e})") from e
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"{where}: confidence {c} outside [0, 1]")
        if j < 0:
            raise ValueError(f"{where}: negative cluster id {j}")
        if keep not in ("0", "1"):
            raise ValueError(f"{where}: kept must be 0 or 1, got {keep!r}")
        if rej not in ("0", "1"):
            raise ValueError(f"{where}: rejected must be 0 or 1, got {rej!r}")
        if keep == rej == "1":
            raise ValueError(f"{where}: a rejected image cannot be kept")
        label[i], confidence[i], cluster[i], kept[i], rejected[i] = index[name], c, j, keep == "1", rej == "1"
        paths.append(path)
    if "n" in stats and stats["n"] != n:
        raise ValueError(f"{stats_path}: n={stats['n']} but {csv_path} has {n} rows")
    if "n_kept" in stats and stats["n_kept"] != int(kept.sum()):
        raise ValueError(f"{stats_path}: n_kept={stats['n_kept']} but {csv_path} keeps {int(kept.sum())}")
    if "n_rejected" in stats and stats["n_rejected"] != int(rejected.sum()):
        raise ValueError(f"{stats_path}: n_rejected={stats['n_rejected']} but {csv_path} rejects {int(rejected.sum())}")
    stats = {key: v for key, v in stats.items() if key != "classes"}
    pl = PseudoLabels(label=label, confidence=confidence, kept=kept, cluster=cluster, stats=stats, rejected=rejected)
    return pl, paths
