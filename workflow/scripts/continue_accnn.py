"""Row accnn_continued, the corpus row's control with finetune.start: accnn: the fold's
trained AC-CNN trained the corpus row's extra rounds and epochs on the labelled images only
(+ the fold's synthetic set when finetune.synthetic_weight > 0, as the corpus row)."""

from pathlib import Path

from _common import declared, require_accnn_start, setup_logging
from _fold import fold_context, fold_outputs, fold_parser, log_test_metrics

from fer.data.aligned import load_aligned
from fer.methods.corpus import run_continue_fold, trained_accnn

if __name__ == "__main__":
    ap = fold_parser(__doc__, "accnn-model", "model", "metrics", "curve", "resume-dir", "train-log")
    ap.add_argument("--synthetic-dir", help="the fold's synthetic set (when finetune.synthetic_weight > 0)")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    ft = p.section("finetune")
    require_accnn_start(args, ft.start, p.section("accnn").init)
    fold, data = fold_context(args, p)
    synthetic = None
    if ft.synthetic_weight > 0:
        if not args.synthetic_dir:
            raise SystemExit("finetune.synthetic_weight > 0 needs --synthetic-dir")
        d = Path(args.synthetic_dir)
        syn = load_aligned(d / "images.npy", d / "manifest.csv", d / "meta.json")
        if syn.classes != fold.classes:
            raise SystemExit(f"synthetic classes {syn.classes} differ from the dataset's {fold.classes}")
        synthetic = (syn.images, syn.labels)
    metrics = run_continue_fold(
        fold, p.section("accnn"), ft, fold_outputs(args, resume=False),
        start_state=trained_accnn(Path(args.accnn_model), fold.classes), synthetic=synthetic,
        resume_dir=Path(args.resume_dir),
    )
    log_test_metrics("accnn_continued", args.fold, metrics)
