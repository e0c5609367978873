"""Generate the fold's class-balanced synthetic set and measure its quality."""

import logging
from pathlib import Path

from _common import declared, fold_context, parser, setup_logging

from fer.evaluation.synthetic_quality import quality_report
from fer.methods.baseline import model_from_weights
from fer.methods.fesgan import load_fesgan
from fer.methods.identity import load_identity_net
from fer.methods.synthesis import synthesize_set, write_synthetic
from fer.training.loop import predict
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "folds", "generator", "classifier", "identity", "out-dir", "metrics"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--fold", type=int, required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    device, seed, data, split = fold_context(args, p)
    train = split["train"]  # synthesis sees training subjects only
    generator, encoder, gan_meta = load_fesgan(args.generator, device)
    cfg = p.get("synthesis")
    synthetic = synthesize_set(
        generator, encoder, data.images[train], data.labels[train], data.subjects[train], data.classes,
        per_class=cfg["per_class"], prior_fraction=cfg["prior_fraction"], seed=seed, device=device,
    )
    write_synthetic(Path(args.out_dir), synthetic, data.classes, {"fold": args.fold, "generator": args.generator})
    classifier, _ = model_from_weights(args.classifier, device)  # trained on this fold's real training part only
    identity = load_identity_net(args.identity, device)

    def identity_embed(images_uint8):  # L2-normalised identity features, batched like any recogniser
        return predict(identity, images_uint8, device, 256)

    quality = quality_report(classifier, identity_embed, data.images[train], data.labels[train],
                             data.subjects[train], synthetic, device)
    write_json(args.metrics, quality)
    logging.info("fold %d synthetic set: %s", args.fold, quality)
