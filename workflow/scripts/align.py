"""Read the dataset (or, with --corpus, the unlabelled face-recognition corpus), align every
face, write images.npy + manifest.csv + qa.csv + meta.json."""

import logging

from _common import declared, parser, setup_logging

from fer.align.stage import run_alignment_stage, run_corpus_alignment_stage

if __name__ == "__main__":
    ap = parser(__doc__)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--corpus", action="store_true", help="align the corpus (params section corpus)")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    if args.corpus:
        summary = run_corpus_alignment_stage(p.section("corpus"), p.section("align"), args.out_dir, args.metrics)
    else:
        summary = run_alignment_stage(p.section("data"), p.section("align"), args.out_dir, args.metrics)
    logging.info("alignment: %s", summary)
