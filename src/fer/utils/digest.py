"""SHA-256 digests of what a run depends on (resume fingerprints, reuse checks).

One helper for every kind of input, so that two places hashing the same thing agree:

* numpy arrays: ``"<shape>:<dtype>"`` then the raw bytes; with ``sample=True`` an array
  longer than 64 rows is hashed on every ``len // 64``-th row (a cheap digest of a large
  image array: enough to tell data sets apart, not a proof of equality);
* torch tensors' state dicts (any mapping of names to tensors) and ``nn.Module`` (its
  state dict): ``"<name>:<shape>:<dtype>"`` then the raw bytes of each tensor;
* anything else: its JSON text (keys sorted), or ``repr`` when it is not JSON-able.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["digest"]


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _update(h: Any, part: Any, sample: bool) -> None:
    if isinstance(part, np.ndarray):
        a = part
        h.update(f"{a.shape}:{a.dtype}".encode())
        if sample and len(a) > 64:
            a = a[:: max(1, len(a) // 64)]
        h.update(np.ascontiguousarray(a).tobytes())
        return
    state = part.state_dict() if hasattr(part, "state_dict") and callable(part.state_dict) else part
    if isinstance(state, Mapping) and state and all(_is_tensor(v) for v in state.values()):
        import torch

        for name, t in state.items():
            h.update(f"{name}:{list(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return
    try:
        h.update(json.dumps(part, sort_keys=True).encode())
    except TypeError:
        h.update(repr(part).encode())


def digest(*parts: Any, sample: bool = False) -> str:
    """Hex SHA-256 of ``parts`` in order (module docstring)."""
    h = hashlib.sha256()
    for part in parts:
        _update(h, part, sample)
    return h.hexdigest()
