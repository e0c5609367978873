"""Exponential moving averages of network weights (the copies that are sampled and saved)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ema_update", "ramped_decay"]


def ramped_decay(decay: float, step: int) -> float:
    """``min(decay, (1 + t) / (10 + t))`` after ``t`` updates (TensorFlow's
    ``num_updates`` ramp), so a short run is not dominated by the initial weights."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model (parameters); buffers copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
