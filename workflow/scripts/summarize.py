"""Summarise a method's per-fold metrics: mean and std over folds, pooled confusion figure.

The fold metrics must be exactly the folds of ``--folds`` (data/folds.json), one file per
fold (``fold-K.json``): a summary over fewer folds would leave some subjects untested and
still look fine."""

import logging
import re
import sys
from pathlib import Path

from _common import parser, setup_logging

from fer.metrics.summary import summarize_method
from fer.report.figures import confusion_figure
from fer.utils.io import read_json, write_json

FOLD_FILE = re.compile(r"fold-(\d+)\.json")


def check_fold_set(method: str, fold_metrics: list[str], folds_path: str) -> None:
    """Exit with a message naming the files when the metrics are not one file per fold of
    ``folds_path``, in fold order."""
    n_folds = len(read_json(folds_path)["folds"])
    given = []
    for path in fold_metrics:
        m = FOLD_FILE.fullmatch(Path(path).name)
        if m is None:
            sys.exit(f"summarize {method}: {path} is not a per-fold metrics file (fold-K.json)")
        given.append(int(m.group(1)))
    if given != list(range(n_folds)):
        sys.exit(
            f"summarize {method}: {folds_path} has {n_folds} folds (0..{n_folds - 1}), but the metrics given are "
            f"of folds {given} ({', '.join(fold_metrics)}); a summary over another set of folds would leave "
            "subjects untested. dvc.yaml is probably stale for params.yaml: run `make dvc-yaml`, then re-run"
        )


if __name__ == "__main__":
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--folds", required=True, help="data/folds.json: the folds the metrics must cover, all of them")
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure", required=True)
    ap.add_argument("fold_metrics", nargs="+")
    args = ap.parse_args()
    setup_logging()
    check_fold_set(args.method, args.fold_metrics, args.folds)
    classes = read_json(args.meta)["classes"]
    summary = summarize_method(args.method, args.fold_metrics, classes)
    write_json(args.out, summary)
    confusion_figure(summary["pooled_confusion"], classes, f"{args.method}: pooled over test folds", args.figure)
    logging.info("%s: %s", args.method, {k: round(v["mean"], 4) for k, v in summary["metrics"].items()})
