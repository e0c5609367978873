"""Benchmark: how fast each generator learns to render the expression it is asked for.

Issue 12 asks for the learning speed of the pipeline's generators at their demo size:
expression accuracy of their outputs under the fold's real-only recogniser, next to that
recogniser's accuracy on the fold's real validation faces, identity preservation in the
identity network's space and the Fréchet distance, all against iterations and seconds.
This script, for one fold of a workspace where the pipeline has run (at least align,
make_folds, the fold's train_baseline and train_identity: `make run` does all of it),

1. trains FESGAN (params.yaml's ``fesgan`` section, ``--iterations`` to override) on the
   fold's training part only, exactly as rule train_fesgan does, and every ``--every``
   iterations probes its EMA synthesizer (``fer.evaluation.generators``):
   * re-expressed: the fold's validation faces edited into every other expression;
   * prior: ``--prior`` identities drawn from the prior, each rendered in every expression;
2. trains the gated FERSNet (params.yaml's ``fersnet`` section, ``--fersnet-epochs`` to
   override) on the same fold and probes its synthesis branch after every epoch;
3. prints one table per generator: iteration or epoch, training seconds (wall and process
   CPU, probes excluded), expression accuracy of the outputs, its ratio to the recogniser's
   accuracy on real validation faces (1 = as recognisable as real unseen faces; the
   project's target is 0.8), identity cosine to the source face (and between different
   subjects, for scale), Fréchet distance; and writes ``results.json`` to ``--out``.

The recogniser is the fold's baseline (``models/baseline/fold-K.pt``, trained on that
fold's real training images only). FERSNet's training predicts the test split once at
its end, as in the pipeline; the benchmark prints validation figures only (the selected
epoch and the gated row's own validation accuracy, beside its synthesis).

Usage (after ``make run``): ``python benchmarks/bench_generators.py --fold 0 --every 100``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer.data.aligned import load_aligned
from fer.data.budgets import load_split
from fer.data.folds import split_indices
from fer.evaluation.generators import reexpression_probe
from fer.methods.fersnet import run_fersnet_fold
from fer.methods.fesgan import train_fesgan
from fer.methods.identity import load_identity_net
from fer.models.fesgan import one_hot
from fer.params import FersnetParams, FesganParams, build, load_params
from fer.training.batches import to_uint8
from fer.training.inference import predict
from fer.training.protocol import FoldOutputs, model_from_weights, prepare_fold
from fer.training.rng import seed_everything


class Clock:
    """Training time with the probes' time taken out (wall and process CPU seconds)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._w, self._c = time.perf_counter(), time.process_time()

    def pause(self) -> tuple[float, float]:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c
        return self.wall, self.cpu

    def resume(self) -> None:
        self._w, self._c = time.perf_counter(), time.process_time()


def fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=".", help="the project root where the pipeline ran")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--every", type=int, default=100, help="FESGAN probe interval (iterations)")
    ap.add_argument("--iterations", type=int, help="FESGAN iterations (default: params.yaml)")
    ap.add_argument("--d-warmup", type=int, help="FESGAN discriminator warm-up iterations (default: params.yaml)")
    ap.add_argument("--fersnet-epochs", type=int, help="FERSNet epochs (default: params.yaml)")
    ap.add_argument("--w-expr", type=float, help="FERSNet's fersnet.w_expr, the expression term (default: params.yaml)")
    ap.add_argument("--budget-slot", type=int, help="train on label-budget split K-bJ of data/budgets.json (its "
                    "labelled part; FESGAN also sees its unlabelled faces) and judge with models/baseline/fold-K-bJ.pt")
    ap.add_argument("--unlabelled-ratio", type=float, help="FESGAN's fesgan.unlabelled_ratio (default: params.yaml)")
    ap.add_argument("--prior", type=int, default=20, help="prior identities per FESGAN probe")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", choices=("fesgan", "fersnet"), action="append", default=[])
    ap.add_argument("--out", default="benchmarks/results/generators")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ws = Path(args.workspace)
    params = load_params(ws / "params.yaml", ws / "workflow" / "schemas" / "params.schema.yaml")
    seed = int(params["seed"]) + args.fold  # the pipeline's per-fold seed
    data = load_aligned(ws / "data/aligned/images.npy", ws / "data/aligned/manifest.csv", ws / "data/aligned/meta.json")
    key = str(args.fold) if args.budget_slot is None else f"{args.fold}-b{args.budget_slot}"
    split_file = ws / ("data/folds.json" if args.budget_slot is None else "data/budgets.json")
    split = split_indices(data.subjects, load_split(split_file, key))
    tr, va = split["train"], split["val"]
    unl = split.get("unlabelled", np.zeros(0, dtype=np.int64))  # images only are passed on (as the pipeline does)
    recogniser, _ = model_from_weights(ws / f"models/baseline/fold-{key}.pt")
    identity = load_identity_net(ws / "models/identity/identity.pt")
    cpu = torch.device("cpu")
    num_classes = len(data.classes)
    x_val, y_val, s_val = data.images[va], data.labels[va], data.subjects[va]
    results: dict[str, Any] = {"fold": key, "threads": args.threads, "n_train": int(tr.size), "n_val": int(va.size),
                               "n_unlabelled": int(unl.size)}
    print(f"split {key}: {tr.size} training, {va.size} validation, {unl.size} unlabelled images, {num_classes} "
          f"classes, {args.threads} thread(s)")

    def id_embed(x: np.ndarray) -> np.ndarray:
        return predict(identity, x, cpu, 256)

    if "fesgan" not in args.skip:
        section = dict(params["fesgan"])
        if args.iterations is not None:
            section["iterations"] = args.iterations
        if args.d_warmup is not None:
            section["d_warmup"] = args.d_warmup
        if args.unlabelled_ratio is not None:
            section["unlabelled_ratio"] = args.unlabelled_ratio
        cfg = build(FesganParams, section, "fesgan")
        holder: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        z = torch.rand(args.prior, cfg.z_dim, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        clock = Clock()

        import fer.methods.fesgan as fesgan_module

        class Models(fesgan_module._Models):  # keeps a handle on the EMA synthesizer to probe it
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, **kw)
                holder["m"] = self

        def probe(it: int) -> None:
            if it % args.every and it != cfg.iterations:
                return
            wall, cpu_s = clock.pause()
            synth = holder["m"].synth_ema
            with torch.no_grad():
                re = reexpression_probe(synth.reexpress, recogniser, id_embed, x_val, y_val, s_val,
                                        x_val, y_val, num_classes, cpu)
                e = one_hot(torch.arange(num_classes).repeat(len(z)), num_classes)
                faces = to_uint8(synth(z.repeat_interleave(num_classes, 0), e))
            prior_acc = float((predict(recogniser, faces, cpu).argmax(1)
                               == np.tile(np.arange(num_classes), len(z))).mean())
            row = {"iteration": it, "wall_s": wall, "cpu_s": cpu_s, "reexpressed_acc": re["expr_acc"],
                   "reexpressed_ratio": re["expr_acc_ratio"], "prior_acc": prior_acc,
                   "prior_ratio": prior_acc / re["real_val_acc"], "real_val_acc": re["real_val_acc"],
                   "identity_cos": re["identity_cos"], "identity_cos_other": re["identity_cos_other"],
                   "fid": re["fid"]}
            rows.append(row)
            print(f"  FESGAN it {it:5d}  {wall:7.1f} s ({cpu_s:7.1f} CPU s)  re-expressed {fmt(row['reexpressed_acc'])} "
                  f"(ratio {fmt(row['reexpressed_ratio'], '.2f')})  prior {prior_acc:.3f} (ratio {row['prior_ratio']:.2f})  "
                  f"identity cos {fmt(row['identity_cos'])} (other subjects {fmt(row['identity_cos_other'])})  "
                  f"FD {fmt(row['fid'], '.1f')}", flush=True)
            clock.resume()

        print(f"FESGAN ({cfg.iterations} iterations, width {cfg.width}, batch {cfg.batch_size}, reexpress "
              f"{cfg.reexpress}, d_warmup {cfg.d_warmup}); the fold baseline's accuracy on real validation "
              "faces is the ratios' reference")
        original = fesgan_module._Models
        fesgan_module._Models = Models  # type: ignore[misc]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                seed_everything(seed)
                clock.resume()
                train_fesgan(data.images[tr], data.labels[tr], num_classes, cfg, subjects=data.subjects[tr],
                             unlabelled=data.images[unl], identity_net=identity, device=cpu, seed=seed, out_model=Path(tmp) / "m.pt",
                             grid_dir=None, resume_path=None, log_path=None, on_iteration=probe)
        finally:
            fesgan_module._Models = original  # type: ignore[misc]
        results["fesgan"] = {"config": section, "curve": rows}

    if "fersnet" not in args.skip:
        section = dict(params["fersnet"])
        if args.fersnet_epochs is not None:
            section["epochs"] = args.fersnet_epochs
            section["lr_milestones"] = [m for m in section.get("lr_milestones", []) if m < args.fersnet_epochs]
        if args.w_expr is not None:
            section["w_expr"] = args.w_expr
        fc = build(FersnetParams, section, "fersnet")
        rows = []
        clock = Clock()

        def probe_epoch(net: torch.nn.Module, row: dict[str, float]) -> None:
            wall, cpu_s = clock.pause()
            was_training = net.training
            net.eval()
            with torch.no_grad():
                re = reexpression_probe(lambda x, e, source: net.synthesise(x, e, source), recogniser, id_embed, x_val, y_val,
                                        s_val, x_val, y_val, num_classes, cpu)
            net.train(was_training)
            out = {"epoch": int(row["epoch"]), "wall_s": wall, "cpu_s": cpu_s, "acc": re["expr_acc"],
                   "ratio": re["expr_acc_ratio"], "source_acc": re["source_acc"], "real_val_acc": re["real_val_acc"],
                   "identity_cos": re["identity_cos"], "identity_cos_other": re["identity_cos_other"], "fid": re["fid"],
                   "val_acc_recognition": row.get("val/acc")}
            rows.append(out)
            print(f"  FERSNet epoch {out['epoch']:3d}  {wall:7.1f} s ({cpu_s:7.1f} CPU s)  synthesis {fmt(out['acc'])} "
                  f"(ratio {fmt(out['ratio'], '.2f')}, source kept {fmt(out['source_acc'])})  identity cos "
                  f"{fmt(out['identity_cos'])}  FD {fmt(out['fid'], '.1f')}", flush=True)
            clock.resume()

        print(f"FERSNet gated ({fc.epochs} epochs, width {fc.width}, batch {fc.batch_size})")
        seed_everything(seed)
        fold = prepare_fold(data.images, data.labels, split, data.classes, device=cpu, seed=seed, subjects=data.subjects)
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            clock.resume()
            metrics = run_fersnet_fold(fold, fc, FoldOutputs(model=t / "m.pt", metrics=t / "m.json", curve=t / "c.csv",
                                                             resume=None, log=None),
                                       variant="gated", identity=identity, init_weights=None, out_dir=t / "out",
                                       on_epoch_end=probe_epoch)
        picked = {k: metrics.get(k) for k in ("best_epoch", "val/acc", "val/mean_class_acc")}
        print(f"  FERSNet recognition (the gated row's own classifier): selected epoch {picked['best_epoch']}, "
              f"val acc {fmt(picked['val/acc'])}, val mean-class acc {fmt(picked['val/mean_class_acc'])}", flush=True)
        at_selected = rows[int(picked["best_epoch"]) - 1] if picked["best_epoch"] else None
        if at_selected is not None:  # the model the pipeline keeps: what its probe_fersnet job reports
            print(f"  at the selected epoch: synthesis {fmt(at_selected['acc'])} / real val. "
                  f"{fmt(at_selected['real_val_acc'])} = ratio {fmt(at_selected['ratio'], '.2f')}, identity cos "
                  f"{fmt(at_selected['identity_cos'])}, source kept {fmt(at_selected['source_acc'])}", flush=True)
        results["fersnet"] = {"config": section, "curve": rows, "recognition": picked, "at_selected": at_selected}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    for name, key in (("fesgan", "reexpressed_ratio"), ("fesgan", "prior_ratio"), ("fersnet", "ratio")):
        curve = results.get(name, {}).get("curve", [])
        if curve:
            best = max(curve, key=lambda r: -1 if r[key] is None else r[key])
            step = "iteration" if name == "fesgan" else "epoch"
            print(f"{name} {key}: best {fmt(best[key], '.2f')} at {step} {best[step]} ({best['wall_s']:.0f} s); "
                  f"last {fmt(curve[-1][key], '.2f')}")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
