"""ResNet-18 for small face crops, with a width multiplier.

Follows He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016): BasicBlock
residual units in four stages of [2, 2, 2, 2] blocks, batch norm, a global average pool and
one linear classifier, laid out as torchvision's ``resnet18`` (1x1-conv + BN projection
shortcut where the shape changes). Two changes make it suit 48-128 px face crops:

* **Width multiplier.** Stage widths are ``width * (1, 2, 4, 8)``; ``width=64`` is the
  standard network (11.69M parameters with 1000 classes and RGB input and the ImageNet
  stem).
* **Stem chosen by input size.** The rule: the first residual stage works at no more than
  64 px. So the stem's total downsampling is

  ========================  =====================================  ==========
  ``input_size`` (longest)  stem                                   downsample
  ========================  =====================================  ==========
  <= 64                     3x3 conv, stride 1, no max-pool        1
  65 - 128                  3x3 conv, stride 2, no max-pool        2
  > 128                     7x7 conv, stride 2 + 3x3/2 max-pool    4 (ImageNet stem)
  ========================  =====================================  ==========

  e.g. 48 px -> 48 px stage 1 (the CIFAR-style stem), 96/112 px -> 48/56 px,
  224 px -> 56 px (the standard network).

Initialisation follows torchvision: Kaiming-normal (fan_out, ReLU) for convolutions, BN
gamma 1 / beta 0, and the last BN of every residual block zero-initialised ("zero-init
residual", Goyal et al. 2017), so each block starts as the identity.

``model.features(x)`` returns the pooled penultimate embedding ``(N, 8*width)``;
``model(x)`` returns logits ``(N, num_classes)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


def stem_downsample(input_size: int) -> int:
    """Total downsampling of the stem for a given input side (see the module docstring)."""
    if input_size <= 64:
        return 1
    if input_size <= 128:
        return 2
    return 4


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with BasicBlocks, width multiplier and an input-size-dependent stem."""

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        *,
        num_classes: int,
        in_channels: int = 1,
        width: int = 64,
        input_size: int = 64,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if width < 1 or num_classes < 1:
            raise ValueError("width and num_classes must be positive")
        self.input_size = int(input_size)
        self.in_channels = int(in_channels)
        self.width = int(width)
        self.num_classes = int(num_classes)

        down = stem_downsample(self.input_size)
        if down == 4:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=down, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

        widths = (width, 2 * width, 4 * width, 8 * width)
        self._in_planes = width
        self.layer1 = self._make_layer(widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim: int = widths[3] * BasicBlock.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        mods: list[nn.Module] = [BasicBlock(self._in_planes, planes, stride)]
        self._in_planes = planes * BasicBlock.expansion
        mods += [BasicBlock(self._in_planes, planes, 1) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)  # zero-init residual

    def features(self, x: Tensor) -> Tensor:
        """Penultimate embedding: (N, C, H, W) -> (N, 8*width)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # N, w, H/d, W/d
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # N, 8w, h, w
        return torch.flatten(self.avgpool(x), 1)  # N, 8w

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (N, C, H, W) -> (N, num_classes)."""
        return self.fc(self.features(x))  # N, K


def resnet18(
    num_classes: int, in_channels: int = 1, width: int = 64, input_size: int = 64
) -> ResNet:
    """ResNet-18 ([2, 2, 2, 2] BasicBlocks) with the stem rule of the module docstring."""
    return ResNet(
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
        input_size=input_size,
    )
