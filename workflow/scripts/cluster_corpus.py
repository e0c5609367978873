"""Round 0 of the expression-guided clustering, one fold: embed the corpus and the fold's
labelled training images with the fold's recogniser, cluster, write the pseudo-labels."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.clustering.guided import ClusteringConfig, write_pseudo_labels
from fer.clustering.map2d import embedding_map
from fer.data.aligned import load_aligned
from fer.methods.baseline import model_from_weights
from fer.methods.corpus import cluster_corpus_fold
from fer.utils.io import save_npz, write_json

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "corpus-images", "corpus-manifest", "corpus-meta",
                 "recogniser", "out-dir", "metrics", "work-dir"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--fold", type=int, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)
    corpus = load_aligned(args.corpus_images, args.corpus_manifest, args.corpus_meta, labelled=False)
    cfg = ClusteringConfig.from_mapping(p.get("clustering"))
    model, _ = model_from_weights(args.recogniser, device)  # trained on this fold's training part only
    train = split["train"]  # the clustering sees the labelled TRAINING images only
    pseudo, feats = cluster_corpus_fold(
        model, data.images[train], data.labels[train], corpus.images, len(data.classes), cfg,
        seed=seed, device=device, work_dir=Path(args.work_dir), threads=p.get("compute.threads"),
    )
    out = Path(args.out_dir)
    write_pseudo_labels(out, pseudo, corpus.paths, data.classes)
    idx, xy = embedding_map(feats, seed=seed)
    save_npz(out / "map.npz", idx=idx, xy=xy)
    write_json(args.metrics, pseudo.stats)
    # which labelled subjects guided the clusters (the protocol test checks: the fold's training subjects)
    write_json(out / "labelled_subjects.json", {"fold": args.fold, "subjects": sorted(set(data.subjects[train].tolist()))})
    logging.info("fold %d round 0 pseudo-labels: %s", args.fold, pseudo.stats)
