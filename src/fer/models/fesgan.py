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

from fer.models.offsets import class_shift, set_offsets

__all__ = [
    "Editor",
    "Encoder",
    "Generator",
    "ImageDiscriminator",
    "LatentDiscriminator",
    "Synthesizer",
    "check_geometry",
    "mean_expression",
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


def mean_expression(like: Tensor) -> Tensor:
    """The mean expression code (every class 1/K), shaped and typed like ``like`` (N, K)."""
    return torch.full_like(like, 1.0 / like.shape[1])


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


class _CondIN(nn.Module):
    """Instance norm, expression-conditional per-channel scale/shift, ReLU."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(num_classes, 2 * channels)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        gamma, beta = self.affine(e).chunk(2, dim=1)  # N, ch each
        h = self.norm(h)
        return F.relu(h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])


class _EditRes(nn.Module):
    """Residual block at the editor's bottleneck: two 3x3 convs, each followed by the
    expression-conditional instance norm."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.cond1 = _CondIN(channels, num_classes)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.cond2 = _CondIN(channels, num_classes)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        return h + self.cond2(self.conv2(self.cond1(self.conv1(h), e)), e)


class Editor(nn.Module):
    """(face in [-1, 1], a target expression, the face's own expression) -> the same face
    with the target expression.

    A small U-Net (StarGAN's encoder / residual bottleneck / decoder, with skip connections)
    that predicts a RESIDUAL: ``out = x + delta``, ``delta`` starting at exactly zero (the
    last convolution is zero-initialised), so the editor starts as the identity and every
    pixel it does not change keeps the face's identity and background. It is told both the
    target and the source expression (one-hot planes at the input; both modulate every
    bottleneck and decoder block): an edit from anger to happiness is not the edit from
    neutral to happiness, and the source is known wherever the editor is used (labelled
    training faces, and rendered prior identities whose expression was chosen).
    Beside the convolutional residual, a learned expression offset per class
    (``offsets``, (K, C, S, S)) adds ``offsets[target] - offsets[source]`` (for one-hot
    codes: ``(target - source) @ offsets``): the class-typical change of a face from one
    expression to another, which a network otherwise has to assemble pixel by pixel at the
    optimiser's pace. It starts at zero, or at the training faces' expression prototypes
    (``init_offsets``; see ``fer.training.prototypes``), and is trained with the rest.
    Up-sampling is nearest-neighbour + 3x3 convolution (no transposed-convolution
    checkerboards). Outputs may leave [-1, 1] by the size of the edit; they are clamped
    when they become uint8 images.

    Sizes: side S a multiple of 4; widths (w, 2w, 4w) at (S, S/2, S/4).
    """

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        check_geometry(size, channels)
        self.channels, self.size, self.num_classes, self.width = channels, size, num_classes, width
        w1, w2, w3 = _ch(width, 1), _ch(width, 2), _ch(width, 4)
        cond = 2 * num_classes  # target and source one-hots
        self.inp = nn.Sequential(nn.Conv2d(channels + cond, w1, 3, padding=1), nn.InstanceNorm2d(w1, affine=True),
                                 nn.ReLU())
        self.down1 = nn.Sequential(nn.Conv2d(w1, w2, 4, stride=2, padding=1), nn.InstanceNorm2d(w2, affine=True),
                                   nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(w2, w3, 4, stride=2, padding=1), nn.InstanceNorm2d(w3, affine=True),
                                   nn.ReLU())
        self.blocks = nn.ModuleList(_EditRes(w3, cond) for _ in range(blocks))
        self.up1 = nn.Conv2d(w3 + w2, w2, 3, padding=1)
        self.cond_up1 = _CondIN(w2, cond)
        self.up2 = nn.Conv2d(w2 + w1, w1, 3, padding=1)
        self.cond_up2 = _CondIN(w1, cond)
        self.delta = nn.Conv2d(w1, channels, 3, padding=1)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)
        self.offsets = nn.Parameter(torch.zeros(num_classes, channels, size, size))  # K, C, S, S

    def init_offsets(self, offsets: Tensor) -> None:
        """Start the class offsets at ``offsets`` (K, C, S, S), e.g. scaled prototypes."""
        set_offsets(self.offsets, offsets, "editor")

    def forward(self, x: Tensor, target: Tensor, source: Tensor) -> Tensor:
        """x (N, C, S, S) in [-1, 1]; target, source (N, K) one-hot -> (N, C, S, S)."""
        e = torch.cat([target, source], dim=1).to(x.dtype)  # N, 2K
        n, _, s, _ = x.shape
        planes = e[:, :, None, None].expand(n, e.shape[1], s, s)
        h1 = self.inp(torch.cat([x, planes], dim=1))  # N, w, S, S
        h2 = self.down1(h1)  # N, 2w, S/2, S/2
        h = self.down2(h2)  # N, 4w, S/4, S/4
        for block in self.blocks:
            h = block(h, e)
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # N, 4w, S/2, S/2
        h = self.cond_up1(self.up1(torch.cat([h, h2], dim=1)), e)  # N, 2w, S/2, S/2
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # N, 2w, S, S
        h = self.cond_up2(self.up2(torch.cat([h, h1], dim=1)), e)  # N, w, S, S
        return x + self.delta(h) + class_shift(target, source, self.offsets, x.dtype)  # N, C, S, S


class Synthesizer(nn.Module):
    """FESGAN's image synthesis as one module: ``forward(z, e)`` renders a new identity
    from a prior code with expression e, ``reexpress(x, e, y)`` gives a real face of
    expression y the expression e. ``z_dim`` is the identity code's size.

    Without an editor (``reexpress: code``, the paper's reading): ``forward = G(z, e)`` and
    ``reexpress = G(E(x), e)``. With one (``reexpress: edit``): ``reexpress =
    Editor(x, e, y)`` and ``forward = Editor(G(z, m), e, m)`` with ``m`` the mean
    expression code (every class 1/K): a prior identity is rendered at the average
    expression and edited into e like any real face, so real identities are edited rather
    than redrawn from a 64-d code and prior identities get the same learned edit.
    """

    def __init__(self, generator: Generator, encoder: Encoder, editor: Editor | None = None) -> None:
        super().__init__()
        self.generator, self.encoder, self.editor = generator, encoder, editor
        self.z_dim = generator.z_dim

    def forward(self, z: Tensor, e: Tensor) -> Tensor:
        if self.editor is None:
            return self.generator(z, e)  # N, C, S, S
        mean = mean_expression(e)  # N, K
        return self.editor(self.generator(z, mean), e, mean)

    def reexpress(self, x: Tensor, e: Tensor, source: Tensor) -> Tensor:
        """x (N, C, S, S) in [-1, 1] of expressions ``source`` (N, K) -> expressions ``e``."""
        if self.editor is None:
            return self.generator(self.encoder(x), e)
        return self.editor(x, e, source)
