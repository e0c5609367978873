"""FERSNet: multi-task facial expression recognition + synthesis with selective feature
sharing, and its conditional PatchGAN discriminator.

Follows Zhao, Liu, Xiao, Lun, Lam, "Deep Multi-task Learning for Facial Expression
Recognition and Synthesis Based on Selective Feature Sharing", ICPR 2020 (arXiv
2007.04514) and the authors' published code as summarised in ``methods.md`` (M3):

* a shared stem, then a recognition branch (BatchNorm blocks) and a synthesis branch
  (InstanceNorm blocks) of ``stages`` down-sampling stages each;
* after every stage a Convolutional Feature Leaky Unit (``ConvFLU``) passes features each
  way, GRU-like (x = recognition, y = synthesis features)::

      r  = sigmoid(W_r * [F_x, F_y])        z = sigmoid(W_z * [F_x, F_y])
      F~ = tanh(W * (r . F_y) + U * F_x)     F_x' = (1 - z) . F_x + z . F~

  and symmetrically for F_y (both directions computed from the same inputs);
* the synthesis decoder is a U-Net over the synthesis branch's features, conditioned on
  the target expression one-hot by AdaIN-style scale/shift (instance norm, then
  ``(1 + gamma(e)) * h + beta(e)``);
* recognition head: global average pool -> dropout -> linear.

The project's reading of details the summary leaves open (sizes chosen for 64 px faces
and CPU budgets, see ``fer.methods.fersnet``): channel widths ``width * 2**i``; each
stage = conv3x3 stride 2 + conv3x3, each followed by its norm and ReLU; the stem
(conv3x3 + BatchNorm + ReLU at full resolution) is shared and its output is the U-Net's
finest skip; each decoder level = nearest 2x up-sampling, concatenation with the skip,
one conv3x3 + AdaIN + ReLU; output conv3x3 + tanh. ConvFLU convolutions carry biases on
the gates (W_r, W_z) and on U (W has none: it would duplicate U's bias).

``sharing`` selects the ablation rows the authors reported:

* ``"single"``: stem + recognition branch + head only (no synthesis parameters);
* ``"hard"``: ONE encoder (BatchNorm) feeding both the classifier and the decoder, no
  gates;
* ``"gated"``: two encoders exchanging features through one ``ConvFLU`` per stage
  (FERSNet).

Images are normalised to [-1, 1] (mean 0.5, std 0.5) in and out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.models.offsets import class_shift, set_offsets

__all__ = ["SHARINGS", "SYNTHESES", "AdaIN", "ConvFLU", "FERSNet", "FERSNetRecognizer", "FLUGates", "PatchDiscriminator"]

SHARINGS: tuple[str, ...] = ("single", "hard", "gated")
#: Synthesis outputs: the authors' U-Net image, or the source plus a residual edit.
SYNTHESES: tuple[str, ...] = ("unet", "residual")


# ---------------------------------------------------------------------------- ConvFLU
class FLUGates(NamedTuple):
    """Intermediate values of one ``ConvFLU`` pass (x = first input, y = second)."""

    r_x: Tensor  # reset gate applied to F_y in x's candidate (N, C_y, H, W)
    z_x: Tensor  # update gate of x (N, C_x, H, W)
    cand_x: Tensor  # F~_x (N, C_x, H, W)
    r_y: Tensor  # reset gate applied to F_x in y's candidate (N, C_x, H, W)
    z_y: Tensor  # update gate of y (N, C_y, H, W)
    cand_y: Tensor  # F~_y (N, C_y, H, W)


class ConvFLU(nn.Module):
    """Convolutional Feature Leaky Unit (Zhao et al. 2020): gated two-way feature exchange.

    Args:
        channels_x, channels_y: channels of the two feature maps (same spatial size).
        kernel_size: 1 (the authors' 2021 code) or 3 (the 2020 paper); "same" padding.

    ``forward(fx, fy) -> (fx', fy')``; ``gates(fx, fy)`` returns every intermediate
    (``FLUGates``). The mean update gates of the last forward are kept (detached) in
    ``last_z`` = (mean z_x, mean z_y) for logging.
    """

    def __init__(self, channels_x: int, channels_y: int, kernel_size: int = 1) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"ConvFLU kernel_size must be 1 or 3, got {kernel_size}")
        if channels_x < 1 or channels_y < 1:
            raise ValueError("ConvFLU channels must be >= 1")
        cx, cy, k, p = channels_x, channels_y, kernel_size, kernel_size // 2
        self.channels_x, self.channels_y, self.kernel_size = cx, cy, k
        # x direction: F_y leaks into F_x
        self.w_r_x = nn.Conv2d(cx + cy, cy, k, padding=p)
        self.w_z_x = nn.Conv2d(cx + cy, cx, k, padding=p)
        self.w_x = nn.Conv2d(cy, cx, k, padding=p, bias=False)
        self.u_x = nn.Conv2d(cx, cx, k, padding=p)
        # y direction: F_x leaks into F_y
        self.w_r_y = nn.Conv2d(cx + cy, cx, k, padding=p)
        self.w_z_y = nn.Conv2d(cx + cy, cy, k, padding=p)
        self.w_y = nn.Conv2d(cx, cy, k, padding=p, bias=False)
        self.u_y = nn.Conv2d(cy, cy, k, padding=p)
        self.last_z: tuple[float, float] | None = None
        self._last_z_t: tuple[Tensor, Tensor] | None = None

    def gates(self, fx: Tensor, fy: Tensor) -> FLUGates:
        """All gate values and candidates for inputs fx (N, C_x, H, W), fy (N, C_y, H, W)."""
        if fx.shape[0] != fy.shape[0] or fx.shape[2:] != fy.shape[2:]:
            raise ValueError(f"ConvFLU inputs differ in batch/spatial size: {fx.shape} vs {fy.shape}")
        if fx.shape[1] != self.channels_x or fy.shape[1] != self.channels_y:
            raise ValueError(
                f"ConvFLU expects ({self.channels_x}, {self.channels_y}) channels, "
                f"got ({fx.shape[1]}, {fy.shape[1]})"
            )
        xy = torch.cat([fx, fy], dim=1)  # N, C_x + C_y, H, W
        r_x = torch.sigmoid(self.w_r_x(xy))  # N, C_y, H, W
        z_x = torch.sigmoid(self.w_z_x(xy))  # N, C_x, H, W
        cand_x = torch.tanh(self.w_x(r_x * fy) + self.u_x(fx))  # N, C_x, H, W
        r_y = torch.sigmoid(self.w_r_y(xy))  # N, C_x, H, W
        z_y = torch.sigmoid(self.w_z_y(xy))  # N, C_y, H, W
        cand_y = torch.tanh(self.w_y(r_y * fx) + self.u_y(fy))  # N, C_y, H, W
        return FLUGates(r_x, z_x, cand_x, r_y, z_y, cand_y)

    def forward(self, fx: Tensor, fy: Tensor) -> tuple[Tensor, Tensor]:
        """(F_x', F_y') = ((1 - z_x) F_x + z_x F~_x, (1 - z_y) F_y + z_y F~_y)."""
        g = self.gates(fx, fy)
        self._last_z_t = (g.z_x.detach().float().mean(), g.z_y.detach().float().mean())
        fx_new = (1 - g.z_x) * fx + g.z_x * g.cand_x
        fy_new = (1 - g.z_y) * fy + g.z_y * g.cand_y
        return fx_new, fy_new

    def pop_last_z(self) -> tuple[Tensor, Tensor] | None:
        """Mean update gates (z_x, z_y) of the last forward as 0-d tensors (no device
        sync), then forget them."""
        out, self._last_z_t = self._last_z_t, None
        return out


# ------------------------------------------------------------------------------ blocks
def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=True)


def _conv_norm_relu(cin: int, cout: int, stride: int, norm: str) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True)]


def _stage(cin: int, cout: int, norm: str) -> nn.Sequential:
    """Down-sampling stage: conv3x3/2 + norm + ReLU, conv3x3 + norm + ReLU."""
    return nn.Sequential(*_conv_norm_relu(cin, cout, 2, norm), *_conv_norm_relu(cout, cout, 1, norm))


class AdaIN(nn.Module):
    """Instance norm (no affine) followed by a scale/shift predicted from a condition:
    ``(1 + gamma(e)) * IN(h) + beta(e)``, gamma/beta = Linear(cond_dim, C) each."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(cond_dim, 2 * channels)
        self.channels = channels

    def params(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(scale 1 + gamma, shift beta), each (N, C), for conditions (N, cond_dim)."""
        gamma, beta = self.affine(cond).chunk(2, dim=1)  # N, C each
        return 1 + gamma, beta

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.params(cond)
        n, c = scale.shape
        return self.norm(h) * scale.view(n, c, 1, 1).to(h.dtype) + shift.view(n, c, 1, 1).to(h.dtype)


class _UpBlock(nn.Module):
    """U-Net decoder level: nearest 2x up-sampling, concat skip, conv3x3 + AdaIN + ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin + cskip, cout, 3, padding=1, bias=False)
        self.adain = AdaIN(cout, cond_dim)

    def forward(self, h: Tensor, skip: Tensor, cond: Tensor) -> Tensor:
        h = F.interpolate(h, size=skip.shape[2:], mode="nearest")  # N, C_in, 2H, 2W
        return F.relu(self.adain(self.conv(torch.cat([h, skip], dim=1)), cond))


class Decoder(nn.Module):
    """Expression-conditioned U-Net decoder: skips (finest first) + one-hot -> image."""

    def __init__(self, chans: tuple[int, ...], out_channels: int, num_classes: int) -> None:
        super().__init__()
        s = len(chans) - 1
        # level j (j = S..1): from chans[j] at 1/2^j resolution to chans[j-1] at 1/2^(j-1)
        self.ups = nn.ModuleList(_UpBlock(chans[j], chans[j - 1], chans[j - 1], num_classes) for j in range(s, 0, -1))
        self.out = nn.Conv2d(chans[0], out_channels, 3, padding=1)

    def adain_layers(self) -> list[AdaIN]:
        """The AdaIN units, coarsest first."""
        return [u.adain for u in self.ups]

    def hidden(self, skips: list[Tensor], cond: Tensor) -> Tensor:
        """The finest level's features (N, chans[0], H, W) before the output convolution."""
        h = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1]), strict=True):
            h = up(h, skip, cond)
        return h

    def forward(self, skips: list[Tensor], cond: Tensor) -> Tensor:
        return torch.tanh(self.out(self.hidden(skips, cond)))  # N, C, H, W in [-1, 1]


