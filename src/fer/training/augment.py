"""Batched FER training augmentation in plain torch (no torchvision).

The recipe is the usual one for aligned face crops (as in FER2013/RAF-DB training
recipes): random horizontal flip, small rotation, isotropic scale and translation --
composed per sample into ONE affine matrix and applied with a single
``F.affine_grid`` + ``F.grid_sample`` (bilinear, ``padding_mode="border"``, so no black
corners) -- then brightness and contrast jitter, then optional random erasing
(Zhong et al., "Random Erasing Data Augmentation", AAAI 2020).

All random numbers are drawn from the caller's CPU ``torch.Generator`` (a fixed number
of draws per call, whatever the config) and then moved to ``x.device``, so a batch is
augmented identically on CPU and CUDA for the same generator state, and a training run
is reproducible and resumable.

Conventions (x is float in [0, 1], shape (N, C, H, W)):

* rotation: angle ~ U(-rotate_deg, rotate_deg) degrees, about the image centre, in pixel
  space (correct for non-square images);
* scale: zoom factor s ~ U(1 - scale, 1 + scale) (s > 1 enlarges the face);
* shift: translation ~ U(-shift, shift) times the image side, independently in x and y;
* brightness: x * b, b ~ U(1 - brightness, 1 + brightness);
* contrast: (x - m) * c + m, c ~ U(1 - contrast, 1 + contrast), m = the sample's mean;
* erasing: with probability ``erasing`` one rectangle of 2-33 % of the area and aspect
  ratio in [0.3, 3.3] (log-uniform) is filled with 0.5, i.e. 0 after the pipeline's
  (x - 0.5) / 0.5 normalisation -- torchvision's default ``RandomErasing`` after
  ``Normalize``;
* the result is clamped to [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fer.params import AugmentParams

#: Columns of the per-sample uniform draw matrix (fixed count: reproducible streams).
_N_DRAWS = 12


def affine_matrices(
    u: Tensor, cfg: AugmentParams, height: int, width: int, hflip_p: float = 0.5
) -> Tensor:
    """Per-sample affine matrices for ``F.affine_grid`` from uniform draws.

    ``theta`` maps output normalised coordinates to input coordinates:
    ``p_in = D^-1 R(a) D F p_out / s + t`` with D = diag(W, H) (pixel aspect), R a
    rotation, F the optional flip and t the translation.

    Args:
        u: uniform draws in [0, 1), (N, >=5): flip, angle, scale, tx, ty.
    Returns:
        theta (N, 2, 3), float32, on u's device.
    """
    n = u.shape[0]
    flip = torch.where(u[:, 0] < hflip_p, -1.0, 1.0) if cfg.hflip else torch.ones(n)  # N
    flip = flip.to(u)
    angle = (2 * u[:, 1] - 1) * math.radians(cfg.rotate_deg)  # N
    s = 1 + (2 * u[:, 2] - 1) * cfg.scale  # N
    tx = (2 * u[:, 3] - 1) * cfg.shift * 2  # N, normalised coords span 2
    ty = (2 * u[:, 4] - 1) * cfg.shift * 2  # N
    cos, sin = torch.cos(angle), torch.sin(angle)
    ar = width / height  # D^-1 R D with D = diag(W, H)
    theta = torch.zeros(n, 2, 3, dtype=torch.float32, device=u.device)
    theta[:, 0, 0] = cos * flip / s
    theta[:, 0, 1] = -sin / ar / s
    theta[:, 1, 0] = sin * ar * flip / s
    theta[:, 1, 1] = cos / s
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    return theta  # N, 2, 3


def warp(x: Tensor, theta: Tensor) -> Tensor:
    """Apply per-sample affine matrices: (N, C, H, W), (N, 2, 3) -> (N, C, H, W)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # N,H,W,2
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _erase(x: Tensor, u: Tensor, p: float) -> Tensor:
    """Random erasing with uniform draws u (N, 5): apply, area, log-ratio, top, left."""
    n, _, h, w = x.shape
    area = (0.02 + u[:, 1] * (0.33 - 0.02)) * h * w  # N
    log_r = math.log(0.3) + u[:, 2] * (math.log(1 / 0.3) - math.log(0.3))
    ratio = torch.exp(log_r)  # N
    eh = torch.sqrt(area * ratio).round().clamp(1, h)  # N
    ew = torch.sqrt(area / ratio).round().clamp(1, w)  # N
    top = (u[:, 3] * (h - eh + 1)).floor()  # N
    left = (u[:, 4] * (w - ew + 1)).floor()  # N
    rows = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    mask = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + eh).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + ew).view(-1, 1, 1))
        & (u[:, 0] < p).view(-1, 1, 1)
    )  # N, H, W
    return x.masked_fill(mask.unsqueeze(1), 0.5)


def augment_batch(
    x: Tensor, cfg: AugmentParams, generator: torch.Generator, *, hflip_p: float = 0.5
) -> Tensor:
    """Augment a batch (N, C, H, W) float in [0, 1]; returns a new tensor of the same shape.

    Args:
        x: images in [0, 1] on any device.
        cfg: magnitudes (see the module docstring).
        generator: CPU generator all randomness is drawn from.
        hflip_p: flip probability when ``cfg.hflip`` (1.0 forces a flip; for tests).
    """
    n, _, h, w = x.shape
    u = torch.rand((n, _N_DRAWS), generator=generator, dtype=torch.float32)  # N, 12 (CPU)
    u = u.to(x.device)
    out = x
    if cfg.geometric:
        out = warp(out, affine_matrices(u[:, 0:5], cfg, h, w, hflip_p))
    if cfg.brightness > 0:
        b = 1 + (2 * u[:, 5] - 1) * cfg.brightness  # N
        out = out * b.to(out.dtype).view(n, 1, 1, 1)
    if cfg.contrast > 0:
        c = (1 + (2 * u[:, 6] - 1) * cfg.contrast).to(out.dtype).view(n, 1, 1, 1)
        m = out.mean(dim=(1, 2, 3), keepdim=True)  # N, 1, 1, 1
        out = (out - m) * c + m
    if cfg.brightness > 0 or cfg.contrast > 0:
        out = out.clamp(0.0, 1.0)
    if cfg.erasing > 0:
        out = _erase(out, u[:, 7:12], cfg.erasing)
    return out
