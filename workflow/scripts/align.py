"""Read the dataset, align every face, write images.npy + manifest.csv + qa.csv + meta.json."""

import logging

from _common import declared, parser, setup_logging

from fer.align.stage import run_alignment_stage

if __name__ == "__main__":
    ap = parser(__doc__)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    summary = run_alignment_stage(p.get("data"), p.get("align"), args.out_dir, args.metrics)
    logging.info("alignment: %s", summary)
