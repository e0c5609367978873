"""Train and evaluate a supervised recogniser on one fold: the baseline (params section
baseline) or the AC-CNN on real data only (section accnn, the "without corpus" row)."""

from _common import declared, require_start, setup_logging
from _fold import fold_context, fold_outputs, fold_parser, log_test_metrics

from fer.methods.baseline import run_baseline_fold

if __name__ == "__main__":
    ap = fold_parser(__doc__, "model", "metrics", "curve", "resume-dir", "train-log")
    ap.add_argument("--section", choices=("baseline", "accnn"), required=True,
                    help="the recogniser's params section (also the method name in the checkpoint)")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    require_start(args, args.section, p.section(args.section).init)
    fold, _ = fold_context(args, p)
    metrics = run_baseline_fold(fold, p.section(args.section), fold_outputs(args), method=args.section)
    log_test_metrics(args.section, args.fold, metrics)
