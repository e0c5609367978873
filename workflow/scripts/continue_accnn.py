"""Row accnn_continued, the corpus row's control with finetune.start: accnn: the fold's
trained AC-CNN trained the corpus row's extra rounds and epochs on the labelled images only
(+ the fold's synthetic set when finetune.synthetic_weight > 0, as the corpus row)."""

from pathlib import Path

from _common import declared, require_accnn_start, setup_logging
from _fold import add_synthetic_option, fold_context, fold_outputs, fold_parser, load_synthetic, log_test_metrics

from fer.methods.corpus import run_continue_fold, trained_accnn

if __name__ == "__main__":
    ap = fold_parser(__doc__, "accnn-model", "model", "metrics", "curve", "resume-dir", "train-log")
    add_synthetic_option(ap)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    ft = p.section("finetune")
    require_accnn_start(args, ft.start, p.section("accnn").init)
    fold, data = fold_context(args, p)
    synthetic = load_synthetic(args, ft.synthetic_weight, fold.classes)
    metrics = run_continue_fold(
        fold, p.section("accnn"), ft, fold_outputs(args, resume=False),
        start_state=trained_accnn(Path(args.accnn_model), fold.classes), synthetic=synthetic,
        resume_dir=Path(args.resume_dir),
    )
    log_test_metrics("accnn_continued", args.fold, metrics)
