"""Write the label budgets (labels.budgets): per fold and budget, the labelled training
and validation subjects and the unlabelled rest of the training part (fer.data.budgets)."""

import logging

from _common import declared, parser, reported_errors, setup_logging

from fer.data.budgets import write_budgets
from fer.data.folds import FoldError

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("manifest", "meta", "folds", "out"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args()
    setup_logging()
    with reported_errors(FoldError):
        p = declared(args)
        summary = write_budgets(args.manifest, args.meta, args.folds, args.out, p.section("labels").budgets,
                                p.value("folds.val_fraction"), p.get("data_seed"))
    logging.info("label budgets: %s", summary)
