"""Summarise a method's per-fold metrics: mean and std over folds, pooled confusion figure."""

import logging

from _common import parser, setup_logging

from fer.metrics.summary import summarize_method
from fer.report.figures import confusion_figure
from fer.utils.io import read_json, write_json

if __name__ == "__main__":
    ap = parser(__doc__)
    ap.add_argument("--method", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure", required=True)
    ap.add_argument("fold_metrics", nargs="+")
    args = ap.parse_args()
    setup_logging()
    classes = read_json(args.meta)["classes"]
    summary = summarize_method(args.method, args.fold_metrics, classes)
    write_json(args.out, summary)
    confusion_figure(summary["pooled_confusion"], classes, f"{args.method}: pooled over test folds", args.figure)
    logging.info("%s: %s", args.method, {k: round(v["mean"], 4) for k, v in summary["metrics"].items()})
