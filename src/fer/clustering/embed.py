"""Stream a recogniser's embeddings of a (large) image array into a memory-mapped .npy.

Part of M4 (Fang et al., "Expression-Guided Deep Joint Learning for Facial Expression
Recognition", Sensors 2023): the face-recognition corpus is embedded by the current
expression network before clustering. For corpora of millions of images the embeddings
never sit in RAM at once: each batch of uint8 images is converted (x / 255, then
``fer.training.batches.normalize``), passed through ``model.features`` in eval mode under
``torch.no_grad``, and written into ``np.lib.format.open_memmap`` of a temporary file that
is renamed onto ``out_path`` when complete (a killed job leaves no partial artifact).
Same per-image computation as ``fer.training.inference.embed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fer.training.batches import normalize
from fer.utils.precision import amp_autocast, amp_dtype_for
from fer.utils.io import atomic_path

__all__ = ["embed_to_memmap"]


@torch.no_grad()
def embed_to_memmap(
    model: nn.Module,
    images: np.ndarray,
    out_path: Path,
    device: torch.device | str,
    *,
    batch_size: int = 256,
    dtype: type | np.dtype = np.float32,
    amp: bool = False,
    channels_last: bool = False,
) -> np.memmap:
    """``model.features`` of uint8 images (N, H, W, C) (may be a memmap) -> (N, D) .npy at
    ``out_path``, written batch by batch; returns it opened read-only (memory-mapped).

    ``amp``/``channels_last`` take effect on CUDA only (as in ``fer.training.inference.embed``).
    The model's train/eval mode is restored afterwards.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (N, H, W, C), got {getattr(images, 'dtype', type(images))} "
            f"{getattr(images, 'shape', '')}"
        )
    if len(images) == 0:
        raise ValueError("images is empty")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    if not hasattr(model, "features"):
        raise ValueError("model has no features() method")
    device = torch.device(device)
    amp_dtype = amp_dtype_for(device, amp)
    cl = channels_last and device.type == "cuda"
    out_path = Path(out_path)
    n = len(images)
    was_training = model.training
    model.eval()
    try:
        with atomic_path(out_path) as tmp:
            out: np.memmap | None = None
            for start in range(0, n, batch_size):
                # a private, writable copy of the batch (images may be a read-only memmap)
                xb = torch.from_numpy(np.array(images[start : start + batch_size], order="C", copy=True))
                xb = xb.to(device).permute(0, 3, 1, 2).float().div_(255.0)  # B, C, H, W
                xb = normalize(xb)
                if cl:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with amp_autocast(device, amp_dtype):
                    feats = model.features(xb).float().cpu().numpy()  # B, D
                if feats.ndim != 2 or len(feats) != len(xb):
                    raise ValueError(f"model.features returned shape {feats.shape} for a batch of {len(xb)}")
                if out is None:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, feats.shape[1]))
                out[start : start + len(feats)] = feats
            assert out is not None
            out.flush()
            del out
    finally:
        model.train(was_training)
    return np.load(out_path, mmap_mode="r")
