"""fer.losses: training objectives shared by the methods.

* ``intra_class_loss`` -- the intra-class loss between synthetic and real features of the
  same class, with real data-guided back-propagation (RDBP; Yan et al., TMM 2020).
"""

from __future__ import annotations

from fer.losses.rdbp import ANCHORS, intra_class_loss

__all__ = ["ANCHORS", "intra_class_loss"]
