"""Train one ablation row of the FESGAN method on one fold: static synthetic set, joint
training, joint + intra-class loss without RDBP, or the full method (joint + RDBP). The
row's declared keys and fixed choices are fer.params.JOINT_ROWS."""

from _common import declared, require_start, setup_logging
from _fold import fold_context, fold_outputs, fold_parser, log_test_metrics, read_synthetic_dir

from fer.methods.fesgan import load_fesgan
from fer.methods.joint import GeneratorTraining, run_joint_fold
from fer.params import JOINT_ROWS

if __name__ == "__main__":
    ap = fold_parser(__doc__, "model", "metrics", "curve", "resume-dir", "train-log")
    ap.add_argument("--variant", choices=tuple(JOINT_ROWS), required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--generator", help="pre-trained FESGAN checkpoint (joint rows)")
    src.add_argument("--synthetic-dir", help="the fold's fixed synthetic set (static row)")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    row = JOINT_ROWS[args.variant]
    require_start(args, "baseline", p.section("baseline").init)
    fold, _ = fold_context(args, p)  # the baseline's seed for this fold
    rdbp = None if row.rdbp is None else p.section("rdbp", overrides=row.rdbp)
    if row.source == "synthetic_set":
        if not args.synthetic_dir:
            raise SystemExit(f"the {args.variant} row needs --synthetic-dir")
        kw = dict(synth_ratio=p.value("joint.synth_ratio"),
                  synthetic=read_synthetic_dir(args.synthetic_dir, fold.classes))
    else:
        if not args.generator:
            raise SystemExit(f"the {args.variant} row needs --generator")
        joint = p.section("joint")
        generator, _ = load_fesgan(args.generator, fold.device)
        kw = dict(synth_ratio=joint.synth_ratio, generator=generator,
                  training=GeneratorTraining(joint.gen_lr, joint.gen_anchor_weight))
    metrics = run_joint_fold(fold, p.section("baseline"), fold_outputs(args), rdbp=rdbp, **kw)
    log_test_metrics(args.variant, args.fold, metrics)
