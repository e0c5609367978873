"""Read the dataset (or, with --corpus, the unlabelled face-recognition corpus), align every
face, write images.npy + manifest.csv + qa.csv + meta.json.

The QA table and the full list of failures are written to --evidence-dir (the job's log
folder) first; a failed check stops the stage there, with no declared output written."""

import logging

from _common import declared, parser, reported_errors, setup_logging

from fer.align.pipeline import AlignmentFailedError
from fer.align.stage import run_alignment_stage, run_corpus_alignment_stage
from fer.data.manifest import DatasetError

if __name__ == "__main__":
    ap = parser(__doc__)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--evidence-dir", required=True, help="where the QA table and the list of failures go")
    ap.add_argument("--corpus", action="store_true", help="align the corpus (params section corpus)")
    args = ap.parse_args()
    setup_logging()
    with reported_errors(DatasetError, AlignmentFailedError):
        p = declared(args)
        if args.corpus:
            summary = run_corpus_alignment_stage(
                p.section("corpus"), p.section("align"), args.out_dir, args.metrics, args.evidence_dir
            )
        else:
            summary = run_alignment_stage(p.section("data"), p.section("align"), args.out_dir, args.metrics,
                                          args.evidence_dir)
    logging.info("alignment: %s", summary)
