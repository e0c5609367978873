"""Model checkpoints and resume files that load with ``torch.load(weights_only=True)``.

Both kinds are written atomically (temporary file + rename, ``fer.utils.io.save_torch``),
so a killed job leaves either the previous file or the new one, never a torn one. Their
contents are restricted to tensors and plain Python types (dict, list, tuple, str, int,
float, bool, None), which is what the safe ``weights_only=True`` unpickler accepts;
``to_plain`` converts numpy scalars/arrays and paths and rejects anything else.

* weights file: ``{"state_dict": {name: CPU tensor}, "meta": {...plain...}}``
* resume file: any dict of tensors and plain values (see ``fer.training.driver``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer.utils.io import save_torch

log = logging.getLogger(__name__)


def to_plain(obj: Any, where: str = "meta") -> Any:
    """Recursively convert ``obj`` to plain JSON-like types (tuples become lists).

    numpy scalars/arrays -> Python numbers/lists, Path -> str. Raises TypeError naming
    the offending entry for anything else (tensors are not allowed in meta).
    """
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r}")
            out[k] = to_plain(v, f"{where}.{k}")
        return out
    if isinstance(obj, list | tuple):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: {type(obj).__name__} is not a plain type")


def cpu_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies of a state dict's tensors."""
    return {
        k: v.detach().to("cpu", copy=True).contiguous() if isinstance(v, torch.Tensor) else v
        for k, v in state_dict.items()
    }


def save_weights(
    path: str | Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Write ``{"state_dict": CPU tensors, "meta": plain dict}`` atomically."""
    save_torch(path, {"state_dict": cpu_state_dict(state_dict), "meta": to_plain(meta)})


def load_weights(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by ``save_weights`` (safe ``weights_only=True`` load)."""
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, dict) or "state_dict" not in obj or "meta" not in obj:
        raise ValueError(f"{path}: not a weights file written by save_weights")
    return obj["state_dict"], obj["meta"]


def save_resume(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write a resume payload (tensors and plain values only) atomically."""
    save_torch(path, dict(payload))


def load_resume(path: str | Path) -> dict[str, Any] | None:
    """Load a resume payload with ``weights_only=True``; None if missing or unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable resume file means "start over"
        log.warning("ignoring unreadable resume file %s: %s", path, exc)
        return None
    if not isinstance(obj, dict):
        log.warning("ignoring resume file %s: not a dict", path)
        return None
    return obj


def clear_resume(path: str | Path | None) -> None:
    """Delete a resume file (call once a run's outputs are written); no-op if absent."""
    if path is not None:
        Path(path).unlink(missing_ok=True)