# ----------------------------------------------------------------------------- FERSNet
class FERSNet(nn.Module):
    """Recognition + expression-synthesis network with (gated / hard / no) sharing.

    Args:
        num_classes: K (classifier outputs and one-hot size).
        in_channels: 1 or 3.
        width: stem channels; stage i outputs ``width * 2**i``.
        input_size: image side (square inputs), divisible by ``2**stages``.
        sharing: "single" | "hard" | "gated" (module docstring).
        gate_kernel: ConvFLU kernel size (1 or 3; "gated" only).
        stages: number of down-sampling stages (and ConvFLUs / decoder levels).
        dropout: before the classifier.
        synthesis: "unet" (the authors': the decoder draws the image, tanh) or "residual"
            (project's addition: the source plus the decoder's output -- zero at the start
            -- plus ``(target - source) @ offsets``, learned per-class offsets (K, C, H, W)
            that ``init_offsets`` starts at the training faces' expression prototypes;
            needs the source expression).

    ``forward(x, target_onehot, source_onehot=None) -> (logits (N, K), synthesised (N, C,
    H, W) or None for "single")``; ``classify(x)`` -> logits (the recognition path only;
    what evaluation uses); ``features(x)`` -> pooled recognition features (N,
    feature_dim); ``synthesise(x, target_onehot, source_onehot=None)`` -> image. The
    source one-hot (the faces' own expressions) is required by ``synthesis="residual"``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 16,
        *,
        input_size: int = 64,
        sharing: str = "gated",
        gate_kernel: int = 1,
        stages: int = 3,
        dropout: float = 0.3,
        synthesis: str = "unet",
    ) -> None:
        super().__init__()
        if sharing not in SHARINGS:
            raise ValueError(f"sharing must be one of {SHARINGS}, got {sharing!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if num_classes < 2 or width < 1 or stages < 1:
            raise ValueError("num_classes must be >= 2, width and stages >= 1")
        if input_size % (2**stages) or input_size < 2 ** (stages + 1):
            raise ValueError(f"input_size {input_size} must be a multiple of 2**stages = {2**stages} (and >= {2 ** (stages + 1)})")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if synthesis not in SYNTHESES:
            raise ValueError(f"synthesis must be one of {SYNTHESES}, got {synthesis!r}")
        self.num_classes, self.in_channels, self.width = int(num_classes), int(in_channels), int(width)
        self.input_size, self.sharing, self.gate_kernel, self.stages = int(input_size), sharing, int(gate_kernel), int(stages)
        self.synthesis = synthesis
        chans = tuple(width * 2**i for i in range(stages + 1))
        self.chans = chans
        self.stem = nn.Sequential(*_conv_norm_relu(in_channels, chans[0], 1, "bn"))
        self.rec_stages = nn.ModuleList(_stage(chans[i], chans[i + 1], "bn") for i in range(stages))
        self.syn_stages: nn.ModuleList | None = None
        self.flus: nn.ModuleList | None = None
        self.decoder: Decoder | None = None
        if sharing == "gated":
            self.syn_stages = nn.ModuleList(_stage(chans[i], chans[i + 1], "in") for i in range(stages))
            self.flus = nn.ModuleList(ConvFLU(chans[i + 1], chans[i + 1], gate_kernel) for i in range(stages))
        if sharing != "single":
            self.decoder = Decoder(chans, in_channels, num_classes)
        self.offsets: nn.Parameter | None = None
        if sharing != "single" and synthesis == "residual":
            self.offsets = nn.Parameter(torch.zeros(num_classes, in_channels, input_size, input_size))  # K, C, H, W
        self.feature_dim: int = chans[-1]
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming init of the ReLU convolutions (ConvFLU and AdaIN keep torch's defaults)."""
        for part in (self.stem, self.rec_stages, self.syn_stages, self.decoder):
            for m in part.modules() if part is not None else ():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)
        if self.offsets is not None and self.decoder is not None:  # the edit starts as the offsets alone
            nn.init.zeros_(self.decoder.out.weight)
            nn.init.zeros_(self.decoder.out.bias)

    def init_offsets(self, offsets: Tensor) -> None:
        """Start the class offsets of ``synthesis="residual"`` at ``offsets`` (K, C, H, W),
        e.g. the expression prototypes of the training faces."""
        if self.offsets is None:
            raise ValueError("only synthesis='residual' has class offsets")
        set_offsets(self.offsets, offsets, "network")

    @property
    def has_synthesis(self) -> bool:
        """Whether the model has a synthesis decoder (all but "single")."""
        return self.decoder is not None

    # -- encoders
    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """x (N, C, H, W) -> (recognition features at the last stage (N, C_S, h, w),
        synthesis skips [stem, stage 1, ..., stage S] (empty for "single"))."""
        s = self.stem(x)  # N, w, H, W
        if self.sharing == "single":
            fr = s
            for stage in self.rec_stages:
                fr = stage(fr)
            return fr, []
        if self.sharing == "hard":
            skips = [s]
            for stage in self.rec_stages:
                skips.append(stage(skips[-1]))
            return skips[-1], skips
        assert self.syn_stages is not None and self.flus is not None
        fr, fs, skips = s, s, [s]
        for rec, syn, flu in zip(self.rec_stages, self.syn_stages, self.flus, strict=True):
            fr, fs = flu(rec(fr), syn(fs))
            skips.append(fs)
        return fr, skips

    def _head(self, fr: Tensor) -> tuple[Tensor, Tensor]:
        feats = torch.flatten(F.adaptive_avg_pool2d(fr, 1), 1)  # N, C_S
        return feats, self.fc(self.dropout(feats))  # N, K

    def _check_cond(self, x: Tensor, target_onehot: Tensor) -> None:
        if target_onehot.shape != (x.shape[0], self.num_classes):
            raise ValueError(f"target_onehot must be (N, {self.num_classes}) = {(x.shape[0], self.num_classes)}, got {tuple(target_onehot.shape)}")

    def _decode(self, x: Tensor, skips: list[Tensor], target_onehot: Tensor, source_onehot: Tensor | None) -> Tensor:
        assert self.decoder is not None
        self._check_cond(x, target_onehot)
        e = target_onehot.to(x.dtype)
        if self.offsets is None:
            return self.decoder(skips, e)
        if source_onehot is None:
            raise ValueError("synthesis='residual' needs the source expression one-hot")
        self._check_cond(x, source_onehot)
        edit = self.decoder.out(self.decoder.hidden(skips, e))  # N, C, H, W
        return x + edit + class_shift(e, source_onehot, self.offsets, x.dtype)

    # -- public API
    def forward(
        self, x: Tensor, target_onehot: Tensor | None, source_onehot: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(logits (N, K), synthesised target-expression image (N, C, H, W) or None).
        ``source_onehot`` (the input faces' own expressions) is needed by
        ``synthesis="residual"`` only."""
        fr, skips = self.encode(x)
        _, logits = self._head(fr)
        if self.decoder is None:
            return logits, None
        if target_onehot is None:
            raise ValueError(f"sharing={self.sharing!r} needs a target one-hot")
        return logits, self._decode(x, skips, target_onehot, source_onehot)

    def classify(self, x: Tensor) -> Tensor:
        """Logits (N, K) from the recognition path (no decoder)."""
        return self._head(self.encode(x)[0])[1]

    def features(self, x: Tensor) -> Tensor:
        """Pooled recognition features (N, feature_dim)."""
        return self._head(self.encode(x)[0])[0]

    def synthesise(self, x: Tensor, target_onehot: Tensor, source_onehot: Tensor | None = None) -> Tensor:
        """The input faces re-expressed as ``target_onehot``: (N, C, H, W) in [-1, 1]
        ("unet"; "residual" outputs may leave it by the size of the edit and are clamped
        when they become images). ``source_onehot``: the faces' own expressions
        ("residual" only)."""
        if self.decoder is None:
            raise ValueError("sharing='single' has no synthesis branch")
        _, skips = self.encode(x)
        return self._decode(x, skips, target_onehot, source_onehot)

    def gate_means(self) -> tuple[Tensor, Tensor] | None:
        """Mean update gates (z_rec, z_syn) over the ConvFLUs of the last forward (0-d
        tensors), or None without gates / before a forward."""
        if self.flus is None:
            return None
        zs = [flu.pop_last_z() for flu in self.flus]
        if any(z is None for z in zs):
            return None
        return torch.stack([z[0] for z in zs]).mean(), torch.stack([z[1] for z in zs]).mean()  # type: ignore[index]


class FERSNetRecognizer(nn.Module):
    """A FERSNet seen as a plain recogniser (``forward(x) -> logits``, ``features``,
    ``feature_dim``), the interface of ``fer.models`` used by the training loop and
    evaluation (``predict``/``embed``). Its state dict is the FERSNet's, prefixed
    ``net.``."""

    def __init__(self, net: FERSNet) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = net.feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net.classify(x)

    def features(self, x: Tensor) -> Tensor:
        return self.net.features(x)


# ------------------------------------------------------------------- discriminator
class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (Isola et al. 2017) with LSGAN outputs (Mao et al. 2017).

    The expression one-hot is broadcast to K constant channels and concatenated with the
    image. Layers: conv4x4/2 + LeakyReLU(0.2), then ``n_layers - 1`` x [conv4x4/2 +
    InstanceNorm + LeakyReLU], then conv3x3 -> 1 channel: one unbounded score per patch
    (N, 1, H / 2**n_layers, W / 2**n_layers).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1 or width < 1:
            raise ValueError("PatchDiscriminator needs n_layers >= 1 and width >= 1")
        self.num_classes = int(num_classes)
        layers: list[nn.Module] = [nn.Conv2d(in_channels + num_classes, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        c = width
        for _ in range(n_layers - 1):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.InstanceNorm2d(2 * c, affine=True), nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, onehot: Tensor) -> Tensor:
        """Patch scores (N, 1, h, w) of images x (N, C, H, W) in [-1, 1] under expression
        ``onehot`` (N, K)."""
        n, _, h, w = x.shape
        if onehot.shape != (n, self.num_classes):
            raise ValueError(f"onehot must be (N, {self.num_classes}), got {tuple(onehot.shape)}")
        cond = onehot.to(x.dtype).view(n, self.num_classes, 1, 1).expand(n, self.num_classes, h, w)  # N, K, H, W
        return self.net(torch.cat([x, cond], dim=1))  # N, 1, h', w'
