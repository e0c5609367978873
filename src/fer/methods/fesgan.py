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

Losses: ``fer.losses.fesgan`` (D: ``D/adv``, ``D/cls``, ``D/r1``; Dz: ``Dz/adv``; G and E,
one optimiser: ``G/adv``, ``G/cls``, ``G/rec``, ``G/id`` -- skipped, and reported as
``identity_term: "off"``, without an identity network -- and ``E/latent``).

Project choices (not from the paper): the B fakes of an iteration (B = batch size) are
half re-expressed real identities G(E(x), e') of the first B/2 real images, with e' drawn
uniformly among the classes OTHER than x's own (the reconstruction term already covers
e' = y), half prior identities G(z ~ U(-1, 1)^z_dim, e) with e uniform over all classes
(E thus also receives the adversarial and classification gradients of the re-expressed
fakes); the same fakes feed the D step
(detached) and then the G/E step (through the updated D), as in the PyTorch DCGAN
example; the only augmentation is a horizontal flip of the real images; EMA copies of G
and E (``fer.training.ema``: decay ``min(ema_decay, (1 + t) / (10 + t))`` after t steps,
so a short run is not dominated by the random initialisation) are what is saved and
sampled.

Data: ``train_fesgan`` receives ONLY the fold's training images (the caller selects
them; no split indices are taken here), so no validation or test subject ever reaches the
GAN. At a label budget it may also receive the training part's unlabelled in-domain
faces, without labels: after the warm-up they join the real images of D's real/fake head
(and R1) and the encoder's latent terms (Dz, E/latent), the terms that need no expression
label; reconstruction, expression classification, re-expression, identity and prototype
terms stay on the labelled faces (they need the face's own expression). This is the
project's addition, not the paper's (which trains on a fully labelled set).

Batches are drawn without replacement within an epoch (a per-epoch permutation derived
from the seed; a last partial batch is dropped); every other random draw of an
iteration (flips, target expressions, prior codes) comes from a CPU generator derived from
(seed, iteration). Same seed and data -> identical weights (same machine; on CUDA only
under ``torch.use_deterministic_algorithms``, as in ``fer.training.driver``), and a resumed
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

from fer.losses.fesgan import discriminator_loss, generator_loss, latent_discriminator_loss
from fer.models.fesgan import (
    Editor,
    Encoder,
    Generator,
    ImageDiscriminator,
    LatentDiscriminator,
    Synthesizer,
    check_geometry,
    mean_expression,
    one_hot,
)
from fer.params import AugmentParams, FesganParams, to_dict
from fer.training.augment import augment_batch
from fer.training.batches import ImageStore, normalize, to_uint8
from fer.training.checkpoint import (
    clear_resume,
    cpu_state_dict,
    load_resume,
    load_weights,
    save_resume,
    save_weights,
)
from fer.training.ema import ema_update, ramped_decay
from fer.training.rng import derived_generator, rng_states, set_rng_states
from fer.training.prototypes import expression_prototypes
from fer.training.samplers import EpochSampler
from fer.utils.digest import digest
from fer.utils.images import save_png, tile_grid
from fer.utils.io import write_text
from fer.utils.precision import Precision

log = logging.getLogger(__name__)

__all__ = [
    "LOSS_TERMS",
    "FakeBatch",
    "load_fesgan",
    "load_fesgan_discriminator",
    "make_edited_batch",
    "make_fake_batch",
    "sample_grid",
    "sample_prior",
    "train_fesgan",
]

#: Every logged loss term, in log order ("G/id" only when an identity network is given).
LOSS_TERMS: tuple[str, ...] = (
    "D/adv", "D/cls", "D/r1", "Dz/adv", "G/adv", "G/cls", "G/rec", "G/id", "G/cycle", "G/proto", "E/latent",
)
#: Identities per grid (prior rows and real rows).
GRID_ROWS: int = 6
_FORMAT = "fesgan"
_RESUME_VERSION = 1
# Independent random streams derived from the seed.
_STREAM_ITER, _STREAM_EPOCH, _STREAM_GRID, _STREAM_UNL_EPOCH, _STREAM_UNL = 0, 1, 2, 3, 4


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


def _draw_fakes(
    real_codes: Tensor, real_labels: Tensor, num_classes: int, n_prior: int, rng: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """The random draws of a fake batch, in their fixed order on the CPU ``rng``: targets
    of the R real identities among the K - 1 other classes (any class when K = 1), P prior
    codes, P prior targets uniform over all K classes. Returns (t_real, z_prior, t_prior)."""
    device = real_codes.device
    n_real, z_dim = real_codes.shape
    if num_classes > 1:
        shift = torch.randint(1, num_classes, (n_real,), generator=rng).to(device)  # R
        t_real = (real_labels.long() + shift) % num_classes  # R, never the source class
    else:
        t_real = torch.zeros(n_real, dtype=torch.long, device=device)
    z_prior = sample_prior(n_prior, z_dim, rng, device).to(real_codes.dtype)  # P, z
    t_prior = torch.randint(0, num_classes, (n_prior,), generator=rng).to(device)  # P
    return t_real, z_prior, t_prior


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
    n_real = real_codes.shape[0]
    t_real, z_prior, t_prior = _draw_fakes(real_codes, real_labels, num_classes, n_prior, rng)
    codes = torch.cat([real_codes, z_prior])  # R+P, z
    labels = torch.cat([t_real, t_prior])  # R+P
    images = generator(codes, one_hot(labels, num_classes))  # R+P, C, S, S
    from_prior = torch.arange(n_real + n_prior, device=device) >= n_real
    return FakeBatch(images=images, labels=labels, codes=codes, from_prior=from_prior, n_real=n_real)


def make_edited_batch(
    generator: nn.Module,
    editor: nn.Module,
    real_images: Tensor,
    real_codes: Tensor,
    real_labels: Tensor,
    num_classes: int,
    n_prior: int,
    rng: torch.Generator,
) -> FakeBatch:
    """``make_fake_batch`` for the editing synthesizer (``reexpress: edit``): the same
    draws (real targets among the other classes, prior codes, prior targets), but the real
    identities are re-expressed by editing their image, ``Editor(x, e', y)``, and the prior
    identities are rendered by the generator at the mean expression m and then edited,
    ``Editor(G(z, m), e, m)`` (``Synthesizer.forward``)."""
    device = real_codes.device
    n_real = real_codes.shape[0]
    t_real, z_prior, t_prior = _draw_fakes(real_codes, real_labels, num_classes, n_prior, rng)
    mean = mean_expression(one_hot(t_prior, num_classes))  # P, K
    base = generator(z_prior, mean)  # P, C, S, S: rendered at the mean expression
    target = one_hot(torch.cat([t_real, t_prior]), num_classes)  # R+P, K
    source = torch.cat([one_hot(real_labels.long(), num_classes), mean])  # R+P, K
    images = editor(torch.cat([real_images, base]), target, source)  # R+P, C, S, S
    codes = torch.cat([real_codes, z_prior])  # R+P, z
    from_prior = torch.arange(n_real + n_prior, device=device) >= n_real
    return FakeBatch(images=images, labels=torch.cat([t_real, t_prior]), codes=codes, from_prior=from_prior,
                     n_real=n_real)


@torch.no_grad()
def sample_grid(
    synth: Synthesizer,
    real_images_uint8: np.ndarray | None,
    real_labels: np.ndarray | None,
    num_classes: int,
    z_fixed: Tensor | None,
    device: torch.device | str,
    *,
    pad: int = 2,
) -> np.ndarray:
    """A sample grid: rows = identities, columns = [input, expression 0, ..., K-1].

    Real rows (``real_images_uint8`` (R, S, S, C) uint8 with their expressions
    ``real_labels`` (R,), may be None/empty) show the real input in the first column, then
    ``synth.reexpress(x, e_k, y)``. Prior rows (``z_fixed``
    (P, z_dim), may be None/empty) leave the first column blank, then ``synth(z, e_k)``.
    Runs in fp32 with the modules in eval mode (restored afterwards).

    Returns:
        uint8 (rows * (S + pad) + pad, (K + 1) * (S + pad) + pad, C), white background.
    """
    device = torch.device(device)
    tiles: list[list[np.ndarray | None]] = []
    was_training = synth.training
    synth.eval()
    e = one_hot(torch.arange(num_classes, device=device), num_classes)  # K, K
    try:
        if real_images_uint8 is not None and len(real_images_uint8):
            x = normalize(ImageStore(real_images_uint8, device).batch(torch.arange(len(real_images_uint8))))
            assert real_labels is not None and len(real_labels) == len(x)
            for i in range(len(x)):
                src = one_hot(torch.full((num_classes,), int(real_labels[i]), device=device), num_classes)  # K, K
                out = synth.reexpress(x[i : i + 1].expand(num_classes, -1, -1, -1), e, src)  # K, C, S, S
                tiles.append([real_images_uint8[i], *to_uint8(out)])
        if z_fixed is not None and len(z_fixed):
            z = z_fixed.to(device).float()
            for i in range(len(z)):
                out = synth(z[i : i + 1].expand(num_classes, -1), e)  # K, C, S, S
                tiles.append([None, *to_uint8(out)])
    finally:
        synth.train(was_training)
    return tile_grid(tiles, pad)


# ------------------------------------------------------------------------- checkpoints
def _build(meta: Mapping[str, Any]) -> tuple[Synthesizer, ImageDiscriminator]:
    z, w, s, c, k = (int(meta[n]) for n in ("z_dim", "width", "size", "channels", "num_classes"))
    editor = Editor(c, s, k, w) if meta.get("reexpress", "code") == "edit" else None
    return Synthesizer(Generator(z, k, c, s, w), Encoder(c, s, z, w), editor), ImageDiscriminator(c, s, k, w)


def _split_state(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _read(path: Path, device: torch.device | str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state, meta = load_weights(path, map_location=device)
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a FESGAN weights file (meta format {meta.get('format')!r})")
    return state, meta


def load_fesgan(path: str | Path, device: torch.device | str = "cpu") -> tuple[Synthesizer, dict[str, Any]]:
    """Rebuild the saved (EMA) synthesizer -- generator, encoder and editor when there is
    one -- in eval mode on ``device``. Returns (synthesizer, meta); meta holds z_dim,
    width, size, channels, num_classes, reexpress, iterations, seed, identity_term and
    the training config."""
    state, meta = _read(Path(path), device)
    synth, _ = _build(meta)
    synth.generator.load_state_dict(_split_state(state, "generator."))
    synth.encoder.load_state_dict(_split_state(state, "encoder."))
    if synth.editor is not None:
        synth.editor.load_state_dict(_split_state(state, "editor."))
    return synth.to(device).eval(), meta


def load_fesgan_discriminator(path: str | Path, device: torch.device | str = "cpu") -> ImageDiscriminator:
    """Rebuild the saved image discriminator (not averaged), in eval mode on ``device``."""
    state, meta = _read(Path(path), device)
    _, disc = _build(meta)
    disc.load_state_dict(_split_state(state, "discriminator."))
    return disc.to(device).eval()


# ----------------------------------------------------------------------- training loop
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


def _check_unlabelled(images: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The unlabelled faces (uint8, the labelled images' geometry) or None when there are none."""
    if images is None or len(images) == 0:
        return None
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1:] != shape:
        raise ValueError(f"unlabelled images must be uint8 (U, {', '.join(map(str, shape))}) like the labelled "
                         f"ones, got {images.dtype} {images.shape}")
    return images


def _fingerprint(
    cfg: FesganParams,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    seed: int,
    nets: Mapping[str, nn.Module],
    identity_net: nn.Module | None,
    log_every: int,
    unlabelled: np.ndarray | None = None,
) -> str:
    desc = {
        "config": to_dict(cfg),
        "num_classes": num_classes,
        "seed": seed,
        "log_every": log_every,
        "data": [list(x.shape), str(x.dtype)],
        "nets": {k: [[n, list(v.shape)] for n, v in m.state_dict().items()] for k, m in nets.items()},
        "identity_net": None if identity_net is None else type(identity_net).__name__,
    }
    parts: list[Any] = [desc, np.asarray(y, dtype=np.int64), np.ascontiguousarray(x[:: max(1, len(x) // 32)])]
    if identity_net is not None:
        parts.append(identity_net)
    if unlabelled is not None:
        step = max(1, len(unlabelled) // 32)
        parts += ["unlabelled", list(unlabelled.shape), np.ascontiguousarray(unlabelled[::step])]
    return digest(*parts)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class _Models:
    """The four trained networks, the EMA copies, optimisers and grad scalers of one run."""

    def __init__(
        self, cfg: FesganParams, channels: int, size: int, num_classes: int,
        device: torch.device, prec: Precision,
    ) -> None:
        self.gen = Generator(cfg.z_dim, num_classes, channels, size, cfg.width)
        self.enc = Encoder(channels, size, cfg.z_dim, cfg.width)
        self.disc = ImageDiscriminator(channels, size, num_classes, cfg.width)
        self.ldisc = LatentDiscriminator(cfg.z_dim)
        self.edit = Editor(channels, size, num_classes, cfg.width) if cfg.reexpress == "edit" else None
        self.nets: dict[str, nn.Module] = {
            "generator": self.gen, "encoder": self.enc,
            "discriminator": self.disc, "latent": self.ldisc,
        }
        if self.edit is not None:
            self.nets["editor"] = self.edit
        for m in self.nets.values():
            m.to(device).train()
            if prec.channels_last:
                m.to(memory_format=torch.channels_last)
        self.gen_ema = copy.deepcopy(self.gen).eval().requires_grad_(False)
        self.enc_ema = copy.deepcopy(self.enc).eval().requires_grad_(False)
        self.edit_ema = None if self.edit is None else copy.deepcopy(self.edit).eval().requires_grad_(False)
        self.synth_ema = Synthesizer(self.gen_ema, self.enc_ema, self.edit_ema)
        betas = (cfg.beta1, cfg.beta2)
        params_ge = [*self.gen.parameters(), *self.enc.parameters()]
        if self.edit is not None:
            params_ge += list(self.edit.parameters())
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
            "editor_ema": None if self.edit_ema is None else cpu_state_dict(self.edit_ema.state_dict()),
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
        }

    def load(self, state: Mapping[str, Any]) -> None:
        for k, m in self.nets.items():
            m.load_state_dict(state["nets"][k])
        self.gen_ema.load_state_dict(state["generator_ema"])
        self.enc_ema.load_state_dict(state["encoder_ema"])
        if self.edit_ema is not None:
            self.edit_ema.load_state_dict(state["editor_ema"])
        for k, o in self.opts.items():
            o.load_state_dict(state["optimizers"][k])
            if state["scalers"][k]:
                self.scalers[k].load_state_dict(state["scalers"][k])

    def weights(self) -> dict[str, Tensor]:
        """The flat state dict of the weights file (EMA G, E and editor, raw D)."""
        out = {
            **{f"generator.{k}": v for k, v in self.gen_ema.state_dict().items()},
            **{f"encoder.{k}": v for k, v in self.enc_ema.state_dict().items()},
            **{f"discriminator.{k}": v for k, v in self.disc.state_dict().items()},
        }
        if self.edit_ema is not None:
            out.update({f"editor.{k}": v for k, v in self.edit_ema.state_dict().items()})
        return out


#: DiffAugment's transforms (Zhao et al., NeurIPS 2020): what D sees of every real and fake
#: image, drawn per image from the iteration's generator. The recogniser's usual geometric
#: and photometric jitter (no flip: real images are flipped already).
DIFFAUGMENT = AugmentParams(hflip=False, rotate_deg=10.0, scale=0.1, shift=0.06, brightness=0.2, contrast=0.2)


def _diffaugment(rng: torch.Generator) -> Callable[[Tensor], Tensor]:
    """Images in [-1, 1] -> the same images, randomly (and differentiably) transformed."""
    return lambda x: augment_batch((x + 1) / 2, DIFFAUGMENT, rng) * 2 - 1


def _train_step(
    m: _Models,
    x: Tensor,
    y: Tensor,
    it: int,
    rng: torch.Generator,
    cfg: FesganParams,
    prec: Precision,
    identity_net: nn.Module | None,
    num_classes: int,
    protos: Tensor | None = None,
    x_unl: Tensor | None = None,
) -> dict[str, Tensor]:
    """One iteration: D step, Dz step, G/E step, EMA update. x (B, C, S, S), y (B,);
    ``protos`` (K, C, S, S): the expression prototypes of ``w_proto``; ``x_unl`` (U, C, S,
    S): unlabelled in-domain faces (a label budget), real images for D's real/fake head
    and R1 and codes for the latent terms, nothing else.
    During the first ``cfg.d_warmup`` iterations only D's expression head is trained, on
    the real images (cross-entropy), so that G's expression signal means something from
    the first GAN iteration on."""
    aug = _diffaugment(rng) if cfg.diffaugment else None
    if it <= cfg.d_warmup:
        with prec.autocast():
            _, cls_r = m.disc(x if aug is None else aug(x))  # N, K
        loss = F.cross_entropy(cls_r.float(), y)
        m.step("d", loss)
        return {"D/cls": loss.detach()}
    batch = x.shape[0]
    n_re = batch // 2
    z_dz = sample_prior(batch, cfg.z_dim, rng, x.device)  # B, z (Dz "real")
    # forward once: codes, reconstructions, fakes (graph kept for the G/E step)
    x_all = x if x_unl is None else torch.cat([x, x_unl])  # B + U, C, S, S
    with prec.autocast():
        codes_all = m.enc(x_all)  # B + U, z
        codes = codes_all[:batch]  # B, z: the labelled images' codes
        x_rec = m.gen(codes, one_hot(y, num_classes))  # B, C, S, S
        if m.edit is None:
            fakes = make_fake_batch(m.gen, codes[:n_re], y[:n_re], num_classes, batch - n_re, rng)
        else:
            fakes = make_edited_batch(m.gen, m.edit, x[:n_re], codes[:n_re], y[:n_re], num_classes, batch - n_re, rng)

    _set_requires_grad(m.disc, True)
    do_r1 = cfg.r1_gamma > 0 and (it - 1) % cfg.r1_every == 0
    loss_d, terms = discriminator_loss(
        m.disc, x_all, y, fakes.images.detach(), w_cls=cfg.w_cls,
        r1_weight=cfg.r1_gamma / 2 * cfg.r1_every if do_r1 else 0.0, prec=prec, augment=aug,
    )
    m.step("d", loss_d)

    _set_requires_grad(m.ldisc, True)
    loss_dz, terms_dz = latent_discriminator_loss(m.ldisc, z_dz, codes_all)
    m.step("dz", loss_dz)

    # G and E through the updated discriminators (frozen: no parameter gradients)
    _set_requires_grad(m.disc, False)
    _set_requires_grad(m.ldisc, False)
    loss_g, terms_g = generator_loss(
        m.disc, m.ldisc, x, codes_all, x_rec, fakes.images, fakes.labels, fakes.n_real,
        cfg=cfg, identity_net=identity_net, prec=prec, augment=aug,
    )
    if protos is not None and cfg.w_proto > 0:  # toward the class-typical change of the expression
        n = fakes.n_real
        target = (x[:n].float() + cfg.proto_scale * (protos[fakes.labels[:n]] - protos[y[:n]])).clamp(-1, 1)
        proto = (fakes.images[:n].float() - target).abs().mean()
        loss_g = loss_g + cfg.w_proto * proto
        terms_g["G/proto"] = proto.detach()
    if m.edit is not None and cfg.w_cycle > 0:  # edit a re-expressed face back: the source
        with prec.autocast():
            n = fakes.n_real
            back = m.edit(fakes.images[:n], one_hot(y[:n], num_classes), one_hot(fakes.labels[:n], num_classes))
        cycle = (back.float() - x[:n].float()).abs().mean()
        loss_g = loss_g + cfg.w_cycle * cycle
        terms_g["G/cycle"] = cycle.detach()
    m.step("ge", loss_g)

    decay = ramped_decay(cfg.ema_decay, it)
    ema_update(m.gen_ema, m.gen, decay)
    ema_update(m.enc_ema, m.enc, decay)
    if m.edit is not None:
        ema_update(m.edit_ema, m.edit, decay)
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
    cfg: FesganParams,
    *,
    subjects: np.ndarray | None = None,
    unlabelled: np.ndarray | None = None,
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
        subjects: (N,) subject ids of the images (the expression prototypes of ``w_proto``
            remove each subject's mean face; None: plain class means).
        unlabelled: uint8 (U, S, S, C) unlabelled in-domain faces of the fold's training
            part (a label budget; their labels are never passed). After the warm-up each
            iteration also draws ``round(unlabelled_ratio x B)`` of them (at most U;
            without replacement within their own epochs, flipped like the labelled ones)
            for the label-free terms (``fer.losses.fesgan``). None, empty or
            ``unlabelled_ratio`` 0: labelled faces only (the same bytes as before).
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
        (None when no iteration ran), ``r1_every``, ``identity_term`` ("on" | "off"),
        ``n_unlabelled`` (the unlabelled faces used; 0: none) and
        ``unlabelled_per_iteration``.
    """
    t_start = time.perf_counter()
    device = torch.device(device)
    x_np, y_np = _check_data(images, labels, num_classes)
    n, size, _, channels = x_np.shape
    batch = min(cfg.batch_size, n)
    x_unl = _check_unlabelled(unlabelled, x_np.shape[1:])
    n_unl = 0 if x_unl is None else len(x_unl)
    batch_unl = min(n_unl, max(1, round(cfg.unlabelled_ratio * batch))) if n_unl and cfg.unlabelled_ratio > 0 else 0
    if resume_every < 1 or log_every < 1:
        raise ValueError("resume_every and log_every must be >= 1")
    prec = Precision.for_device(device, cfg.amp, cfg.channels_last)
    identity_term = "off" if identity_net is None else "on"
    if identity_net is None and cfg.w_id > 0:
        log.warning("FESGAN: no identity network given; the identity term (w_id=%g) is off", cfg.w_id)

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # initialisation
    m = _Models(cfg, channels, size, num_classes, device, prec)
    use_protos = cfg.w_proto > 0 or m.edit is not None
    protos = expression_prototypes(x_np, y_np, num_classes, subjects).to(device) if use_protos else None
    if m.edit is not None and m.edit_ema is not None and protos is not None:
        # the editor's class offsets start at the class-typical change (proto_scale x prototypes)
        m.edit.init_offsets(cfg.proto_scale * protos)
        m.edit_ema.init_offsets(cfg.proto_scale * protos)
    fingerprint = _fingerprint(cfg, x_np, y_np, num_classes, seed, m.nets, identity_net, log_every,
                               x_unl if batch_unl else None)
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
            set_rng_states(payload["rng"], device)
            start = int(payload["iteration"])
            log.info("FESGAN: resuming from %s after iteration %d/%d", resume_path, start, cfg.iterations)
    if log_path is not None:
        write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

    store = ImageStore(x_np, device)
    y_t = torch.from_numpy(y_np).to(device)
    sampler = EpochSampler(n, batch, seed, _STREAM_EPOCH)
    store_unl = ImageStore(x_unl, device) if batch_unl and x_unl is not None else None
    sampler_unl = EpochSampler(n_unl, batch_unl, seed, _STREAM_UNL_EPOCH) if store_unl is not None else None
    z_fixed = sample_prior(GRID_ROWS, cfg.z_dim, derived_generator(seed, _STREAM_GRID, 0), device)
    # Real rows: images spread over the training set (it is ordered by subject), so the
    # rows show different identities rather than several images of the first subject.
    grid_rows = np.unique(np.linspace(0, len(x_np) - 1, min(GRID_ROWS, len(x_np))).round().astype(int))
    grid_reals, grid_labels = x_np[grid_rows], y_np[grid_rows]

    def write_grid(it: int) -> None:
        if grid_dir is not None:
            grid = sample_grid(m.synth_ema, grid_reals, grid_labels, num_classes, z_fixed, device)
            save_png(Path(grid_dir) / f"iter-{it:06d}.png", grid)

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
            rng = derived_generator(seed, _STREAM_ITER, it)  # every draw of this iteration
            idx = sampler.indices(it)  # B
            x = normalize(store.batch(idx))  # B, C, S, S
            flip = (torch.rand(batch, generator=rng) < 0.5).to(device)  # B
            if cfg.hflip:
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            y = y_t[idx.to(device)]  # B
            x_u = None
            if store_unl is not None and sampler_unl is not None and it > cfg.d_warmup:
                # own streams: the labelled draws are those of a run without unlabelled faces
                x_u = normalize(store_unl.batch(sampler_unl.indices(it - cfg.d_warmup)))  # U, C, S, S
                if cfg.hflip:
                    flip_u = (torch.rand(batch_unl, generator=derived_generator(seed, _STREAM_UNL, it)) < 0.5).to(device)
                    x_u = torch.where(flip_u[:, None, None, None], x_u.flip(3), x_u)
                x_u = prec.prep(x_u)
            window.add(_train_step(m, prec.prep(x), y, it, rng, cfg, prec, identity_net, num_classes, protos, x_u))
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
                    "rng": rng_states(device),
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
        for name, reals, labels, z in (("final_real", grid_reals, grid_labels, None),
                                       ("final_prior", None, None, z_fixed)):
            grid = sample_grid(m.synth_ema, reals, labels, num_classes, z, device)
            save_png(Path(grid_dir) / f"{name}.png", grid)

    meta = {
        "format": _FORMAT,
        "z_dim": cfg.z_dim,
        "width": cfg.width,
        "size": size,
        "channels": channels,
        "num_classes": num_classes,
        "reexpress": cfg.reexpress,
        "iterations": cfg.iterations,
        "seed": seed,
        "ema": True,
        "identity_term": identity_term,
        "n_train": n,
        "n_unlabelled": n_unl if batch_unl else 0,
        "config": to_dict(cfg),
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
        n_unlabelled=n_unl if batch_unl else 0,
        unlabelled_per_iteration=batch_unl,
    )
    return result
