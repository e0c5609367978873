"""Face-pretrained starts: a recogniser's weights loaded from another network's state dict
before training (params ``init`` of a recogniser section: ``scratch`` | ``identity`` | a
path; the workflow resolves ``identity`` to the identity network's file).

What is loaded: every weight of the backbone; the classifier head (``fc``, whose size is
the number of classes) keeps its fresh initialisation. The file may be

* a checkpoint of this project (``{"state_dict", "meta"}``: the identity network);
* a plain state dict, or one wrapped under ``state_dict`` / ``model`` / ``net`` (what
  torchvision and most FER repositories save, e.g. an ImageNet or MS-Celeb-1M ResNet-18),
  its keys possibly prefixed with ``module.`` (DataParallel), ``model.``, ``backbone.``,
  ``base.`` or ``encoder.``.

Key mapping: those prefixes are stripped; the head is dropped; a first convolution
trained on RGB is summed over its colour channels for grey inputs (the usual way to reuse
it). Then the file must fit the network exactly: a missing, unexpected or differently
shaped weight is an error that names them (nothing is loaded partly). The file is read
with ``torch.load(weights_only=True)`` (no code runs from it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["InitError", "load_start"]

#: Prefixes that checkpoints put in front of a backbone's keys.
PREFIXES = ("module.", "model.", "backbone.", "base.", "encoder.")
#: The classifier head of every recogniser of fer.models (its size is the class count).
HEAD = "fc."
#: Wrappers under which checkpoints keep their state dict.
WRAPPERS = ("state_dict", "model", "net")
MAX_NAMED = 8


class InitError(ValueError):
    """A start file that does not fit the recogniser."""


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(2):  # {"state_dict": {...}, "meta": ...} or {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InitError(f"{path}: no state dict found (a mapping of weight names to tensors, possibly under "
                        f"{' / '.join(WRAPPERS)})")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _named(keys: list[str]) -> str:
    return ", ".join(keys[:MAX_NAMED]) + (f", ... ({len(keys) - MAX_NAMED} more)" if len(keys) > MAX_NAMED else "")


def load_start(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the backbone weights of ``path`` into ``model`` (module docstring); return
    what was done: ``{"init/file", "init/loaded", "init/head_kept_fresh", "init/rgb_to_grey"}``.
    Raises :class:`InitError` naming the missing, unexpected and mis-shaped keys."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise InitError(f"{path}: start file not found") from e
    except Exception as e:  # a pickle that needs code, a truncated file, ...
        raise InitError(f"{path}: cannot be read as weights with torch.load(weights_only=True): {e}") from e
    source = {_strip(k): v for k, v in _state_dict(obj, path).items()}
    target = model.state_dict()
    source = {k: v for k, v in source.items() if not k.startswith(HEAD)}
    wanted = {k: v for k, v in target.items() if not k.startswith(HEAD)}
    grey = []
    for k, v in source.items():  # an RGB first convolution for a grey network
        t = wanted.get(k)
        if t is not None and v.ndim == 4 and t.ndim == 4 and v.shape[1] == 3 and t.shape[1] == 1 \
                and v.shape[0] == t.shape[0] and v.shape[2:] == t.shape[2:]:
            source[k] = v.sum(dim=1, keepdim=True)
            grey.append(k)
    missing = sorted(k for k in wanted if k not in source and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in source if k not in wanted)
    shapes = sorted(f"{k} {tuple(source[k].shape)} vs {tuple(wanted[k].shape)}"
                    for k in wanted if k in source and source[k].shape != wanted[k].shape)
    if missing or unexpected or shapes:
        lines = [f"{path} does not fit the recogniser ({type(model).__name__}):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_named(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_named(unexpected)}")
        if shapes:
            lines.append(f"  shapes differ (file vs network, {len(shapes)}): {_named(shapes)}")
        lines.append("  the file must hold the same architecture and width (arch, width) at the same input size "
                     "(align.size: the ResNet stem depends on it, README 'Choices'); its classifier head is ignored")
        raise InitError("\n".join(lines))
    merged = dict(target)
    merged.update({k: v.to(dtype=target[k].dtype) for k, v in source.items()})
    model.load_state_dict(merged)
    return {"init/file": str(path), "init/loaded": len(source), "init/head_kept_fresh": True,
            "init/rgb_to_grey": grey}
