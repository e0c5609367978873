"""Does the fold's FERSNet synthesis branch render the expression it is asked for? Its
gated model re-expresses the fold's validation faces into every other expression; the
fold's baseline (real training images only) judges them (fer.evaluation.generators)."""

import logging

from _common import declared, setup_logging
from _fold import fold_context, fold_parser

from fer.evaluation.generators import reexpression_probe
from fer.methods.fersnet import load_fersnet
from fer.methods.identity import load_identity_net
from fer.training.inference import predict
from fer.training.protocol import model_from_weights
from fer.utils.io import write_json

if __name__ == "__main__":
    ap = fold_parser(__doc__, "fersnet", "classifier", "identity", "metrics")
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    fold, data = fold_context(args, p)
    net, _ = load_fersnet(args.fersnet, fold.device)
    classifier, _ = model_from_weights(args.classifier, fold.device)  # trained on this fold's real training part only
    identity = load_identity_net(args.identity, fold.device)
    xv, yv = fold.part("val")
    probe = reexpression_probe(
        lambda x, e, source: net.synthesise(x, e, source), classifier, lambda x: predict(identity, x, fold.device, 256), xv, yv,
        data.subjects[fold.idx["val"]], xv, yv, fold.num_classes, fold.device,
    )
    write_json(args.metrics, {f"fersnet_synth/{k}": v for k, v in probe.items()})
    logging.info("fold %s FERSNet synthesis: %s", args.fold, probe)
