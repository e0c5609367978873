"""The comparison's rows: the ablation rows each method trains and the params keys each
row declares. The Snakefile's rules and the training scripts both read these tables, so a
row's keys and its fixed choices are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALL_ROWS",
    "DGCN_REFERENCES",
    "FERSNET_VARIANTS",
    "IDENTITY_ROWS",
    "JOINT_ROWS",
    "JointRow",
    "RowPlan",
    "SUBJECT_ROWS",
    "INIT_SECTIONS",
    "budget_problems",
    "continued_budget",
    "identity_starts",
    "init_problems",
    "dataset_has_subjects",
    "plan_rows",
    "recogniser_budgets",
    "row_plan_problems",
]


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
    pre-training, ``dgcn.gen_epochs``, trains no recogniser); FERSNet ``fersnet.epochs``.
    With ``finetune.start: accnn`` the corpus row is not listed: it and its control continue
    the trained AC-CNN (:func:`continued_budget`)."""
    ft = params["finetune"]
    budgets = {
        "baseline.epochs": int(params["baseline"]["epochs"]),
        "accnn.epochs": int(params["accnn"]["epochs"]),
        "(finetune.rounds + 1) * finetune.epochs": (int(ft["rounds"]) + 1) * int(ft["epochs"]),
        "dgcn.cls_epochs + dgcn.e2e_epochs": int(params["dgcn"]["cls_epochs"]) + int(params["dgcn"]["e2e_epochs"]),
        "fersnet.epochs": int(params["fersnet"]["epochs"]),
    }
    if ft["start"] == "accnn":  # continued rows: paired with each other (continued_budget)
        del budgets["(finetune.rounds + 1) * finetune.epochs"]
    return budgets


def continued_budget(params: Mapping[str, Any]) -> int | None:
    """Epochs over the labelled training images of the corpus row and of its control
    ``accnn_continued`` with ``finetune.start: accnn``: ``accnn.epochs + (finetune.rounds
    + 1) * finetune.epochs``, the same for both by construction (they train longer than the
    baseline and are paired with each other only); None with ``start: scratch``."""
    ft = params["finetune"]
    if ft["start"] != "accnn":
        return None
    return int(params["accnn"]["epochs"]) + (int(ft["rounds"]) + 1) * int(ft["epochs"])


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


#: Every row of the comparison, in the report's order (params.yaml ``methods: all``).
ALL_ROWS: tuple[str, ...] = (
    "baseline",
    *JOINT_ROWS,
    "accnn",
    "accnn_corpus",
    "accnn_continued",
    *(f"dgcn_{r}" for r in DGCN_REFERENCES),
    *(f"fersnet_{v}" for v in FERSNET_VARIANTS),
    "fixmatch",
)
#: Rows whose training needs the identity network: FESGAN's identity-preservation loss
#: (every FESGAN row: their generator is pre-trained with it) and FERSNet's identity term
#: (every row with a synthesis branch).
IDENTITY_ROWS: frozenset[str] = frozenset({*JOINT_ROWS, "fersnet_hard", "fersnet_gated", "fersnet_synth"})
#: Rows that pair images of one subject: the generative-contrastive rows with a reference
#: (the subject's neutral or mean face) and FERSNet (a subject's face turned into the same
#: subject's other expressions).
SUBJECT_ROWS: frozenset[str] = frozenset({"dgcn_generated", "dgcn_real", *(f"fersnet_{v}" for v in FERSNET_VARIANTS)})
#: Formats whose readers never give subject ids (``folders`` depends on data.subject_regex).
_NO_SUBJECT_FORMATS = frozenset({"fer2013", "rafdb", "affectnet"})


def dataset_has_subjects(data: Mapping[str, Any]) -> bool:
    """Whether the dataset that params.yaml's ``data`` section describes has subject ids:
    known from the format alone (the readers in ``fer.data.formats`` agree; tested), so
    the DAG can be planned before the dataset is read."""
    if data["format"] in _NO_SUBJECT_FORMATS:
        return False
    if data["format"] == "folders":
        return bool(data["subject_regex"])
    return True


@dataclass(frozen=True)
class RowPlan:
    """What one run trains, planned from params.yaml before any job.

    rows: the rows that run, in :data:`ALL_ROWS` order. absent: rows params.yaml asked
    for (``methods``) that cannot run on this data, with the reason the report prints.
    identity: where the identity network comes from: ``"corpus"`` (one network trained on
    the face-recognition corpus), ``"fold"`` (no corpus: one network per fold, trained on
    the fold's training subjects only) or ``"none"`` (no row that runs needs one).
    budget_only: rows of ``rows`` that run at the label budgets only, with the reason the
    report prints (``accnn_corpus`` without a corpus: with all labels there is nothing
    unlabelled to cluster; at a budget the fold's unlabelled in-domain faces are).
    """

    rows: tuple[str, ...]
    absent: Mapping[str, str]
    identity: str
    budget_only: Mapping[str, str] = field(default_factory=dict)

    @property
    def full_rows(self) -> tuple[str, ...]:
        """The rows that also run with all labels (every row but ``budget_only``)."""
        return tuple(r for r in self.rows if r not in self.budget_only)

    @property
    def has_corpus_rows(self) -> bool:
        """Whether the corpus row runs (at all labels, or at the budgets only)."""
        return "accnn_corpus" in self.rows

    @property
    def uses_corpus(self) -> bool:
        """Whether this run reads the face-recognition corpus: the identity network is
        trained on it, or the corpus row clusters it (both only when it is given; a
        budget-only corpus row clusters in-domain faces alone)."""
        return self.identity == "corpus" or self.corpus_row_with_all_labels

    @property
    def corpus_row_with_all_labels(self) -> bool:
        """Whether the corpus row also runs with all labels (then it clusters the corpus)."""
        return "accnn_corpus" in self.full_rows


