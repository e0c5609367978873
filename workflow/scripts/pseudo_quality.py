"""Pseudo-label quality per fold and round (evaluation only: accuracy of kept labels,
coverage, NMI and purity of the clusters): of the corpus against its hidden expression
truth (corpus.truth), or, with ``--in-domain-manifest`` at a label budget, of the fold's
unlabelled in-domain faces in the clustering pool against their hidden labels in the
aligned manifest. No training stage reads either."""

import dataclasses
import logging
from pathlib import Path

from _common import declared, parser, setup_logging

import numpy as np

from fer.clustering.guided import IN_DOMAIN_PREFIX, read_pseudo_labels, read_pseudo_labels_with_paths
from fer.clustering.quality import pseudo_label_quality, read_corpus_truth
from fer.data.aligned import read_manifest
from fer.utils.io import read_json, write_json


def in_domain_quality(d: Path, classes: list[str], label_of: dict[str, int]) -> dict:
    """Quality of the pseudo-labels in ``d`` (labels.csv + stats.json) of its in-domain rows
    only, against the aligned manifest's labels (``label_of``: path -> class index)."""
    pl, paths = read_pseudo_labels_with_paths(d, classes)
    rows = np.array([p.startswith(IN_DOMAIN_PREFIX) for p in paths])
    truth = np.array([label_of[p[len(IN_DOMAIN_PREFIX):]] for p, r in zip(paths, rows) if r], dtype=np.int64)
    sub = dataclasses.replace(pl, label=pl.label[rows], confidence=pl.confidence[rows], kept=pl.kept[rows],
                              cluster=pl.cluster[rows], rejected=pl.rejected_mask[rows])
    return {"n_in_domain": int(rows.sum()), **pseudo_label_quality(sub, truth, len(classes))}


if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("meta", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--corpus-manifest", help="the aligned corpus's manifest (corpus mode)")
    ap.add_argument("--in-domain-manifest", help="the aligned dataset's manifest (label-budget mode)")
    ap.add_argument("--pseudo", nargs="+", required=True, help="round-0 pseudo-label folder per fold, in fold order")
    ap.add_argument("--rounds", nargs="+", required=True, help="fine-tuning rounds folder per fold, in fold order")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    classes = read_json(args.meta)["classes"]
    if args.in_domain_manifest:
        index = {c: i for i, c in enumerate(classes)}
        label_of = {r["path"]: index[r["label"]] for r in read_manifest(args.in_domain_manifest)}

        def score(d: Path) -> dict:
            return in_domain_quality(d, classes, label_of)
    else:
        paths = [r["path"] for r in read_manifest(args.corpus_manifest)]
        truth = read_corpus_truth(Path(p.get("corpus.truth")), paths, classes)

        def score(d: Path) -> dict:
            return pseudo_label_quality(read_pseudo_labels(d, classes), truth, len(classes))
    folds = []
    for k, (round0, rounds_dir) in enumerate(zip(args.pseudo, args.rounds, strict=True)):
        dirs = sorted((d for d in Path(rounds_dir).glob("round-*") if d.is_dir()), key=lambda d: int(d.name[6:]))
        if not dirs:  # no re-clustering round was written: round 0 only
            dirs = [Path(round0)]
        rows = []
        for r, d in enumerate(dirs):
            q = score(d)
            rows.append({"round": r, **q})
            logging.info("fold %d round %d: %s", k, r, {key: v for key, v in q.items() if not isinstance(v, list)})
        folds.append(rows)
    write_json(args.out, {"classes": classes, "truth": "in-domain labels (aligned manifest)" if args.in_domain_manifest
                          else p.get("corpus.truth"), "folds": folds})
