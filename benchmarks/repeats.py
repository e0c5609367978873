"""Compare two rows over repeated runs on the same folds (README "Experiments", "Repeats").

Each ``--runs`` entry is a workspace (or a DVC experiment checked out into one) where the
pipeline ran with its own training ``seed`` and the same ``data_seed``; the script reads
``metrics/<row>/fold-K.json`` (``test/acc`` by default) of both rows for every fold of
``data/folds.json``, refuses runs whose folds differ, runs with the same seed twice (not a
repeat), any missing fold (nothing is dropped) and a fold whose model was not trained with
the run's seed (``models/<row>/fold-K.pt``'s ``seed`` must be ``seed + K`` and its
``best_epoch`` the metrics': a copied workspace still running, or a stale output), then
prints per fold both rows' mean and sd over the runs, the difference, its standard error
and Welch's p
(``fer.metrics.repeats.compare_repeats``), and the reference row's pooled noise.

    python benchmarks/repeats.py --runs ws_seed1 ws_seed1001 ws_seed2001 --row accnn_corpus --reference accnn
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import yaml

from fer.metrics.repeats import compare_repeats
from fer.training.checkpoint import load_weights
from fer.utils.io import read_json


def _score(run: Path, row: str, fold: int, metric: str, seed: int) -> float:
    path = run / "metrics" / row / f"fold-{fold}.json"
    model = run / "models" / row / f"fold-{fold}.pt"
    for f in (path, model):
        if not f.is_file():
            raise SystemExit(f"{f}: missing (every run needs every fold of both rows)")
    m = read_json(path)
    if metric not in m:
        raise SystemExit(f"{path}: no {metric!r}")
    _, meta = load_weights(model)
    if meta.get("seed") != seed + fold or meta.get("best_epoch") != m.get("best_epoch"):
        raise SystemExit(f"{model}: trained with seed {meta.get('seed')} (best epoch {meta.get('best_epoch')}), "
                         f"but the run's seed gives {seed + fold} and {path} says best epoch {m.get('best_epoch')}: "
                         "a stale or unfinished output; re-run the workspace")
    return float(m[metric])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="workspaces, one per training seed")
    ap.add_argument("--row", required=True, help="e.g. accnn_corpus")
    ap.add_argument("--reference", required=True, help="e.g. accnn")
    ap.add_argument("--metric", default="test/acc")
    ap.add_argument("--json", help="also write the comparison here")
    args = ap.parse_args()
    runs = [Path(r) for r in args.runs]
    folds_digest: list[tuple[Path, str]] = []
    train_seeds: list[int] = []
    first_folds: bytes | None = None
    for r in runs:
        f = r / "data" / "folds.json"
        if not f.is_file():
            raise SystemExit(f"{f}: missing")
        raw = f.read_bytes()
        first_folds = raw if first_folds is None else first_folds
        folds_digest.append((r, hashlib.sha256(raw).hexdigest()))
        train_seeds.append(int(yaml.safe_load((r / "params.yaml").read_text())["seed"]))
    if len({d for _, d in folds_digest}) != 1:
        raise SystemExit("the runs' data/folds.json differ (repeats must share data_seed and the data): "
                         + ", ".join(f"{r}: {d[:12]}" for r, d in folds_digest))
    if len(set(train_seeds)) != len(train_seeds):
        raise SystemExit(f"two runs have the same training seed (not repeats): {train_seeds}")
    assert first_folds is not None  # argparse requires at least one run
    n_folds = int(json.loads(first_folds)["n_folds"])  # the same file in every run
    row = [[_score(r, args.row, k, args.metric, s) for k in range(n_folds)] for r, s in zip(runs, train_seeds)]
    ref = [[_score(r, args.reference, k, args.metric, s) for k in range(n_folds)] for r, s in zip(runs, train_seeds)]
    c = compare_repeats(row, ref)
    pct = 100.0
    print(f"{len(runs)} runs (training seeds {train_seeds}), same folds; {args.metric} in %")
    print(f"{'fold':>4} {args.row + ' mean (sd)':>24} {args.reference + ' mean (sd)':>24} {'diff':>6} {'se':>5} "
          f"{'Welch p':>8}  below by > 2 se")
    for f in c["folds"]:
        p = "n/a" if f["welch_p"] is None else f"{f['welch_p']:.3f}"
        print(f"{f['fold']:>4} {pct * f['row_mean']:>17.1f} ({pct * f['row_sd']:4.1f}) "
              f"{pct * f['reference_mean']:>17.1f} ({pct * f['reference_sd']:4.1f}) {pct * f['diff']:+6.1f} "
              f"{pct * f['se']:5.1f} {p:>8}  {'YES' if f['below'] else ''}")
    print(f"mean difference {pct * c['mean_diff']:+.1f}; {args.reference}'s noise of one run (pooled within-fold sd) "
          f"{pct * c['reference_noise_sd']:.1f}, of a one-run difference {pct * c['single_run_diff_sd']:.1f}")
    s = c["single_runs_below_noise"]
    rr, ri = s["row_vs_reference"], s["reference_vs_itself"]
    print(f"one-run differences below -{pct * c['single_run_diff_sd']:.1f} (every pair of runs, same fold): "
          f"{args.row} vs {args.reference} {rr['below']} of {rr['n']} (worst {pct * rr['worst']:+.1f}); "
          f"{args.reference} vs a retrained {args.reference} {ri['below']} of {ri['n']}"
          f" (worst {pct * ri['worst']:+.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": [str(r) for r in runs], "seeds": train_seeds,
                                               "row": row, "reference": ref, **c}, indent=1))


if __name__ == "__main__":
    main()
