"""Train and evaluate one reference row of the generative-contrastive network (Kim et al.)
on one fold: generated reference, real neutral reference, or no reference."""

from pathlib import Path

from _common import declared, setup_logging
from _fold import fold_context, fold_outputs, fold_parser, log_test_metrics

from fer.methods.dgcn import REFERENCES, run_dgcn_fold

if __name__ == "__main__":
    ap = fold_parser(__doc__, "model", "metrics", "curve", "out-dir", "resume-dir", "train-log")
    ap.add_argument("--reference", choices=REFERENCES, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    fold, _ = fold_context(args, p, subjects=True)
    metrics = run_dgcn_fold(fold, p.section("baseline"), p.section("dgcn"), fold_outputs(args),
                            reference=args.reference, out_dir=Path(args.out_dir))
    log_test_metrics(f"dgcn_{args.reference}", args.fold, metrics)
