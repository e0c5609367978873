"""Model complexity: parameter counts and multiply-accumulates (MACs) per image.

Used to put the AC-CNN (method M4, Fang et al., Sensors 2023, whose point is a CNN with
"low computational overhead") beside the project's other backbones in the report.

Counting rules (the project's, stated so numbers can be checked by hand):

* ``count_parameters``: every parameter tensor's element count (trainable or not; buffers
  such as BatchNorm running statistics are not parameters and are not counted).
* ``count_macs``: one forward pass in eval mode on zeros of ``input_shape``, with forward
  hooks on

  - ``nn.Conv2d``: ``output elements * (in_channels / groups) * kh * kw``;
  - ``nn.Linear``: ``output elements * in_features``;
  - any module with an ``extra_macs(input, output) -> int`` method (e.g. the AC-CNN's
    ``ChannelAffinity``, whose matrix products are real multiply-accumulates that are
    not convolutions): whatever it reports.

  Biases, BatchNorm, activations, pooling, additions and softmax are not counted (the
  usual convention of MAC tables; they are linear in the activation count and small).
  One MAC = one multiply + one add; FLOPs are about ``2 * MACs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from fer.models import build_model

__all__ = ["complexity_rows", "count_macs", "count_parameters"]

#: (arch, width) rows of ``complexity_rows`` by default: the AC-CNN and the VGG baseline at
#: params.yaml's demo widths, and ResNet-18 at its standard width 64.
REFERENCE_ROWS: tuple[tuple[str, int], ...] = (("accnn", 16), ("vgg_small", 16), ("resnet18", 64))


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements of ``model`` (buffers excluded)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass (module docstring for the rules).

    Args:
        model: any module; it is run once in eval mode on zeros (its train/eval mode is
            restored afterwards; no gradients).
        input_shape: ``(C, H, W)`` for one image, or ``(N, C, H, W)`` for a batch of N
            (the count is then for the whole batch).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W) with sizes >= 1, got {input_shape}")
    total = [0]

    def conv_hook(mod: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> None:
        assert isinstance(mod, nn.Conv2d)
        kh, kw = mod.kernel_size
        total[0] += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> None:
        assert isinstance(mod, nn.Linear)
        total[0] += out.numel() * mod.in_features

    def extra_hook(mod: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> None:
        total[0] += int(mod.extra_macs(inp[0], out))  # type: ignore[operator]

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif callable(getattr(m, "extra_macs", None)):
            handles.append(m.register_forward_hook(extra_hook))
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total[0])


def complexity_rows(
    num_classes: int, in_channels: int, input_size: int, archs: Sequence[tuple[str, int]] = REFERENCE_ROWS
) -> list[dict[str, Any]]:
    """``{arch, width, params, macs}`` (MACs per image of ``input_size`` px) for each
    ``(arch, width)`` of ``archs`` (default :data:`REFERENCE_ROWS`; ResNet-18 with the
    project's input-size-dependent stem)."""
    if num_classes < 1 or in_channels not in (1, 3) or input_size < 8:
        raise ValueError(
            f"complexity_rows needs num_classes >= 1, in_channels 1 or 3 and input_size >= 8, "
            f"got {num_classes}, {in_channels}, {input_size}"
        )
    rows: list[dict[str, Any]] = []
    for arch, width in archs:
        model = build_model(arch, num_classes, in_channels, width, input_size=input_size)
        rows.append(
            {
                "arch": arch,
                "width": width,
                "params": count_parameters(model),
                "macs": count_macs(model, (in_channels, input_size, input_size)),
            }
        )
    return rows
