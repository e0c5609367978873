"""AC-CNN: an efficient CNN built from "affinity convolution" (AC) modules.

Follows Fang, Zhao, Han, He, "Expression-Guided Deep Joint Learning for Facial Expression
Recognition", Sensors 23(16):7148, 2023 (methods.md, M4), which builds its recogniser
from an "affinity convolution" module with low computational overhead. The paper's exact
definition of the module was not available; everything below is THE PROJECT'S READING,
chosen to be cheap, about the affinity between channels, and stable to train.

**AC module** ``ACModule(in_ch, out_ch)`` (mini-Xception's residual module, Arriaga et
al., "Real-time Convolutional Neural Networks for Emotion and Gender Classification",
2017, a 60k-parameter FER network, with the channel affinity inside)::

    x -> depthwise 3x3 -> pointwise 1x1 -> BN -> ReLU        separable conv (in_ch -> out_ch)
      -> depthwise 3x3 -> pointwise 1x1 -> BN                separable conv (out_ch -> out_ch)
      -> F + gamma * (A @ F)                                 channel-affinity re-weighting
      -> 3x3 max-pool, stride 2                              downsampling
      + (1x1 conv stride 2 -> BN)(x)                         projection shortcut

The affinity ``A`` (N, C, C) is computed per image from coarse channel descriptors:
``F`` is average-pooled to at most ``pool`` x ``pool`` cells, each channel's descriptor is
centred and L2-normalised (so ``P P^T`` is the Pearson correlation between the spatial
layouts of two channels, in [-1, 1]), and ``A = softmax(P P^T / tau)`` row-wise. ``A @ F``
replaces each channel by the affinity-weighted mean of the channels that respond in the
same places -- a data-dependent 1x1 convolution whose kernel is the affinity matrix,
hence "affinity convolution". This is the channel attention of DANet (Fu et al., "Dual
Attention Network for Scene Segmentation", CVPR 2019) with two changes for stability:
correlation of pooled descriptors instead of raw Gram energies (bounded logits: raw
``F F^T`` grows with H*W and saturates the softmax) and a fixed temperature ``tau``.
``gamma`` is one learnable scalar per module, initialised to 0, so every module starts as
a plain residual separable block and learns how much affinity mixing to use.

**AC-CNN** ``ACCNN(num_classes, in_channels=1, width=16, dropout=0.3, input_size=64)``::

    stem   3x3 conv (in_channels -> w/2), BN, ReLU,
           3x3 conv (w/2 -> w/2), BN, ReLU                     (full resolution)
    AC(w/2, w), AC(w, 2w)                                      (descriptors on 8x8 cells)
    AC(2w, 4w), AC(4w, 8w)                                     (descriptors on 4x4 cells)
    ReLU -> head: 1x1 conv (8w -> 24w), BN, ReLU               (at the final grid)
    global average pool -> dropout -> linear

Four stride-2 modules take a 64 px face to 4x4 (``vgg_small``'s final grid);
``feature_dim`` is ``24 * width``. At width 16 and 64 px grey: 101,499 parameters and
16.5M multiply-accumulates, 0.31 x the small VGG's 52.5M.

**Why this layout** (measured on the demo, README "Choices"; ``benchmarks/bench_accnn.py``):
the first design (one 3x3 stem convolution, then a max-pool and three stages of two
single-separable-convolution modules with the affinity, no shortcut across the
downsampling; the benchmark's variant ``v1``) underfitted and stayed 8.3 points below the
small VGG (three seeds x 4 folds). The second (mini-Xception's layout without the head;
variant ``v2``) gained 7.0 points on it but stayed 3.2 below the VGG over six
initialisations. Two recipe changes to it did worse: a lower learning rate (0.002: -4.7
points, 8 folds) and Kaiming fan-in draws for the depthwise kernels (-4.3, 5 folds). The
head is MobileNetV3's efficient last stage: a wide 1x1 layer where the grid is smallest
(4 x 4 cells), 49k parameters for 0.79M MACs, paid for by computing the last two
modules' affinity descriptors on 4x4 instead of 8x8 cells. With it the AC-CNN is 3.4
points above the VGG over five seeds x 4 demo folds (se 2.1, both on one machine; chosen
on those folds, so a real dataset is the independent check). The opposite direction to full-resolution work, a
stride-2 stem that paid for twice the width, fell 8-10 points below the first design
(one seed): faces at this size need their fine detail.

Cost per module and image (H, W the module's input side, C = out_ch):
depthwise ``9 (in_ch + C) H W``, pointwise ``(in_ch + C) C H W``, affinity ``C^2 * p^2``
(descriptors) + ``C^2 H W`` (mixing), shortcut ``in_ch C H W / 4`` multiply-accumulates.

The contract is ``VGGSmall``'s: ``features(x) -> (N, feature_dim)``, ``forward(x)`` ->
logits, ``classify(features)`` -> logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ACCNN", "ACModule", "ChannelAffinity"]


class ChannelAffinity(nn.Module):
    """Channel-affinity re-weighting ``y = F + gamma * (A @ F)`` (see the module docstring).

    Args:
        pool: side of the pooled grid the channel descriptors are computed on (the map is
            pooled to ``min(pool, H) x min(pool, W)``).
        tau: softmax temperature of the correlation logits (correlations are in [-1, 1]).
        gamma: initial mixing weight (0: the module starts as the identity).
    """

    def __init__(self, pool: int = 8, tau: float = 0.2, gamma: float = 0.0) -> None:
        super().__init__()
        if pool < 1 or not tau > 0:
            raise ValueError(f"ChannelAffinity needs pool >= 1 and tau > 0, got {pool}, {tau}")
        self.pool = int(pool)
        self.tau = float(tau)
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))

    def affinity(self, f: Tensor) -> Tensor:
        """Row-stochastic channel affinity (N, C, C) of feature maps (N, C, H, W)."""
        n, c, h, w = f.shape
        p = F.adaptive_avg_pool2d(f, (min(self.pool, h), min(self.pool, w)))
        p = p.reshape(n, c, -1).float()  # N, C, P
        p = p - p.mean(dim=2, keepdim=True)
        p = F.normalize(p, dim=2, eps=1e-6)
        corr = torch.bmm(p, p.transpose(1, 2))  # N, C, C in [-1, 1]
        return torch.softmax(corr / self.tau, dim=2)

    def forward(self, f: Tensor) -> Tensor:
        n, c, h, w = f.shape
        a = self.affinity(f).to(f.dtype)  # N, C, C
        mixed = torch.bmm(a, f.reshape(n, c, h * w)).reshape(n, c, h, w)  # N, C, H, W
        return f + self.gamma.to(f.dtype) * mixed

    def extra_macs(self, inp: Tensor, out: Tensor) -> int:
        """Multiply-accumulates of the two matrix products (for ``count_macs``)."""
        n, c, h, w = inp.shape
        cells = min(self.pool, h) * min(self.pool, w)
        return int(n * c * c * (cells + h * w))


class ACModule(nn.Module):
    """Affinity convolution: two separable 3x3 convolutions + channel affinity + max-pool,
    plus a projection shortcut (see the module docstring).

    ``ACModule(in_ch, out_ch)`` maps (N, in_ch, H, W) to
    (N, out_ch, ceil(H / 2), ceil(W / 2)).
    """

    def __init__(self, in_ch: int, out_ch: int, *, pool: int = 8, tau: float = 0.2) -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"ACModule channels must be >= 1, got {in_ch}, {out_ch}")
        self.in_ch, self.out_ch = int(in_ch), int(out_ch)
        self.sep1 = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )
        self.sep2 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch, bias=False),
            nn.Conv2d(out_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.affinity = ChannelAffinity(pool=pool, tau=tau)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=2, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.affinity(self.sep2(self.sep1(x)))) + self.shortcut(x)


class ACCNN(nn.Module):
    """Two-convolution stem + four AC modules + ReLU + 1x1 expansion head, GAP, dropout,
    linear classifier."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 16,
        dropout: float = 0.3,
        input_size: int = 64,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if input_size < 8:
            raise ValueError(f"accnn needs inputs of at least 8 px, got {input_size}")
        if width < 2 or num_classes < 1:
            raise ValueError(f"accnn needs width >= 2 and num_classes >= 1, got {width}, {num_classes}")
        self.input_size = int(input_size)
        self.in_channels = int(in_channels)
        self.width = int(width)
        self.num_classes = int(num_classes)
        self.stem, self.stages, self.feature_dim = self._layers()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def _layers(self) -> tuple[nn.Module, nn.Module, int]:
        """The stem, the stages (the AC modules and the head) and the feature dimension,
        built in that order (construction order fixes the initial weights' random draws).
        A subclass may override it to measure another layout with the same classifier,
        initialisation and contract (``benchmarks/bench_accnn.py``'s earlier designs)."""
        w, h, e = self.width, self.width // 2, 3 * 8 * self.width
        stem = nn.Sequential(
            nn.Conv2d(self.in_channels, h, 3, padding=1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, padding=1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
        )
        stages = nn.Sequential(
            ACModule(h, w),
            ACModule(w, 2 * w),
            ACModule(2 * w, 4 * w, pool=4),
            ACModule(4 * w, 8 * w, pool=4),
            nn.ReLU(),
            nn.Sequential(nn.Conv2d(8 * w, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU(inplace=True)),  # head
        )
        return stem, stages, e

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate embedding: (N, C, H, W) -> (N, feature_dim) (24 * width as shipped)."""
        return torch.flatten(self.avgpool(self.stages(self.stem(x))), 1)  # N, D

    def classify(self, feats: Tensor) -> Tensor:
        """Logits from ``features``: (N, feature_dim) -> (N, num_classes)."""
        return self.fc(self.dropout(feats))  # N, K

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (N, C, H, W) -> (N, num_classes)."""
        return self.classify(self.features(x))
