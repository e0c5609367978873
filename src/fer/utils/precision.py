"""Mixed precision and memory format: where and how forward passes run.

On CUDA, autocast uses bf16 where the device supports it, else fp16 (with a GradScaler,
built by the trainers); on CPU both mixed precision and channels_last are off, so CPU
runs are plain fp32 whatever the settings say.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Precision", "amp_autocast", "amp_dtype_for"]


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bf16 (fp16 without bf16 support) on CUDA when enabled, else None."""
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def amp_autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class Precision:
    """Where and how forward passes run: autocast dtype (None: fp32), channels_last."""

    device_type: str = "cpu"
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def for_device(cls, device: torch.device, amp: bool, channels_last: bool) -> Precision:
        """The precision of ``device`` under the given settings (both off on CPU)."""
        return cls(device.type, amp_dtype_for(device, amp), device.type == "cuda" and channels_last)

    def autocast(self) -> Any:
        """Autocast context (a no-op without an AMP dtype)."""
        return amp_autocast(torch.device(self.device_type), self.amp_dtype)

    def prep(self, x: Tensor) -> Tensor:
        """Put an image batch into the networks' memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
