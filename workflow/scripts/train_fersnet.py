"""Train and evaluate one FERSNet ablation row (Zhao et al., ICPR 2020) on one fold:
single task, hard sharing, gated sharing (ConvFLU), or gated sharing + synthetic images."""

from pathlib import Path

from _common import declared, setup_logging
from _fold import fold_context, fold_outputs, fold_parser, log_test_metrics

from fer.methods.fersnet import VARIANTS, run_fersnet_fold
from fer.methods.identity import load_identity_net

if __name__ == "__main__":
    ap = fold_parser(__doc__, "model", "metrics", "curve", "out-dir", "resume-dir", "train-log")
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--identity", help="identity network (identity feature term); every row but single")
    ap.add_argument("--init", help="the fold's gated model (the + synthetic row)")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    fold, _ = fold_context(args, p, subjects=True)
    identity = load_identity_net(args.identity, fold.device) if args.identity else None
    metrics = run_fersnet_fold(
        fold, p.section("fersnet"), fold_outputs(args), variant=args.variant, identity=identity,
        init_weights=Path(args.init) if args.init else None, out_dir=Path(args.out_dir),
    )
    log_test_metrics(f"fersnet_{args.variant}", args.fold, metrics)
