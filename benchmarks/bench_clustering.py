"""Benchmark: FAISS k-means (fer.clustering.faiss_kmeans) vs scikit-learn KMeans at scale.

Issue 4 asks that the expression-guided clustering (M4, Fang et al., Sensors 2023) work for
a corpus of a million 512-d embeddings on one machine. This script

1. streams a seeded Gaussian-mixture embedding set (float32, ``--n`` x ``--dim``, ``--k``
   components) in chunks into a ``.npy`` memmap under ``--workdir`` (never all in RAM; reused
   when it already exists with the same parameters);
2. draws ``--k`` seeded initial centroids (rows of the set) shared by both tools;
3. runs each tool ``--repeats`` times, each run in its own subprocess, which reports its own
   wall time and peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of
   that child; the parent also checks ``RUSAGE_CHILDREN``):
   * ``faiss``: ``faiss_kmeans`` over the memmap (training on a seeded subsample of
     k * 256 points, batched assignment of every point; this is what the pipeline runs);
   * ``sklearn``: ``np.load`` of the full array into RAM (what a user would do), then
     ``KMeans(n_clusters=k, n_init=1, max_iter=niter, init=<same centroids>,
     random_state=seed).fit`` (sklearn's default ``tol`` may stop it before ``niter``
     iterations; ``--sklearn-tol 0`` forces all of them; the table shows the count);
4. computes each tool's final objective the same way: sum of squared L2 distances of ALL
   points to the nearest of its centroids (``assign_batched`` over the memmap);
5. prints a table (median seconds, peak RSS MiB, objective) and the sklearn/faiss ratios,
   and writes ``results.json`` in the work directory.

Usage: ``python benchmarks/bench_clustering.py --n 1000000 --threads 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 65536


def _data_path(workdir: Path, n: int, dim: int, k: int, seed: int) -> Path:
    return workdir / f"embeddings_n{n}_d{dim}_k{k}_s{seed}.npy"


def make_embeddings(path: Path, n: int, dim: int, k: int, seed: int) -> None:
    """Seeded Gaussian mixture (k unit-variance components, centres ~ N(0, 2^2)) written
    chunk by chunk into a float32 .npy memmap (tmp file renamed when complete)."""
    from fer.utils.io import atomic_path

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, size=(k, dim)).astype(np.float32)  # k, D
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            comp = rng.integers(0, k, size=m)
            block = rng.standard_normal(size=(m, dim), dtype=np.float32)
            block += centres[comp]
            out[start : start + m] = block
            out.flush()
        del out


def initial_centroids(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k distinct rows of x drawn by a seeded generator (the same init for both tools)."""
    idx = np.sort(np.random.default_rng(seed + 1).choice(len(x), size=k, replace=False))
    return np.ascontiguousarray(x[idx], dtype=np.float32)


# ----------------------------------------------------------------------------- workers
def _limit_threads(threads: int | None) -> None:
    if threads is None:
        return
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(threads)
    threadpool_limits(threads)


