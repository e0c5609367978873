"""Pre-train FESGAN on one fold's training subjects."""

import logging
from pathlib import Path

from _common import declared, setup_logging
from _fold import fold_context, fold_parser

import numpy as np

from fer.methods.fesgan import train_fesgan
from fer.methods.identity import load_identity_net
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = fold_parser(__doc__, "identity", "model", "metrics", "results-dir", "resume-dir", "train-log")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    fold, data = fold_context(args, p)
    x, y = fold.part("train")  # the GAN sees training subjects only
    train = fold.idx["train"]
    # at a label budget: the training part's unlabelled faces, images only (labels masked)
    unl = fold.idx.get("unlabelled", np.zeros(0, dtype=np.int64))
    summary = train_fesgan(
        x, y, fold.num_classes, p.section("fesgan"),
        subjects=data.subjects[train],  # the expression prototypes are subject-normalised
        unlabelled=fold.images[unl],
        identity_net=load_identity_net(args.identity, fold.device),
        device=fold.device,
        seed=fold.seed,
        out_model=Path(args.model),
        grid_dir=Path(args.results_dir) / "grids",
        resume_path=Path(args.resume_dir) / f"fold-{args.fold}.pt",
        log_path=Path(args.train_log),
    )
    # Wall-clock times go to the log, not to the metrics: same params, same bytes.
    timings = {k: summary.pop(k) for k in ("seconds", "sec_per_iter") if k in summary}
    logging.info("fold %s FESGAN timings: %s", args.fold, timings)
    write_json(args.metrics, {f"fesgan/{k}": v for k, v in summary.items()})
    # What the GAN was trained on, for the leak checks (subjects, never test ones).
    seen = np.concatenate([train, unl]) if summary["n_unlabelled"] else train
    write_json(Path(args.results_dir) / "training_subjects.json",
               {"fold": args.fold, "subjects": sorted(set(data.subjects[seen].tolist())), "n_images": int(len(train)),
                "n_unlabelled": int(summary["n_unlabelled"])})
    logging.info("fold %s FESGAN: %s", args.fold, summary)
