"""Running a trained network over uint8 images: logits, embeddings, any function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from fer.training.batches import ImageStore, normalize
from fer.utils.precision import amp_autocast, amp_dtype_for

__all__ = ["embed", "forward_store", "predict"]


@torch.no_grad()
def forward_store(
    model: nn.Module,
    store: ImageStore,
    batch_size: int,
    *,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    fn: Callable[[Tensor], Tensor] | None = None,
) -> np.ndarray:
    """``fn`` (default: ``model``) over a whole store in eval mode -> float32 (N, ...)."""
    was_training = model.training
    model.eval()
    fn = fn or model
    outs: list[Tensor] = []
    try:
        for start in range(0, len(store), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(store)))
            xb = normalize(store.batch(idx))  # B, C, H, W
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with amp_autocast(store.device, amp_dtype):
                outs.append(fn(xb).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy()


def predict(
    model: nn.Module,
    x_uint8: np.ndarray,
    device: torch.device | str,
    batch_size: int = 256,
    *,
    amp: bool = False,
    channels_last: bool = False,
    fn: Callable[[Tensor], Tensor] | None = None,
) -> np.ndarray:
    """``fn`` (default: the model's logits) of uint8 images (N, H, W, C) -> float32
    array (N, ...), model in eval mode.

    ``amp``/``channels_last`` take effect on CUDA only. The model's train/eval mode is
    restored afterwards.
    """
    device = torch.device(device)
    store = ImageStore(x_uint8, device)
    return forward_store(
        model,
        store,
        batch_size,
        amp_dtype=amp_dtype_for(device, amp),
        channels_last=channels_last and device.type == "cuda",
        fn=fn,
    )


def embed(
    model: nn.Module,
    x_uint8: np.ndarray,
    device: torch.device | str,
    batch_size: int = 256,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> np.ndarray:
    """Penultimate embeddings ``model.features`` of uint8 images (N, H, W, C) -> (N, D)."""
    return predict(
        model, x_uint8, device, batch_size, amp=amp, channels_last=channels_last,
        fn=model.features,  # type: ignore[arg-type]
    )