def worker(
    tool: str, data: Path, init: Path, out: Path, k: int, niter: int, seed: int, threads: int | None, tol: float
) -> None:
    """One timed run of one tool in this (child) process; writes centroids + timings."""
    _limit_threads(threads)  # (torch is never imported here: it would inflate the peak RSS)
    c0 = np.load(init)
    t_load = 0.0
    if tool == "faiss":
        from fer.clustering.kmeans import faiss_kmeans

        x = np.load(data, mmap_mode="r")
        t0 = time.perf_counter()
        res = faiss_kmeans(x, k, niter=niter, seed=seed, init_centroids=c0, threads=threads, use_gpu="never")
        seconds = time.perf_counter() - t0
        centroids = res.centroids
        extra = {"n_train": res.n_train, "subsampled": res.subsampled, "n_iter": niter}
    elif tool == "sklearn":
        from sklearn.cluster import KMeans

        t0 = time.perf_counter()
        x = np.load(data)  # the full array in RAM
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        km = KMeans(n_clusters=k, n_init=1, max_iter=niter, init=c0, random_state=seed, tol=tol).fit(x)
        seconds = time.perf_counter() - t0
        centroids = km.cluster_centers_.astype(np.float32)
        extra = {"n_train": int(len(x)), "subsampled": False, "n_iter": int(km.n_iter_)}
    else:
        raise ValueError(f"unknown tool {tool!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB (Linux)
    np.save(out.with_suffix(".centroids.npy"), centroids)
    out.write_text(json.dumps({"tool": tool, "seconds": seconds, "load_seconds": t_load, "peak_rss_mib": peak, **extra}))


def run_tool(tool: str, args: argparse.Namespace, data: Path, init: Path, rep: int) -> dict:
    out = args.workdir / f"run_{tool}_{rep}.json"
    cmd = [sys.executable, __file__, "--_worker", tool, "--_data", str(data), "--_init", str(init),
           "--_out", str(out), "--k", str(args.k), "--niter", str(args.niter), "--seed", str(args.seed), "--sklearn-tol", str(args.sklearn_tol)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    if proc.returncode != 0:
        raise SystemExit(f"{tool} run {rep} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    row = json.loads(out.read_text())
    row["process_wall_seconds"] = wall
    row["children_maxrss_mib"] = after if after > before else None  # max over children so far
    row["centroids"] = str(out.with_suffix(".centroids.npy"))
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=70, help="clusters (7 classes x 10)")
    p.add_argument("--niter", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="OpenMP/BLAS threads of both tools")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("build/bench_clustering"))
    p.add_argument("--sklearn-tol", type=float, default=1e-4, help="KMeans tol (sklearn's default; 0: all niter)")
    p.add_argument("--tools", default="faiss,sklearn", help="comma-separated subset of faiss,sklearn")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_init", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        worker(args._worker, args._data, args._init, args._out, args.k, args.niter, args.seed, args.threads,
               args.sklearn_tol)
        return

    from fer.clustering.kmeans import assign_batched

    _limit_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = _data_path(args.workdir, args.n, args.dim, args.k, args.seed)
    if not data.exists():
        t0 = time.perf_counter()
        make_embeddings(data, args.n, args.dim, args.k, args.seed)
        print(f"generated {data} ({data.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s", flush=True)
    x = np.load(data, mmap_mode="r")
    init = args.workdir / f"init_k{args.k}_s{args.seed}.npy"
    np.save(init, initial_centroids(x, args.k, args.seed))

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    results: dict[str, dict] = {}
    for tool in tools:
        runs = []
        for rep in range(args.repeats):
            row = run_tool(tool, args, data, init, rep)
            print(f"{tool} run {rep}: {row['seconds']:.2f} s, peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
            runs.append(row)
        cents = [np.load(r["centroids"]) for r in runs]
        labels_dists = assign_batched(x, cents[0], use_gpu="never")
        results[tool] = {
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "seconds": [r["seconds"] for r in runs],
            "load_seconds": statistics.median(r["load_seconds"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "objective": float(labels_dists[1].astype(np.float64).sum()),
            "identical_repeats": all(np.array_equal(cents[0], c) for c in cents[1:]),
            "n_train": runs[0]["n_train"],
            "n_iter": runs[0]["n_iter"],
        }

    print()
    print(f"n={args.n} dim={args.dim} k={args.k} niter={args.niter} repeats={args.repeats} threads={args.threads}")
    head = f"{'tool':<8} {'median s':>10} {'load s':>8} {'peak RSS MiB':>13} {'objective':>16} {'n_train':>9} {'iters':>6} {'same':>5}"
    print(head)
    print("-" * len(head))
    for tool, r in results.items():
        print(f"{tool:<8} {r['median_seconds']:>10.2f} {r['load_seconds']:>8.2f} {r['peak_rss_mib']:>13.0f} "
              f"{r['objective']:>16.6g} {r['n_train']:>9d} {r['n_iter']:>6d} {str(r['identical_repeats']):>5}")
    if {"faiss", "sklearn"} <= results.keys():
        f, s = results["faiss"], results["sklearn"]
        print(f"ratio sklearn/faiss: time {s['median_seconds'] / f['median_seconds']:.2f}x, "
              f"peak RSS {s['peak_rss_mib'] / f['peak_rss_mib']:.2f}x, objective {s['objective'] / f['objective']:.5f}")
    summary = {"n": args.n, "dim": args.dim, "k": args.k, "niter": args.niter, "repeats": args.repeats,
               "threads": args.threads, "seed": args.seed, "results": results}
    (args.workdir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
