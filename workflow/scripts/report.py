"""Render the self-contained HTML report (reports/index.html)."""

import logging
from pathlib import Path

from _common import declared, parser, setup_logging

from fer.metrics.stats import paired_test
from fer.models.complexity import complexity_rows
from fer.params import ALL_ROWS, plan_rows
from fer.report.html import (
    FesganSection,
    MethodResult,
    build_report,
    read_curve,
    training_seconds,
    unequal_budget,
)
from fer.report.sections import (
    budget_section,
    corpus_ablation,
    corpus_section,
    fersnet_departures,
    fesgan_departures,
    generator_probe_section,
    grids_section,
    rows_not_run_section,
)
from fer.utils.io import read_json

DESCRIPTIONS = {
    "baseline": "Baseline: real data only, the recogniser of params section baseline trained per fold with augmentation.",
    "static": "+ static synthetic set: the same recogniser trained on real images plus the fold's fixed, "
              "class-balanced FESGAN synthetic set.",
    "joint": "+ joint training: synthetic images generated on the fly; the recogniser's classification loss on "
             "them also updates the generator.",
    "joint_intra": "+ joint with the intra-class loss, without RDBP: synthetic features pulled toward real class "
                   "anchors, gradient flowing into both branches (stop-gradient off).",
    "full": "FESGAN + joint + RDBP (the full method): the intra-class loss with real data-guided back-propagation "
            "(real features are fixed anchors).",
    "accnn": "AC-CNN without corpus: the project's reading of the affinity-convolution CNN (Fang et al., 2023) "
             "trained on real data only (params section accnn).",
    "accnn_corpus": "AC-CNN with corpus: the same network fine-tuned on real + expression-guided, FAISS-clustered "
                    "pseudo-labelled corpus images (params sections clustering, finetune), with re-clustering rounds; "
                    "from scratch, or (finetune.start: accnn) continuing the trained AC-CNN for extra epochs.",
    "accnn_continued": "Control of the corpus row with finetune.start: accnn: the trained AC-CNN continued for the "
                       "same extra rounds and epochs, seeds and schedule on the labelled images only (no corpus).",
    "dgcn_generated": "Generative-contrastive network (Kim et al.): a generated reference face; the classifier sees "
                      "the embedding difference E(query) - E(reference).",
    "dgcn_real": "Generative-contrastive network with the subject's real neutral face as reference (oracle ablation: "
                 "the neutral image of each subject, test subjects included, is known).",
    "dgcn_none": "Generative-contrastive network without reference: the contrastive encoder on the query alone.",
    "fersnet_single": "FERSNet ablation (Zhao et al., ICPR 2020): the recognition branch alone (single task).",
    "fersnet_hard": "FERSNet ablation: recognition and synthesis share one encoder (hard sharing, no gates).",
    "fersnet_gated": "FERSNet: recognition and synthesis branches exchanging features through ConvFLU gates.",
    "fixmatch": "FixMatch (Sohn et al., NeurIPS 2020), the semi-supervised standard, on the baseline's recogniser: "
                "weak-view pseudo-labels above a confidence threshold train the strong view (RandAugment-style + "
                "Cutout) of the fold's unlabelled in-domain images (a label budget's hidden-label subjects; with all "
                "labels there are none, and the row trains on the labelled images' weak view only). Departures from "
                "the paper: no EMA model, the baseline's optimiser and epochs, plain cross-entropy on labelled "
                "images, the threshold and unlabelled ratio of params section fixmatch (paper: 0.95 and 7).",
    "fersnet_synth": "FERSNet + synthetic images: a fresh gated model trained for the same epochs on real images "
                     "plus a class-balanced set from the fold's gated model's synthesis branch.",
}
STATUS = (
    "Methods: the real-data baseline; FESGAN + joint training + RDBP with its ablation (Yan et al., TMM 2020); "
    "expression-guided clustering of a face-recognition corpus with the AC-CNN (Fang et al., 2023; the AC module "
    "and the clustering details are the project's reading); generative-contrastive networks (Kim et al.) and "
    "FERSNet (Zhao et al., ICPR 2020) as comparison methods; FixMatch (Sohn et al., NeurIPS 2020) as the "
    "semi-supervised standard. All under the same folds, seeds and metrics, with all labels and at the label "
    "budgets of params.yaml labels.budgets."
)


