"""FixMatch's strong augmentation, batched in plain torch: RandAugment-style operations
followed by Cutout (Sohn et al., NeurIPS 2020, "RandAugment with random magnitude" +
Cutout, their Table 12), on grey or colour face crops in [0, 1].

Per sample, ``n_ops`` operations are drawn uniformly from :data:`OPS`, each with its own
magnitude drawn uniformly in [0, ``magnitude``] (a fraction of the operation's range
below) and a random sign where the operation has one; then one square of side up to
``cutout`` x the image side is filled with grey (0.5, i.e. 0 after the pipeline's
normalisation). Ranges (at magnitude 1):

* autocontrast: each image stretched to [0, 1] (no magnitude);
* brightness, contrast, sharpness: factor 1 +- 0.9 (PIL's enhance range 0.1..1.9);
* posterize: 8 down to 4 bits; solarize: pixels above 1 - magnitude inverted;
* rotate +-30 degrees; shear_x / shear_y +-0.3; translate_x / translate_y +-30 % of the side.

Colour operations (PIL's Color) and Equalize are left out: the former is the identity
on grey faces, the latter has no cheap batched form; with ``identity`` among the 12
operations a sample may keep its appearance in one slot, as in RandAugment.

All random numbers are drawn from the caller's CPU ``torch.Generator``, a fixed number
per call (reproducible, resumable, the same on CPU and CUDA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fer.training.augment import warp

__all__ = ["OPS", "strong_augment"]

OPS: tuple[str, ...] = ("identity", "autocontrast", "brightness", "contrast", "sharpness", "posterize", "solarize",
                        "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_GEOMETRIC = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate); factor (M,)."""
    return degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)


def _photometric(name: str, x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    """One photometric operation on (M, C, H, W) with per-sample magnitudes and signs (M,)."""
    factor = 1 + sign * 0.9 * mag
    if name == "identity":
        return x
    if name == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, factor)
    if name == "contrast":
        return _blend(x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x), x, factor)
    if name == "sharpness":
        c = x.shape[1]
        k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device, dtype=x.dtype) / 13
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
        return _blend(blurred, x, factor)
    if name == "posterize":
        step = torch.pow(2.0, torch.round(4 * mag)).view(-1, 1, 1, 1)  # 1 (8 bits) .. 16 (4 bits)
        return torch.floor(x * 255 / step) * step / 255
    if name == "solarize":
        t = (1 - mag).view(-1, 1, 1, 1)
        return torch.where(x >= t, 1 - x, x)
    raise ValueError(f"unknown photometric operation {name!r}")


def _affine(name: str, mag: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    """(M, 2, 3) matrices for ``F.affine_grid`` of one geometric operation."""
    m = mag.shape[0]
    theta = torch.zeros(m, 2, 3, dtype=torch.float32, device=mag.device)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    v = (sign * mag).float()
    if name == "rotate":
        a = v * math.radians(30)
        ar = width / height
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a) / ar
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) * ar, torch.cos(a)
    elif name == "shear_x":
        theta[:, 0, 1] = 0.3 * v
    elif name == "shear_y":
        theta[:, 1, 0] = 0.3 * v
    elif name == "translate_x":
        theta[:, 0, 2] = 0.3 * 2 * v
    elif name == "translate_y":
        theta[:, 1, 2] = 0.3 * 2 * v
    else:
        raise ValueError(f"unknown geometric operation {name!r}")
    return theta


def _cutout(x: Tensor, u: Tensor, size: float) -> Tensor:
    """One grey square per sample: side ~ U(0, size) x min(H, W), centre uniform; u (N, 3)."""
    n, _, h, w = x.shape
    side = (u[:, 0] * size * min(h, w)).round()  # N
    cy, cx = u[:, 1] * h, u[:, 2] * w
    rows = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    half = (side / 2).view(-1, 1, 1)
    mask = ((rows - cy.view(-1, 1, 1)).abs() < half) & ((cols - cx.view(-1, 1, 1)).abs() < half)  # N, H, W
    return x.masked_fill(mask.unsqueeze(1), 0.5)


def strong_augment(x: Tensor, generator: torch.Generator, *, n_ops: int = 2, magnitude: float = 1.0,
                   cutout: float = 0.5) -> Tensor:
    """Strongly augmented copy of a batch (N, C, H, W) in [0, 1] (module docstring)."""
    n, _, h, w = x.shape
    u = torch.rand((n, n_ops, 3), generator=generator, dtype=torch.float32).to(x.device)  # op, magnitude, sign
    c = torch.rand((n, 3), generator=generator, dtype=torch.float32).to(x.device)  # cutout side, centre
    out = x
    for k in range(n_ops):
        op = (u[:, k, 0] * len(OPS)).long().clamp(max=len(OPS) - 1)  # N
        mag = u[:, k, 1] * magnitude  # N
        sign = torch.where(u[:, k, 2] < 0.5, -1.0, 1.0).to(x.device)  # N
        nxt = out.clone()
        for i, name in enumerate(OPS):
            sel = op == i
            if not bool(sel.any()):
                continue
            xs = out[sel]
            if name in _GEOMETRIC:
                nxt[sel] = warp(xs, _affine(name, mag[sel], sign[sel], h, w))
            else:
                nxt[sel] = _photometric(name, xs, mag[sel].to(x.dtype), sign[sel].to(x.dtype))
        out = nxt.clamp(0.0, 1.0)
    return _cutout(out, c, cutout) if cutout > 0 else out