def plan_rows(params: Mapping[str, Any]) -> RowPlan:
    """The rows ``methods`` selects, checked against what they need (raises
    :class:`~fer.params.core.ParamsError` naming the key and the fix):

    * ``baseline`` is always selected: it is the reference of every paired test and the
      recogniser that judges the generators' faces;
    * a row that starts from another row's models needs that row: ``fersnet_synth`` needs
      ``fersnet_gated``; ``accnn_corpus`` needs ``accnn`` (its comparison), the row
      ``clustering.embedder`` names and, with ``finetune.synthetic_weight > 0``, ``static``
      (the fold's FESGAN synthetic set);
    * ``accnn_continued`` runs exactly when ``finetune.start`` is ``accnn`` and the corpus
      row runs (at the same budgets): with ``start: accnn`` the corpus row and it need each
      other; with ``start: scratch`` listing it is refused, and under ``methods: all`` it is
      left out with the reason;
    * rows that need the identity network (:data:`IDENTITY_ROWS`) need the corpus or, with
      ``corpus.root: ''``, subject ids (the network is then trained per fold on the fold's
      training subjects): with neither they are refused when listed by name and left out,
      with the reason, under ``methods: all``;
    * rows that pair one subject's images (:data:`SUBJECT_ROWS`) need subject ids: on a
      dataset without them, refused when listed by name, left out (with the reason) under
      ``methods: all``;
    * ``accnn_corpus`` clusters unlabelled data: with ``corpus.root: ''`` it runs at the
      label budgets only, on the fold's unlabelled in-domain faces alone (needs
      ``labels.budgets`` and ``clustering.in_domain: true``; :attr:`RowPlan.budget_only`);
      without them there is nothing to cluster, the row does not run and the report says
      why.
    """
    from fer.params.core import ParamsError

    plan, problems = _plan(params)
    if problems:
        raise ParamsError("params.yaml is invalid:\n" + "\n".join(f"  {p}" for p in problems))
    return plan


def row_plan_problems(params: Mapping[str, Any]) -> list[str]:
    """What :func:`plan_rows` would refuse, one line per problem (empty: the plan is valid)."""
    return _plan(params)[1]


