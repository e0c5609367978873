"""Render the self-contained HTML report (reports/index.html)."""

import logging
from pathlib import Path

from _common import declared, parser, setup_logging

from fer.evaluation.stats import paired_test
from fer.report.html import FesganSection, MethodResult, build_report, read_curve
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
}
STATUS = (
    "Implemented: the real-data baseline and the FESGAN + joint training + RDBP method with its ablation "
    "(Yan et al., TMM 2020). Not implemented yet, so absent here: expression-guided clustering of the corpus "
    "with the AC-CNN (Fang et al., 2023) and the two comparison methods (generative-contrastive networks, "
    "Kim et al.; FERSNet, Zhao et al.)."
)

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("folds", "images", "manifest", "qa", "meta", "identity", "out"):
        ap.add_argument(f"--{name}", required=True)
    for name in ("summaries", "curves", "synthetic", "fesgan", "fesgan-results"):
        ap.add_argument(f"--{name}", nargs="+", required=True, help="one file per method / fold, in order")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    summaries = [read_json(s) for s in args.summaries]
    base = next(s for s in summaries if s["method"] == "baseline")
    base_acc = base["metrics"]["test/acc"]["values"]
    methods = []
    for s in summaries:
        paired = None if s is base else paired_test(s["metrics"]["test/acc"]["values"], base_acc)
        methods.append(MethodResult(s["method"], DESCRIPTIONS.get(s["method"], ""), s, s["per_fold"], paired))
    fesgan = FesganSection(
        grids=[{"real": Path(d) / "grids" / "final_real.png", "prior": Path(d) / "grids" / "final_prior.png"}
               for d in args.fesgan_results],
        losses=[read_json(f) for f in args.fesgan],
        synthetic=[read_json(f) for f in args.synthetic],
        identity=read_json(args.identity),
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
        status_note=STATUS,
        fesgan=fesgan,
    )
    logging.info("report written to %s", args.out)
