"""FERSNet's losses (Zhao et al., ICPR 2020, authors' code; see ``fer.methods.fersnet``).

The recognition + synthesis objective of one batch, with the authors' weights as the
``fersnet`` section's defaults::

    CE + w_l1 * L1(I_syn, t) + w_id * ID + w_adv * LSGAN_G + w_cycle * MSE(G(I_syn, a), x)
       + w_expr * CE(R(I_syn), b)

where t is a real image of the same subject with the target expression, ID the squared
distance of L2-normalised identity embeddings of I_syn and t, LSGAN_G = (D(I_syn) - 1)^2
under the (updated, frozen) conditional PatchGAN, and the cycle maps I_syn back to the
source expression a. ``w_expr`` is the project's (the authors have no such term; 0 keeps
their objective): R is the network's own recognition branch with its weights frozen for
this term, so it asks the synthesis path for a face the recogniser reads as the target
expression b without teaching the recogniser anything from synthetic faces (StarGAN's
domain-classification loss for the generator, Choi et al. CVPR 2018, with the recognition
branch in the role of StarGAN's auxiliary classifier). The discriminator's own loss is
:func:`lsgan_discriminator_loss`. Terms are named ``train/cls``, ``G/l1``, ``G/id``,
``G/adv``, ``G/cycle``, ``G/expr``, ``D/adv``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fer.params import FersnetParams
from fer.utils.precision import Precision

__all__ = ["SYNTHESIS_TERMS", "lsgan_discriminator_loss", "synthesis_loss"]

#: The synthesis-branch terms, in log order.
SYNTHESIS_TERMS: tuple[str, ...] = ("G/l1", "G/id", "G/adv", "G/cycle", "G/expr")


def lsgan_discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """LSGAN discriminator loss 0.5 * (E(D(real) - 1)^2 + E D(fake)^2) on patch scores."""
    return 0.5 * ((d_real.float() - 1).pow(2).mean() + d_fake.float().pow(2).mean())


def synthesis_loss(
    cls: Tensor,
    synthesised: Tensor,
    target: Tensor,
    *,
    fp: FersnetParams,
    identity: nn.Module | None = None,
    adversary: Callable[[Tensor], Tensor] | None = None,
    cycle: Callable[[Tensor], Tensor] | None = None,
    source: Tensor | None = None,
    expression: Callable[[Tensor], Tensor] | None = None,
    target_labels: Tensor | None = None,
    prec: Precision = Precision(),
) -> tuple[Tensor, dict[str, Tensor]]:
    """The batch objective on top of the classification loss ``cls`` (module docstring).

    Args:
        cls: the recognition CE of the batch.
        synthesised, target: I_syn and its real target (V, C, H, W) in [-1, 1], for the
            V images of the batch that have a target.
        identity: frozen identity embedder for the ID term (None: term off).
        adversary: I_syn -> the discriminator's patch scores of I_syn under frozen
            weights (it may take the discriminator's own steps first; None: term off).
        cycle, source: I_syn -> G(I_syn, source expression), and the source images
            (None: term off).
        expression, target_labels: I_syn -> logits (V, K) of the frozen recognition
            branch, and the target expressions b (V,) (None: term off).

    The terms are computed in the order L1, ID, adversarial, cycle, expression: the order
    in which their gradients reach I_syn, which fixes the floating-point sums and so the
    bytes of the trained model (the same order as before the losses moved here; the
    expression term, added later, comes last, so a run without it keeps its bytes).
    Returns:
        (total, {"G/l1", "G/id", "G/adv", "G/cycle", "G/expr"}) with a term that is off at 0.
    """
    zero = torch.zeros((), device=synthesised.device)
    l1 = (synthesised.float() - target).abs().mean()
    total = cls + fp.w_l1 * l1
    id_term = adv = zero
    if identity is not None:
        with prec.autocast():
            e_s = identity(synthesised.float()).float()  # V, D
            with torch.no_grad():
                e_t = identity(target).float()  # V, D
        id_term = (e_s - e_t).pow(2).sum(1).mean()
        total = total + fp.w_id * id_term
    if adversary is not None:
        adv = (adversary(synthesised).float() - 1).pow(2).mean()
        total = total + fp.w_adv * adv
    cyc = zero
    if cycle is not None:
        assert source is not None
        cyc = (cycle(synthesised).float() - source.float()).pow(2).mean()
        total = total + fp.w_cycle * cyc
    expr = zero
    if expression is not None:
        if target_labels is None:
            raise ValueError("the expression term needs the target expressions")
        expr = F.cross_entropy(expression(synthesised).float(), target_labels)
        total = total + fp.w_expr * expr
    return total, {"G/l1": l1, "G/id": id_term, "G/adv": adv, "G/cycle": cyc, "G/expr": expr}
