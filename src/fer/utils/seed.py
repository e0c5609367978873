"""Seeding: same seed, same machine, same results."""

from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["derived_seed", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) and ask cuDNN for determinism."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import torch

    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def derived_seed(seed: int, *tags: int) -> int:
    """An independent 32-bit seed for one purpose of a run: ``SeedSequence([seed, *tags])``
    (e.g. ``derived_seed(seed, 0x5E7)`` for the joint trainer's synthetic stream)."""
    return int(np.random.SeedSequence([seed, *tags]).generate_state(1)[0])
