"""A labelled set and a face-recognition corpus whose faces mostly belong to NO labelled
class, built from the demo's generated data, in the documented csv layout.

The README's measurement "A corpus of mostly no labelled class" (section "Scarce labels")
runs the pipeline on this: the labelled set is the demo's expression set without the
``--drop`` classes; the corpus is every demo corpus face of a dropped class plus every
``--other-every``-th of its other faces, and its truth (read only by ``pseudo_quality``)
keeps the dropped class names, which the labelled set does not have. Images are not
copied: ``<out>/expr/images`` and ``<out>/corpus/images`` link to the demo's folders.

    python benchmarks/no_class_corpus.py --demo data/demo --out /tmp/no_class
    # then, in a clone of the project, set in params.yaml (README "Scarce labels"):
    #   data.format: csv, data.root: /tmp/no_class/expr, corpus.root: /tmp/no_class/corpus,
    #   corpus.truth: /tmp/no_class/corpus_truth.csv, methods: [baseline, accnn, accnn_corpus,
    #   accnn_continued], clustering.embedder: baseline, labels.budgets: []
    # and run `make dvc-yaml && snakemake --cores 2 --resources gpu=2`
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import Counter
from pathlib import Path

from fer.data.demo import csv_text  # the demo's own writer of these csv files: same layout, same bytes
from fer.utils.io import write_text


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build(demo: Path, out: Path, drop: list[str], other_every: int) -> dict[str, object]:
    """Write ``out/expr``, ``out/corpus`` and ``out/corpus_truth.csv``; return the counts."""
    if other_every < 1:
        raise SystemExit(f"--other-every must be >= 1, got {other_every}")
    for rel in ("expr/labels.csv", "expr/images", "corpus/labels.csv", "corpus/images", "corpus_truth.csv"):
        if not (demo / rel).exists():
            raise SystemExit(f"{demo / rel} is missing: --demo must be the demo's data/demo after `make run`")
    expr = _rows(demo / "expr" / "labels.csv")
    found = {r["expression"] for r in expr}
    unknown = sorted(set(drop) - found)
    if unknown:
        raise SystemExit(f"--drop {unknown}: not classes of {demo / 'expr/labels.csv'} ({sorted(found)})")
    truth = {r["image"]: r["expression"] for r in _rows(demo / "corpus_truth.csv")}
    corpus = _rows(demo / "corpus" / "labels.csv")
    missing = [r["image"] for r in corpus if r["image"] not in truth]
    if missing:
        raise SystemExit(f"{demo / 'corpus_truth.csv'} has no expression for {missing[:3]} ({len(missing)} images)")
    labelled = [r for r in expr if r["expression"] not in drop]
    no_class = [r for r in corpus if truth[r["image"]] in drop]
    others = [r for r in corpus if truth[r["image"]] not in drop][::other_every]
    chosen = sorted(no_class + others, key=lambda r: r["image"])
    for part in ("expr", "corpus"):
        (out / part).mkdir(parents=True, exist_ok=True)
        link = out / part / "images"
        if link.exists() and not link.is_symlink():
            raise SystemExit(f"{link} exists and is not a link this script made: choose another --out")
        if link.is_symlink():
            link.unlink()
        os.symlink((demo / part / "images").resolve(), link)
    write_text(out / "expr" / "labels.csv",
               csv_text(["image", "subject", "expression"], [[r["image"], r["subject"], r["expression"]] for r in labelled]))
    write_text(out / "corpus" / "labels.csv", csv_text(["image", "subject"], [[r["image"], r["subject"]] for r in chosen]))
    write_text(out / "corpus_truth.csv", csv_text(["image", "expression"], [[r["image"], truth[r["image"]]] for r in chosen]))
    return {
        "labelled": len(labelled),
        "labelled_per_class": dict(sorted(Counter(r["expression"] for r in labelled).items())),
        "corpus": len(chosen),
        "corpus_per_truth": dict(sorted(Counter(truth[r["image"]] for r in chosen).items())),
        "no_labelled_class_fraction": round(len(no_class) / len(chosen), 4) if chosen else 0.0,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("data/demo"), help="the demo's data/demo (after make run)")
    ap.add_argument("--out", type=Path, required=True, help="where to write expr/, corpus/, corpus_truth.csv")
    ap.add_argument("--drop", nargs="+", default=["neutral", "happiness"],
                    help="classes the labelled set lacks (the corpus keeps all of its faces of them)")
    ap.add_argument("--other-every", type=int, default=7,
                    help="keep every N-th corpus face of a labelled class (default 7: ~74 %% of no labelled class)")
    a = ap.parse_args()
    for k, v in build(a.demo, a.out, a.drop, a.other_every).items():
        print(f"{k}: {v}")
