"""Images as compact uint8 arrays, batched to float on the training device.

Images arrive as uint8 arrays (N, H, W, C), decoded once. An :class:`ImageStore` keeps
them as a uint8 tensor (N, C, H, W) -- on the device when it fits in
``DEVICE_STORE_MAX_BYTES``, else on the host -- and each batch is converted to float on
the device: x / 255 (then augmentation, then :func:`model_input`: (x - 0.5) / 0.5). No
DataLoader, no workers, no re-decoding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEVICE_STORE_MAX_BYTES",
    "MEAN",
    "STD",
    "ImageStore",
    "Split",
    "check_arrays",
    "iter_batches",
    "model_input",
    "normalize",
    "num_steps",
    "to_uint8",
]

#: Normalisation applied after x / 255 (and after augmentation).
MEAN: float = 0.5
STD: float = 0.5
#: uint8 image tensors up to this size are kept on the training device.
DEVICE_STORE_MAX_BYTES: int = 2 * 1024**3

Split = tuple[np.ndarray, np.ndarray]


class ImageStore:
    """uint8 (N, C, H, W) images, on the device when small enough, batched to float.

    Built from uint8 (N, H, W, C); ``batch(idx)`` returns float (B, C, H, W) in [0, 1].
    """

    def __init__(self, x_nhwc: np.ndarray, device: torch.device) -> None:
        if x_nhwc.ndim != 4 or x_nhwc.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {x_nhwc.dtype} {x_nhwc.shape}")
        t = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2).contiguous()
        if device.type != "cpu" and t.numel() <= DEVICE_STORE_MAX_BYTES:
            t = t.to(device)
        self.images = t  # N, C, H, W uint8
        self.device = device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: Tensor) -> Tensor:
        """Float images in [0, 1] on the device: (B,) indices -> (B, C, H, W)."""
        xb = self.images[idx.to(self.images.device)]
        return xb.to(self.device, non_blocking=True).float().div_(255.0)


def normalize(x: Tensor) -> Tensor:
    """(x - 0.5) / 0.5 for x in [0, 1]."""
    return (x - MEAN) / STD


def to_uint8(x: Tensor) -> np.ndarray:
    """Network images in [-1, 1] (N, C, H, W) -> uint8 (N, H, W, C): the inverse of
    ``normalize(x / 255)``, rounded and clipped."""
    y = ((x.detach().float().cpu() * STD + MEAN) * 255).round().clamp(0, 255)
    return y.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def model_input(x01: Tensor, channels_last: bool) -> Tensor:
    """Float images in [0, 1] (N, C, H, W) -> normalised model input (channels_last opt.)."""
    x = normalize(x01)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def iter_batches(perm: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of ``perm``; a last batch of one sample is dropped (n > 1)."""
    n = perm.numel()
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        if idx.numel() == 1 and n > 1:
            return  # a single-sample batch breaks BatchNorm in train mode
        yield idx


def num_steps(n: int, batch_size: int) -> int:
    """Number of batches ``iter_batches`` yields for ``n`` samples."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and n == 1) else 0)


def check_arrays(split: Split, name: str, num_classes: int) -> Split:
    """Validate (uint8 images (N, H, W, C), int labels in [0, K)); labels -> int64."""
    x, y = split
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} labels must be integers, got {y.dtype}")
    y = y.astype(np.int64)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(f"{name} images must be uint8 (N, H, W, C), got {x.dtype} {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    min_size = 2 if name == "train" else 1
    if len(y) < min_size:
        raise ValueError(f"{name} split is too small ({len(y)} samples)")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"{name} labels outside [0, {num_classes})")
    return x, y


def check_synthetic(synthetic: Split, num_classes: int, real_shape: tuple[int, ...]) -> Split:
    """``check_arrays`` for a synthetic set trained on beside real images, whose per-image
    shape (H, W, C) must be the real images' (``real_shape``)."""
    x, y = check_arrays(synthetic, "synthetic", num_classes)
    if x.shape[1:] != tuple(real_shape):
        raise ValueError(f"synthetic images {x.shape[1:]} differ from the real ones {tuple(real_shape)}")
    return x, y
