"""FESGAN's losses (stage 1 of Yan et al., TMM 2020; the project's reading, see
``fer.methods.fesgan``). Every function returns ``(total, {name: term})`` with the terms
detached and unweighted; totals are the weighted sums.

At a label budget the real batch may end with unlabelled in-domain faces (no expression
label): they enter only the terms that need none (``D/adv`` and ``D/r1`` as real images,
``Dz/adv`` and ``E/latent`` through their codes); ``D/cls``, ``G/rec`` and ``G/id`` use the
labelled faces only.

* D:  ``D/adv`` = softplus(-D(x)) + softplus(D(fake)); ``D/cls`` = CE(D_cls(x), y);
  ``D/r1`` = E||grad_x D(x)||^2 on REAL images (Mescheder et al., ICML 2018), lazy as in
  StyleGAN2: the caller passes its weight ``r1_gamma / 2 * r1_every`` on R1 steps, 0
  otherwise. total = D/adv + w_cls * D/cls + r1_weight * D/r1.
* Dz (latent discriminator): ``Dz/adv`` = softplus(-Dz(z_prior)) + softplus(Dz(E(x)))
  with prior samples "real" and the (detached) codes "fake".
* G and E: ``G/adv`` = softplus(-D(fake)); ``G/cls`` = CE(D_cls(fake), target
  expression); ``G/rec`` = L1(G(E(x), onehot(y)), x); ``G/id`` = 1 - cos(f(G(E(x), e')),
  f(x)) for a frozen identity network f (absent without one); ``E/latent`` =
  softplus(-Dz(E(x))). total = G/adv + w_cls * G/cls + w_rec * G/rec + w_latent *
  E/latent + w_id * G/id.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.params import FesganParams
from fer.utils.precision import Precision

__all__ = [
    "discriminator_loss",
    "generator_loss",
    "identity_distance",
    "latent_discriminator_loss",
    "r1_penalty",
]


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
    augment: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Image discriminator loss; R1 (on ``x_real``) only when ``r1_weight`` > 0.
    ``augment`` (DiffAugment) transforms real and fake images alike before D sees them.

    Args:
        x_real: real images (N + U, C, S, S): the N labelled ones first, then U >= 0
            unlabelled ones (adversarial and R1 terms only).
        y_real: the expressions of the first N (N,).
        x_fake: synthetic images (M, C, S, S), detached here.
        r1_weight: the factor on the R1 penalty (``r1_gamma / 2 * r1_every`` on lazy-R1
            steps, 0 otherwise).
    Returns:
        (total, {"D/adv", "D/cls"[, "D/r1"]}).
    """
    terms: dict[str, Tensor] = {}
    if augment is not None:
        x_real, x_fake = augment(x_real), augment(x_fake.detach())
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
    n_lab = y_real.shape[0]
    if n_lab > cls_r.shape[0]:
        raise ValueError(f"{n_lab} labels for {cls_r.shape[0]} real images")
    cls = F.cross_entropy(cls_r[:n_lab].float(), y_real)  # the labelled images come first
    total = adv + w_cls * cls
    if penalty is not None:
        total = total + r1_weight * penalty
    terms["D/adv"], terms["D/cls"] = adv.detach(), cls.detach()
    return total, terms


def latent_discriminator_loss(latent_disc: nn.Module, z_prior: Tensor, codes: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Dz loss: prior samples (N, z) are real, encoder codes (M, z) fake (detached here)."""
    adv = F.softplus(-latent_disc(z_prior.float())).mean() + F.softplus(latent_disc(codes.detach().float())).mean()
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
    codes: Tensor,
    x_rec: Tensor,
    fake_images: Tensor,
    fake_labels: Tensor,
    n_reexpressed: int,
    *,
    cfg: FesganParams,
    identity_net: nn.Module | None,
    prec: Precision = Precision(),
    augment: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Joint G/E loss (module docstring); ``augment`` (DiffAugment, differentiable)
    transforms the fakes before D sees them.

    Args:
        x_real: the labelled real batch (N, C, S, S).
        codes: E of the real batch (N + U, z), with graph: E(x_real) first, then the codes
            of U >= 0 unlabelled faces (the latent term only).
        x_rec: G(codes, onehot(y_real)) (N, C, S, S), with graph.
        fake_images, fake_labels: the fakes (M, C, S, S) and the expression each was
            rendered for (M,); the first ``n_reexpressed`` re-express ``x_real[:n]`` and
            are compared with them by the identity term.
    Returns:
        (total, {"G/adv", "G/cls", "G/rec"[, "G/id"], "E/latent"}).
    """
    with prec.autocast():
        adv_f, cls_f = discriminator(fake_images if augment is None else augment(fake_images))  # (M,), (M, K)
    adv = F.softplus(-adv_f.float()).mean()
    cls = F.cross_entropy(cls_f.float(), fake_labels)
    rec = (x_rec.float() - x_real.float()).abs().mean()
    latent = F.softplus(-latent_disc(codes.float())).mean()
    total = adv + cfg.w_cls * cls + cfg.w_rec * rec + cfg.w_latent * latent
    terms = {"G/adv": adv.detach(), "G/cls": cls.detach(), "G/rec": rec.detach()}
    if identity_net is not None:
        n = n_reexpressed
        with prec.autocast():
            idt = identity_distance(identity_net, fake_images[:n], x_real[:n])
        total = total + cfg.w_id * idt
        terms["G/id"] = idt.detach()
    terms["E/latent"] = latent.detach()
    return total, terms
