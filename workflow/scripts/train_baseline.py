"""Train and evaluate the baseline recogniser on one fold."""

import logging
from pathlib import Path

from _common import declared, parser, setup_logging

from fer.data.aligned import load_aligned
from fer.data.folds import split_indices
from fer.methods.baseline import run_baseline_fold
from fer.training.loop import TrainConfig
from fer.utils.device import select_device
from fer.utils.io import read_json
from fer.utils.seed import seed_everything

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "model", "metrics", "curve", "resume-dir", "train-log"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--fold", type=int, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    compute = p.get("compute")
    device = select_device(compute["device"], compute["threads"])
    seed = p.get("seed") + args.fold
    seed_everything(seed)
    data = load_aligned(args.images, args.manifest, args.meta)
    fold = read_json(args.folds)["folds"][args.fold]
    split = split_indices(data.subjects, fold)
    metrics = run_baseline_fold(
        data.images,
        data.labels,
        split,
        data.classes,
        TrainConfig.from_mapping(p.get("baseline")),
        seed=seed,
        device=device,
        out_model=Path(args.model),
        out_metrics=Path(args.metrics),
        out_curve=Path(args.curve),
        resume_path=Path(args.resume_dir) / f"fold-{args.fold}.pt",
        log_path=Path(args.train_log),
    )
    logging.info("fold %d: %s", args.fold, {k: v for k, v in metrics.items() if k.startswith("test/") and k != "test/confusion"})
