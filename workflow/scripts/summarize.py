"""Summarise a method's per-fold metrics: mean and std over folds, pooled confusion figure.

The fold metrics must be exactly the folds of ``--folds`` (data/folds.json), one file per
fold (``fold-K.json``): a summary over fewer folds would leave some subjects untested and
still look fine. With ``--budget-slot J`` they are the budget splits of
data/budgets.json (``fold-K-bJ.json``, every fold), and the summary records the budget."""

import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _common import parser, setup_logging

from fer.metrics.summary import summarize_method
from fer.report.figures import confusion_figure
from fer.utils.io import read_json, write_json

FOLD_FILE = re.compile(r"fold-(\d+(?:-b\d+)?)\.json")


def expected_splits(doc: Mapping[str, Any], slot: int | None) -> list[str]:
    """The split keys a summary must cover: every fold of data/folds.json (``doc``), or
    every fold's budget split of slot ``slot`` in data/budgets.json."""
    if slot is None:
        return [str(k) for k in range(len(doc["folds"]))]
    keys = [k for k in doc.get("splits", {}) if k.endswith(f"-b{slot}")]
    return sorted(keys, key=lambda k: int(k.split("-")[0]))


def check_fold_set(method: str, fold_metrics: list[str], folds_path: str, doc: Mapping[str, Any],
                   slot: int | None = None) -> list[str]:
    """Exit with a message naming the files when the metrics are not one file per fold of
    ``doc`` (read from ``folds_path``; at budget slot ``slot``), in fold order. Returns the
    split keys."""
    want = expected_splits(doc, slot)
    given = []
    for path in fold_metrics:
        m = FOLD_FILE.fullmatch(Path(path).name)
        if m is None:
            sys.exit(f"summarize {method}: {path} is not a per-fold metrics file (fold-K.json or fold-K-bJ.json)")
        given.append(m.group(1))
    if given != want or not want:
        sys.exit(
            f"summarize {method}: {folds_path} has {len(want)} folds (splits {want}), but the metrics given are of {given} "
            f"({', '.join(fold_metrics)}); a summary over another set of folds would leave subjects untested. "
            "dvc.yaml is probably stale for params.yaml: run `make dvc-yaml`, then re-run"
        )
    return want


if __name__ == "__main__":
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--folds", required=True, help="data/folds.json (data/budgets.json with --budget-slot): the "
                                                   "folds the metrics must cover, all of them")
    ap.add_argument("--budget-slot", type=int, help="summarise budget slot J of labels.budgets (fold-K-bJ.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure", help="the pooled confusion matrix (PNG)")
    ap.add_argument("fold_metrics", nargs="+")
    args = ap.parse_args()
    setup_logging()
    doc = read_json(args.folds)
    keys = check_fold_set(args.method, args.fold_metrics, args.folds, doc, args.budget_slot)
    classes = read_json(args.meta)["classes"]
    summary = summarize_method(args.method, args.fold_metrics, classes)
    if args.budget_slot is not None:
        summary["labels"] = {"slot": args.budget_slot, "fraction": doc["budgets"][args.budget_slot - 1],
                             "labelled_fraction": [doc["splits"][k]["labelled_fraction"] for k in keys],
                             "splits": keys}
    write_json(args.out, summary)
    if args.figure:
        confusion_figure(summary["pooled_confusion"], classes, f"{args.method}: pooled over test folds", args.figure)
    logging.info("%s: %s", args.method, {k: round(v["mean"], 4) for k, v in summary["metrics"].items()})
