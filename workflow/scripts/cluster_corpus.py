"""Round 0 of the expression-guided clustering, one fold: embed the corpus (at a label
budget with the fold's unlabelled in-domain faces; without a corpus those alone) and the
fold's labelled training images with the fold's recogniser, cluster, write the
pseudo-labels, scored on the fold's validation faces (stats "check")."""

import logging
from pathlib import Path

from _common import declared, setup_logging
from _fold import add_corpus_options, fold_context, fold_parser, load_corpus

from fer.clustering.guided import write_pseudo_labels
from fer.clustering.map2d import embedding_map
from fer.methods.corpus import cluster_corpus_fold, clustering_pool
from fer.training.protocol import model_from_weights
from fer.utils.io import save_npz, write_json

if __name__ == "__main__":
    ap = fold_parser(__doc__, "recogniser", "out-dir", "metrics", "work-dir")
    add_corpus_options(ap)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    fold, data = fold_context(args, p)
    cfg = p.section("clustering")
    # at a label budget (clustering.in_domain): the fold's unlabelled in-domain faces join the corpus
    pool, pool_paths = clustering_pool(fold, data.paths, *load_corpus(args), cfg.in_domain)
    model, _ = model_from_weights(args.recogniser, fold.device)  # trained on this fold's training part only
    x, y = fold.part("train")  # the clusters are guided by the labelled TRAINING images only
    # the validation faces move nothing: they are pseudo-labelled as corpus faces would be and
    # score the pseudo-labels (stats "check", which finetune.validation_weighting reads)
    pseudo, feats = cluster_corpus_fold(
        model, x, y, pool, fold.num_classes, cfg,
        seed=fold.seed, device=fold.device, work_dir=Path(args.work_dir), threads=p.value("compute.threads"),
        check=fold.part("val"),
    )
    out = Path(args.out_dir)
    write_pseudo_labels(out, pseudo, pool_paths, fold.classes)
    idx, xy = embedding_map(feats, seed=fold.seed)
    save_npz(out / "map.npz", idx=idx, xy=xy)
    write_json(args.metrics, pseudo.stats)
    # which labelled subjects guided the clusters (the protocol test checks: the fold's training subjects)
    write_json(out / "labelled_subjects.json",
               {"fold": args.fold, "subjects": sorted(set(data.subjects[fold.idx["train"]].tolist()))})
    logging.info("fold %s round 0 pseudo-labels: %s", args.fold, pseudo.stats)
