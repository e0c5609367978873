"""Benchmark: fine-tune the TRAINED AC-CNN on the corpus for extra epochs, against the same
extra epochs without the corpus (equal budget), on workspaces where the pipeline ran.

Issue 11 asks that, on a corpus whose faces mostly belong to no labelled class, the
fine-tuned row not fall below the same network without the corpus on any fold by more
than the fold-to-fold noise. The pipeline's corpus row trains the AC-CNN within the
baseline's budget (``(finetune.rounds + 1) x finetune.epochs = baseline.epochs``), so at
equal budget it starts weaker than the AC-CNN it is compared with (README, "Scarce
labels"). This script measured the other design before it was built into the DAG (it is
now ``finetune.start: accnn`` with the control row ``accnn_continued``, which use the
same seeds and give the same numbers; the script stays for workspaces that ran the
corpus row with ``start: scratch``): start
from the fold's trained AC-CNN (``models/accnn/fold-K.pt``, the "without corpus" row) and
train it ``--epochs`` more epochs (default: each run's ``finetune.epochs``)

* ``corpus``: on real + the fold's kept round-0 pseudo-labelled corpus faces
  (``results/pseudo/fold-K``, the pipeline's ``cluster_corpus`` output), exactly one round
  of the corpus row (``fer.methods.corpus.train_round``: batches, loss, optimiser, schedule
  of the ``accnn`` and ``finetune`` sections);
* ``control``: the same epochs on the real training images only (the matching control:
  the same network trained on for the same budget without the corpus);

both with the start weights competing in the validation selection as epoch 0
(``finetune.keep_start``'s rule: a continuation that never beats the trained AC-CNN on
the fold's VAL split returns it unchanged), the same seed, selection on the VAL split
and one test of the selected weights (``test_selected``). The two rows have equal budgets
(``accnn.epochs + --epochs`` each); the AC-CNN row itself is printed for reference.

Output: one line per run and fold (AC-CNN, control, corpus test accuracy %, the selected
epochs: 0 = the start kept), then corpus minus control: over all run-fold pairs; per data
seed and fold (the mean over that data seed's runs and reps, i.e. its training and
continuation seeds, with its standard error), with the paired tests over those folds and the folds below by more than
2 standard errors; and the one-run differences below -1.41 x the noise of one run (the
pooled within-fold sd of the control row over training seeds: the difference of two
independent runs has sd 1.41 x that). Every (run, fold) result is written to
``--out/<run>-fold-K.json`` as it completes, and reused when present.

The corpus continuation uses the run's ``finetune.pseudo_weight``, times the pseudo-labels'
reliability on the fold's validation faces when ``finetune.validation_weighting`` (as the
pipeline's corpus row: ``round_pseudo_weight``; a reliability of 0 makes it the control);
``--also-fixed`` adds ``corpus_fixed``, the same continuation at the unscaled weight, and
prints its statistics too. ``--folds`` takes split keys (``K``; ``K-bJ`` at a label
budget). ``--reps N`` trains every fold N times with different continuation seeds (rep 0 =
the pipeline's seed, so rep 0 reproduces the pipeline's rows): the per-fold mean over reps
and its standard error remove the noise of one continuation, and the pooled within-fold sd
of the control over reps is that noise.

Usage: ``python benchmarks/finetune_extra.py --runs /work/s0 /work/s0_r1000 --jobs 2 --out
benchmarks/results/finetune_extra`` (about 100 s per fold on one thread of a shared 2-core
machine at 20 epochs); on one workspace with a budget, continuation seeds and both weights:
``--runs . --folds 0,1,2,3,0-b1,1-b1,2-b1,3-b1 --reps 4 --also-fixed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def run_fold(ws: str, fold_key: str, epochs: int | None, out_file: str, rep: int = 0,
             also_fixed: bool = False) -> dict[str, Any]:
    """Both continuations of one fold (a split key: ``K``, or ``K-bJ`` at a label budget) of
    workspace ``ws`` (module docstring); ``rep`` > 0: another continuation seed;
    ``also_fixed``: a third continuation, ``corpus_fixed``, at the unscaled pseudo_weight."""
    import torch

    from fer.clustering.guided import read_pseudo_labels
    from fer.data.aligned import load_aligned
    from fer.data.budgets import load_split, parse_split_key
    from fer.data.folds import split_indices
    from fer.methods.corpus import clustering_pool, kept_pseudo, round_pseudo_weight, train_round
    from fer.params import load_params, section
    from fer.training.checkpoint import load_weights
    from fer.training.optim import EvalSetup
    from fer.training.protocol import prepare_fold, test_selected
    from fer.training.rng import seed_everything
    from fer.utils.seed import derived_seed

    torch.set_num_threads(1)
    root = Path(ws)
    params = load_params(root / "params.yaml", root / "workflow" / "schemas" / "params.schema.yaml")
    cfg, ft, cl = section(params, "accnn"), section(params, "finetune"), section(params, "clustering")
    fold_key = str(fold_key)
    at_budget = parse_split_key(fold_key)[1] is not None
    seed = int(params["seed"]) + parse_split_key(fold_key)[0]  # the pipeline's per-fold seed
    seed_everything(seed)
    data = load_aligned(root / "data/aligned/images.npy", root / "data/aligned/manifest.csv", root / "data/aligned/meta.json")
    splits_file = root / ("data/budgets.json" if at_budget else "data/folds.json")
    split = split_indices(data.subjects, load_split(splits_file, fold_key))
    device = torch.device("cpu")
    fold = prepare_fold(data.images, data.labels, split, data.classes, device=device, seed=seed)
    corpus = load_aligned(root / "data/aligned_corpus/images.npy", root / "data/aligned_corpus/manifest.csv",
                          root / "data/aligned_corpus/meta.json", labelled=False)
    pool, pool_paths = clustering_pool(fold, data.paths, corpus.images, list(corpus.paths), cl.in_domain)
    pl = read_pseudo_labels(root / f"results/pseudo/fold-{fold_key}", fold.classes, corpus_paths=pool_paths)
    pseudo = kept_pseudo(pl, pool)
    # the corpus row's weight: pseudo_weight, times the validation reliability when
    # finetune.validation_weighting (0: the corpus continuation IS the control)
    weight, reliability = round_pseudo_weight(ft, pl, f"{root}/results/pseudo/fold-{fold_key}")
    fixed = float(ft.pseudo_weight)
    round_seed = derived_seed(seed, 0xAC, 0) if rep == 0 else derived_seed(seed, 0xAC, 0, rep)
    start, _ = load_weights(root / f"models/accnn/fold-{fold_key}.pt")
    accnn = json.loads((root / f"metrics/accnn/fold-{fold_key}.json").read_text())
    cfg_ft = dataclasses.replace(cfg, epochs=int(epochs if epochs is not None else ft.epochs))
    train, val = fold.part("train"), fold.part("val")
    out: dict[str, Any] = {"run": ws, "fold": fold_key, "data_seed": int(params.get("data_seed", 0)),
                           "seed": int(params["seed"]), "epochs": cfg_ft.epochs, "accnn_epochs": cfg.epochs,
                           "n_pseudo": int(len(pseudo[1])), "accnn": float(accnn["test/acc"]), "rep": rep,
                           "pseudo_weight": weight, "reliability": reliability}
    variants = [("control", None, fixed), ("corpus", pseudo if weight > 0 else None, weight)]
    if also_fixed:
        variants.append(("corpus_fixed", pseudo, fixed))
    for name, ps, w in variants:
        model = fold.build_recognizer(cfg_ft)
        model.load_state_dict(start)
        ft_w = dataclasses.replace(ft, pseudo_weight=w)
        result = train_round(model, train, val, cfg_ft, ft_w, num_classes=fold.num_classes, pseudo=ps, synthetic=None,
                             device=device, seed=round_seed, fp=f"finetune_extra-{name}",
                             resume_path=None, log_path=None, on_epoch_end=None, start_candidate=True)
        m = test_selected(model, result, fold, EvalSetup.for_params(cfg_ft, device))
        out[name] = float(m["test/acc"])
        out[f"{name}_best_epoch"] = int(result.best_epoch)
        out[f"{name}_val_acc"] = float(m["val/acc"])
    Path(out_file).write_text(json.dumps(out, indent=1))
    return out


def summarise(rows: list[dict[str, Any]]) -> None:
    """Print the per-fold lines and the corpus-minus-control statistics (module docstring)."""
    from fer.metrics.stats import paired_test

    for r in rows:  # results written before split keys and reps: int folds, one rep
        r.setdefault("rep", 0)
        r["fold"] = str(r["fold"])
    rows = sorted(rows, key=lambda r: (r["data_seed"], r["run"], r["fold"], r["rep"]))
    print("run | fold | rep | AC-CNN | control (selected epoch) | corpus (selected epoch) | corpus - control | "
          "kept pseudo | pseudo weight")
    for r in rows:
        print(f"{Path(r['run']).name} | {r['fold']} | {r['rep']} | {100 * r['accnn']:.1f} | {100 * r['control']:.1f} "
              f"({r['control_best_epoch']}) | {100 * r['corpus']:.1f} ({r['corpus_best_epoch']}) | "
              f"{100 * (r['corpus'] - r['control']):+.1f} | {r['n_pseudo']} | {r.get('pseudo_weight', 'n/a')}")
    d = np.array([r["corpus"] - r["control"] for r in rows]) * 100

    def sd(x: Any) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(x.std(ddof=1)) if x.size > 1 else float("nan")

    print(f"\nall {d.size} run-fold pairs: corpus - control {d.mean():+.2f} (sd {sd(d):.2f}); "
          f"lower on {(d < 0).sum()}, equal on {(d == 0).sum()}, higher on {(d > 0).sum()}; "
          f"control - AC-CNN {100 * np.mean([r['control'] - r['accnn'] for r in rows]):+.2f}, "
          f"corpus - AC-CNN {100 * np.mean([r['corpus'] - r['accnn'] for r in rows]):+.2f}; start kept: control "
          f"{sum(r['control_best_epoch'] == 0 for r in rows)}, corpus {sum(r['corpus_best_epoch'] == 0 for r in rows)}")
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["data_seed"], r["fold"])].append(r)
    print("\ndata seed | fold | runs | control mean | corpus mean | corpus - control (se)")
    c_means, k_means, below = [], [], []
    var_sum, dof = 0.0, 0
    for (ds, k), g in sorted(groups.items()):
        dd = np.array([r["corpus"] - r["control"] for r in g]) * 100
        c = np.array([r["control"] for r in g]) * 100
        se = sd(dd) / np.sqrt(dd.size)
        if c.size > 1:
            var_sum += float(((c - c.mean()) ** 2).sum())
            dof += c.size - 1
        c_means.append(c.mean())
        k_means.append(c.mean() + dd.mean())
        if dd.size > 1 and dd.mean() < -2 * se:
            below.append((ds, k))
        print(f"{ds} | {k} | {dd.size} | {c.mean():.1f} | {c.mean() + dd.mean():.1f} | {dd.mean():+.1f} ({se:.1f})")
    pt = paired_test(k_means, c_means)
    print(f"\n{len(c_means)} folds (mean over each data seed's runs): corpus - control {pt['mean_diff']:+.2f}, "
          f"sd {sd(np.array(k_means) - np.array(c_means)):.2f}, paired t p {pt['t_p']}, Wilcoxon p "
          f"{pt['wilcoxon_p']}, lower on {pt['losses']}, higher on {pt['wins']}; folds below by more than 2 se: "
          f"{len(below)} {below}")
    if dof:
        noise = float(np.sqrt(var_sum / dof))
        n_bad = int((d < -1.41 * noise).sum())
        print(f"noise of one run (pooled within-fold sd of the control over training seeds): {noise:.2f}; "
              f"one-run differences below -1.41 x noise ({-1.41 * noise:.1f}): {n_bad} of {d.size}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="workspaces where the pipeline ran (accnn, cluster_corpus)")
    ap.add_argument("--folds", default="", help="comma-separated split keys: K, or K-bJ at a label budget "
                    "(default: every fold of data/folds.json, all labels)")
    ap.add_argument("--epochs", type=int, help="extra epochs (default: each run's finetune.epochs)")
    ap.add_argument("--reps", type=int, default=1, help="continuation seeds per fold: rep 0 is the pipeline's "
                    "(the rows' numbers), rep i > 0 derived_seed(seed, 0xAC, 0, i); their spread is the noise of "
                    "one continuation on a fold")
    ap.add_argument("--also-fixed", action="store_true", help="also continue on the corpus at the unscaled "
                    "finetune.pseudo_weight (row corpus_fixed: finetune.validation_weighting off)")
    ap.add_argument("--jobs", type=int, default=1, help="folds trained at once (one thread each)")
    ap.add_argument("--out", default="benchmarks/results/finetune_extra")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for ws in args.runs:
        n_folds = int(json.loads((Path(ws) / "data/folds.json").read_text())["n_folds"])
        folds = args.folds.split(",") if args.folds else [str(k) for k in range(n_folds)]
        for k in folds:
            for r in range(args.reps):
                name = f"{Path(ws).name}-fold-{k}{'' if args.epochs is None else f'-e{args.epochs}'}"
                tasks.append((str(Path(ws).resolve()), k, args.epochs,
                              str(out / f"{name}{'' if r == 0 else f'-r{r}'}.json"), r, args.also_fixed))
    rows = [json.loads(Path(t[3]).read_text()) for t in tasks if Path(t[3]).is_file()]
    todo = [t for t in tasks if not Path(t[3]).is_file()]
    print(f"{len(tasks)} run-folds, {len(rows)} reused from {out}, {len(todo)} to train", flush=True)
    if todo:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for r in pool.starmap(run_fold, todo):
                rows.append(r)
    summarise(rows)
    if any("corpus_fixed" in r for r in rows):
        print("\n=== corpus_fixed (the unscaled pseudo_weight: finetune.validation_weighting off) against the control")
        summarise([{**r, "corpus": r["corpus_fixed"], "corpus_best_epoch": r["corpus_fixed_best_epoch"],
                    "pseudo_weight": "fixed"} for r in rows if "corpus_fixed" in r])
    return 0


if __name__ == "__main__":
    sys.exit(main())
