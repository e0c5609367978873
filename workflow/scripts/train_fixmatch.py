"""Train and evaluate the FixMatch row on one fold (params sections baseline: the
recogniser; fixmatch: the semi-supervised settings). Its unlabelled images are the fold's
unlabelled in-domain part at a label budget (split K-bJ); with all labels there are none."""

from _common import declared, require_start, setup_logging
from _fold import fold_context, fold_outputs, fold_parser, log_test_metrics

from fer.methods.fixmatch import run_fixmatch_fold

if __name__ == "__main__":
    ap = fold_parser(__doc__, "model", "metrics", "curve", "resume-dir", "train-log")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    require_start(args, "baseline", p.section("baseline").init)
    fold, _ = fold_context(args, p)
    metrics = run_fixmatch_fold(fold, p.section("baseline"), p.section("fixmatch"), fold_outputs(args))
    log_test_metrics("fixmatch", args.fold, metrics)
