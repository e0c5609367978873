"""How good is a synthetic set? Expression fidelity, distribution distance, identity spread.

All measurements use networks trained on REAL training data only (the pipeline passes the
fold's baseline recogniser), so the synthetic set is judged by a model that never saw it.

* **Expression fidelity** (:func:`expression_accuracy`): accuracy of the recogniser on the
  synthetic images against their TARGET expressions. The same recogniser's accuracy on the
  real training images (which it was fitted to, hence optimistic) is reported beside it as
  the ceiling to compare with.
* **Fréchet distance** (:func:`frechet_distance`): the FID formula on the recogniser's
  penultimate features (not Inception features: numbers are comparable only within this
  pipeline, same fold and recogniser). With few hundred samples the estimate is biased
  upwards, so :func:`quality_report` also reports the distance between two random halves of
  the real training set (``synth/fid_real_halves``), the floor that sampling noise alone
  produces at about that sample size.
* **Identity spread** (:func:`identity_diversity`): do prior identities look like many
  distinct people, or collapse onto a few training subjects? Features come from an
  identity network when one is given, else from the recogniser (an expression model, so
  its "identity" metrics are only a rough proxy; ``synth/identity_features`` says which).

Distances between features are cosine distances ``1 - cos`` of L2-normalised vectors. An
identity's feature is the re-normalised mean of its images' normalised features (a prior
identity is rendered once per class, so this averages over expressions; a training
subject's over its images).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn
from scipy.sparse.csgraph import connected_components

from fer.metrics.classification import classification_metrics
from fer.training.inference import embed, predict

log = logging.getLogger(__name__)

__all__ = [
    "PRIOR",
    "REEXPRESSED",
    "SyntheticLike",
    "expression_accuracy",
    "frechet_distance",
    "group_means",
    "identity_diversity",
    "quality_report",
]

PRIOR: str = "prior"  # same values as fer.methods.synthesis
REEXPRESSED: str = "reexpressed"
#: Seed of the random real/real half split (a fixed constant: the reference is a property
#: of the real set, not of the synthesis seed).
_HALVES_SEED: int = 0


class SyntheticLike(Protocol):
    """What :func:`quality_report` reads from a synthetic set (``SyntheticSet`` fits).

    ``source_index`` (rows into the real training images, -1 for prior) is optional.
    """

    images: np.ndarray  # (M, H, W, C) uint8
    labels: np.ndarray  # (M,) int
    source: np.ndarray  # (M,) str, "prior" | "reexpressed"
    identity: np.ndarray  # (M,) str


# ------------------------------------------------------------------------- expression
def expression_accuracy(
    classifier: nn.Module,
    images_uint8: np.ndarray,
    labels: np.ndarray,
    device: torch.device | str,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Accuracy of ``classifier`` on uint8 images (N, H, W, C) against ``labels``.

    Returns:
        ``{"acc", "mean_class_acc", "per_class"}``; ``per_class`` holds the recall of each
        of the classifier's K classes (``None`` for a class absent from ``labels``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images_uint8):
        raise ValueError(f"{len(images_uint8)} images but {len(labels)} labels")
    logits = predict(classifier, images_uint8, device, batch_size)  # N, K
    m = classification_metrics(labels, logits.argmax(1), logits.shape[1])
    return {"acc": m["acc"], "mean_class_acc": m["mean_class_acc"], "per_class": m["per_class_recall"]}


# --------------------------------------------------------------------------- Fréchet
def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula).

    ``d = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` with sample covariances
    (ddof = 1) in float64 and ``scipy.linalg.sqrtm``. When the square root is not finite
    (singular product, e.g. fewer samples than dimensions), ``eps * I`` is added to both
    covariances and it is recomputed. A complex result's real part is used; if its
    imaginary part is not small (> 1e-3 of the trace scale) a warning is logged and the
    trace term is recomputed exactly as ``sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2}))`` (a
    symmetric PSD matrix with the same eigenvalues as ``S_a S_b``). The result is clipped
    at 0 (rounding can make identical sets slightly negative).

    Args:
        feat_a: (N, D) features, N >= 2.
        feat_b: (M, D) features, M >= 2.
    """
    a = np.asarray(feat_a, dtype=np.float64)
    b = np.asarray(feat_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 samples in each set")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("features contain non-finite values")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu_a - mu_b

    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        log.info("frechet_distance: singular covariance product; adding %g * I", eps)
        offset = np.eye(s_a.shape[0]) * eps
        s_a, s_b = s_a + offset, s_b + offset
        covmean = scipy.linalg.sqrtm(s_a @ s_b)
    scale = max(1.0, float(np.trace(s_a) + np.trace(s_b)))
    if np.iscomplexobj(covmean):
        imag = float(np.abs(covmean.imag).max())
        if imag > 1e-3 * scale:
            log.warning(
                "frechet_distance: sqrtm has imaginary part %.3g (trace scale %.3g); "
                "using the symmetric eigenvalue form",
                imag,
                scale,
            )
            tr_covmean = _trace_sqrt_product(s_a, s_b)
        else:
            tr_covmean = float(np.trace(covmean.real))
    else:
        tr_covmean = float(np.trace(covmean))
    d = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_covmean)
    return max(d, 0.0)