def start_note(baseline: str, accnn: str, identity: str) -> str:
    """What the recognisers' weights started from (params init)."""

    def what(init: str) -> str:
        if init == "scratch":
            return "random initialisation (scratch)"
        if init == "identity":
            return ("the identity network trained on the corpus" if identity == "corpus" else
                    "the fold's identity network (trained on its training subjects)") + " (init: identity)"
        return f"the weights in {init}"

    return (f" Recogniser starts: the baseline, FESGAN and FixMatch rows from {what(baseline)}; the AC-CNN rows from "
            f"{what(accnn)}; the generative-contrastive and FERSNet rows from scratch (their own networks).")


def train_log(method: str, fold: int) -> Path:
    """The training log a row's fold job writes (the rules' --train-log): wall times live
    there, not in the artifacts (same seed, same bytes)."""
    if method in ("baseline", "accnn", "fixmatch"):
        return Path(f"logs/train_{method}/fold-{fold}.jsonl")
    if method == "accnn_corpus":
        return Path(f"logs/finetune_accnn/fold-{fold}.jsonl")
    if method == "accnn_continued":
        return Path(f"logs/continue_accnn/fold-{fold}.jsonl")
    if method.startswith("dgcn_"):
        return Path(f"logs/train_dgcn/{method.removeprefix('dgcn_')}-fold-{fold}.jsonl")
    if method.startswith("fersnet_"):
        return Path(f"logs/train_fersnet/{method.removeprefix('fersnet_')}-fold-{fold}.jsonl")
    return Path(f"logs/train_joint/{method}-fold-{fold}.jsonl")


