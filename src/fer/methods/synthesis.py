"""Class-balanced synthetic face sets from a trained FESGAN (M1, stage 1 output).

A synthetic set holds exactly ``per_class`` images of every expression class. Within a
class, ``n_prior = round(prior_fraction * per_class)`` images come from *prior* identities
and the remaining ``per_class - n_prior`` are *re-expressed* training identities.
(``round`` is Python's, i.e. round-half-to-even; :func:`split_counts` is the one place that
computes it.)

Design decisions
----------------
* **Prior identities are a pool rendered in every class.** ``n_prior`` identity codes
  ``z ~ U(-1, 1)^z_dim`` are drawn once; each is rendered with every target expression.
  The same synthetic identity therefore appears once in each class (identity
  ``"prior-00017"`` in all K classes), so a recogniser trained on the set cannot use
  identity as a shortcut for expression, and identity metrics can average an identity's
  K renderings (``fer.evaluation.synthetic_quality``).
* **Re-expressed identities** are a training image ``x`` given the target expression by
  the synthesizer (``synth.reexpress(x, e, y)``: the editor, or ``G(E(x), e)`` without one;
  the encoder code ``E(x)`` is recorded either way). Source images are chosen round-robin over the training subjects
  (subjects in a seeded random order, one global cursor running class by class over all
  re-expressed slots), so every subject contributes as soon as there are at least as many
  re-expressed slots (``K * (per_class - n_prior)``) as subjects, and no subject
  contributes more than one image more than any other. Within a subject, the source image
  is, least-used first (ties in a seeded random order):

  - with ``reexpress_from="neutral"`` (the default; ``synthesis.reexpress_from``) and a
    target class other than neutral, one of the subject's *neutral* images when it has
    any: the edit then adds the target expression to a face that shows none, instead of
    also having to remove another expression (measured on the demo: re-expressed faces
    recognised at 0.92 of the real level from neutral sources against 0.73 from other
    expressions, the same trained generators; README "Budgets and generators");
  - otherwise (``"other"``, a neutral target, a subject without a neutral image, or a
    label set without ``neutral``) one whose own label differs from the target class
    (re-expression, not reconstruction). Neutral sources are counted
    (``meta.json`` ``n_neutral_sources``).

  Only when a subject has no image of another class is an image of the target class used;
  such rows are counted (``source_label == label``; ``meta.json``
  ``n_same_label_sources``).
* **Only the images passed in are seen.** The function receives the fold's *training*
  part (images, labels, subjects) and nothing else; source indices refer to that array.
  Validation/test images can therefore never leak into a synthetic set.
* **Determinism.** Prior codes come from a CPU ``torch.Generator`` seeded with ``seed``
  (identical on CPU and CUDA), the source choice from a ``numpy`` generator seeded with
  ``seed``; the networks run in eval mode under a forked, seeded torch RNG, so any
  stochastic layer is reproducible too and the caller's global RNG state is untouched.
  Same seed, same weights, same machine -> same images.
* **Pixel mapping.** Generator outputs in [-1, 1] become uint8 by
  ``round((y + 1) / 2 * 255)`` clipped to [0, 255], the inverse of
  ``fer.training.batches.normalize``; encoder inputs are ``normalize(x / 255)``.
* **Row order.** Class by class (in ``classes`` order); within a class the prior
  identities (pool order) first, then the re-expressed rows.

The networks must already be on ``device``; they are put in eval mode for the call and
their previous train/eval mode is restored afterwards (plain callables are accepted too).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from fer.models.fesgan import Synthesizer
from fer.training.batches import ImageStore, normalize, to_uint8
from fer.utils.io import save_npy, write_json, write_text

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_COLUMNS",
    "NEUTRAL",
    "PRIOR",
    "REEXPRESSED",
    "REEXPRESS_FROM",
    "SyntheticSet",
    "n_neutral_sources",
    "prior_identity_name",
    "split_counts",
    "synthesize_set",
    "write_synthetic",
]

#: ``source`` values.
PRIOR: str = "prior"
REEXPRESSED: str = "reexpressed"
#: Columns of the synthetic manifest.csv (a superset of the aligned manifest's).
MANIFEST_COLUMNS: tuple[str, ...] = ("index", "path", "subject", "label", "source", "source_index")
#: Where re-expressed faces start (``synthesis.reexpress_from``; module docstring).
REEXPRESS_FROM: tuple[str, ...] = ("neutral", "other")
#: The class name whose images ``reexpress_from="neutral"`` prefers (``fer.labels``' canonical name).
NEUTRAL: str = "neutral"



@dataclass(frozen=True)
class SyntheticSet:
    """A synthetic, class-balanced image set (M rows).

    Attributes:
        images: uint8 (M, H, W, C).
        labels: int64 (M,), target expression (index into ``classes``).
        source: str (M,), ``"prior"`` or ``"reexpressed"``.
        identity: str (M,), ``"prior-%05d"`` for prior identities, else the training
            subject id of the source image.
        source_index: int64 (M,), row of the source image in the ``train_images`` passed
            to :func:`synthesize_set`; -1 for prior rows.
        source_label: int64 (M,), label of the source image; -1 for prior rows.
        codes: float32 (M, z_dim), the identity code rendered (prior z or encoder code).
        per_class, prior_fraction: the requested values (None: unknown; ``write_synthetic``
            then derives them from the rows).
        reexpress_from: the requested source rule (None: unknown).
    """

    images: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    identity: np.ndarray
    source_index: np.ndarray
    source_label: np.ndarray
    codes: np.ndarray
    per_class: int | None = None
    prior_fraction: float | None = None
    reexpress_from: str | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def split_counts(per_class: int, prior_fraction: float) -> tuple[int, int]:
    """(prior, re-expressed) images per class: ``round(prior_fraction * per_class)`` and
    the rest."""
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    if not 0.0 <= float(prior_fraction) <= 1.0:
        raise ValueError(f"prior_fraction must be in [0, 1], got {prior_fraction!r}")
    n_prior = int(round(float(prior_fraction) * int(per_class)))
    return n_prior, int(per_class) - n_prior


def prior_identity_name(i: int) -> str:
    """Identity string of prior identity ``i`` (``"prior-00017"``)."""
    return f"prior-{i:05d}"


def _inputs(x_uint8: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, H, W, C) -> network input in [-1, 1] (N, C, H, W) on ``device``."""
    return normalize(ImageStore(x_uint8, device).batch(torch.arange(len(x_uint8))))


