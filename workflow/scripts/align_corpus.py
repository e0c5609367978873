"""Align the unlabelled face-recognition corpus (same alignment settings as the labelled set)."""

import logging

from _common import declared, parser, setup_logging

from fer.align.stage import run_corpus_alignment_stage

if __name__ == "__main__":
    ap = parser(__doc__)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    summary = run_corpus_alignment_stage(p.get("corpus"), p.get("align"), args.out_dir, args.metrics)
    logging.info("corpus alignment: %s", summary)
