"""fer.models: the CNN backbones shared by all methods.

Every model maps ``(N, C, H, W)`` float images (normalised with mean 0.5, std 0.5) to
logits ``(N, K)``, and exposes ``features(x) -> (N, D)`` (the penultimate embedding)
and ``feature_dim`` (D). ``build_model`` is the only constructor the pipeline uses.
"""

from __future__ import annotations

import torch.nn as nn

from fer.models.accnn import ACCNN, ACModule
from fer.models.resnet import ResNet, resnet18
from fer.models.vgg import VGGSmall

ARCHS: tuple[str, ...] = ("resnet18", "vgg_small", "accnn")

__all__ = ["ACCNN", "ARCHS", "ACModule", "ResNet", "VGGSmall", "build_model", "resnet18"]


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int,
    width: int,
    *,
    input_size: int = 64,
    dropout: float = 0.3,
) -> nn.Module:
    """Build a backbone by name.

    Args:
        arch: "resnet18", "vgg_small" or "accnn" (the AC-CNN of method M4,
            ``fer.models.accnn``).
        num_classes: size of the output layer.
        in_channels: 1 (gray) or 3 (RGB).
        width: channel width of the first stage; stages use width * (1, 2, 4, 8).
        input_size: longest image side; selects the ResNet stem (see fer.models.resnet).
        dropout: dropout before the classifier (vgg_small and accnn; ResNet has none).
    """
    if arch == "resnet18":
        return resnet18(num_classes, in_channels, width, input_size)
    if arch == "vgg_small":
        return VGGSmall(
            num_classes=num_classes,
            in_channels=in_channels,
            width=width,
            dropout=dropout,
            input_size=input_size,
        )
    if arch == "accnn":
        return ACCNN(
            num_classes,
            in_channels=in_channels,
            width=width,
            dropout=dropout,
            input_size=input_size,
        )
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
