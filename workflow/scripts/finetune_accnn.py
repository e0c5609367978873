"""Train the fold's AC-CNN on real + pseudo-labelled corpus images (+ the fold's synthetic set
when its weight is > 0), with optional re-clustering rounds: from scratch, or from the fold's
trained AC-CNN (finetune.start: accnn, --accnn-model)."""

from pathlib import Path

from _common import declared, require_accnn_start, setup_logging
from _fold import add_corpus_options, fold_context, fold_outputs, fold_parser, load_corpus, log_test_metrics

from fer.clustering.guided import read_pseudo_labels
from fer.data.aligned import load_aligned
from fer.methods.corpus import clustering_pool, run_corpus_finetune_fold, trained_accnn
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = fold_parser(__doc__, "pseudo", "model", "metrics", "curve", "out-dir", "resume-dir", "train-log")
    ap.add_argument("--synthetic-dir", help="the fold's synthetic set (when finetune.synthetic_weight > 0)")
    ap.add_argument("--accnn-model", help="the fold's trained AC-CNN (finetune.start: accnn)")
    add_corpus_options(ap)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    ft = p.section("finetune")
    require_accnn_start(args, ft.start, p.section("accnn").init)
    fold, data = fold_context(args, p)
    synthetic = None
    if ft.synthetic_weight > 0:
        if not args.synthetic_dir:
            raise SystemExit("finetune.synthetic_weight > 0 needs --synthetic-dir")
        d = Path(args.synthetic_dir)
        syn = load_aligned(d / "images.npy", d / "manifest.csv", d / "meta.json")
        if syn.classes != fold.classes:
            raise SystemExit(f"synthetic classes {syn.classes} differ from the dataset's {fold.classes}")
        synthetic = (syn.images, syn.labels)
    cfg = p.section("clustering")
    pool, pool_paths = clustering_pool(fold, data.paths, *load_corpus(args), cfg.in_domain)  # as round 0
    metrics = run_corpus_finetune_fold(
        fold, p.section("accnn"), ft, cfg, fold_outputs(args, resume=False),
        corpus_images=pool, corpus_paths=pool_paths,
        pseudo0=read_pseudo_labels(Path(args.pseudo), fold.classes),
        synthetic=synthetic,
        start_state=trained_accnn(Path(args.accnn_model), fold.classes) if ft.start == "accnn" else None,
        out_dir=Path(args.out_dir), resume_dir=Path(args.resume_dir), threads=p.value("compute.threads"),
    )
    # the re-clustering rounds embed the labelled training images only (checked by the protocol test)
    write_json(Path(args.out_dir) / "labelled_subjects.json",
               {"fold": args.fold, "subjects": sorted(set(data.subjects[fold.idx["train"]].tolist()))})
    log_test_metrics("accnn_corpus", args.fold, metrics)
