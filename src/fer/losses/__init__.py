"""fer.losses: training objectives, each a function returning ``(total, {name: term})``.

Term names follow one convention across methods: ``<part>/<term>`` where part is
``train`` (the recogniser), ``G`` (a generator or synthesis branch), ``D`` (an image
discriminator), ``Dz`` (FESGAN's latent discriminator) or ``E`` (FESGAN's encoder).

* :mod:`fer.losses.rdbp` -- the intra-class loss with real data-guided back-propagation
  (RDBP; Yan et al., TMM 2020);
* :mod:`fer.losses.fesgan` -- FESGAN's discriminator, latent-discriminator and
  generator/encoder losses;
* :mod:`fer.losses.fersnet` -- FERSNet's synthesis-branch objective and its LSGAN
  discriminator loss.
"""

from __future__ import annotations

from fer.losses.rdbp import ANCHORS, intra_class_loss, rdbp_loss

__all__ = ["ANCHORS", "intra_class_loss", "rdbp_loss"]
