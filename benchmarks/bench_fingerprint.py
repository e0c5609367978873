"""Benchmark: the dataset's content fingerprint (fer.data.fingerprint) without and with its
hash cache, and the other work Snakemake does on the dataset each time it reads the
Snakefile (reading and checking the csv list).

Issue 9 asks that a change inside the dataset re-run alignment under both tools, through a
content fingerprint of every file, "cached so that an unchanged 400k-image set is not
re-hashed on every run". This script

1. writes a seeded synthetic dataset in the csv layout under ``--workdir`` (``--n`` image
   files of ``--size`` random bytes in class folders, and labels.csv; reused when it
   exists with the same parameters), then waits out the racy window
   (``fer.data.fingerprint.RACY_NS``: files changed that recently are never cached);
2. times, ``--repeats`` times each (median reported):
   * ``cold``: the fingerprint with no cache (every file hashed; what a first run or a
     ``dvc exp run --temp`` pays);
   * ``fill``: the first run with an empty cache file (hashes every file and stores them);
   * ``cached``: the fingerprint with a filled cache (what every later run pays: the walk,
     one ``stat`` per file, one cache lookup per file);
   * ``csv``: ``read_csv_dataset`` on the same set (the list check that also runs before
     any job);
3. checks that all fingerprints agree, prints a table and the cold/cached ratio, and
   writes ``results.json`` in the work directory.

File contents are in the operating system's page cache after the first pass (the set is
small): ``cold`` measures hashing, not disk reads; a first run on a real disk is slower,
which only widens the gap the cache closes.

Usage: ``python benchmarks/bench_fingerprint.py --n 20000 --size 4096 --repeats 3``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from fer.data import fingerprint as fingerprint_module
from fer.data.fingerprint import compute_fingerprint
from fer.data.manifest import read_csv_dataset

CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def make_tree(root: Path, n: int, size: int, seed: int) -> None:
    """``n`` files of ``size`` seeded random bytes under ``root/images/<class>/``, and
    ``root/labels.csv`` listing them (subject = one of n // 20 ids)."""
    stamp = root.parent / "dataset.params.json"
    params = {"n": n, "size": size, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    rows = ["image,subject,expression"]
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        rel = f"images/{cls}/img_{i:07d}.png"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        rows.append(f"{rel},S{i % max(1, n // 20):05d},{cls}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    stamp.write_text(json.dumps(params))


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="image files (default 20000)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per file (default 4096)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="build/bench_fingerprint")
    args = ap.parse_args()

    work = Path(args.workdir)
    root = work / "dataset"
    t = time.perf_counter()
    make_tree(root, args.n, args.size, args.seed)
    print(f"dataset: {args.n} files x {args.size} B under {root} ({time.perf_counter() - t:.1f} s to prepare)")
    time.sleep(fingerprint_module.RACY_NS / 1e9 + 0.1)  # files changed this recently are not cached

    cache = work / "hashes.sqlite"
    results = {}
    results["cold"] = timed(lambda: compute_fingerprint(root, None), args.repeats)

    def fill():
        cache.unlink(missing_ok=True)
        return compute_fingerprint(root, cache)

    results["fill"] = timed(fill, args.repeats)
    results["cached"] = timed(lambda: compute_fingerprint(root, cache), args.repeats)
    results["csv"] = timed(lambda: read_csv_dataset(root), args.repeats)

    fps = {name: r[2][0] for name, r in results.items() if name != "csv"}
    assert len({fp.sha256 for fp in fps.values()}) == 1, fps
    cached_stats = results["cached"][2][1]
    assert cached_stats.hashed == 0 and cached_stats.cached == args.n + 1, cached_stats

    print(f"\nn={args.n} size={args.size} repeats={args.repeats} (files {fps['cold'].files}, {fps['cold'].bytes} bytes)")
    print(f"{'what':<8} {'median s':>9}   runs")
    for name, (median, times, _) in results.items():
        print(f"{name:<8} {median:9.3f}   {', '.join(f'{x:.3f}' for x in times)}")
    ratio = results["cold"][0] / results["cached"][0]
    print(f"ratio cold/cached: {ratio:.1f}x; per file cached: {1e6 * results['cached'][0] / (args.n + 1):.1f} us; "
          f"cache file {cache.stat().st_size / 2**20:.1f} MiB")
    summary = {
        "n": args.n, "size": args.size, "repeats": args.repeats,
        **{f"{name}_s": times for name, (_, times, _) in results.items()},
        "ratio_cold_cached": ratio,
        "cache_bytes": cache.stat().st_size,
    }
    (work / "results.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
