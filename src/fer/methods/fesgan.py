"""Stage 1 of FESGAN + RDBP: pre-training the expression-synthesis GAN on one fold.

Follows Yan, Huang, Chen, Shen, Wang, "Joint Deep Learning of Facial Expression Synthesis
and Recognition", IEEE Trans. Multimedia 22(11), 2020 (arXiv 2002.02194), stage 1: a GAN
that renders a chosen expression for a real face's identity (encoder E, generator G) or
for a new identity drawn from a prior. The paper's full text was not available; the
structure below is the project's reading of it and of the notes in
``/work/shared/notes/methods.md`` (M1), which also describe a public reimplementation
whose bugs are deliberately NOT reproduced:

* **Fake labels.** Every synthetic image is labelled with the expression it was
  generated for, prior identities included (the reimplementation mismatched the labels
  of prior samples); ``make_fake_batch`` returns images and labels from the same draw.
* **Adversarial loss.** Non-saturating logistic loss (softplus) with an R1 penalty on
  REAL images only (Mescheder et al., ICML 2018), instead of WGAN-GP (whose penalty the
  reimplementation applied to the wrong pair). R1 is lazy as in StyleGAN2 (Karras et al.,
  CVPR 2020): computed every ``r1_every`` D steps (default 4, the first step included)
  with weight ``r1_gamma / 2 * r1_every``; ``r1_every = 1`` gives the plain per-step
  penalty ``r1_gamma / 2 * E||grad_x D(x)||^2``.

Losses (unweighted terms are logged by these names; totals are the weighted sums):

* D:  ``D/adv`` = softplus(-D(x)) + softplus(D(fake)); ``D/cls`` = CE(D_cls(x), y);
  ``D/r1``.  total = D/adv + w_cls * D/cls + r1_gamma/2 * r1_every * D/r1 (on R1 steps).
* Dz (latent discriminator, own optimiser): ``Dz/adv`` = softplus(-Dz(z_prior)) +
  softplus(Dz(E(x))) with z_prior ~ U(-1, 1)^z_dim "real" and the (detached) codes "fake".
* G and E (one optimiser): ``G/adv`` = softplus(-D(fake)); ``G/cls`` =
  CE(D_cls(fake), target expression); ``G/rec`` = L1(G(E(x), onehot(y)), x);
  ``G/id`` = 1 - cos(f(G(E(x), e')), f(x)) for a frozen identity network f (skipped, and
  reported as ``identity_term: "off"``, when none is given); ``E/latent`` =
  softplus(-Dz(E(x))). total = G/adv + w_cls * G/cls + w_rec * G/rec + w_id * G/id +
  w_latent * E/latent.

Project choices (not from the paper): the B fakes of an iteration (B = batch size) are
half re-expressed real identities G(E(x), e') of the first B/2 real images, with e' drawn
uniformly among the classes OTHER than x's own (the reconstruction term already covers
e' = y), half prior identities G(z ~ U(-1, 1)^z_dim, e) with e uniform over all classes
(E thus also receives the adversarial and classification gradients of the re-expressed
fakes); the same fakes feed the D step
(detached) and then the G/E step (through the updated D), as in the PyTorch DCGAN
example; the only augmentation is a horizontal flip of the real images; EMA copies of G
and E (decay ``min(ema_decay, (1 + t) / (10 + t))`` after t steps, TensorFlow's
``num_updates`` ramp, so a short run is not dominated by the random initialisation) are
what is saved and sampled.

Data: ``train_fesgan`` receives ONLY the fold's training images (the caller selects
them; no split indices are taken here), so no validation or test subject ever reaches the
GAN. Batches are drawn without replacement within an epoch (a per-epoch permutation
derived from the seed; a last partial batch is dropped); every other random draw of an
iteration (flips, target expressions, prior codes) comes from a CPU generator derived from
(seed, iteration). Same seed and data -> identical weights (same machine; on CUDA only
under ``torch.use_deterministic_algorithms``, as in ``fer.training.loop``), and a resumed
run ends with bit-identical weights to an uninterrupted one.

Device: everything follows ``device``; on CUDA autocast (bf16 where supported, else fp16
with one GradScaler per optimiser) when ``amp`` and channels_last when ``channels_last``,
both ignored on CPU. The R1 forward pass runs in fp32.

Outputs: ``out_model`` (``save_weights``: one flat state dict with prefixes
``generator.`` / ``encoder.`` (the EMA copies) / ``discriminator.`` and the meta of
``load_fesgan``), sample grids in ``grid_dir``, JSON-lines rows in ``log_path``. The
resume file at ``resume_path`` (written every ``resume_every`` iterations) is deleted once
``out_model`` is written, as the per-fold entry points of the other methods do.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.models.fesgan import (
    Encoder,
    Generator,
    ImageDiscriminator,
    LatentDiscriminator,
    check_geometry,
    one_hot,
)
from fer.training.checkpoint import (
    clear_resume,
    cpu_state_dict,
    load_resume,
    load_weights,
    save_resume,
    save_weights,
)
from fer.training.loop import (
    ImageStore,
    amp_autocast,
    amp_dtype_for,
    coerce_fields,
    normalize,
)
from fer.utils.io import atomic_path, write_text

log = logging.getLogger(__name__)

__all__ = [
    "LOSS_TERMS",
    "FakeBatch",
    "FesganConfig",
    "Precision",
    "discriminator_loss",
    "ema_update",
    "generator_loss",
    "identity_distance",
    "latent_discriminator_loss",
    "load_fesgan",
    "load_fesgan_discriminator",
    "make_fake_batch",
    "r1_penalty",
    "sample_grid",
    "sample_prior",
    "to_uint8",
    "train_fesgan",
]

#: Every logged loss term, in log order ("G/id" only when an identity network is given).
LOSS_TERMS: tuple[str, ...] = (
    "D/adv", "D/cls", "D/r1", "Dz/adv", "G/adv", "G/cls", "G/rec", "G/id", "E/latent",
)
#: Identities per grid (prior rows and real rows).
GRID_ROWS: int = 6
_FORMAT = "fesgan"
_RESUME_VERSION = 1
# Independent random streams derived from the seed.
_STREAM_ITER, _STREAM_EPOCH, _STREAM_GRID = 0, 1, 2


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class FesganConfig:
    """Hyper-parameters of FESGAN pre-training (params.yaml section ``fesgan``)."""

    z_dim: int = 64
    width: int = 32
    iterations: int = 600
    batch_size: int = 32
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    r1_gamma: float = 1.0  # R1 weight on real images (penalty gamma/2 * E||grad||^2)
    r1_every: int = 4  # lazy R1: every N D steps with weight x N (1 = every step)
    w_cls: float = 1.0  # expression classification (D on real, G on fake)
    w_rec: float = 10.0  # L1 reconstruction G(E(x), e_x) vs x
    w_id: float = 5.0  # identity preservation (needs an identity network)
    w_latent: float = 1.0  # latent adversarial loss of E(x) against the prior
    ema_decay: float = 0.999  # EMA of G and E (ramped, see the module docstring)
    grid_every: int = 200  # sample grid every N iterations (0: only at the end)
    hflip: bool = True  # horizontal flip of the real images (the only augmentation)
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only

    def __post_init__(self) -> None:
        if self.z_dim < 1 or self.width < 2 or self.iterations < 1 or self.batch_size < 2:
            raise ValueError("z_dim and iterations must be >= 1, width and batch_size >= 2")
        if self.lr <= 0 or not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ValueError("lr must be > 0 and beta1, beta2 in [0, 1)")
        if self.r1_every < 1 or self.grid_every < 0:
            raise ValueError("r1_every must be >= 1 and grid_every >= 0")
        for name in ("r1_gamma", "w_cls", "w_rec", "w_id", "w_latent"):
            if getattr(self, name) < 0:
                raise ValueError(f"fesgan.{name} must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> FesganConfig:
        """Build from a (YAML) mapping; an unknown key raises ValueError naming it."""
        return cls(**coerce_fields(cls, d, "fesgan"))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Precision:
    """Where and how forward passes run: autocast dtype (None: fp32), channels_last."""

    device_type: str = "cpu"
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self) -> Any:
        """Autocast context (a no-op without an AMP dtype)."""
        return amp_autocast(torch.device(self.device_type), self.amp_dtype)

    def prep(self, x: Tensor) -> Tensor:
        """Put an image batch into the networks' memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# --------------------------------------------------------------------------- sampling
