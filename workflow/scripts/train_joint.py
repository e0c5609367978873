"""Train one ablation row of the FESGAN method on one fold: static synthetic set, joint
training, joint + intra-class loss without RDBP, or the full method (joint + RDBP)."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.data.aligned import load_aligned
from fer.methods.fesgan import load_fesgan
from fer.methods.joint import JointConfig, run_joint_fold
from fer.training.loop import TrainConfig

VARIANTS = ("static", "joint", "joint_intra", "full")

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "model", "metrics", "curve", "resume-dir", "train-log"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--fold", type=int, required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--generator", help="pre-trained FESGAN checkpoint (joint rows)")
    src.add_argument("--synthetic-dir", help="the fold's fixed synthetic set (static row)")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)  # the baseline's seed for this fold

    if args.variant == "static":
        if not args.synthetic_dir:
            raise SystemExit("the static row needs --synthetic-dir")
        d = Path(args.synthetic_dir)
        syn = load_aligned(d / "images.npy", d / "manifest.csv", d / "meta.json")
        if syn.classes != data.classes:
            raise SystemExit(f"synthetic classes {syn.classes} differ from the dataset's {data.classes}")
        joint = JointConfig(synth_ratio=p.get("joint.synth_ratio"), update_generator=False, intra_lambda=0.0)
        generator, synthetic = None, (syn.images, syn.labels)
    else:
        if not args.generator:
            raise SystemExit(f"the {args.variant} row needs --generator")
        j = p.get("joint")
        kw = dict(synth_ratio=j["synth_ratio"], gen_lr=j["gen_lr"], gen_anchor_weight=j["gen_anchor_weight"],
                  update_generator=True)
        if args.variant == "joint":
            joint = JointConfig(**kw, intra_lambda=0.0)
        elif args.variant == "joint_intra":  # the ablation: intra-class loss, stop-gradient off
            joint = JointConfig(**kw, intra_lambda=p.get("rdbp.lambda"), stop_gradient=False,
                                anchor=p.get("rdbp.anchor"))
        else:  # full: intra-class loss with RDBP
            r = p.get("rdbp")
            joint = JointConfig(**kw, intra_lambda=r["lambda"], stop_gradient=r["stop_gradient"], anchor=r["anchor"])
        generator, _, _ = load_fesgan(args.generator, device)
        synthetic = None

    metrics = run_joint_fold(
        data.images, data.labels, split, data.classes,
        TrainConfig.from_mapping(p.get("baseline")), joint,
        generator=generator, synthetic=synthetic, seed=seed, device=device,
        out_model=Path(args.model), out_metrics=Path(args.metrics), out_curve=Path(args.curve),
        resume_path=Path(args.resume_dir) / f"fold-{args.fold}.pt", log_path=Path(args.train_log),
    )
    logging.info("fold %d %s: %s", args.fold, args.variant,
                 {k: v for k, v in metrics.items() if k.startswith("test/") and k != "test/confusion"})