def _trace_sqrt_product(s_a: np.ndarray, s_b: np.ndarray) -> float:
    """Tr (S_a S_b)^{1/2} for symmetric PSD S_a, S_b via eigh (exact, always real)."""
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root_a @ s_b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())


# -------------------------------------------------------------------------- identity
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def group_means(feats: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm mean of the unit-norm features of each group -> (names (G,), (G, D))."""
    names, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    u = _unit(feats)
    sums = np.zeros((len(names), u.shape[1]))
    np.add.at(sums, inv, u)
    return names, _unit(sums)


def _mean_pairwise(u: np.ndarray) -> float | None:
    """Mean cosine distance over distinct pairs of unit rows (None for < 2 rows)."""
    n = len(u)
    if n < 2:
        return None
    sim = u @ u.T
    return float((1.0 - sim[np.triu_indices(n, 1)]).mean())


def identity_diversity(
    prior_feats: np.ndarray,
    train_feats: np.ndarray,
    train_subjects: Sequence[str] | np.ndarray,
    *,
    threshold: float | None = None,
) -> dict[str, Any]:
    """How many distinct identities do the prior identities look like?

    Args:
        prior_feats: (P, D), ONE feature per prior identity (e.g. ``group_means`` over its
            renderings).
        train_feats: (N, D), one feature per real training image.
        train_subjects: (N,) subject ids of the training images.
        threshold: cosine distance under which two faces count as the same person. None:
            the median cosine distance of a training image to its own subject's mean
            feature (over subjects with >= 2 images): "as close as a subject's own images".
    Returns:
        * ``n_prior``, ``n_train_subjects``;
        * ``nn_dist_median``, ``nn_dist_p10``: cosine distance of each prior identity to
          its nearest training IMAGE (small: a near-copy of a training face);
        * ``distinct_nn_subjects``: number of distinct training subjects that are some
          prior identity's nearest (by nearest image); ``distinct_nn_frac`` = that over
          ``min(P, S)`` (1: every prior identity has its own nearest subject);
        * ``nn_shared_frac``: fraction of prior identities whose nearest training subject
          is also another prior identity's nearest (collapse onto few subjects);
        * ``pairwise_prior``, ``pairwise_train``: mean pairwise cosine distance among
          prior identities and among training-subject mean features; ``pairwise_ratio`` =
          prior / train (about 1: as diverse as the real identities; << 1: collapse);
        * ``threshold``, ``threshold_source`` ("given" | "within_subject_median");
          ``match_frac``: fraction of prior identities within ``threshold`` of a
          training-subject mean; ``n_prior_clusters``: connected components of the prior
          identities linked when within ``threshold`` of each other ("how many different
          people" the prior identities look like).
        Values that need more samples than there are are ``None``.
    """
    p = _unit(prior_feats)
    t = _unit(train_feats)
    subjects = np.asarray(train_subjects).astype(str)
    if p.ndim != 2 or t.ndim != 2 or p.shape[1] != t.shape[1]:
        raise ValueError(f"features must be (P, D) and (N, D), got {p.shape} and {t.shape}")
    if subjects.shape != (len(t),):
        raise ValueError(f"train_subjects must have shape ({len(t)},)")
    if len(t) == 0:
        raise ValueError("no training features")
    names, centres = group_means(t, subjects)  # S, D

    if threshold is None:
        _, inv = np.unique(subjects, return_inverse=True)
        counts = np.bincount(inv)
        own = 1.0 - np.einsum("nd,nd->n", t, centres[inv])  # distance to own subject mean
        own = own[counts[inv] >= 2]
        thr: float | None = float(np.median(own)) if own.size else None
        source = "within_subject_median"
    else:
        thr, source = float(threshold), "given"

    out: dict[str, Any] = {
        "n_prior": int(len(p)),
        "n_train_subjects": int(len(names)),
        "nn_dist_median": None,
        "nn_dist_p10": None,
        "distinct_nn_subjects": 0,
        "distinct_nn_frac": None,
        "nn_shared_frac": None,
        "pairwise_prior": _mean_pairwise(p),
        "pairwise_train": _mean_pairwise(centres),
        "pairwise_ratio": None,
        "threshold": thr,
        "threshold_source": source,
        "match_frac": None,
        "n_prior_clusters": None,
    }
    if out["pairwise_prior"] is not None and out["pairwise_train"]:
        out["pairwise_ratio"] = out["pairwise_prior"] / out["pairwise_train"]
    if len(p) == 0:
        return out

    sim = p @ t.T  # P, N
    nn_idx = sim.argmax(1)
    nn_dist = 1.0 - sim[np.arange(len(p)), nn_idx]
    nn_subj = subjects[nn_idx]
    uniq, inv, cnt = np.unique(nn_subj, return_inverse=True, return_counts=True)
    out["nn_dist_median"] = float(np.median(nn_dist))
    out["nn_dist_p10"] = float(np.percentile(nn_dist, 10))
    out["distinct_nn_subjects"] = int(len(uniq))
    out["distinct_nn_frac"] = float(len(uniq) / min(len(p), len(names)))
    out["nn_shared_frac"] = float((cnt[inv] > 1).mean())
    if thr is not None:
        centre_dist = 1.0 - (p @ centres.T).max(1)
        out["match_frac"] = float((centre_dist <= thr).mean())
        adj = (1.0 - p @ p.T) <= thr
        out["n_prior_clusters"] = int(connected_components(adj, directed=False)[0])
    return out


# ---------------------------------------------------------------------------- report
def _prefixed(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in d.items()}


def quality_report(
    classifier: nn.Module,
    identity_embed: Callable[[np.ndarray], np.ndarray] | None,
    real_train_images: np.ndarray,
    real_train_labels: np.ndarray,
    real_train_subjects: np.ndarray,
    synthetic: SyntheticLike,
    device: torch.device | str,
    batch_size: int = 256,
    *,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """All synthetic-set quality numbers under flat ``synth/...`` keys (JSON-ready).

    Args:
        classifier: expression recogniser trained on the fold's REAL training data only
            (needs ``forward`` -> logits and ``features`` -> penultimate features).
        identity_embed: uint8 (N, H, W, C) -> (N, D) identity features, or None to use the
            classifier's penultimate features.
        real_train_images, real_train_labels, real_train_subjects: the fold's real
            training part (the reference distribution).
        synthetic: a ``SyntheticSet`` or anything with ``images, labels, source, identity``
            (``source_index`` optional).
        device: where the classifier runs.
    Returns:
        Counts ``synth/n, n_prior, n_reexpressed, n_prior_identities, n_train,
        n_train_subjects``; expression ``synth/expr_acc, expr_mean_class_acc,
        expr_per_class`` (list), ``expr_acc_prior, expr_acc_reexpressed,
        real_expr_acc, real_expr_mean_class_acc``; with ``val_images``/``val_labels`` (the
        fold's real validation faces: unseen subjects) ``synth/real_val_acc`` and
        ``synth/expr_acc_ratio`` = expr_acc / real_val_acc (1: the synthetic faces are as
        recognisable as real unseen ones), likewise ``expr_acc_ratio_prior`` and
        ``expr_acc_ratio_reexpressed``; Fréchet ``synth/fid_recognizer``
        (real train vs all synthetic), ``fid_recognizer_prior, fid_recognizer_reexpressed,
        fid_real_halves`` (real vs real, two random halves: the small-sample floor);
        identity ``synth/identity_features`` ("recognizer" | "identity_net"),
        ``prior_<key>`` for the keys of :func:`identity_diversity` (``pairwise_train``
        becomes ``synth/train_pairwise``; its counts are the ones above), and
        ``reexp_identity_retrieval`` (fraction of re-expressed images whose nearest
        training-subject mean is their source subject; chance ~ 1 / n_train_subjects) and
        ``reexp_identity_cos`` (mean cosine similarity between a re-expressed image and its
        source image in the identity space, when ``source_index`` is given) beside
        ``train_identity_cos_other`` (the same between training images of different
        subjects: the level of "another person").
        A value that cannot be computed (e.g. no prior rows) is ``None``.
    """
    x_syn = np.asarray(synthetic.images)
    y_syn = np.asarray(synthetic.labels, dtype=np.int64)
    src = np.asarray(synthetic.source).astype(str)
    ident = np.asarray(synthetic.identity).astype(str)
    y_real = np.asarray(real_train_labels, dtype=np.int64)
    subj_real = np.asarray(real_train_subjects).astype(str)
    is_prior, is_re = src == PRIOR, src == REEXPRESSED
    if not (is_prior | is_re).all():
        raise ValueError(f"synthetic.source must be {PRIOR!r} or {REEXPRESSED!r}")

    out: dict[str, Any] = {
        "synth/n": int(len(y_syn)),
        "synth/n_prior": int(is_prior.sum()),
        "synth/n_reexpressed": int(is_re.sum()),
        "synth/n_prior_identities": int(np.unique(ident[is_prior]).size),
        "synth/n_train": int(len(y_real)),
        "synth/n_train_subjects": int(np.unique(subj_real).size),
    }

    # Expression fidelity.
    logits = predict(classifier, x_syn, device, batch_size)  # M, K
    k = logits.shape[1]
    pred = logits.argmax(1)
    m = classification_metrics(y_syn, pred, k)
    out["synth/expr_acc"] = m["acc"]
    out["synth/expr_mean_class_acc"] = m["mean_class_acc"]
    out["synth/expr_per_class"] = m["per_class_recall"]
    for name, mask in (("prior", is_prior), ("reexpressed", is_re)):
        out[f"synth/expr_acc_{name}"] = float((pred[mask] == y_syn[mask]).mean()) if mask.any() else None
    real = expression_accuracy(classifier, real_train_images, y_real, device, batch_size)
    out["synth/real_expr_acc"] = real["acc"]
    out["synth/real_expr_mean_class_acc"] = real["mean_class_acc"]
    if val_images is not None and val_labels is not None:
        val_acc = expression_accuracy(classifier, val_images, np.asarray(val_labels), device, batch_size)["acc"]
        out["synth/real_val_acc"] = val_acc
        for key in ("", "_prior", "_reexpressed"):
            acc = out[f"synth/expr_acc{key}"]
            out[f"synth/expr_acc_ratio{key}"] = acc / val_acc if acc is not None and val_acc > 0 else None

    # Fréchet distances in the recogniser's feature space.
    f_real = embed(classifier, real_train_images, device, batch_size)  # N, D
    f_syn = embed(classifier, x_syn, device, batch_size)  # M, D

    def _fd(a: np.ndarray, b: np.ndarray) -> float | None:
        return frechet_distance(a, b) if len(a) >= 2 and len(b) >= 2 else None

    out["synth/fid_recognizer"] = _fd(f_real, f_syn)
    out["synth/fid_recognizer_prior"] = _fd(f_real, f_syn[is_prior])
    out["synth/fid_recognizer_reexpressed"] = _fd(f_real, f_syn[is_re])
    perm = np.random.default_rng(_HALVES_SEED).permutation(len(f_real))
    half = len(perm) // 2
    out["synth/fid_real_halves"] = _fd(f_real[perm[:half]], f_real[perm[half:]])

    # Identity spread.
    if identity_embed is None:
        out["synth/identity_features"] = "recognizer"
        i_real, i_syn = f_real, f_syn
    else:
        out["synth/identity_features"] = "identity_net"
        i_real = np.asarray(identity_embed(real_train_images))
        i_syn = np.asarray(identity_embed(x_syn))
    _, prior_means = group_means(i_syn[is_prior], ident[is_prior])
    div = identity_diversity(prior_means.reshape(-1, i_real.shape[1]), i_real, subj_real)
    out["synth/train_pairwise"] = div.pop("pairwise_train")
    for key in ("n_prior", "n_train_subjects"):  # already counted above
        div.pop(key)
    out.update(_prefixed(div, "synth/prior_"))

    names, centres = group_means(i_real, subj_real)
    if is_re.any():
        nearest = names[(_unit(i_syn[is_re]) @ centres.T).argmax(1)]
        out["synth/reexp_identity_retrieval"] = float((nearest == ident[is_re]).mean())
    else:
        out["synth/reexp_identity_retrieval"] = None
    source_index = getattr(synthetic, "source_index", None)
    out["synth/reexp_identity_cos"] = None
    if is_re.any() and source_index is not None:
        u_real, u_syn = _unit(i_real), _unit(i_syn)
        out["synth/reexp_identity_cos"] = float(
            np.einsum("nd,nd->n", u_syn[is_re], u_real[np.asarray(source_index)[is_re]]).mean())
    u = _unit(i_real)
    other = subj_real[:, None] != subj_real[None, :]
    out["synth/train_identity_cos_other"] = float((u @ u.T)[other].mean()) if other.any() else None
    return out
