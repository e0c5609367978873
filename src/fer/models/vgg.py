"""A small VGG-style CNN for face crops (the usual "VGG-like" FER baseline).

Follows the VGG design of Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (ICLR 2015) -- stacks of 3x3 convolutions with 2x2
max-pooling -- with batch norm after every convolution (Ioffe & Szegedy 2015) and a
global-average-pool head instead of the large fully connected layers, as is common for
FER2013-scale data:

    4 blocks x [conv3x3-BN-ReLU, conv3x3-BN-ReLU, maxpool 2x2]
    channels width * (1, 2, 4, 8)
    global average pool -> dropout -> linear

The input side must be at least 16 px (four 2x2 poolings). ``model.features(x)`` returns
the pooled embedding ``(N, 8*width)``; ``model(x)`` the logits ``(N, num_classes)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class VGGSmall(nn.Module):
    """Four VGG blocks, global average pool, dropout and a linear classifier."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        width: int = 32,
        dropout: float = 0.3,
        input_size: int = 64,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if input_size < 16:
            raise ValueError(f"vgg_small needs inputs of at least 16 px, got {input_size}")
        self.input_size = int(input_size)
        self.in_channels = int(in_channels)
        self.width = int(width)
        self.num_classes = int(num_classes)
        widths = (width, 2 * width, 4 * width, 8 * width)
        chans = (in_channels, *widths)
        self.blocks = nn.Sequential(*[_block(chans[i], chans[i + 1]) for i in range(4)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim: int = widths[3]
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

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
        """Penultimate embedding: (N, C, H, W) -> (N, 8*width)."""
        return torch.flatten(self.avgpool(self.blocks(x)), 1)  # N, 8w

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (N, C, H, W) -> (N, num_classes)."""
        return self.fc(self.dropout(self.features(x)))  # N, K
