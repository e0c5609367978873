"""Where does a paired L1 term put an expression edit, and how recognisable is it there?

FERSNet's synthesis (and FESGAN's editor) change a face by class offsets that start at
``proto_scale`` x the expression prototypes of the fold's training faces
(``fer.training.prototypes``). FERSNet's L1 term then pulls the edit towards a real image
of the same subject with the target expression. This script measures, for one fold of a
workspace where the pipeline has run (align, make_folds and the fold's train_baseline),
the class-constant edit ``x + c * (P[target] - P[source])`` (clamped to the image range)
for a grid of scales ``c``:

* its mean L1 to the real targets over every same-subject pair of the fold's training
  faces with different expressions (the quantity FERSNet's L1 term averages; which ``c``
  minimises it);
* the fold baseline's expression accuracy on the fold's validation faces edited into every
  other expression, as a ratio to its accuracy on the real validation faces, and how often
  it still reads the source expression (``fer.evaluation.generators.reexpression_probe``,
  the probe of the pipeline's synthesis metrics); with ``--from-neutral``, only the
  validation faces labelled neutral are edited (into every other expression), which
  separates adding an expression from removing the source's.

No training: a few seconds per fold on one thread. Usage, from the workspace:
``python benchmarks/prototype_edit.py --fold 0 [--scales 0 0.5 1 1.5 2 3 4]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fer.data.aligned import load_aligned
from fer.data.budgets import load_split
from fer.data.folds import split_indices
from fer.evaluation.generators import reexpression_probe
from fer.models.offsets import class_shift
from fer.training.batches import normalize
from fer.training.protocol import model_from_weights
from fer.training.prototypes import expression_prototypes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=".", help="the project root where the pipeline ran")
    ap.add_argument("--fold", default="0", help="a key of data/folds.json")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
    ap.add_argument("--from-neutral", action="store_true",
                    help="edit only the validation faces labelled neutral (the real reference stays all of them)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ws = Path(args.workspace)
    data = load_aligned(ws / "data/aligned/images.npy", ws / "data/aligned/manifest.csv", ws / "data/aligned/meta.json")
    split = split_indices(data.subjects, load_split(ws / "data/folds.json", args.fold))
    tr, va = split["train"], split["val"]
    k = len(data.classes)
    protos = expression_prototypes(data.images[tr], data.labels[tr], k, data.subjects[tr])  # K, C, H, W
    recogniser, _ = model_from_weights(ws / f"models/baseline/fold-{args.fold}.pt")
    x = normalize(torch.from_numpy(data.images[tr].transpose(0, 3, 1, 2).astype(np.float32) / 255))  # N, C, H, W
    y, s = data.labels[tr], data.subjects[tr].astype(str)
    same = (s[:, None] == s[None, :]) & (y[:, None] != y[None, :])
    src, tgt = np.nonzero(same)  # every same-subject pair with different expressions
    eye = torch.eye(k)
    edited = va
    if args.from_neutral:
        if "neutral" not in data.classes:
            raise SystemExit(f"--from-neutral: the classes {data.classes} have no 'neutral'")
        edited = va[data.labels[va] == data.classes.index("neutral")]
        print(f"editing the {edited.size} neutral validation faces only")
    print(f"fold {args.fold}: {tr.size} training faces, {src.size} same-subject pairs, {va.size} validation faces")
    print("scale c   L1 to the real targets   ratio (edited / real val. acc.)   source kept")
    rows = []
    for c in args.scales:
        l1 = 0.0
        for lo in range(0, src.size, 2048):  # batched: N pairs x C x H x W floats
            i, j = src[lo:lo + 2048], tgt[lo:lo + 2048]
            edit = class_shift(eye[y[j]], eye[y[i]], protos, torch.float32)
            l1 += float((x[i] + c * edit).clamp(-1, 1).sub(x[j]).abs().mean(dim=(1, 2, 3)).sum())
        l1 /= src.size

        def reexpress(xx: Tensor, target: Tensor, source: Tensor, c: float = c) -> Tensor:
            return (xx + c * class_shift(target, source, protos, xx.dtype)).clamp(-1, 1)

        probe = reexpression_probe(reexpress, recogniser, None, data.images[edited], data.labels[edited],
                                   data.subjects[edited], data.images[va], data.labels[va], k, "cpu")
        rows.append({"scale": c, "l1": l1, "ratio": probe["expr_acc_ratio"], "source_kept": probe["source_acc"],
                     "expr_acc": probe["expr_acc"], "real_val_acc": probe["real_val_acc"]})
        print(f"{c:7.2f}   {l1:22.4f}   {probe['expr_acc_ratio']:31.2f}   {probe['source_acc']:11.2f}")
    best = min(rows, key=lambda r: r["l1"])
    print(f"L1 is lowest at c = {best['scale']:g}, where the ratio is {best['ratio']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"fold": args.fold, "from_neutral": args.from_neutral, "rows": rows},
                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
