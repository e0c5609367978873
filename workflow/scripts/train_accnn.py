"""Train and evaluate the AC-CNN on real data only (the "without corpus" row), one fold."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.methods.baseline import run_baseline_fold
from fer.training.loop import TrainConfig

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "model", "metrics", "curve", "resume-dir", "train-log"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--fold", type=int, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)
    metrics = run_baseline_fold(
        data.images,
        data.labels,
        split,
        data.classes,
        TrainConfig.from_mapping(p.get("accnn")),
        seed=seed,
        device=device,
        out_model=Path(args.model),
        out_metrics=Path(args.metrics),
        out_curve=Path(args.curve),
        resume_path=Path(args.resume_dir) / f"fold-{args.fold}.pt",
        log_path=Path(args.train_log),
        method="accnn",
    )
    logging.info("fold %d: %s", args.fold, {k: v for k, v in metrics.items() if k.startswith("test/") and k != "test/confusion"})
