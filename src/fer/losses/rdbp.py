"""Intra-class loss with real data-guided back-propagation (RDBP).

Follows Yan, Huang, Chen, Shen, Wang, "Joint Deep Learning of Facial Expression
Synthesis and Recognition", IEEE Trans. Multimedia 22(11), 2020 (arXiv 2002.02194):
an intra-class loss reduces the variation between real and synthetic images of the same
class, and RDBP lets only the REAL data guide it -- the real features act as fixed
targets, so the gradient of this loss reaches the network only through the synthetic
branch and the real features are never pulled toward (possibly imperfect) synthetic ones.
The exact form is not public; this is the project's reading (see
``/work/shared/notes/methods.md``, M1):

* Features are L2-normalised first (``s = f_syn / |f_syn|``, ``r = f_real / |f_real|``).
  This makes the loss scale-free and bounded (``|s - a|^2 = 2 - 2 cos`` in [0, 4]), so
  ``rdbp.lambda`` means the same for any backbone and width, and the loss cannot be
  lowered by merely shrinking all feature norms.
* Anchor of a synthetic sample of class c:
  - ``"class_mean"``: the direction of the mean of the normalised real features of class
    c in the batch, ``a_c = normalize(mean_{i: y_i = c} r_i)`` (a real-only class
    centre);
  - ``"per_sample"``: the nearest (in the normalised space) real feature of class c in
    the batch.
* Loss = mean over the synthetic samples that HAVE an anchor of ``|s - a|^2``. A
  synthetic sample whose class has no real sample in the batch is skipped (counted in
  ``n_skipped``); when no sample has an anchor the loss is an exact 0 that is still
  connected to ``feat_syn``'s graph (so ``backward`` works and gives zero gradients).
* ``stop_gradient=True`` (RDBP): the anchors are detached -- d loss / d feat_real == 0
  exactly. ``stop_gradient=False`` (the ablation): the gradient flows into both
  branches.

:func:`rdbp_loss` is what a trainer calls: the params.yaml section ``rdbp``
(:class:`fer.params.RdbpParams`: ``lambda``, ``stop_gradient``, ``anchor``) in, the
weighted loss and its named terms out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fer.params import RdbpParams
from fer.params.sections import RDBP_ANCHORS

#: Anchor modes of ``intra_class_loss`` (params.yaml ``rdbp.anchor``).
ANCHORS: tuple[str, ...] = RDBP_ANCHORS
_EPS = 1e-12


def intra_class_loss(
    feat_syn: Tensor,
    y_syn: Tensor,
    feat_real: Tensor,
    y_real: Tensor,
    *,
    stop_gradient: bool = True,
    anchor: str = "class_mean",
    num_classes: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Pull synthetic features toward real anchors of the same class (module docstring).

    Args:
        feat_syn: (Ns, D) features of synthetic images.
        y_syn: (Ns,) their (target) classes.
        feat_real: (Nr, D) features of real images.
        y_real: (Nr,) their classes.
        stop_gradient: RDBP -- detach the real anchors (True) or not (False, ablation).
        anchor: ``"class_mean"`` or ``"per_sample"`` (nearest real sample of the class).
        num_classes: K, an upper bound of the labels; given, the function runs without a
            device sync (training loops pass it); None: taken from the labels.
    Returns:
        ``(loss, stats)``: the scalar loss (float32) and 0-dim tensors ``n_used`` (synthetic
        samples with an anchor) and ``n_skipped`` (synthetic samples whose class has no
        real sample in the batch). They stay tensors so a training step needs no sync.
    """
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    if feat_syn.ndim != 2 or feat_real.ndim != 2 or feat_syn.shape[1] != feat_real.shape[1]:
        raise ValueError(
            f"features must be (Ns, D) and (Nr, D), got {tuple(feat_syn.shape)} and "
            f"{tuple(feat_real.shape)}"
        )
    if y_syn.shape != feat_syn.shape[:1] or y_real.shape != feat_real.shape[:1]:
        raise ValueError("labels must be (Ns,) and (Nr,) matching the features")
    s = F.normalize(feat_syn.float(), dim=1, eps=_EPS)  # Ns, D
    r = F.normalize(feat_real.float(), dim=1, eps=_EPS)  # Nr, D
    if stop_gradient:
        r = r.detach()  # RDBP: the real branch is a fixed target
    y_syn = y_syn.long()
    y_real = y_real.long()

    if anchor == "class_mean":
        if num_classes is None:
            top = max(int(y_syn.max()) if y_syn.numel() else -1,
                      int(y_real.max()) if y_real.numel() else -1)
            num_classes = top + 1
        k = max(int(num_classes), 1)
        onehot = F.one_hot(y_real, k).to(r.dtype)  # Nr, K
        counts = onehot.sum(0)  # K
        centres = F.normalize(onehot.t() @ r, dim=1, eps=_EPS)  # K, D (zero row: no real)
        valid = counts[y_syn] > 0  # Ns
        target = centres[y_syn]  # Ns, D
    else:
        same = y_syn[:, None] == y_real[None, :]  # Ns, Nr
        with torch.no_grad():
            # |s - r|^2 = 2 - 2 s.r for unit vectors: nearest = largest cosine
            cos = (s.detach() @ r.detach().t()).masked_fill(~same, -torch.inf)  # Ns, Nr
            nearest = cos.argmax(1) if r.shape[0] else torch.zeros_like(y_syn)  # Ns
        valid = same.any(1)  # Ns
        target = r[nearest] if r.shape[0] else torch.zeros_like(s)  # Ns, D

    dist = ((s - target) ** 2).sum(1)  # Ns
    weight = valid.to(dist.dtype)  # Ns
    n_used = valid.sum()
    loss = (dist * weight).sum() / n_used.clamp_min(1).to(dist.dtype)
    stats = {"n_used": n_used, "n_skipped": (~valid).sum()}
    return loss, stats


def rdbp_loss(
    feat_syn: Tensor,
    y_syn: Tensor,
    feat_real: Tensor,
    y_real: Tensor,
    rdbp: RdbpParams,
    *,
    num_classes: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The intra-class loss of the ``rdbp`` section, weighted by ``rdbp.lambda``.

    Returns ``(lambda * intra, {"train/intra": intra, "train/intra_skipped": share of
    the synthetic samples without a real anchor of their class in the batch})``; the terms
    are unweighted (see :func:`intra_class_loss` for the loss itself).
    """
    intra, stats = intra_class_loss(
        feat_syn, y_syn, feat_real, y_real,
        stop_gradient=rdbp.stop_gradient, anchor=rdbp.anchor, num_classes=num_classes,
    )
    skipped = stats["n_skipped"].float() / max(1, feat_syn.shape[0])
    return rdbp.lambda_ * intra, {"train/intra": intra, "train/intra_skipped": skipped}
