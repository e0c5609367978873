"""Train the identity network on the corpus identities."""

import logging
from pathlib import Path

from _common import declared, parser, setup_logging

from fer.data.aligned import load_aligned
from fer.methods.identity import train_identity_net
from fer.utils.device import select_device
from fer.utils.seed import seed_everything

if __name__ == "__main__":
    ap = parser(__doc__)
    for name in ("images", "manifest", "meta", "model", "metrics", "curve", "resume-dir"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args()
    setup_logging()
    p = declared(args)
    compute = p.section("compute")
    device = select_device(compute.device, compute.threads)
    seed = p.get("seed")
    seed_everything(seed)
    corpus = load_aligned(args.images, args.manifest, args.meta, labelled=False)
    metrics = train_identity_net(
        corpus.images,
        corpus.subjects,
        p.section("identity"),
        seed=seed,
        device=device,
        out_model=Path(args.model),
        out_metrics=Path(args.metrics),
        out_curve=Path(args.curve),
        resume_path=Path(args.resume_dir) / "identity.pt",
        log_path=Path("logs") / "train_identity.jsonl",
    )
    logging.info("identity network: %s", metrics)
