"""Networks of the deep generative-contrastive network (DGCN) for facial expressions.

Follows Kim, Yoo, Kwak, Choi, Kim, "Deep Generative-Contrastive Networks for Facial
Expression Recognition", arXiv 1703.07140 (v3 2019) [paper]: an encoder-decoder
generates a REFERENCE face from the query image; a contrastive encoder E, shared by
query and reference, compares the two at the embedding layer; a classifier works on that
contrastive representation. The exact layers are not known here (``methods.md``, M2);
the following are the project's reading:

* ``ReferenceGenerator``: a convolutional encoder (4 x [conv4x4 stride 2, InstanceNorm,
  LeakyReLU 0.2]; no norm on the first and the innermost block, as in pix2pix) to a fully connected bottleneck code (``latent_dim``), and a mirrored
  decoder (4 x [transposed conv4x4 stride 2, InstanceNorm, ReLU], conv3x3, tanh). There
  are NO skip connections: the reference must be rebuilt from the bottleneck code, so the
  query's expression details cannot be copied through to the reference (a U-Net would
  reproduce the query). InstanceNorm keeps no running statistics, so the generator
  computes the same function in train and eval mode (it is frozen in step 2 while the
  driver puts the whole model in train mode). Height and width must be multiples of 16.
* ``ContrastiveNet``: E is ``fer.models.build_model(arch, ...).features`` (the
  recogniser's backbone; its own linear head is removed); query and reference go through
  E in ONE batch ``[q; r]`` (so BatchNorm statistics in training mode are those of the
  joint batch); the representation is ``E(q) - E(r)`` ("difference", the paper's
  contrastive representation as the project reads it), ``[E(q), E(r)]`` ("concat"), or
  ``E(q)`` ("none": the no-reference ablation); head = dropout + linear.
* ``DGCN``: the whole recogniser as ONE module mapping a single tensor to logits, so the
  shared training driver (``fer.training.driver``) can evaluate and select it: for the
  "generated" reference the input is the query (C channels) and the reference is
  ``generator(query)``; for the "real" reference the input is the query and its real
  reference stacked on the channel axis (2C channels); for "none" the input is the query.

All images are normalised (mean 0.5, std 0.5), i.e. in [-1, 1]; the generator's output is
in the same space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fer.models import build_model

__all__ = ["CONTRASTS", "DGCN", "REFERENCE_KINDS", "ContrastiveNet", "ReferenceGenerator"]

#: Contrastive representations ("none": query embedding only).
CONTRASTS: tuple[str, ...] = ("difference", "concat", "none")
#: Where a DGCN's reference comes from.
REFERENCE_KINDS: tuple[str, ...] = ("generated", "real", "none")


def _down(in_ch: int, out_ch: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.InstanceNorm2d(out_ch, affine=True))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
        nn.InstanceNorm2d(out_ch, affine=True),
        nn.ReLU(inplace=True),
    )


class ReferenceGenerator(nn.Module):
    """Encoder-decoder without skips: normalised query (N, C, H, W) -> reference in [-1, 1].

    Args:
        in_channels: C (1 or 3); the output has the same channels.
        width: channels of the first encoder stage; stages use width * (1, 2, 4, 8).
        image_size: (H, W), both multiples of 16.
        latent_dim: size of the bottleneck code.
    """

    def __init__(
        self, in_channels: int = 1, width: int = 16, image_size: tuple[int, int] = (64, 64),
        latent_dim: int = 128,
    ) -> None:
        super().__init__()
        height, wid = (int(s) for s in image_size)
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if height < 16 or wid < 16 or height % 16 or wid % 16:
            raise ValueError(f"image size must be multiples of 16 (>= 16), got {(height, wid)}")
        if width < 1 or latent_dim < 1:
            raise ValueError("width and latent_dim must be >= 1")
        self.in_channels, self.width, self.latent_dim = int(in_channels), int(width), int(latent_dim)
        self.image_size = (height, wid)
        chans = (width, 2 * width, 4 * width, 8 * width)
        self.bottom = (8 * width, height // 16, wid // 16)  # C', H/16, W/16
        n_bottom = self.bottom[0] * self.bottom[1] * self.bottom[2]
        self.encoder = nn.Sequential(
            _down(in_channels, chans[0], norm=False),
            _down(chans[0], chans[1], norm=True),
            _down(chans[1], chans[2], norm=True),
            _down(chans[2], chans[3], norm=False),  # innermost: no norm (1x1 maps allowed)
        )
        self.to_code = nn.Linear(n_bottom, latent_dim)
        self.from_code = nn.Linear(latent_dim, n_bottom)
        self.decoder = nn.Sequential(
            _up(chans[3], chans[2]),
            _up(chans[2], chans[1]),
            _up(chans[1], chans[0]),
            _up(chans[0], chans[0]),
            nn.Conv2d(chans[0], in_channels, 3, padding=1),
            nn.Tanh(),
        )

    def encode(self, x: Tensor) -> Tensor:
        """Bottleneck code: (N, C, H, W) -> (N, latent_dim)."""
        h = self.encoder(x)  # N, 8w, H/16, W/16
        return self.to_code(torch.flatten(h, 1))  # N, latent

    def decode(self, code: Tensor) -> Tensor:
        """Reference image from a code: (N, latent_dim) -> (N, C, H, W) in [-1, 1]."""
        h = torch.relu(self.from_code(code)).view(-1, *self.bottom)  # N, 8w, H/16, W/16
        return self.decoder(h)  # N, C, H, W

    def forward(self, x: Tensor) -> Tensor:
        """Reference face of a normalised query: (N, C, H, W) -> (N, C, H, W) in [-1, 1]."""
        return self.decode(self.encode(x))


class ContrastiveNet(nn.Module):
    """Shared encoder E (a backbone's ``features``) + classifier on the contrastive
    representation (module docstring).

    Args:
        arch, num_classes, in_channels, width, input_size: as ``fer.models.build_model``
            (the recogniser's backbone settings).
        contrast: "difference" (E(q) - E(r)), "concat" ([E(q), E(r)]) or "none" (E(q)).
        dropout: dropout before the linear classifier.
    """

    def __init__(
        self, arch: str, num_classes: int, in_channels: int, width: int, *, input_size: int,
        contrast: str = "difference", dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        encoder = build_model(arch, num_classes, in_channels, width, input_size=input_size)
        encoder.fc = nn.Identity()  # only ``features`` is used: drop the unused head
        self.encoder = encoder
        self.contrast = contrast
        self.num_classes = int(num_classes)
        self.embed_dim = int(encoder.feature_dim)
        self.feature_dim = self.embed_dim * (2 if contrast == "concat" else 1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def embed(self, x: Tensor) -> Tensor:
        """E(x): (N, C, H, W) -> (N, D)."""
        return self.encoder.features(x)  # type: ignore[operator]  # N, D

    def representation(self, q: Tensor, r: Tensor | None = None) -> Tensor:
        """Contrastive representation of query ``q`` and reference ``r``: (N, D) for
        "difference" and "none", (N, 2D) for "concat". ``r`` must be None exactly when
        ``contrast`` is "none"."""
        if self.contrast == "none":
            if r is not None:
                raise ValueError("contrast 'none' takes no reference")
            return self.embed(q)  # N, D
        if r is None:
            raise ValueError(f"contrast {self.contrast!r} needs a reference image")
        if r.shape != q.shape:
            raise ValueError(f"reference shape {tuple(r.shape)} != query shape {tuple(q.shape)}")
        n = q.shape[0]
        e = self.embed(torch.cat([q, r]))  # 2N, D (one pass: shared E)
        eq, er = e[:n], e[n:]  # N, D each
        if self.contrast == "difference":
            return eq - er  # N, D
        return torch.cat([eq, er], dim=1)  # N, 2D

    def classify(self, rep: Tensor) -> Tensor:
        """Logits of a representation: (N, feature_dim) -> (N, K)."""
        return self.fc(self.dropout(rep))  # N, K

    def forward(self, q: Tensor, r: Tensor | None = None) -> Tensor:
        """Logits: (N, C, H, W) query (and reference) -> (N, K)."""
        return self.classify(self.representation(q, r))


class DGCN(nn.Module):
    """The recogniser as one single-input module (module docstring).

    Args:
        contrastive: the contrastive network (its ``contrast`` must be "none" exactly when
            ``reference`` is "none").
        reference: "generated" (needs ``generator``), "real" or "none".
        in_channels: C of one image.
        generator: the reference generator ("generated" only).
    """

    def __init__(
        self, contrastive: ContrastiveNet, reference: str, in_channels: int,
        generator: ReferenceGenerator | None = None,
    ) -> None:
        super().__init__()
        if reference not in REFERENCE_KINDS:
            raise ValueError(f"reference must be one of {REFERENCE_KINDS}, got {reference!r}")
        if (reference == "generated") != (generator is not None):
            raise ValueError("a generator is needed for, and only for, reference='generated'")
        if (reference == "none") != (contrastive.contrast == "none"):
            raise ValueError("reference 'none' goes with contrast 'none' (and only with it)")
        self.contrastive = contrastive
        self.generator = generator
        self.reference = reference
        self.in_channels = int(in_channels)

    @property
    def input_channels(self) -> int:
        """Channels of ``forward``'s input: 2C for the "real" reference, else C."""
        return 2 * self.in_channels if self.reference == "real" else self.in_channels

    def query_and_reference(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Split / generate: input (N, C or 2C, H, W) -> (query, reference or None)."""
        if x.shape[1] != self.input_channels:
            raise ValueError(
                f"DGCN({self.reference!r}) expects {self.input_channels} input channels, "
                f"got {x.shape[1]}"
            )
        c = self.in_channels
        if self.reference == "real":
            return x[:, :c], x[:, c:]  # N, C, H, W each
        if self.reference == "generated":
            assert self.generator is not None
            return x, self.generator(x)  # N, C, H, W each
        return x, None

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, K)."""
        q, r = self.query_and_reference(x)
        return self.contrastive(q, r)
