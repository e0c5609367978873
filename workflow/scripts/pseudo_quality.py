"""Pseudo-label quality per fold and round against the corpus's hidden expression truth
(evaluation only: accuracy of kept labels, coverage, NMI and purity of the clusters)."""

import logging
from pathlib import Path

from _common import declared, parser, setup_logging

from fer.clustering.guided import read_pseudo_labels
from fer.clustering.quality import pseudo_label_quality, read_corpus_truth
from fer.data.aligned import read_manifest
from fer.utils.io import read_json, write_json

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("corpus-manifest", "meta", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--pseudo", nargs="+", required=True, help="round-0 pseudo-label folder per fold, in fold order")
    ap.add_argument("--rounds", nargs="+", required=True, help="fine-tuning rounds folder per fold, in fold order")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    classes = read_json(args.meta)["classes"]
    paths = [r["path"] for r in read_manifest(args.corpus_manifest)]
    truth = read_corpus_truth(Path(p.get("corpus.truth")), paths, classes)
    folds = []
    for k, (round0, rounds_dir) in enumerate(zip(args.pseudo, args.rounds, strict=True)):
        dirs = sorted((d for d in Path(rounds_dir).glob("round-*") if d.is_dir()), key=lambda d: int(d.name[6:]))
        if not dirs:  # no re-clustering round was written: round 0 only
            dirs = [Path(round0)]
        rows = []
        for r, d in enumerate(dirs):
            q = pseudo_label_quality(read_pseudo_labels(d, classes), truth, len(classes))
            rows.append({"round": r, **q})
            logging.info("fold %d round %d: %s", k, r, {key: v for key, v in q.items() if not isinstance(v, list)})
        folds.append(rows)
    write_json(args.out, {"classes": classes, "truth": p.get("corpus.truth"), "folds": folds})