def sample_prior(n: int, z_dim: int, rng: torch.Generator, device: torch.device) -> Tensor:
    """Identity codes from the prior U(-1, 1)^z_dim, drawn on CPU: (n, z_dim) on device."""
    return (torch.rand((n, z_dim), generator=rng) * 2 - 1).to(device)


@dataclass
class FakeBatch:
    """Synthetic images and the expression each was generated for."""

    images: Tensor  # N, C, S, S in [-1, 1]
    labels: Tensor  # N, the target expression of each image
    codes: Tensor  # N, z_dim, the identity code each image was generated from
    from_prior: Tensor  # N bool: True for prior identities, False for re-expressed ones
    n_real: int  # the first n_real rows re-express real identities (in input order)


def make_fake_batch(
    generator: nn.Module,
    real_codes: Tensor,
    real_labels: Tensor,
    num_classes: int,
    n_prior: int,
    rng: torch.Generator,
) -> FakeBatch:
    """Re-express real identities and draw prior identities, in one generator call.

    Real identities (``real_codes`` (R, z), their own expressions ``real_labels`` (R,))
    get a target expression drawn uniformly among the K - 1 OTHER classes (any class when
    K = 1); ``n_prior`` prior codes get a target uniform over all K classes. Each image's
    label is the very target it was rendered with. Draws (CPU ``rng``, fixed order):
    real targets, prior codes, prior targets. Rows: the R re-expressed images first.
    """
    device = real_codes.device
    n_real, z_dim = real_codes.shape
    if num_classes > 1:
        shift = torch.randint(1, num_classes, (n_real,), generator=rng).to(device)  # R
        t_real = (real_labels.long() + shift) % num_classes  # R, never the source class
    else:
        t_real = torch.zeros(n_real, dtype=torch.long, device=device)
    z_prior = sample_prior(n_prior, z_dim, rng, device).to(real_codes.dtype)  # P, z
    t_prior = torch.randint(0, num_classes, (n_prior,), generator=rng).to(device)  # P
    codes = torch.cat([real_codes, z_prior])  # R+P, z
    labels = torch.cat([t_real, t_prior])  # R+P
    images = generator(codes, one_hot(labels, num_classes))  # R+P, C, S, S
    from_prior = torch.arange(n_real + n_prior, device=device) >= n_real
    return FakeBatch(images=images, labels=labels, codes=codes, from_prior=from_prior, n_real=n_real)


