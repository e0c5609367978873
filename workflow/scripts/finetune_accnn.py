"""Fine-tune the fold's AC-CNN on real + pseudo-labelled corpus images (+ the fold's
synthetic set when its weight is > 0), with optional re-clustering rounds."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.clustering.guided import ClusteringConfig, read_pseudo_labels
from fer.data.aligned import load_aligned
from fer.methods.corpus import FinetuneConfig, run_corpus_finetune_fold
from fer.training.loop import TrainConfig
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "corpus-images", "corpus-manifest", "corpus-meta", "pseudo",
                 "init", "model", "metrics", "curve", "out-dir", "resume-dir", "train-log"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--synthetic-dir", help="the fold's synthetic set (when finetune.synthetic_weight > 0)")
    ap.add_argument("--fold", type=int, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)
    ft = FinetuneConfig.from_mapping(p.get("finetune"))
    synthetic = None
    if ft.synthetic_weight > 0:
        if not args.synthetic_dir:
            raise SystemExit("finetune.synthetic_weight > 0 needs --synthetic-dir")
        d = Path(args.synthetic_dir)
        syn = load_aligned(d / "images.npy", d / "manifest.csv", d / "meta.json")
        if syn.classes != data.classes:
            raise SystemExit(f"synthetic classes {syn.classes} differ from the dataset's {data.classes}")
        synthetic = (syn.images, syn.labels)
    corpus = load_aligned(args.corpus_images, args.corpus_manifest, args.corpus_meta, labelled=False)
    metrics = run_corpus_finetune_fold(
        data.images, data.labels, split, data.classes,
        TrainConfig.from_mapping(p.get("accnn")), ft, ClusteringConfig.from_mapping(p.get("clustering")),
        corpus_images=corpus.images, corpus_paths=corpus.paths,
        pseudo0=read_pseudo_labels(Path(args.pseudo), data.classes),
        init_weights=Path(args.init), synthetic=synthetic, seed=seed, device=device,
        out_model=Path(args.model), out_metrics=Path(args.metrics), out_curve=Path(args.curve),
        out_dir=Path(args.out_dir), resume_dir=Path(args.resume_dir), log_path=Path(args.train_log),
        threads=p.get("compute.threads"),
    )
    # the re-clustering rounds embed the labelled training images only (checked by the protocol test)
    write_json(Path(args.out_dir) / "labelled_subjects.json",
               {"fold": args.fold, "subjects": sorted(set(data.subjects[split["train"]].tolist()))})
    logging.info("fold %d accnn_corpus: %s", args.fold,
                 {k: v for k, v in metrics.items() if k.startswith("test/") and k != "test/confusion"})
