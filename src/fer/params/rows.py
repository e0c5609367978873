"""The comparison's rows: the ablation rows each method trains and the params keys each
row declares. The Snakefile's rules and the training scripts both read these tables, so a
row's keys and its fixed choices are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DGCN_REFERENCES", "FERSNET_VARIANTS", "JOINT_ROWS", "JointRow", "budget_problems", "recogniser_budgets"]


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


def recogniser_budgets(params: Mapping[str, Any]) -> dict[str, int]:
    """Epochs over the fold's labelled training images that each method's recogniser rows
    train, as the params.yaml keys give them (``{expression: epochs}``): the baseline and
    the joint rows read ``baseline.epochs``; the AC-CNN ``accnn.epochs``; the corpus row
    ``(finetune.rounds + 1) * finetune.epochs`` (one training per clustering round); the
    generative-contrastive rows ``dgcn.cls_epochs + dgcn.e2e_epochs`` (the generator's own
    pre-training, ``dgcn.gen_epochs``, trains no recogniser); FERSNet ``fersnet.epochs``."""
    ft = params["finetune"]
    return {
        "baseline.epochs": int(params["baseline"]["epochs"]),
        "accnn.epochs": int(params["accnn"]["epochs"]),
        "(finetune.rounds + 1) * finetune.epochs": (int(ft["rounds"]) + 1) * int(ft["epochs"]),
        "dgcn.cls_epochs + dgcn.e2e_epochs": int(params["dgcn"]["cls_epochs"]) + int(params["dgcn"]["e2e_epochs"]),
        "fersnet.epochs": int(params["fersnet"]["epochs"]),
    }


def budget_problems(params: Mapping[str, Any]) -> list[str]:
    """Rows compared in a paired test must train their recognisers for the same number of
    epochs (equal budgets): one problem line per budget that differs from
    ``baseline.epochs``, naming the keys and the values that fix it."""
    budgets = recogniser_budgets(params)
    target = budgets["baseline.epochs"]
    bad = {k: v for k, v in budgets.items() if v != target}
    if not bad:
        return []
    lines = [f"every compared row trains its recogniser for baseline.epochs = {target} epochs (equal budgets); "
             "these differ:"]
    lines += [f"    {k} = {v}" for k, v in bad.items()]
    lines.append("    set them to the same budget, e.g. dvc exp run -S baseline.epochs=N -S accnn.epochs=N "
                 "-S fersnet.epochs=N -S dgcn.cls_epochs=N-e2e -S finetune.epochs=N/(rounds+1)")
    return lines
