"""Generate the fold's class-balanced synthetic set and measure its quality."""

import logging
from pathlib import Path

from _common import declared, setup_logging
from _fold import fold_context, fold_parser

from fer.evaluation.generators import reexpression_probe
from fer.evaluation.synthetic_quality import quality_report
from fer.methods.fesgan import load_fesgan
from fer.methods.identity import load_identity_net
from fer.methods.synthesis import n_neutral_sources, synthesize_set, write_synthetic
from fer.training.inference import predict
from fer.training.protocol import model_from_weights
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = fold_parser(__doc__, "generator", "classifier", "identity", "out-dir", "metrics")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    fold, data = fold_context(args, p)
    train = fold.idx["train"]  # synthesis sees training subjects only
    x, y, subjects = fold.images[train], fold.labels[train], data.subjects[train]
    synth, gan_meta = load_fesgan(args.generator, fold.device)
    cfg = p.section("synthesis")
    synthetic = synthesize_set(
        synth, x, y, subjects, fold.classes,
        per_class=cfg.per_class, prior_fraction=cfg.prior_fraction, seed=fold.seed, device=fold.device,
        reexpress_from=cfg.reexpress_from,
    )
    write_synthetic(Path(args.out_dir), synthetic, fold.classes, {"fold": args.fold, "generator": args.generator})
    classifier, _ = model_from_weights(args.classifier, fold.device)  # trained on this fold's real training part only
    identity = load_identity_net(args.identity, fold.device)

    def identity_embed(images_uint8):  # L2-normalised identity features, batched like any recogniser
        return predict(identity, images_uint8, fold.device, 256)

    xv, yv = fold.part("val")  # the classifier's accuracy on real unseen faces: the reference level
    quality = quality_report(classifier, identity_embed, x, y, subjects, synthetic, fold.device,
                             val_images=xv, val_labels=yv)
    # the same probe as FERSNet's: the fold's validation faces (unseen subjects) re-expressed
    probe = reexpression_probe(synth.reexpress, classifier, identity_embed, xv, yv, data.subjects[fold.idx["val"]],
                               xv, yv, fold.num_classes, fold.device)
    quality.update({f"synth/val_reexp_{k}": v for k, v in probe.items()})
    quality["synth/n_neutral_sources"] = n_neutral_sources(synthetic, fold.classes)  # synthesis.reexpress_from
    write_json(args.metrics, quality)
    logging.info("fold %s synthetic set: %s", args.fold, quality)
