"""Render the self-contained HTML report (reports/index.html)."""

import logging
from _common import declared, parser, setup_logging

from fer.report.html import MethodResult, build_report, read_curve
from fer.utils.io import read_json

DESCRIPTIONS = {
    "baseline": "Real data only: the recogniser (params section baseline) trained per fold with augmentation.",
}
STATUS = (
    "This report covers the foundation: demo data or your dataset, alignment, subject-independent folds "
    "and the real-data baseline. FESGAN + RDBP joint training, expression-guided corpus clustering and "
    "the two comparison methods are not implemented yet and have no rows here."
)

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("summary", "folds", "images", "manifest", "qa", "meta", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--fold-metrics", nargs="+", required=True, help="per-fold metrics, in fold order")
    ap.add_argument("--curves", nargs="+", required=True, help="per-fold training curves, in fold order")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    summary = read_json(args.summary)
    method = summary["method"]
    if not len(args.fold_metrics) == len(args.curves) == summary["n_folds"]:
        raise SystemExit("--fold-metrics and --curves need one file per fold")
    curves = {f"fold {k}": read_curve(c) for k, c in enumerate(args.curves)}
    build_report(
        methods=[MethodResult(method, DESCRIPTIONS.get(method, ""), summary, [read_json(f) for f in args.fold_metrics])],
        curves=curves,
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
    )
    logging.info("report written to %s", args.out)
