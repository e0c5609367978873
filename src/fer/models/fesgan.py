"""FESGAN networks: identity encoder, expression-conditioned generator, image and latent
discriminators.

Follows the synthesis half of Yan, Huang, Chen, Shen, Wang, "Joint Deep Learning of
Facial Expression Synthesis and Recognition", IEEE Trans. Multimedia 22(11), 2020
(arXiv 2002.02194): a generator G(z, e) that renders a face of identity code z with the
chosen expression e, where z is either the code of a real face (encoder E) or a new
identity drawn from a prior. The paper's text was not available (see
``/work/shared/notes/methods.md``, M1); everything below the level of "encoder to an
identity code, prior with a latent discriminator, generator conditioned on an expression
one-hot, image discriminator with an adversarial and an expression head" is the
project's reading:

* sizes: images of side S (a multiple of 16, >= 32); all four networks use four
  resolution steps, so the smallest feature map is S/16 (4x4 at S = 64);
* channel widths (w = ``width``): encoder / discriminator trunks (w/2, w, 2w, 4w) at
  (S/2, S/4, S/8, S/16); generator (4w, 2w, w, w/2, w/4) at (S/16, ..., S). Chosen by
  measurement so that one full training iteration at S = 64, w = 32, batch 32 stays
  well under 0.2 s on two CPU cores (see ``fer.methods.fesgan``);
* identity code: tanh, in (-1, 1)^z_dim, matching the U(-1, 1) prior of the
  adversarial-autoencoder latent discriminator (as in CAAE, Zhang, Song & Qi, CVPR 2017);
* expression conditioning: the one-hot is concatenated to z at the input AND modulates
  every generator block through a class-conditional scale/shift after a pixel norm
  (ProGAN's PixelNorm, Karras et al. 2018; conditional affine as in conditional BN,
  de Vries et al. 2017). Pixel norm has no batch statistics and no running buffers,
  so an output never depends on the rest of the batch, the EMA copy behaves exactly
  like the trained one, and the generator can be fine-tuned with any batch size in the
  joint stage;
* discriminators: LeakyReLU(0.2), no normalisation layers (R1 needs per-sample input
  gradients; BatchNorm would couple samples).

Shapes: images (N, C, S, S) in [-1, 1]; codes (N, z_dim); expressions (N, K) one-hot
(any float weights are accepted, e.g. soft labels).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Encoder",
    "Generator",
    "ImageDiscriminator",
    "LatentDiscriminator",
    "check_geometry",
    "one_hot",
]

_SLOPE = 0.2  # LeakyReLU negative slope everywhere


def check_geometry(size: int, channels: int) -> None:
    """Raise ValueError unless ``size`` is a multiple of 16 (>= 32) and channels in {1, 3}."""
    if size < 32 or size % 16:
        raise ValueError(f"FESGAN image size must be a multiple of 16 and >= 32, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"FESGAN images must have 1 or 3 channels, got {channels}")


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Integer labels (N,) -> float one-hot (N, K) on the labels' device."""
    return F.one_hot(labels.long(), num_classes).float()


def _ch(width: int, mult: float) -> int:
    return max(2, int(round(width * mult)))


class _DownTrunk(nn.Sequential):
    """Four stride-2 4x4 convolutions + LeakyReLU: (N, C, S, S) -> (N, 4w, S/16, S/16)."""

    def __init__(self, in_channels: int, width: int) -> None:
        chans = [in_channels] + [_ch(width, m) for m in (0.5, 1, 2, 4)]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(_SLOPE)]
        super().__init__(*layers)
        self.out_channels = chans[-1]


class Encoder(nn.Module):
    """Face image -> identity code in (-1, 1)^z_dim."""

    def __init__(self, in_channels: int, size: int, z_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        check_geometry(size, in_channels)
        self.in_channels, self.size, self.z_dim, self.width = in_channels, size, z_dim, width
        self.trunk = _DownTrunk(in_channels, width)
        self.fc = nn.Linear(self.trunk.out_channels * (size // 16) ** 2, z_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.trunk(x).flatten(1)  # N, 4w * (S/16)^2
        return torch.tanh(self.fc(h))  # N, z_dim


class PixelNorm(nn.Module):
    """x / sqrt(mean over channels of x^2 + eps), computed in fp32 (safe under fp16)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(x.float().square().mean(1, keepdim=True) + self.eps)  # N,1,H,W
        return x * scale.to(x.dtype)


class _CondAffine(nn.Module):
    """Pixel norm, expression-conditional per-channel scale/shift, LeakyReLU."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = PixelNorm()
        self.affine = nn.Linear(num_classes, 2 * channels)
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        gamma, beta = self.affine(e).chunk(2, dim=1)  # N, ch each
        h = self.norm(h)
        h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return self.act(h)


class _UpBlock(nn.Module):
    """Nearest x2 upsample, 3x3 conv, conditional pixel-norm affine, LeakyReLU."""

    def __init__(self, cin: int, cout: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.cond = _CondAffine(cout, num_classes)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # N, cin, 2H, 2W
        return self.cond(self.conv(h), e)  # N, cout, 2H, 2W


class Generator(nn.Module):
    """(identity code z, expression one-hot e) -> image in [-1, 1]."""

    def __init__(
        self, z_dim: int, num_classes: int, out_channels: int, size: int, width: int = 32
    ) -> None:
        super().__init__()
        check_geometry(size, out_channels)
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.out_channels, self.size, self.width = out_channels, size, width
        chans = [_ch(width, m) for m in (4, 2, 1, 0.5, 0.25)]
        self.base = size // 16
        self.fc = nn.Linear(z_dim + num_classes, chans[0] * self.base**2)
        self.cond0 = _CondAffine(chans[0], num_classes)
        self.blocks = nn.ModuleList(
            _UpBlock(cin, cout, num_classes) for cin, cout in zip(chans[:-1], chans[1:])
        )
        self.to_img = nn.Conv2d(chans[-1], out_channels, 3, padding=1)

    def forward(self, z: Tensor, e: Tensor) -> Tensor:
        e = e.to(z.dtype)
        h = self.fc(torch.cat([z, e], dim=1))  # N, 4w * b^2
        h = h.view(z.shape[0], -1, self.base, self.base)  # N, 4w, b, b
        h = self.cond0(h, e)
        for block in self.blocks:
            h = block(h, e)  # N, ch, 2H, 2W
        return torch.tanh(self.to_img(h))  # N, C, S, S


class ImageDiscriminator(nn.Module):
    """Image -> (adversarial logit (N,), expression logits (N, K)); no normalisation."""

    def __init__(self, in_channels: int, size: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        check_geometry(size, in_channels)
        self.in_channels, self.size, self.num_classes, self.width = (
            in_channels, size, num_classes, width,
        )
        self.trunk = _DownTrunk(in_channels, width)
        ch = self.trunk.out_channels
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        feat = ch * (size // 16) ** 2
        self.adv = nn.Linear(feat, 1)
        self.cls = nn.Linear(feat, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)  # N, 4w, S/16, S/16
        h = F.leaky_relu(self.conv(h), _SLOPE).flatten(1)  # N, 4w * (S/16)^2
        return self.adv(h).squeeze(1), self.cls(h)  # (N,), (N, K)


class LatentDiscriminator(nn.Module):
    """MLP on identity codes: (N, z_dim) -> logit (N,). Prior samples are "real"."""

    def __init__(self, z_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.z_dim, self.hidden = z_dim, hidden
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.LeakyReLU(_SLOPE),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(_SLOPE),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(1)  # N
