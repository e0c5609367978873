"""Random streams of a training run: seeded, independent, saved and restored on resume.

Every trainer seeds the global python / numpy / torch RNGs (initialisation, dropout)
with ``fer.utils.seed.seed_everything`` and draws batch order and augmentation from CPU
``torch.Generator`` objects derived from the seed, so a batch is the same on CPU and
CUDA and a resumed run continues the very same streams.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fer.utils.seed import seed_everything

__all__ = ["derived_generator", "rng_states", "set_rng_states", "training_generators"]


def training_generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Seed the global RNGs (``seed_everything``) and return the (batch order,
    augmentation) CPU generators derived from ``seed``."""
    seed_everything(seed)
    data_seed, aug_seed = np.random.SeedSequence(seed).generate_state(2)
    return torch.Generator().manual_seed(int(data_seed)), torch.Generator().manual_seed(int(aug_seed))


def derived_generator(seed: int, *tags: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, *tags)`` (64-bit entropy): an independent
    reproducible stream, e.g. one per FESGAN iteration ``(seed, stream, iteration)``.
    For a one-off stream ``torch.Generator().manual_seed(derived_seed(seed, tag))`` is
    the usual form."""
    s = np.random.SeedSequence([seed % 2**64, *tags]).generate_state(2, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(s) % 2**63)


def rng_states(device: torch.device) -> dict[str, Any]:
    """The python / numpy / torch (/ CUDA) global RNG states, as plain values and tensors
    (loadable with ``torch.load(weights_only=True)``)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": {"version": py[0], "internal": list(py[1]), "gauss": py[2]},
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
    }


def set_rng_states(states: Mapping[str, Any], device: torch.device) -> None:
    """Restore what ``rng_states`` saved (python and numpy only when present)."""
    if "python" in states:
        py = states["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "numpy" in states:
        npst = states["numpy"]
        np.random.set_state(
            (npst["kind"], np.asarray(npst["keys"], dtype=np.uint32), npst["pos"], npst["has_gauss"],
             npst["cached_gaussian"])
        )
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
