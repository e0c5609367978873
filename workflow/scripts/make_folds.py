"""Write the folds (folds.protocol: subject-independent k-fold, or the dataset's own split),
each with a validation split inside its training part."""

import logging

from _common import declared, parser, reported_errors, setup_logging

from fer.data.folds import FoldError, write_folds

if __name__ == "__main__":
    ap = parser(__doc__)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    setup_logging()
    with reported_errors(FoldError):
        p = declared(args)
        f = p.section("folds")
        summary = write_folds(
            args.manifest, args.meta, args.out, f.n_folds, f.val_fraction, p.get("data_seed"), protocol=f.protocol
        )
    logging.info("folds: %s", summary)
