"""Train and evaluate one reference row of the generative-contrastive network (Kim et al.)
on one fold: generated reference, real neutral reference, or no reference."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.methods.dgcn import REFERENCES, DGCNConfig, run_dgcn_fold
from fer.training.loop import TrainConfig

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "model", "metrics", "curve", "out-dir", "resume-dir",
                 "train-log"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--reference", choices=REFERENCES, required=True)
    ap.add_argument("--fold", type=int, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)
    metrics = run_dgcn_fold(
        data.images, data.labels, data.subjects, split, data.classes,
        TrainConfig.from_mapping(p.get("baseline")), DGCNConfig.from_mapping(p.get("dgcn")),
        reference=args.reference, seed=seed, device=device,
        out_model=Path(args.model), out_metrics=Path(args.metrics), out_curve=Path(args.curve),
        out_dir=Path(args.out_dir), resume_path=Path(args.resume_dir) / f"fold-{args.fold}.pt",
        log_path=Path(args.train_log),
    )
    logging.info("fold %d dgcn_%s: %s", args.fold, args.reference,
                 {k: v for k, v in metrics.items() if k.startswith("test/") and k != "test/confusion"})
