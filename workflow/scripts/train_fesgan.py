"""Pre-train FESGAN on one fold's training subjects."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.methods.fesgan import FesganConfig, train_fesgan
from fer.methods.identity import load_identity_net
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "identity", "model", "metrics", "results-dir", "resume-dir",
                 "train-log"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--fold", type=int, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)
    train = split["train"]  # the GAN sees training subjects only
    summary = train_fesgan(
        data.images[train],
        data.labels[train],
        len(data.classes),
        FesganConfig.from_mapping(p.get("fesgan")),
        identity_net=load_identity_net(args.identity, device),
        device=device,
        seed=seed,
        out_model=Path(args.model),
        grid_dir=Path(args.results_dir) / "grids",
        resume_path=Path(args.resume_dir) / f"fold-{args.fold}.pt",
        log_path=Path(args.train_log),
    )
    write_json(args.metrics, {f"fesgan/{k}": v for k, v in summary.items()})
    # What the GAN was trained on, for the leak checks (subjects, never test ones).
    write_json(Path(args.results_dir) / "training_subjects.json",
               {"fold": args.fold, "subjects": sorted(set(data.subjects[train].tolist())), "n_images": int(len(train))})
    logging.info("fold %d FESGAN: %s", args.fold, summary)