if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("folds", "images", "manifest", "qa", "meta", "out"):
        ap.add_argument(f"--{name}", required=True)
    for name in ("summaries", "curves"):
        ap.add_argument(f"--{name}", nargs="+", required=True, help="one file per method / fold, in order")
    for name in ("identity", "synthetic", "fesgan", "fesgan-results", "pseudo", "corpus-rounds",
                 "dgcn-results", "fersnet-results", "fersnet-synthesis"):
        ap.add_argument(f"--{name}", nargs="*", default=[],
                        help="one file per fold, in order; none when the section's rows did not run")
    ap.add_argument("--pseudo-quality", help="pseudo-label quality (only when the corpus has expression truth)")
    ap.add_argument("--budgets", nargs="*", default=[], help="data/budgets.json (when labels.budgets is not empty)")
    ap.add_argument("--budget-summaries", nargs="*", default=[], help="every row's summary at every label budget")
    ap.add_argument("--budget-pseudo-quality", nargs="*", default=[],
                    help="per budget slot: pseudo-label quality of the clustered in-domain unlabelled faces")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    summaries = [read_json(s) for s in args.summaries]
    base = next(s for s in summaries if s["method"] == "baseline")
    base_acc = base["metrics"]["test/acc"]["values"]
    methods = []
    for s in summaries:
        unpaired = "" if s is base else unequal_budget(s["per_fold"], base["per_fold"])
        paired = None if s is base or unpaired else paired_test(s["metrics"]["test/acc"]["values"], base_acc)
        walls = [training_seconds(train_log(s["method"], k)) for k in range(len(s["per_fold"]))]
        methods.append(MethodResult(s["method"], DESCRIPTIONS.get(s["method"], ""), s, s["per_fold"], paired, walls,
                                    unpaired))
    by_name = {s["method"]: s for s in summaries}
    plan = plan_rows(p.as_dict())
    if [m.name for m in methods] != list(plan.full_rows):
        raise SystemExit(f"the summaries ({[m.name for m in methods]}) are not the rows params.yaml plans "
                         f"({list(plan.full_rows)}): re-run the pipeline")
    meta = read_json(args.meta)
    classes = meta["classes"]
    extra = [rows_not_run_section(plan, p.get("methods"))]
    if args.budgets:
        by_budget = [read_json(f) for f in args.budget_summaries]
        want = {(m, j) for m in plan.rows for j in range(1, len(p.get("labels.budgets")) + 1)}
        if {(s["method"], s["labels"]["slot"]) for s in by_budget} != want or len(by_budget) != len(want):
            raise SystemExit("the budget summaries are not every planned row at every labels.budgets slot: re-run "
                             "the pipeline (make dvc-yaml first when labels.budgets changed length)")
        extra.append(budget_section(summaries, read_json(args.budgets[0]), by_budget,
                                    [read_json(f) for f in args.budget_pseudo_quality]))
    if args.synthetic or args.fersnet_synthesis:
        extra.append(generator_probe_section([read_json(f) for f in args.synthetic],
                                             [read_json(f) for f in args.fersnet_synthesis]))
    if "accnn_corpus" in by_name:
        ablation = corpus_ablation(by_name, p.get("finetune.start"))
        extra.append(corpus_section(
            stats=[read_json(f) for f in args.pseudo],
            quality=read_json(args.pseudo_quality) if args.pseudo_quality else None,
            rounds=[Path(d) for d in args.corpus_rounds],
            classes=classes,
            complexity=complexity_rows(  # the two recognisers as configured, and the standard ResNet-18
                len(classes), 3 if meta["channels"] == "rgb" else 1, meta["size"],
                list(dict.fromkeys([("accnn", p.get("accnn.width")), (p.get("baseline.arch"), p.get("baseline.width")),
                                    ("resnet18", 64)]))),
            ablation=ablation,
            first_round=p.get("finetune.first_round"),
            keep_start=p.get("finetune.keep_start"),
            start=p.get("finetune.start"),
        ))
    if args.dgcn_results:
        extra.append(grids_section(
            "Generative-contrastive network: generated references",
            "Validation faces of each fold (query), the reference the generator makes from them, and the real "
            "reference target of the same subject.",
            [Path(d) for d in args.dgcn_results],
        ))
    if args.fersnet_results:
        fersnet_note = fersnet_departures(p.section("fersnet"))
        extra.append(grids_section(
            "FERSNet: expression synthesis by the gated model",
            "Validation faces of each fold re-expressed by the gated model's synthesis branch, one column per "
            "target expression." + fersnet_note,
            [Path(d) for d in args.fersnet_results],
        ))
    fesgan_note = fesgan_departures(p.section("fesgan"))
    fesgan = None if not args.fesgan else FesganSection(
        grids=[{"real": Path(d) / "grids" / "final_real.png", "prior": Path(d) / "grids" / "final_prior.png"}
               for d in args.fesgan_results],
        losses=[read_json(f) for f in args.fesgan],
        synthetic=[read_json(f) for f in args.synthetic],
        identity=[read_json(f) for f in args.identity],
        note=fesgan_note,
        identity_source=("the face-recognition corpus's identities (corpus.root)" if plan.identity == "corpus" else
                         "each fold's training subjects (no corpus: corpus.root is ''), one network per fold"),
    )
    build_report(
        methods=methods,
        curves={f"fold {k}": read_curve(c) for k, c in enumerate(args.curves)},
        images=args.images,
        manifest=args.manifest,
        qa=args.qa,
        meta=args.meta,
        folds=args.folds,
        params=p.as_dict(),
        faces_per_class=p.get("report.faces_per_class"),
        seed=p.get("seed"),
        out=args.out,
        status_note=STATUS + start_note(p.get("baseline.init"), p.get("accnn.init"), plan.identity) + (f" This run trains {len(plan.rows)} of the {len(ALL_ROWS)} rows (params.yaml methods; "
                              "the others are listed under 'Rows not in this report')."
                              if len(plan.rows) < len(ALL_ROWS) else ""),
        fesgan=fesgan,
        extra_sections=extra,
    )
    logging.info("report written to %s", args.out)