def to_uint8(x: Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) -> uint8 (N, H, W, C)."""
    y = ((x.detach().float().cpu() * 0.5 + 0.5) * 255).round().clamp(0, 255)
    return y.to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def sample_grid(
    generator: Generator,
    encoder: Encoder,
    real_images_uint8: np.ndarray | None,
    num_classes: int,
    z_fixed: Tensor | None,
    device: torch.device | str,
    *,
    pad: int = 2,
) -> np.ndarray:
    """A sample grid: rows = identities, columns = [input, expression 0, ..., K-1].

    Real rows (``real_images_uint8`` (R, S, S, C) uint8, may be None/empty) show the real
    input in the first column, then G(E(x), e_k). Prior rows (``z_fixed`` (P, z_dim), may
    be None/empty) leave the first column blank, then G(z, e_k). Runs in fp32 with the
    modules in eval mode (restored afterwards).

    Returns:
        uint8 (rows * (S + pad) + pad, (K + 1) * (S + pad) + pad, C), white background.
    """
    device = torch.device(device)
    size, channels = generator.size, generator.out_channels
    tiles: list[list[np.ndarray | None]] = []
    modes = (generator.training, encoder.training)
    generator.eval()
    encoder.eval()
    labels = torch.arange(num_classes, device=device)  # K
    e = one_hot(labels, num_classes)  # K, K
    try:
        if real_images_uint8 is not None and len(real_images_uint8):
            x = torch.from_numpy(np.ascontiguousarray(real_images_uint8)).to(device)
            x = normalize(x.permute(0, 3, 1, 2).float() / 255.0)  # R, C, S, S
            codes = encoder(x)  # R, z
            for i in range(len(x)):
                out = generator(codes[i : i + 1].expand(num_classes, -1), e)  # K, C, S, S
                tiles.append([real_images_uint8[i], *to_uint8(out)])
        if z_fixed is not None and len(z_fixed):
            z = z_fixed.to(device).float()
            for i in range(len(z)):
                out = generator(z[i : i + 1].expand(num_classes, -1), e)  # K, C, S, S
                tiles.append([None, *to_uint8(out)])
    finally:
        generator.train(modes[0])
        encoder.train(modes[1])
    rows, cols = len(tiles), num_classes + 1
    grid = np.full(
        (rows * (size + pad) + pad, cols * (size + pad) + pad, channels), 255, np.uint8
    )
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is not None:
                top, left = pad + r * (size + pad), pad + c * (size + pad)
                grid[top : top + size, left : left + size] = tile
    return grid


def _save_png(path: Path, grid: np.ndarray) -> None:
    from PIL import Image

    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


# ------------------------------------------------------------------------------ losses
def r1_penalty(discriminator: nn.Module, x_real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """R1 = E ||d D_adv(x) / d x||^2 on REAL images, with a graph for the D update.

    Runs in fp32 (call it outside autocast). Returns (penalty (), adv logits (N,),
    class logits (N, K)); the logits are reused by the caller's D loss.
    """
    x = x_real.detach().float().requires_grad_(True)  # N, C, S, S
    adv, cls = discriminator(x)  # (N,), (N, K)
    (grad,) = torch.autograd.grad(adv.sum(), x, create_graph=True)  # N, C, S, S
    return grad.square().sum(dim=(1, 2, 3)).mean(), adv, cls


def discriminator_loss(
    discriminator: nn.Module,
    x_real: Tensor,
    y_real: Tensor,
    x_fake: Tensor,
    *,
    w_cls: float,
    r1_weight: float,
    prec: Precision = Precision(),
) -> tuple[Tensor, dict[str, Tensor]]:
    """Image discriminator loss; R1 (on ``x_real``) only when ``r1_weight`` > 0.

    Args:
        x_real: real images (N, C, S, S); y_real: their expressions (N,).
        x_fake: synthetic images (M, C, S, S), detached by the caller.
        r1_weight: the factor on the R1 penalty (``r1_gamma / 2 * r1_every`` on lazy-R1
            steps, 0 otherwise).
    Returns:
        (total, {"D/adv", "D/cls"[, "D/r1"]}: detached unweighted terms).
    """
    terms: dict[str, Tensor] = {}
    if r1_weight > 0:
        penalty, adv_r, cls_r = r1_penalty(discriminator, x_real)  # fp32
        terms["D/r1"] = penalty.detach()
    else:
        penalty = None
        with prec.autocast():
            adv_r, cls_r = discriminator(x_real)  # (N,), (N, K)
    with prec.autocast():
        adv_f, _ = discriminator(x_fake.detach())  # (M,)
    adv = F.softplus(-adv_r.float()).mean() + F.softplus(adv_f.float()).mean()
    cls = F.cross_entropy(cls_r.float(), y_real)
    total = adv + w_cls * cls
    if penalty is not None:
        total = total + r1_weight * penalty
    terms["D/adv"], terms["D/cls"] = adv.detach(), cls.detach()
    return total, terms


def latent_discriminator_loss(
    latent_disc: nn.Module, z_prior: Tensor, codes: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Dz loss: prior samples (N, z) are real, encoder codes (M, z) fake (detached here)."""
    adv = (
        F.softplus(-latent_disc(z_prior.float())).mean()
        + F.softplus(latent_disc(codes.detach().float())).mean()
    )
    return adv, {"Dz/adv": adv.detach()}


