"""Class-typical expression changes, learnt from labelled training faces only.

The prototype of class c is the mean of the class's aligned training faces after each
subject's own mean face is removed (when subject ids are given; else the plain class
mean), so identity cancels and what remains is how class c departs from a subject's
average face. ``P[e] - P[y]`` is then the typical pixel change that turns expression y
into e: a crude, data-driven stand-in for an action-unit description of the edit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["expression_prototypes"]


def expression_prototypes(
    images: np.ndarray, labels: np.ndarray, num_classes: int, subjects: np.ndarray | None = None
) -> Tensor:
    """Prototypes (K, C, H, W) in the networks' [-1, 1] units (a difference of two is a
    change of normalised pixel values) from uint8 images (N, H, W, C). A class absent from
    ``labels`` gets the zero prototype."""
    x = images.astype(np.float64) / 127.5  # N, H, W, C; the scale of (x / 255 - 0.5) / 0.5
    labels = np.asarray(labels, dtype=np.int64)
    if subjects is not None:
        subjects = np.asarray(subjects).astype(str)
        for s in np.unique(subjects):
            mine = subjects == s
            x[mine] -= x[mine].mean(axis=0)
    else:
        x -= x.mean(axis=0)
    protos = np.zeros((num_classes, *x.shape[1:]))
    for c in range(num_classes):
        if (labels == c).any():
            protos[c] = x[labels == c].mean(axis=0)
    return torch.from_numpy(protos.transpose(0, 3, 1, 2).astype(np.float32))  # K, C, H, W