def _plan(params: Mapping[str, Any]) -> tuple[RowPlan, list[str]]:
    methods = params["methods"]
    explicit = methods != "all"
    wanted = [r for r in ALL_ROWS if r in methods] if explicit else list(ALL_ROWS)
    problems: list[str] = []
    if "baseline" not in wanted:
        problems.append("methods must include baseline: it is the reference of every paired test and the recogniser "
                        "that judges the generators' faces (add baseline to methods)")
    embedder = params["clustering"]["embedder"]
    needs = [  # (row, the row it needs, why, the other fix)
        ("fersnet_synth", "fersnet_gated", "starts from the fold's gated model", ""),
        ("accnn_corpus", "accnn", "is compared with it", ""),
        ("accnn_corpus", embedder, f"round 0 embeds the corpus with it (clustering.embedder: {embedder})",
         " or set clustering.embedder: baseline" if embedder != "baseline" else ""),
    ]
    start_accnn = params["finetune"]["start"] == "accnn"
    if start_accnn:
        needs += [("accnn_corpus", "accnn_continued", "starts from the trained AC-CNN (finetune.start: accnn) and is "
                   "compared with accnn_continued, the same extra epochs without the corpus", " or set finetune.start: "
                   "scratch"),
                  ("accnn_continued", "accnn_corpus", "is the corpus row's control", ""),
                  ("accnn_continued", "accnn", "continues its trained models", "")]
    elif explicit and "accnn_continued" in wanted:
        problems.append("methods lists accnn_continued, the corpus row's control when finetune.start is accnn, but "
                        "finetune.start is scratch (the corpus row then trains the baseline's budget from scratch "
                        "and row accnn is its control): remove it from methods or set finetune.start: accnn")
    if params["finetune"]["synthetic_weight"] > 0:
        needs.append(("accnn_corpus", "static", "fine-tunes on its synthetic set (finetune.synthetic_weight > 0)",
                      " or set finetune.synthetic_weight: 0"))
    for row, req, why, other in needs:
        if row in wanted and req not in wanted:
            problems.append(f"methods lists {row} but not {req}: {row} {why}; add {req} to methods{other}")
    has_corpus = bool(params["corpus"]["root"])
    has_subjects = dataset_has_subjects(params["data"])
    absent: dict[str, str] = {}

    def leave_out(needing: frozenset[str], why: str, fix: str) -> None:
        """Rows of ``needing`` cannot run: refused when listed by name, left out (with
        the reason) under ``methods: all``."""
        lacking = [r for r in wanted if r in needing and r not in absent]
        if explicit and lacking:
            problems.append(f"methods lists {', '.join(lacking)}, which {why}: {fix}")
        absent.update({r: why for r in lacking})

    if not has_subjects:
        fmt = params["data"]["format"]
        leave_out(SUBJECT_ROWS,
                  "pairs images of one subject, and the dataset has no subject ids (data.format "
                  f"{fmt}{': data.subject_regex is empty' if fmt == 'folders' else ''})",
                  "remove them from methods" + (" or set data.subject_regex" if fmt == "folders" else ""))
    if not has_corpus and not has_subjects:
        leave_out(IDENTITY_ROWS,
                  "needs an identity network, and there is neither a face-recognition corpus (corpus.root is '') nor "
                  "subject ids in the dataset to train one per fold",
                  "set corpus.root to a corpus, or remove them from methods")
    budget_only: dict[str, str] = {}
    if not has_corpus and "accnn_corpus" in wanted and "accnn_corpus" not in absent:
        if params["labels"]["budgets"] and params["clustering"]["in_domain"]:
            budget_only["accnn_corpus"] = (
                "label budgets only: corpus.root is '', so with all labels there is nothing unlabelled to cluster; "
                "at each budget it clusters the fold's unlabelled in-domain faces alone (clustering.in_domain)")
        else:
            absent["accnn_corpus"] = (
                "no unlabelled data to cluster: corpus.root is '' and no label budget leaves unlabelled in-domain "
                "faces (set corpus.root to a face-recognition corpus, or labels.budgets with clustering.in_domain: "
                "true to cluster the in-domain faces at the budgets)")
    if "accnn_continued" in wanted and "accnn_continued" not in absent:
        if not start_accnn:
            absent["accnn_continued"] = ("only with finetune.start: accnn (with start: scratch the corpus row trains "
                                         "the baseline's budget from a fresh network, and row accnn is its control)")
        elif "accnn_corpus" in absent:
            absent["accnn_continued"] = f"the corpus row's control, and the corpus row does not run: {absent['accnn_corpus']}"
        elif "accnn_corpus" in budget_only:
            budget_only["accnn_continued"] = "label budgets only, as the corpus row it is the control of: " + \
                budget_only["accnn_corpus"]
    rows = tuple(r for r in wanted if r not in absent)
    starts = identity_starts(params, rows)
    if starts and not has_corpus and not has_subjects:
        problems.append(f"{', '.join(f'{s}.init' for s in starts)} is identity, but there is neither a "
                        "face-recognition corpus (corpus.root is '') nor subject ids in the dataset to train an "
                        "identity network: set init: scratch or a state-dict file, or give a corpus")
    needs_identity = any(r in IDENTITY_ROWS for r in rows) or bool(starts)
    return RowPlan(rows, absent, ("corpus" if has_corpus else "fold") if needs_identity else "none",
                   budget_only), problems


#: Recogniser sections whose ``init`` can be ``identity``, and the rows that train with them.
INIT_SECTIONS: dict[str, tuple[str, ...]] = {
    "baseline": ("baseline", *JOINT_ROWS, "fixmatch"),
    "accnn": ("accnn", "accnn_corpus", "accnn_continued"),
}


def identity_starts(params: Mapping[str, Any], rows: tuple[str, ...] | None = None) -> list[str]:
    """The recogniser sections that start from the identity network (``init: identity``)
    and train some row that runs (every row when ``rows`` is None)."""
    return [s for s, trained in INIT_SECTIONS.items()
            if params.get(s, {}).get("init") == "identity" and (rows is None or set(trained) & set(rows))]


def init_problems(params: Mapping[str, Any]) -> list[str]:
    """``init`` keys that cannot work, known from params.yaml alone: the identity network
    cannot start from itself, and a recogniser started from it must have its architecture
    and width (its weights are loaded one to one)."""
    problems = []
    if params["identity"].get("init") == "identity":
        problems.append("identity.init cannot be identity (the identity network itself): use scratch or a file")
    for s in identity_starts(params):
        for key in ("arch", "width"):
            if params[s][key] != params["identity"][key]:
                problems.append(f"{s}.init is identity, but {s}.{key} = {params[s][key]!r} differs from identity.{key} "
                                f"= {params['identity'][key]!r}: the identity network's weights are loaded one to "
                                f"one, so set identity.{key} to {params[s][key]!r} (or {s}.init: scratch)")
    return problems
