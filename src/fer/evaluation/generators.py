"""Does a generator render the expression it is asked for? The same probe for every method
that re-expresses faces (FESGAN's synthesizer, FERSNet's synthesis branch).

Every face of a set is re-expressed into each class other than its own; a recogniser
trained on REAL training images only (the fold's baseline) then judges the outputs:

* ``expr_acc``: share of re-expressed faces it assigns to their TARGET expression, next to
  ``real_val_acc``, its accuracy on the fold's real validation faces (real faces of unseen
  subjects: the level a generator should approach), and ``expr_acc_ratio`` = the two's
  quotient (1: the edits are as recognisable as real unseen faces);
* ``source_acc``: share assigned to the SOURCE expression instead (an editor that changes
  nothing scores high here and low above);
* ``identity_cos``: mean cosine similarity between the identity features of each output
  and of its source face (the identity network's space), next to ``identity_cos_other``,
  the mean similarity between real faces of DIFFERENT subjects (the level of "someone
  else");
* ``fid``: the Fréchet distance between the recogniser's features of the real faces and of
  the outputs (``fer.evaluation.synthetic_quality.frechet_distance``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.evaluation.synthetic_quality import frechet_distance
from fer.training.batches import ImageStore, normalize, to_uint8
from fer.training.inference import embed, predict

__all__ = ["reexpress_all", "reexpression_probe"]

#: (faces in [-1, 1] (N, C, H, W), target one-hot (N, K), source one-hot (N, K)) -> faces.
Reexpress = Callable[[Tensor, Tensor, Tensor], Tensor]


@torch.no_grad()
def reexpress_all(
    reexpress: Reexpress, images: np.ndarray, labels: np.ndarray, num_classes: int, device: torch.device,
    batch_size: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image (uint8 (N, H, W, C)) re-expressed into every class but its own by
    ``reexpress(x in [-1, 1], target one-hot, source one-hot) -> image in [-1, 1]``. Returns (uint8 outputs (M, H,
    W, C), target labels (M,), source index (M,)), M = N * (K - 1), source-major order."""
    labels = np.asarray(labels, dtype=np.int64)
    src = np.repeat(np.arange(len(labels)), num_classes - 1)
    tgt = np.concatenate([[c for c in range(num_classes) if c != y] for y in labels]).astype(np.int64) \
        if len(labels) else np.empty(0, np.int64)
    store = ImageStore(images, device)
    out = []
    for start in range(0, len(src), batch_size):
        s = torch.from_numpy(src[start : start + batch_size])
        e = F.one_hot(torch.from_numpy(tgt[start : start + batch_size]), num_classes).float().to(device)
        y = F.one_hot(torch.from_numpy(labels[s.numpy()]), num_classes).float().to(device)
        out.append(to_uint8(reexpress(normalize(store.batch(s)), e, y)))
    shape = (0, *images.shape[1:])
    return (np.concatenate(out) if out else np.empty(shape, np.uint8)), tgt, src


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def reexpression_probe(
    reexpress: Reexpress,
    recognizer: nn.Module,
    identity_embed: Callable[[np.ndarray], np.ndarray] | None,
    images: np.ndarray,
    labels: np.ndarray,
    subjects: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    num_classes: int,
    device: torch.device | str,
) -> dict[str, Any]:
    """The probe of the module docstring on ``images`` (the faces to re-express, e.g. the
    fold's validation faces) with their ``labels`` and ``subjects``; ``val_images`` and
    ``val_labels`` give the recogniser's real reference accuracy. Returns the flat numbers
    (JSON-ready; a value that cannot be computed is None)."""
    device = torch.device(device)
    labels = np.asarray(labels, dtype=np.int64)
    subjects = np.asarray(subjects).astype(str)
    out_images, target, source = reexpress_all(reexpress, images, labels, num_classes, device)
    pred = predict(recognizer, out_images, device).argmax(1) if len(out_images) else np.empty(0, np.int64)
    val_pred = predict(recognizer, val_images, device).argmax(1)
    real_val_acc = float((val_pred == np.asarray(val_labels)).mean())
    expr_acc = float((pred == target).mean()) if len(pred) else None
    result: dict[str, Any] = {
        "n": int(len(out_images)),
        "expr_acc": expr_acc,
        "real_val_acc": real_val_acc,
        "expr_acc_ratio": expr_acc / real_val_acc if expr_acc is not None and real_val_acc > 0 else None,
        "source_acc": float((pred == labels[source]).mean()) if len(pred) else None,
        "identity_cos": None,
        "identity_cos_other": None,
        "fid": None,
    }
    if len(out_images) >= 2 and len(images) >= 2:
        result["fid"] = frechet_distance(embed(recognizer, images, device), embed(recognizer, out_images, device))
    if identity_embed is not None and len(out_images):
        f_src = _unit(np.asarray(identity_embed(images), dtype=np.float64))
        f_out = _unit(np.asarray(identity_embed(out_images), dtype=np.float64))
        result["identity_cos"] = float(np.einsum("nd,nd->n", f_out, f_src[source]).mean())
        sim = f_src @ f_src.T
        other = subjects[:, None] != subjects[None, :]
        result["identity_cos_other"] = float(sim[other].mean()) if other.any() else None
    return result
