"""Generate the deterministic demo FER data set (no download).

Two ways to give the settings:

* pipeline: ``make_demo.py --keys data_seed,demo --out data/demo`` reads the declared ``data_seed``
  and ``demo`` keys of ``--params`` (params.yaml, validated against the schema);
* by hand: ``make_demo.py --out data/demo --config-json '{"n_subjects": 4}' --seed 0``
  where the JSON object holds ``demo`` section keys (fer.params.DemoParams); unknown keys are an
  error.

``--seed`` overrides the params file's data_seed in either mode.
"""

from __future__ import annotations

import json
import logging

from _common import declared, parser, setup_logging

from fer.data.demo import generate_demo
from fer.params import DemoParams, build

log = logging.getLogger("make_demo")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the data set, log the summary; return the exit status."""
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory (a previous demo there is replaced)")
    ap.add_argument(
        "--config-json", default=None, help="JSON object of demo section keys (instead of --keys)"
    )
    ap.add_argument(
        "--seed", type=int, default=None, help="non-negative integer seed (default: params data_seed, or 0)"
    )
    args = ap.parse_args(argv)
    setup_logging()

    if args.config_json is not None:
        values = json.loads(args.config_json)
        if not isinstance(values, dict):
            ap.error(f"--config-json must be a JSON object, got {type(values).__name__}")
        cfg: DemoParams = build(DemoParams, values, "demo")
        seed = 0 if args.seed is None else args.seed
    else:
        if not args.keys:
            ap.error("give --config-json, or --keys naming the params keys to read (data_seed,demo)")
        p = declared(args)
        cfg = p.section("demo")
        seed = p.get("data_seed") if args.seed is None else args.seed
    summary = generate_demo(args.out, cfg, seed)
    log.info("summary: %s", json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
