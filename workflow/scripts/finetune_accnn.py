"""Train the fold's AC-CNN on real + pseudo-labelled corpus images (+ the fold's synthetic set
when its weight is > 0), with optional re-clustering rounds: from scratch, or from the fold's
trained AC-CNN (finetune.start: accnn, --accnn-model)."""

from pathlib import Path

from _common import declared, require_accnn_start, setup_logging
from _fold import (
    add_corpus_options,
    add_synthetic_option,
    fold_context,
    fold_outputs,
    fold_parser,
    load_corpus,
    load_synthetic,
    log_test_metrics,
)

from fer.clustering.guided import read_pseudo_labels
from fer.methods.corpus import clustering_pool, run_corpus_finetune_fold, trained_accnn
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = fold_parser(__doc__, "pseudo", "model", "metrics", "curve", "out-dir", "resume-dir", "train-log")
    add_synthetic_option(ap)
    ap.add_argument("--accnn-model", help="the fold's trained AC-CNN (finetune.start: accnn)")
    add_corpus_options(ap)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    ft = p.section("finetune")
    require_accnn_start(args, ft.start, p.section("accnn").init)
    fold, data = fold_context(args, p)
    synthetic = load_synthetic(args, ft.synthetic_weight, fold.classes)
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
