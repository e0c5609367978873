"""The comparison's rows: the ablation rows each method trains and the params keys each
row declares. The Snakefile's rules and the training scripts both read these tables, so a
row's keys and its fixed choices are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DGCN_REFERENCES", "FERSNET_VARIANTS", "JOINT_ROWS", "JointRow"]


@dataclass(frozen=True)
class JointRow:
    """One ablation row of FESGAN + joint training (``fer.methods.joint``).

    keys: the params.yaml keys the row reads (its DVC params and Snakemake re-run
    trigger). source: ``"synthetic_set"`` (the fold's fixed synthetic set) or
    ``"generator"`` (the pre-trained generator, trained further by the recogniser's loss).
    rdbp: ``None`` when the row has no intra-class loss, else the values that replace
    params.yaml's ``rdbp`` keys for this row (``{}``: all from params.yaml).
    """

    keys: tuple[str, ...]
    source: str
    rdbp: Mapping[str, Any] | None = field(default=None)


#: The FESGAN ablation rows. ``joint_intra`` is the intra-class loss WITHOUT real
#: data-guided back-propagation: its stop-gradient is off whatever params.yaml says, so it
#: does not declare ``rdbp.stop_gradient``.
JOINT_ROWS: dict[str, JointRow] = {
    "static": JointRow(("seed", "baseline", "joint.synth_ratio", "compute"), "synthetic_set"),
    "joint": JointRow(("seed", "baseline", "joint", "compute"), "generator"),
    "joint_intra": JointRow(
        ("seed", "baseline", "joint", "rdbp.lambda", "rdbp.anchor", "compute"), "generator", {"stop_gradient": False}
    ),
    "full": JointRow(("seed", "baseline", "joint", "rdbp", "compute"), "generator", {}),
}

#: Generative-contrastive rows: the reference the query is contrasted with.
DGCN_REFERENCES: tuple[str, ...] = ("generated", "real", "none")
#: FERSNet rows (the authors' README order): single task, hard sharing, gated sharing,
#: gated sharing + synthetic images.
FERSNET_VARIANTS: tuple[str, ...] = ("single", "hard", "gated", "synth")