def identity_distance(identity_net: nn.Module, fake: Tensor, real: Tensor) -> Tensor:
    """Mean 1 - cosine similarity of L2-normalised identity features (gradient to fake)."""
    with torch.no_grad():
        f_real = F.normalize(identity_net(real).float(), dim=1)  # N, D
    f_fake = F.normalize(identity_net(fake).float(), dim=1)  # N, D
    return (1 - (f_fake * f_real).sum(dim=1)).mean()


def generator_loss(
    discriminator: nn.Module,
    latent_disc: nn.Module,
    x_real: Tensor,
    y_real: Tensor,
    codes: Tensor,
    x_rec: Tensor,
    fakes: FakeBatch,
    *,
    cfg: FesganConfig,
    identity_net: nn.Module | None,
    prec: Precision = Precision(),
) -> tuple[Tensor, dict[str, Tensor]]:
    """Joint G/E loss (see the module docstring).

    Args:
        x_real, y_real: the real batch (N, C, S, S), (N,).
        codes: E(x_real) (N, z), with graph.
        x_rec: G(codes, onehot(y_real)) (N, C, S, S), with graph.
        fakes: ``make_fake_batch`` output; its first ``n_real`` rows re-express
            ``x_real[:n_real]`` and are compared with them by the identity term.
    Returns:
        (total, {"G/adv", "G/cls", "G/rec"[, "G/id"], "E/latent"}: detached terms).
    """
    with prec.autocast():
        adv_f, cls_f = discriminator(fakes.images)  # (M,), (M, K)
    adv = F.softplus(-adv_f.float()).mean()
    cls = F.cross_entropy(cls_f.float(), fakes.labels)
    rec = (x_rec.float() - x_real.float()).abs().mean()
    latent = F.softplus(-latent_disc(codes.float())).mean()
    total = adv + cfg.w_cls * cls + cfg.w_rec * rec + cfg.w_latent * latent
    terms = {"G/adv": adv.detach(), "G/cls": cls.detach(), "G/rec": rec.detach()}
    if identity_net is not None:
        n_real = fakes.n_real
        with prec.autocast():
            idt = identity_distance(identity_net, fakes.images[:n_real], x_real[:n_real])
        total = total + cfg.w_id * idt
        terms["G/id"] = idt.detach()
    terms["E/latent"] = latent.detach()
    return total, terms


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model (parameters); buffers copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


