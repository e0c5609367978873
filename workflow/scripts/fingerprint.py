"""Check one of the pipeline's image inputs (the labelled dataset or the corpus) and write
its content fingerprint, rewriting the file only when the content changed (see
workflow/scripts/_dataset.py: alignment depends on this file)."""

import logging

from _common import declared, parser, reported_errors, setup_logging
from _dataset import INPUTS, checked_fingerprint

from fer.data.fingerprint import save_fingerprint
from fer.data.folds import FoldError
from fer.data.manifest import DatasetError

if __name__ == "__main__":
    ap = parser(__doc__)
    ap.add_argument("--input", choices=INPUTS, required=True)
    ap.add_argument("--out", required=True, help="the fingerprint file")
    args = ap.parse_args()
    setup_logging()
    with reported_errors(DatasetError, FoldError):
        p = declared(args)
        fp, stats, summary = checked_fingerprint(args.input, p)
        logging.info("checked %s", summary)
        changed = save_fingerprint(args.out, fp)
    logging.info(
        "%s: %d files, %d bytes, sha256 %s (%d hashed, %d from the cache, %.2f s): %s",
        args.input, fp.files, fp.bytes, fp.sha256[:16], stats.hashed, stats.cached, stats.seconds,
        f"{args.out} rewritten" if changed else f"{args.out} unchanged",
    )
