"""Train the identity network: on the corpus identities, or (``--fold``, no corpus) on the
fold's training subjects only."""

import logging
from pathlib import Path

from _common import declared, parser, require_start, setup_logging

from fer.data.aligned import load_aligned
from fer.methods.identity import fold_training_faces, train_identity_net
from fer.utils.device import select_device
from fer.utils.io import read_json
from fer.utils.seed import seed_everything

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "model", "metrics", "curve", "resume-dir"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--folds", help="with --fold: the folds file; the network learns the fold's training subjects")
    ap.add_argument("--fold", type=int, help="train on this fold's training subjects (no corpus)")
    ap.add_argument("--start", help="start weights (identity.init: a state-dict file)")
    args = ap.parse_args()
    if (args.fold is None) != (args.folds is None):
        ap.error("--fold and --folds go together")
    setup_logging()
    p = declared(args)
    compute = p.section("compute")
    device = select_device(compute.device, compute.threads)
    seed = p.get("seed") + (args.fold or 0)
    seed_everything(seed)
    if args.fold is None:
        corpus = load_aligned(args.images, args.manifest, args.meta, labelled=False)
        images, subjects, name = corpus.images, corpus.subjects, "identity"
    else:
        data = load_aligned(args.images, args.manifest, args.meta)
        images, subjects = fold_training_faces(data.images, data.subjects, read_json(args.folds)["folds"][args.fold])
        name = f"fold-{args.fold}"
    cfg = p.section("identity")
    require_start(args, "identity", cfg.init)
    metrics = train_identity_net(
        images,
        subjects,
        cfg,
        seed=seed,
        device=device,
        out_model=Path(args.model),
        out_metrics=Path(args.metrics),
        out_curve=Path(args.curve),
        resume_path=Path(args.resume_dir) / f"{name}.pt",
        log_path=Path("logs") / ("train_identity.jsonl" if args.fold is None else f"train_identity/{name}.jsonl"),
        start=Path(args.start) if args.start else None,
    )
    logging.info("identity network: %s", metrics)
