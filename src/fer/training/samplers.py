"""Index streams that survive a resume: each draw depends only on a seeded generator.

* :class:`CycledSet`: an extra image set (a static synthetic set, pseudo-labelled corpus
  images) sampled alongside the real batches, without replacement, a fresh permutation
  per pass;
* :class:`EpochSampler`: fixed-size batches of an iteration-based trainer (FESGAN), the
  permutation of epoch e derived from (seed, e), so batch ``it`` is a pure function of
  (seed, it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from fer.training.batches import ImageStore
from fer.training.rng import derived_generator

__all__ = ["CycledSet", "EpochSampler", "n_per_batch"]


def n_per_batch(batch_size: int, ratio: float) -> int:
    """Extra samples added to a real batch of ``batch_size`` at ``ratio`` extra samples
    per real one: max(1, round(ratio * B)) (half up)."""
    return max(1, math.floor(ratio * batch_size + 0.5))


class CycledSet:
    """uint8 images with labels (and optional per-image weights), cycled through without
    replacement.

    Each pass is a fresh permutation drawn from ``g``; ``start_epoch`` begins a new pass,
    so the stream depends only on ``g``'s state at the epoch start (exact resume).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        device: torch.device,
        g: torch.Generator,
        weights: np.ndarray | None = None,
    ) -> None:
        if len(images) == 0:
            raise ValueError("CycledSet needs at least one image")
        self.store = ImageStore(images, device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        w = np.ones(len(images), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        self.weights = torch.from_numpy(w).to(device)
        self.g = g
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def __len__(self) -> int:
        return len(self.store)

    def start_epoch(self) -> None:
        """Forget the current pass (the next ``sample`` draws a new permutation)."""
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """The next ``n`` items: (float (n, C, H, W) in [0, 1], labels (n,), weights (n,))."""
        parts: list[Tensor] = []
        need = n
        while need > 0:
            if self._pos >= self._perm.numel():
                self._perm = torch.randperm(len(self.store), generator=self.g)
                self._pos = 0
            take = self._perm[self._pos : self._pos + need]
            self._pos += take.numel()
            need -= take.numel()
            parts.append(take)
        idx = torch.cat(parts)  # n
        dev_idx = idx.to(self.labels.device)
        return self.store.batch(idx), self.labels[dev_idx], self.weights[dev_idx]


class EpochSampler:
    """Batches of ``batch`` indices without replacement (a last partial batch is
    dropped); the permutation of epoch e comes from ``derived_generator(seed, stream, e)``."""

    def __init__(self, n: int, batch: int, seed: int, stream: int) -> None:
        self.n, self.batch, self.seed, self.stream = n, batch, seed, stream
        self.per_epoch = n // batch
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, it: int) -> Tensor:
        """Indices of iteration ``it`` (1-based): (batch,)."""
        epoch, k = divmod(it - 1, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=derived_generator(self.seed, self.stream, epoch))
        return self._perm[k * self.batch : (k + 1) * self.batch]
