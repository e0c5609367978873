"""Learned per-class image offsets: the class-typical change of a face, shared by the
generators that edit a real face rather than redraw it (FESGAN's editor, FERSNet's
residual synthesis). ``offsets`` is a (K, C, H, W) parameter; an edit from expression
``source`` to ``target`` (one-hots) adds ``offsets[target] - offsets[source]``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_shift", "set_offsets"]


def class_shift(target: Tensor, source: Tensor, offsets: Tensor, dtype: torch.dtype) -> Tensor:
    """``(target - source) @ offsets`` (N, C, H, W) in ``dtype`` for one-hot (or soft)
    codes (N, K) and offsets (K, C, H, W)."""
    return torch.einsum("nk,kchw->nchw", (target - source).to(dtype), offsets.to(dtype))


@torch.no_grad()
def set_offsets(param: Tensor, offsets: Tensor, owner: str) -> None:
    """Copy ``offsets`` into the offsets parameter ``param`` (same shape, else an error
    naming ``owner``), e.g. to start them at scaled expression prototypes."""
    if offsets.shape != param.shape:
        raise ValueError(f"offsets of shape {tuple(offsets.shape)}, the {owner} needs {tuple(param.shape)}")
    param.copy_(offsets.to(param.device, param.dtype))