@contextlib.contextmanager
def _eval_mode(*nets: object) -> Iterator[None]:
    """Put nn.Modules in eval mode; restore each one's previous mode afterwards."""
    modes = [(n, n.training) for n in nets if isinstance(n, nn.Module)]
    try:
        for n, _ in modes:
            n.eval()
        yield
    finally:
        for n, was in modes:
            n.train(was)


@contextlib.contextmanager
def _seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the torch RNG (CPU and ``device``'s CUDA generator) and seed it."""
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _check_train(
    images: np.ndarray, labels: np.ndarray, subjects: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"train_images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    labels = np.asarray(labels)
    subjects = np.asarray(subjects).astype(str)
    n = images.shape[0]
    if labels.shape != (n,) or subjects.shape != (n,):
        raise ValueError(
            f"train_labels {labels.shape} and train_subjects {subjects.shape} must be ({n},)"
        )
    if n and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"train_labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"train_labels outside [0, {num_classes})")
    return labels, subjects


def _choose_sources(
    labels: np.ndarray,
    subjects: np.ndarray,
    num_classes: int,
    n_re: int,
    rng: np.random.Generator,
    neutral: int | None = None,
) -> np.ndarray:
    """Source image per re-expressed slot: (K, n_re) int64, see the module docstring.
    ``neutral``: the class whose images are preferred as sources for every other target
    (None: no preference, the ``"other"`` rule)."""
    order = rng.permutation(np.unique(subjects))
    members = {s: rng.permutation(np.flatnonzero(subjects == s)) for s in order}
    used = np.zeros(len(labels), dtype=np.int64)
    out = np.empty((num_classes, n_re), dtype=np.int64)
    cursor = 0
    for c in range(num_classes):
        for i in range(n_re):
            idx = members[order[cursor % len(order)]]
            cursor += 1
            cand = idx[labels[idx] == neutral] if neutral is not None and c != neutral else idx[:0]
            if cand.size == 0:
                cand = idx[labels[idx] != c]
            if cand.size == 0:
                cand = idx  # the subject has only images of class c: reconstruction
            pick = int(cand[np.argmin(used[cand])])  # least used, ties in seeded order
            used[pick] += 1
            out[c, i] = pick
    if n_re and len(order) > num_classes * n_re:
        log.warning(
            "only %d re-expressed slots for %d training subjects: %d subjects do not contribute",
            num_classes * n_re,
            len(order),
            len(order) - num_classes * n_re,
        )
    return out


def _run_batched(fn: Callable[[int, int], Tensor], n: int, batch_size: int) -> list[Tensor]:
    return [fn(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


@torch.no_grad()
def synthesize_set(
    synth: Synthesizer,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    train_subjects: np.ndarray,
    classes: list[str],
    *,
    per_class: int,
    prior_fraction: float,
    seed: int,
    device: torch.device | str,
    batch_size: int = 128,
    reexpress_from: str = "neutral",
) -> SyntheticSet:
    """Render a class-balanced synthetic set (see the module docstring for the design).

    Args:
        synth: FESGAN's synthesizer (``fer.models.fesgan.Synthesizer``; already on
            ``device``): ``synth(z, e)`` renders prior identities, ``synth.reexpress(x,
            e, y)`` re-expresses real faces, ``synth.encoder`` gives the identity codes
            recorded for them.
        train_images: uint8 (N, H, W, C), the fold's TRAINING images only -- the function
            sees nothing else.
        train_labels: int (N,), indices into ``classes``.
        train_subjects: str (N,), subject ids.
        classes: class names; K = len(classes).
        per_class: images per class (exact).
        prior_fraction: fraction of each class rendered from prior identities.
        seed: makes the result deterministic.
        device: where the networks run.
        batch_size: images per forward pass.
        reexpress_from: ``"neutral"`` (a subject's neutral images are the preferred
            sources for every other target; when ``classes`` has no ``"neutral"`` this
            is logged and the ``"other"`` rule applies) or ``"other"`` (module docstring).
    Returns:
        A :class:`SyntheticSet` of ``K * per_class`` rows, images shaped like
        ``train_images``.
    """
    device = torch.device(device)
    k = len(classes)
    if k < 1:
        raise ValueError("classes is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if reexpress_from not in REEXPRESS_FROM:
        raise ValueError(f"reexpress_from must be one of {REEXPRESS_FROM}, got {reexpress_from!r}")
    neutral = None
    if reexpress_from == "neutral":
        if NEUTRAL in classes:
            neutral = classes.index(NEUTRAL)
        else:
            log.warning("reexpress_from 'neutral': the classes %s have no %r; re-expressed faces start from "
                        "images of another expression", list(classes), NEUTRAL)
    n_prior, n_re = split_counts(per_class, prior_fraction)
    labels_tr, subjects_tr = _check_train(train_images, train_labels, train_subjects, k)
    if n_re and len(labels_tr) == 0:
        raise ValueError("re-expressed images requested but train_images is empty")
    z_dim = int(synth.z_dim)
    _, height, width, channels = train_images.shape

    # Identity codes: prior pool (CPU generator -> same on every device), then sources.
    g = torch.Generator().manual_seed(int(seed))
    z_pool = torch.rand(n_prior, z_dim, generator=g, dtype=torch.float32) * 2.0 - 1.0
    rng = np.random.default_rng(int(seed))
    sources = _choose_sources(labels_tr, subjects_tr, k, n_re, rng, neutral) if n_re else np.empty((k, 0), np.int64)

    with _eval_mode(synth), _seeded_torch(int(seed), device):
        uniq, inverse = np.unique(sources.ravel(), return_inverse=True)
        if uniq.size:

            def _enc(s: int, e: int) -> Tensor:
                code = synth.encoder(_inputs(train_images[uniq[s:e]], device)).float().cpu()
                if code.shape != (e - s, z_dim):
                    raise ValueError(f"encoder returned {tuple(code.shape)}, expected ({e - s}, {z_dim})")
                return code

            enc_codes = torch.cat(_run_batched(_enc, uniq.size, batch_size))[torch.from_numpy(inverse)]
            enc_codes = enc_codes.reshape(k, n_re, z_dim)
        else:
            enc_codes = torch.empty(k, 0, z_dim)

        # Rows: class by class, prior pool first, then re-expressed.
        codes = torch.cat([torch.cat([z_pool, enc_codes[c]]) for c in range(k)])  # M, z_dim
        is_prior = np.tile(np.r_[np.ones(n_prior, bool), np.zeros(n_re, bool)], k)
        source_index = np.full(len(is_prior), -1, dtype=np.int64)
        source_index[~is_prior] = sources.ravel()
        target = torch.arange(k).repeat_interleave(per_class)  # M
        onehot = torch.nn.functional.one_hot(target, k).float()  # M, K
        m = codes.shape[0]

        def _gen(s: int, e: int) -> np.ndarray:
            rows = np.arange(s, e)
            parts = []
            prior_rows, real_rows = rows[is_prior[rows]], rows[~is_prior[rows]]
            if prior_rows.size:
                parts.append((prior_rows, synth(codes[prior_rows].to(device), onehot[prior_rows].to(device))))
            if real_rows.size:
                x = _inputs(train_images[source_index[real_rows]], device)
                src = torch.nn.functional.one_hot(torch.from_numpy(labels_tr[source_index[real_rows]]), k).float()
                parts.append((real_rows, synth.reexpress(x, onehot[real_rows].to(device), src.to(device))))
            y = torch.cat([t for _, t in parts])[np.argsort(np.concatenate([r for r, _ in parts]))]  # B, C, H, W
            if tuple(y.shape) != (e - s, channels, height, width):
                raise ValueError(
                    f"synthesizer returned {tuple(y.shape)}, expected {(e - s, channels, height, width)} "
                    "(the training images' geometry)"
                )
            return to_uint8(y)

        images = (
            np.concatenate([_gen(s, min(s + batch_size, m)) for s in range(0, m, batch_size)])
            if m
            else np.empty((0, height, width, channels), np.uint8)
        )

    identity = np.empty(m, dtype=object)
    identity[is_prior] = np.tile([prior_identity_name(i) for i in range(n_prior)], k) if n_prior else []
    identity[~is_prior] = subjects_tr[sources.ravel()]
    source_label = np.full(m, -1, dtype=np.int64)
    source_label[~is_prior] = labels_tr[sources.ravel()]
    return SyntheticSet(
        images=images,
        labels=target.numpy().astype(np.int64),
        source=np.where(is_prior, PRIOR, REEXPRESSED).astype(str),
        identity=identity.astype(str),
        source_index=source_index,
        source_label=source_label,
        codes=codes.numpy().astype(np.float32),
        per_class=int(per_class),
        prior_fraction=float(prior_fraction),
        reexpress_from=reexpress_from,
    )


def _manifest_text(s: SyntheticSet, classes: list[str]) -> str:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(MANIFEST_COLUMNS)
    for n in range(len(s)):
        src = str(s.source[n])
        wr.writerow(
            [n, f"synthetic/{src}/{n}", str(s.identity[n]), classes[int(s.labels[n])], src, int(s.source_index[n])]
        )
    return buf.getvalue()


def _per_class(counts: np.ndarray) -> int | list[int]:
    """The common per-class count, or the list of counts when they differ."""
    return int(counts[0]) if len(set(counts.tolist())) == 1 else [int(c) for c in counts]


def n_neutral_sources(s: SyntheticSet, classes: list[str]) -> int:
    """Re-expressed rows of a non-neutral target whose source image is labelled neutral
    (0 when ``classes`` has no ``"neutral"``)."""
    if NEUTRAL not in classes:
        return 0
    n = classes.index(NEUTRAL)
    return int(((s.source == REEXPRESSED) & (s.source_label == n) & (s.labels != n)).sum())


def write_synthetic(
    out_dir: Path, s: SyntheticSet, classes: list[str], extra_meta: Mapping[str, Any]
) -> None:
    """Write the set as an aligned-dataset artifact (atomic files).

    * ``images.npy``: uint8 (M, H, W, C);
    * ``manifest.csv``: ``index,path,subject,label,source,source_index`` with
      ``path = synthetic/<source>/<index>``, ``subject`` = the identity string, ``label`` =
      class name;
    * ``meta.json``: ``classes, size, channels ("gray" | "rgb", as the alignment stage
      writes it), synthetic: true, per_class, prior_fraction`` (as requested),
      ``prior_fraction_effective`` (prior rows / all rows), ``n_prior, n_reexpressed``
      (image counts), ``n_prior_identities, n_source_subjects, n_same_label_sources,
      n_neutral_sources`` (re-expressed rows of a non-neutral target whose source is
      labelled neutral; 0 without a neutral class), ``reexpress_from`` (as requested,
      null if unknown), ``prior_design: "pool"``, then ``extra_meta`` (which may not
      override those keys).

    The result loads with ``fer.data.aligned.load_aligned``.
    """
    out_dir = Path(out_dir)
    images = np.ascontiguousarray(s.images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (M, H, W, C), got {images.dtype} {images.shape}")
    m, height, width, channels = images.shape
    for name in ("labels", "source", "identity", "source_index"):
        if np.asarray(getattr(s, name)).shape != (m,):
            raise ValueError(f"{name} must have shape ({m},)")
    if m and (s.labels.min() < 0 or s.labels.max() >= len(classes)):
        raise ValueError(f"labels outside [0, {len(classes)})")
    counts = np.bincount(s.labels, minlength=len(classes)) if m else np.zeros(len(classes), int)
    prior = s.source == PRIOR
    effective = float(prior.sum() / m) if m else 0.0
    meta: dict[str, Any] = {
        "classes": list(classes),
        "size": int(height) if height == width else [int(height), int(width)],
        "channels": "gray" if channels == 1 else "rgb",
        "synthetic": True,
        "per_class": s.per_class if s.per_class is not None else _per_class(counts),
        "prior_fraction": s.prior_fraction if s.prior_fraction is not None else effective,
        "prior_fraction_effective": effective,
        "n_prior": int(prior.sum()),
        "n_reexpressed": int((s.source == REEXPRESSED).sum()),
        "n_prior_identities": int(np.unique(s.identity[prior]).size),
        "n_source_subjects": int(np.unique(s.identity[s.source == REEXPRESSED]).size),
        "n_same_label_sources": int(((s.source == REEXPRESSED) & (s.source_label == s.labels)).sum()),
        "n_neutral_sources": n_neutral_sources(s, classes),
        "reexpress_from": s.reexpress_from,
        "prior_design": "pool",
    }
    clash = sorted(set(extra_meta) & set(meta))
    if clash:
        raise ValueError(f"extra_meta may not override {clash}")
    meta.update(extra_meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_npy(out_dir / "images.npy", images)
    write_text(out_dir / "manifest.csv", _manifest_text(s, classes))
    write_json(out_dir / "meta.json", meta)