# ------------------------------------------------------------------------- checkpoints
def _build(meta: Mapping[str, Any]) -> tuple[Generator, Encoder, ImageDiscriminator]:
    z, w, s, c, k = (int(meta[n]) for n in ("z_dim", "width", "size", "channels", "num_classes"))
    return (
        Generator(z, k, c, s, w),
        Encoder(c, s, z, w),
        ImageDiscriminator(c, s, k, w),
    )


def _split_state(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _read(path: Path, device: torch.device | str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state, meta = load_weights(path, map_location=device)
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a FESGAN weights file (meta format {meta.get('format')!r})")
    return state, meta


def load_fesgan(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[Generator, Encoder, dict[str, Any]]:
    """Rebuild the saved (EMA) generator and encoder, in eval mode on ``device``.

    Returns (generator, encoder, meta); meta holds z_dim, width, size, channels,
    num_classes, iterations, seed, identity_term and the training config.
    """
    state, meta = _read(Path(path), device)
    gen, enc, _ = _build(meta)
    gen.load_state_dict(_split_state(state, "generator."))
    enc.load_state_dict(_split_state(state, "encoder."))
    return gen.to(device).eval(), enc.to(device).eval(), meta


def load_fesgan_discriminator(
    path: str | Path, device: torch.device | str = "cpu"
) -> ImageDiscriminator:
    """Rebuild the saved image discriminator (not averaged), in eval mode on ``device``."""
    state, meta = _read(Path(path), device)
    _, _, disc = _build(meta)
    disc.load_state_dict(_split_state(state, "discriminator."))
    return disc.to(device).eval()


# ----------------------------------------------------------------------- training loop
def _derived_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """CPU generator seeded from (seed, stream, index): independent reproducible streams."""
    entropy = [seed % 2**64, stream, index]
    s = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(s) % 2**63)


class _EpochSampler:
    """Batches of ``batch`` indices without replacement; the permutation of epoch e is
    derived from (seed, e), so batch ``it`` is a pure function of (seed, it)."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.per_epoch = n // batch
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, it: int) -> Tensor:
        """Indices of iteration ``it`` (1-based): (batch,)."""
        epoch, k = divmod(it - 1, self.per_epoch)
        if epoch != self._epoch:
            g = _derived_generator(self.seed, _STREAM_EPOCH, epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[k * self.batch : (k + 1) * self.batch]


def _check_data(
    images: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    if h != w:
        raise ValueError(f"FESGAN needs square images, got {h}x{w}")
    check_geometry(h, c)
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise ValueError(f"labels must be integers of shape ({n},), got {y.dtype} {y.shape}")
    if n < 2:
        raise ValueError(f"need at least 2 training images, got {n}")
    if num_classes < 2 or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) with num_classes >= 2")
    return images, y.astype(np.int64)


def _fingerprint(
    cfg: FesganConfig,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    seed: int,
    nets: Mapping[str, nn.Module],
    identity_net: nn.Module | None,
    log_every: int,
) -> str:
    desc = {
        "config": cfg.to_dict(),
        "num_classes": num_classes,
        "seed": seed,
        "log_every": log_every,
        "data": [list(x.shape), str(x.dtype)],
        "nets": {k: [[n, list(v.shape)] for n, v in m.state_dict().items()] for k, m in nets.items()},
        "identity_net": None if identity_net is None else type(identity_net).__name__,
    }
    h = hashlib.sha256(json.dumps(desc, sort_keys=True).encode())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(x[:: max(1, len(x) // 32)]).tobytes())
    if identity_net is not None:
        for k, v in identity_net.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _torch_rng_states(device: torch.device) -> dict[str, Any]:
    # The loop draws nothing from global RNGs (all draws use derived generators); the
    # torch states are saved anyway so that code called from here (e.g. an identity
    # network with stochastic layers) continues exactly after a resume.
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def _set_torch_rng_states(states: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class _Models:
    """The four trained networks, the EMA copies, optimisers and grad scalers of one run."""

    def __init__(
        self, cfg: FesganConfig, channels: int, size: int, num_classes: int,
        device: torch.device, prec: Precision,
    ) -> None:
        self.gen = Generator(cfg.z_dim, num_classes, channels, size, cfg.width)
        self.enc = Encoder(channels, size, cfg.z_dim, cfg.width)
        self.disc = ImageDiscriminator(channels, size, num_classes, cfg.width)
        self.ldisc = LatentDiscriminator(cfg.z_dim)
        self.nets: dict[str, nn.Module] = {
            "generator": self.gen, "encoder": self.enc,
            "discriminator": self.disc, "latent": self.ldisc,
        }
        for m in self.nets.values():
            m.to(device).train()
            if prec.channels_last:
                m.to(memory_format=torch.channels_last)
        self.gen_ema = copy.deepcopy(self.gen).eval().requires_grad_(False)
        self.enc_ema = copy.deepcopy(self.enc).eval().requires_grad_(False)
        betas = (cfg.beta1, cfg.beta2)
        params_ge = [*self.gen.parameters(), *self.enc.parameters()]
        self.opts: dict[str, torch.optim.Optimizer] = {
            "ge": torch.optim.Adam(params_ge, lr=cfg.lr, betas=betas),
            "d": torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=betas),
            "dz": torch.optim.Adam(self.ldisc.parameters(), lr=cfg.lr, betas=betas),
        }
        fp16 = prec.amp_dtype == torch.float16
        self.scalers = {k: torch.amp.GradScaler("cuda", enabled=fp16) for k in self.opts}

    def step(self, name: str, loss: Tensor) -> None:
        """zero_grad, (scaled) backward and step of optimiser ``name``."""
        opt, scaler = self.opts[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def state(self) -> dict[str, Any]:
        """Everything a resume needs (CPU tensors and plain values)."""
        return {
            "nets": {k: cpu_state_dict(m.state_dict()) for k, m in self.nets.items()},
            "generator_ema": cpu_state_dict(self.gen_ema.state_dict()),
            "encoder_ema": cpu_state_dict(self.enc_ema.state_dict()),
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
        }

    def load(self, state: Mapping[str, Any]) -> None:
        for k, m in self.nets.items():
            m.load_state_dict(state["nets"][k])
        self.gen_ema.load_state_dict(state["generator_ema"])
        self.enc_ema.load_state_dict(state["encoder_ema"])
        for k, o in self.opts.items():
            o.load_state_dict(state["optimizers"][k])
            if state["scalers"][k]:
                self.scalers[k].load_state_dict(state["scalers"][k])

    def weights(self) -> dict[str, Tensor]:
        """The flat state dict of the weights file (EMA G and E, raw D)."""
        return {
            **{f"generator.{k}": v for k, v in self.gen_ema.state_dict().items()},
            **{f"encoder.{k}": v for k, v in self.enc_ema.state_dict().items()},
            **{f"discriminator.{k}": v for k, v in self.disc.state_dict().items()},
        }


def _train_step(
    m: _Models,
    x: Tensor,
    y: Tensor,
    it: int,
    rng: torch.Generator,
    cfg: FesganConfig,
    prec: Precision,
    identity_net: nn.Module | None,
    num_classes: int,
) -> dict[str, Tensor]:
    """One iteration: D step, Dz step, G/E step, EMA update. x (B, C, S, S), y (B,)."""
    batch = x.shape[0]
    n_re = batch // 2
    z_dz = sample_prior(batch, cfg.z_dim, rng, x.device)  # B, z (Dz "real")
    # forward once: codes, reconstructions, fakes (graph kept for the G/E step)
    with prec.autocast():
        codes = m.enc(x)  # B, z
        x_rec = m.gen(codes, one_hot(y, num_classes))  # B, C, S, S
        fakes = make_fake_batch(m.gen, codes[:n_re], y[:n_re], num_classes, batch - n_re, rng)

    _set_requires_grad(m.disc, True)
    do_r1 = cfg.r1_gamma > 0 and (it - 1) % cfg.r1_every == 0
    loss_d, terms = discriminator_loss(
        m.disc, x, y, fakes.images.detach(), w_cls=cfg.w_cls,
        r1_weight=cfg.r1_gamma / 2 * cfg.r1_every if do_r1 else 0.0, prec=prec,
    )
    m.step("d", loss_d)

    _set_requires_grad(m.ldisc, True)
    loss_dz, terms_dz = latent_discriminator_loss(m.ldisc, z_dz, codes)
    m.step("dz", loss_dz)

    # G and E through the updated discriminators (frozen: no parameter gradients)
    _set_requires_grad(m.disc, False)
    _set_requires_grad(m.ldisc, False)
    loss_g, terms_g = generator_loss(
        m.disc, m.ldisc, x, y, codes, x_rec, fakes, cfg=cfg, identity_net=identity_net, prec=prec
    )
    m.step("ge", loss_g)

    decay = min(cfg.ema_decay, (1 + it) / (10 + it))
    ema_update(m.gen_ema, m.gen, decay)
    ema_update(m.enc_ema, m.enc, decay)
    return {**terms, **terms_dz, **terms_g}


class _Window:
    """Running sums of the loss terms since the last log row (on the device, no syncs)."""

    def __init__(self, state: Mapping[str, Any] | None = None, device: torch.device | None = None):
        self.sums: dict[str, list[Any]] = {}  # name -> [sum tensor, count]
        for k, (v, c) in (state or {}).items():
            self.sums[k] = [v.to(device), int(c)]

    def add(self, terms: Mapping[str, Tensor]) -> None:
        for name, value in terms.items():
            if name in self.sums:
                self.sums[name][0] += value.float()
                self.sums[name][1] += 1
            else:
                self.sums[name] = [value.float().clone(), 1]

    def means(self) -> dict[str, float]:
        """Window means in ``LOSS_TERMS`` order; empties the window."""
        out = {k: float(self.sums[k][0]) / self.sums[k][1] for k in LOSS_TERMS if k in self.sums}
        self.sums.clear()
        return out

    def state(self) -> dict[str, Any]:
        return {k: [v.detach().cpu(), c] for k, (v, c) in self.sums.items()}


def train_fesgan(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    cfg: FesganConfig,
    *,
    identity_net: nn.Module | None,
    device: torch.device | str,
    seed: int,
    out_model: Path,
    grid_dir: Path | None,
    resume_path: Path | None,
    log_path: Path | None,
    on_iteration: Callable[[int], None] | None = None,
    resume_every: int = 100,
    log_every: int = 20,
) -> dict[str, Any]:
    """Pre-train FESGAN on ONE fold's training images and save the EMA G and E.

    The caller passes only the training part of the fold (never validation or test
    images): everything the GAN learns must come from the training subjects.

    Args:
        images: uint8 (N, S, S, C) training images, S a multiple of 16, C in {1, 3}.
        labels: int (N,) expressions in [0, num_classes).
        num_classes: K (>= 2).
        cfg: hyper-parameters.
        identity_net: frozen identity feature network, images in [-1, 1] (N, C, S, S) ->
            (N, D); moved to ``device`` and held in eval mode with gradients off for its
            parameters during training (both restored afterwards). None: the identity term
            is off (warning; ``w_id`` is ignored).
        device: where to train.
        seed: initialisation, batch order and every random draw.
        out_model: weights file (``save_weights``; load with ``load_fesgan``).
        grid_dir: sample grids ``iter-XXXXXX.png`` (every ``grid_every`` iterations and at
            the end), ``final_real.png`` and ``final_prior.png``; None: none written.
        resume_path: resume file, written every ``resume_every`` iterations; a matching
            one is continued from, a mismatching one ignored (warning); deleted once
            ``out_model`` is written. None: off.
        log_path: JSON-lines file, one row of window-averaged terms every ``log_every``
            iterations (and at the end).
        on_iteration: called with the iteration number after each iteration (after the
            resume file is written); an exception there stops training (tests use it to
            simulate a kill).
    Returns:
        the final averaged loss terms (mean over the last log window), ``iterations``,
        ``resumed_iterations``, ``seconds`` (wall time of this call), ``sec_per_iter``
        (None when no iteration ran), ``r1_every`` and ``identity_term`` ("on" | "off").
    """
    t_start = time.perf_counter()
    device = torch.device(device)
    x_np, y_np = _check_data(images, labels, num_classes)
    n, size, _, channels = x_np.shape
    batch = min(cfg.batch_size, n)
    if resume_every < 1 or log_every < 1:
        raise ValueError("resume_every and log_every must be >= 1")
    prec = Precision(
        device.type, amp_dtype_for(device, cfg.amp), device.type == "cuda" and cfg.channels_last
    )
    identity_term = "off" if identity_net is None else "on"
    if identity_net is None and cfg.w_id > 0:
        log.warning("FESGAN: no identity network given; the identity term (w_id=%g) is off", cfg.w_id)

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # initialisation
    m = _Models(cfg, channels, size, num_classes, device, prec)
    fingerprint = _fingerprint(cfg, x_np, y_np, num_classes, seed, m.nets, identity_net, log_every)
    history: list[dict[str, float]] = []
    window = _Window()
    start = 0
    payload = load_resume(resume_path) if resume_path is not None else None
    if payload is not None:
        if payload.get("version") != _RESUME_VERSION or payload.get("fingerprint") != fingerprint:
            log.warning("resume file %s does not match this run; starting fresh", resume_path)
        else:
            m.load(payload["models"])
            history = [dict(r) for r in payload["history"]]
            window = _Window(payload["window"], device)
            _set_torch_rng_states(payload["rng"], device)
            start = int(payload["iteration"])
            log.info("FESGAN: resuming from %s after iteration %d/%d", resume_path, start, cfg.iterations)
    if log_path is not None:
        write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

    store = ImageStore(x_np, device)
    y_t = torch.from_numpy(y_np).to(device)
    sampler = _EpochSampler(n, batch, seed)
    z_fixed = sample_prior(GRID_ROWS, cfg.z_dim, _derived_generator(seed, _STREAM_GRID, 0), device)
    # Real rows: images spread over the training set (it is ordered by subject), so the
    # rows show different identities rather than several images of the first subject.
    grid_reals = x_np[np.unique(np.linspace(0, len(x_np) - 1, min(GRID_ROWS, len(x_np))).round().astype(int))]

    def write_grid(it: int) -> None:
        if grid_dir is not None:
            grid = sample_grid(m.gen_ema, m.enc_ema, grid_reals, num_classes, z_fixed, device)
            _save_png(Path(grid_dir) / f"iter-{it:06d}.png", grid)

    def log_row(it: int, seconds: float, iters: int) -> None:
        row: dict[str, float] = {"iter": it, **window.means()}
        bad = [k for k, v in row.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite FESGAN loss terms at iteration {it}: {bad}")
        row["sec_per_iter"] = seconds / max(1, iters)
        history.append(row)
        terms = " ".join(f"{k}={row[k]:.4f}" for k in LOSS_TERMS if k in row)
        log.info("fesgan it %d/%d %s %.3fs/it", it, cfg.iterations, terms, row["sec_per_iter"])
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    id_state: tuple[bool, list[bool]] | None = None
    t_loop = t_window = time.perf_counter()
    iters_window = 0
    try:
        if identity_net is not None:
            id_state = (identity_net.training, [p.requires_grad for p in identity_net.parameters()])
            identity_net.to(device).eval()
            _set_requires_grad(identity_net, False)
            with torch.no_grad(), prec.autocast():
                feats = identity_net(prec.prep(normalize(store.batch(torch.arange(2)))))
            if feats.ndim != 2 or feats.shape[0] != 2:
                raise ValueError(f"identity_net must return (N, D) features, got {tuple(feats.shape)}")

        for it in range(start + 1, cfg.iterations + 1):
            rng = _derived_generator(seed, _STREAM_ITER, it)  # every draw of this iteration
            idx = sampler.indices(it)  # B
            x = normalize(store.batch(idx))  # B, C, S, S
            flip = (torch.rand(batch, generator=rng) < 0.5).to(device)  # B
            if cfg.hflip:
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            y = y_t[idx.to(device)]  # B
            window.add(_train_step(m, prec.prep(x), y, it, rng, cfg, prec, identity_net, num_classes))
            iters_window += 1

            if it % log_every == 0 or it == cfg.iterations:
                log_row(it, time.perf_counter() - t_window, iters_window)
                t_window, iters_window = time.perf_counter(), 0
            if (cfg.grid_every and it % cfg.grid_every == 0) or it == cfg.iterations:
                write_grid(it)
            if resume_path is not None and it % resume_every == 0:
                save_resume(resume_path, {
                    "version": _RESUME_VERSION,
                    "fingerprint": fingerprint,
                    "iteration": it,
                    "models": m.state(),
                    "history": history,
                    "window": window.state(),
                    "rng": _torch_rng_states(device),
                })
            if on_iteration is not None:
                on_iteration(it)
    finally:
        if identity_net is not None and id_state is not None:
            identity_net.train(id_state[0])
            for p, flag in zip(identity_net.parameters(), id_state[1], strict=True):
                p.requires_grad_(flag)
    ran, sec_loop = cfg.iterations - start, time.perf_counter() - t_loop

    if grid_dir is not None:
        if ran == 0:  # everything was restored: the last grid may predate this call
            write_grid(cfg.iterations)
        for name, reals, z in (("final_real", grid_reals, None), ("final_prior", None, z_fixed)):
            grid = sample_grid(m.gen_ema, m.enc_ema, reals, num_classes, z, device)
            _save_png(Path(grid_dir) / f"{name}.png", grid)

    meta = {
        "format": _FORMAT,
        "z_dim": cfg.z_dim,
        "width": cfg.width,
        "size": size,
        "channels": channels,
        "num_classes": num_classes,
        "iterations": cfg.iterations,
        "seed": seed,
        "ema": True,
        "identity_term": identity_term,
        "n_train": n,
        "config": cfg.to_dict(),
    }
    save_weights(out_model, m.weights(), meta)
    clear_resume(resume_path)  # the outputs are written: a later call starts afresh

    last = history[-1] if history else {}
    result: dict[str, Any] = {k: last[k] for k in LOSS_TERMS if k in last}
    result.update(
        iterations=cfg.iterations,
        resumed_iterations=start,
        seconds=time.perf_counter() - t_start,
        sec_per_iter=sec_loop / ran if ran else None,
        r1_every=cfg.r1_every,
        identity_term=identity_term,
    )
    return result
