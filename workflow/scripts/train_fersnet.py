"""Train and evaluate one FERSNet ablation row (Zhao et al., ICPR 2020) on one fold:
single task, hard sharing, gated sharing (ConvFLU), or gated sharing + synthetic images."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.methods.fersnet import VARIANTS, FERSNetConfig, run_fersnet_fold
from fer.methods.identity import load_identity_net

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "model", "metrics", "curve", "out-dir", "resume-dir",
                 "train-log"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--identity", help="identity network (identity feature term); every row but single")
    ap.add_argument("--init", help="the fold's gated model (the + synthetic row)")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)
    identity = load_identity_net(args.identity, device) if args.identity else None
    metrics = run_fersnet_fold(
        data.images, data.labels, data.subjects, split, data.classes,
        FERSNetConfig.from_mapping(p.get("fersnet")),
        variant=args.variant, identity=identity, init_weights=Path(args.init) if args.init else None,
        seed=seed, device=device,
        out_model=Path(args.model), out_metrics=Path(args.metrics), out_curve=Path(args.curve),
        out_dir=Path(args.out_dir), resume_path=Path(args.resume_dir) / f"fold-{args.fold}.pt",
        log_path=Path(args.train_log),
    )
    logging.info("fold %d fersnet_%s: %s", args.fold, args.variant,
                 {k: v for k, v in metrics.items() if k.startswith("test/") and k != "test/confusion"})
