"""FAISS k-means that scales to millions of memory-mapped embeddings.

Follows the recipe of ``faiss.Kmeans`` (Johnson, Douze, Jegou, "Billion-scale similarity
search with GPUs", IEEE TBD 2019; the FAISS clustering wiki): Lloyd iterations on a
random subsample of at most ``k * max_points_per_centroid`` points, then one nearest-
centroid search of every point. The project's reading of the details:

* **Subsampling is explicit and announced.** FAISS would subsample silently inside
  ``Clustering::train``; here the subsample is drawn before FAISS sees the data, from a
  ``numpy.random.default_rng(seed)`` permutation, its indices sorted and the rows read
  from ``x`` (which may be a ``np.memmap``) in chunks, and a WARNING says so.
  ``KMeansResult.subsampled`` / ``n_train`` record it.
* **Streaming.** The final assignment (and ``assign_batched``) walks over ``x`` in
  batches of ``batch_size`` rows; only one float32 batch is materialised at a time, never
  a copy of all of ``x``. Optional per-row L2 normalisation (``normalize=True``) is applied
  batch by batch too, so a memmap of raw features can be clustered on the unit sphere
  without a normalised copy on disk or in RAM.
* **Reproducibility.** ``faiss.Kmeans(seed=seed)`` (random initialisation from the
  training sample, unless ``init_centroids`` is given); ``threads`` sets FAISS's OpenMP
  thread count, and results are bit-identical for a fixed seed and thread count.
* **Devices.** ``use_gpu``: ``"auto"`` uses all FAISS GPUs when ``faiss.get_num_gpus() > 0``
  (a faiss-gpu build), ``"never"`` forces CPU, ``"always"`` raises a ValueError when FAISS
  sees no GPU.
* **Objective.** ``KMeansResult.objective`` is the sum of squared L2 distances of ALL N
  points to their nearest final centroid (not FAISS's objective on the training sample).
"""

from __future__ import annotations

import logging
import mmap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from fer.params.sections import GPU_MODES  # params.yaml clustering.use_gpu

log = logging.getLogger(__name__)

__all__ = [
    "GPU_MODES",
    "INIT_METHODS",
    "KMeansResult",
    "assign_batched",
    "faiss_kmeans",
    "search_batched",
    "set_threads",
    "train_centroids",
]

#: FAISS initialisation methods (used when no ``init_centroids`` are given)
INIT_METHODS: dict[str, str] = {
    "random": "ClusteringInitMethod_RANDOM",  # FAISS's default: k random training points
    "kmeans++": "ClusteringInitMethod_KMEANS_PLUS_PLUS",
}
#: rows read at once when gathering the training subsample from a memmap (the mapped pages
#: are released after each chunk, so the peak RSS stays small even for a random sample)
_GATHER_CHUNK = 1024


@dataclass
class KMeansResult:
    """Outcome of ``faiss_kmeans``."""

    centroids: np.ndarray  # (k, D) float32
    labels: np.ndarray  # (N,) int64, nearest centroid of every point
    distances: np.ndarray  # (N,) float32, squared L2 to it
    objective: float  # sum of squared distances over all N points at the end
    n_train: int  # points k-means was trained on
    subsampled: bool  # True when trained on a subsample (n_train < N)
    used_gpu: bool
    train_objective: list[float] | None = None  # FAISS's per-iteration objective on the sample
    seconds: float = 0.0  # wall time (training + assignment)


# ------------------------------------------------------------------------- helpers
def set_threads(threads: int | None) -> None:
    """``faiss.omp_set_num_threads(threads)``; None leaves the current setting."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    faiss.omp_set_num_threads(int(threads))


def resolve_gpu(use_gpu: str) -> bool:
    """Whether to run on FAISS GPUs for ``use_gpu`` in ``GPU_MODES``."""
    if use_gpu not in GPU_MODES:
        raise ValueError(f"use_gpu must be one of {GPU_MODES}, got {use_gpu!r}")
    n_gpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu == "always" and n_gpu == 0:
        raise ValueError(
            "use_gpu='always' but FAISS sees no GPU (faiss-cpu build or no CUDA device); "
            "install faiss-gpu or use 'auto'/'never'"
        )
    return use_gpu != "never" and n_gpu > 0


def _check_matrix(x: np.ndarray, name: str) -> tuple[int, int]:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (or np.memmap), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    n, d = x.shape
    if n < 1 or d < 1:
        raise ValueError(f"{name} is empty: shape {x.shape}")
    return n, d


def _check_positive(**kw: int) -> None:
    for key, value in kw.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def prepare_batch(xb: np.ndarray, normalize: bool, what: str = "x") -> np.ndarray:
    """A float32 C-contiguous copy-if-needed of ``xb``, checked finite, optionally L2
    normalised per row (a zero row stays zero)."""
    # a memmap slice is copied into RAM (so its pages can be released); others only if needed
    out = np.array(xb, dtype=np.float32, order="C", copy=True if isinstance(xb, np.memmap) else None)
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise ValueError(f"{what} contains NaN or infinite values (first bad row in this batch: {bad})")
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)  # B, 1
        out = out / np.maximum(norms, 1e-12)
        out = np.ascontiguousarray(out, dtype=np.float32)
    return out


def subsample_indices(n: int, n_max: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of ``min(n, n_max)`` of ``range(n)``."""
    if n <= n_max:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:n_max]).astype(np.int64)


def release_pages(x: np.ndarray) -> None:
    """Drop the pages of a memory-mapped ``x`` from this process's resident set
    (``madvise(MADV_DONTNEED)`` on its read-only mapping; the data stays in the page cache
    and on disk). Streaming passes call it after each batch so that RSS stays at one batch
    instead of growing to the whole file. No-op for in-memory arrays."""
    mm = getattr(x, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    if getattr(x, "mode", "r") != "r":
        return  # writable mappings may hold dirty pages: leave them alone
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # pragma: no cover - platform without madvise support
        pass


def gather_rows(x: np.ndarray, idx: np.ndarray, *, normalize: bool = False) -> np.ndarray:
    """``x[idx]`` for sorted ``idx`` read in chunks (memmap-friendly) -> float32 (len(idx), D)."""
    out = np.empty((len(idx), x.shape[1]), dtype=np.float32)
    for s in range(0, len(idx), _GATHER_CHUNK):
        part = idx[s : s + _GATHER_CHUNK]
        out[s : s + len(part)] = prepare_batch(x[part], normalize, what="x")
        release_pages(x)
    return out


def _flat_index(d: int, gpu: bool) -> faiss.Index:
    index = faiss.IndexFlatL2(d)
    if gpu:  # pragma: no cover - needs a faiss-gpu build
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def search_batched(
    x: np.ndarray,
    centroids: np.ndarray,
    knn: int,
    *,
    batch_size: int = 65536,
    use_gpu: str = "auto",
    normalize: bool = False,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Stream the ``knn`` nearest centroids of every row of ``x``.

    Yields ``(start, D, I)`` per batch of rows ``x[start:start+B]``: ``D`` (B, knn) float32
    squared L2 distances (ascending), ``I`` (B, knn) int64 centroid ids.
    """
    n, d = _check_matrix(x, "x")
    c = prepare_batch(np.asarray(centroids), False, what="centroids")
    if c.ndim != 2 or c.shape[1] != d:
        raise ValueError(f"centroids must be (k, {d}), got {c.shape}")
    _check_positive(knn=knn, batch_size=batch_size)
    if knn > c.shape[0]:
        raise ValueError(f"knn={knn} exceeds the number of centroids {c.shape[0]}")
    index = _flat_index(d, resolve_gpu(use_gpu))
    index.add(c)
    for start in range(0, n, batch_size):
        xb = prepare_batch(x[start : start + batch_size], normalize)
        release_pages(x)
        dist, ids = index.search(xb, knn)
        yield start, np.maximum(dist, 0.0).astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def assign_batched(
    x: np.ndarray,
    centroids: np.ndarray,
    *,
    batch_size: int = 65536,
    use_gpu: str = "auto",
    normalize: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x`` (streamed in batches).

    Returns ``(labels (N,) int64, distances (N,) float32 squared L2)``. ``normalize``
    L2-normalises each row of ``x`` before the search (the centroids are used as given).
    """
    n, _ = _check_matrix(x, "x")
    labels = np.empty(n, dtype=np.int64)
    dists = np.empty(n, dtype=np.float32)
    for start, dist, ids in search_batched(
        x, centroids, 1, batch_size=batch_size, use_gpu=use_gpu, normalize=normalize
    ):
        labels[start : start + len(ids)] = ids[:, 0]
        dists[start : start + len(ids)] = dist[:, 0]
    return labels, dists


# -------------------------------------------------------------------------- k-means
def check_seed(seed: int) -> None:
    """A seed is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def training_sample(
    x: np.ndarray, k: int, max_points_per_centroid: int, seed: int, *, normalize: bool = False
) -> tuple[np.ndarray, bool]:
    """The (announced) seeded training subsample of at most ``k * max_points_per_centroid``
    rows of ``x`` as float32 (n_train, D), and whether it is a strict subsample."""
    n = x.shape[0]
    idx = subsample_indices(n, k * max_points_per_centroid, seed)
    subsampled = len(idx) < n
    if subsampled:
        log.warning(
            "k-means trains on a subsample: %d of %d points (k=%d x max_points_per_centroid=%d, seed %d); "
            "all %d points are assigned afterwards",
            len(idx), n, k, max_points_per_centroid, seed, n,
        )
    return gather_rows(x, idx, normalize=normalize), bool(subsampled)


def train_centroids(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    init_centroids: np.ndarray | None = None,
    max_points_per_centroid: int = 256,
    use_gpu: str = "auto",
    threads: int | None = None,
    normalize: bool = False,
    init_method: str = "random",
) -> tuple[np.ndarray, int, bool, bool, list[float] | None]:
    """The training half of ``faiss_kmeans`` (no assignment of all points).

    Returns ``(centroids (k, D) float32, n_train, subsampled, used_gpu, per-iteration
    FAISS objective on the training sample)``.
    """
    n, d = _check_matrix(x, "x")
    _check_positive(k=k, niter=niter, max_points_per_centroid=max_points_per_centroid)
    check_seed(seed)
    if k > n:
        raise ValueError(f"k={k} clusters need at least k points, got N={n}")
    if init_method not in INIT_METHODS:
        raise ValueError(f"init_method must be one of {list(INIT_METHODS)}, got {init_method!r}")
    set_threads(threads)
    gpu = resolve_gpu(use_gpu)
    init = None
    if init_centroids is not None:
        init = prepare_batch(np.asarray(init_centroids), False, what="init_centroids")
        if init.shape != (k, d):
            raise ValueError(f"init_centroids must have shape ({k}, {d}), got {init.shape}")
    xt, subsampled = training_sample(x, k, max_points_per_centroid, seed, normalize=normalize)  # n_train, D
    km = faiss.Kmeans(
        d,
        int(k),
        niter=int(niter),
        seed=int(seed),
        max_points_per_centroid=int(max_points_per_centroid),
        min_points_per_centroid=1,  # no FAISS warning for small sets; k <= N was checked
        gpu=bool(gpu),
        verbose=False,
    )
    if init_method != "random":
        km.cp.init_method = getattr(faiss, INIT_METHODS[init_method])
    km.train(xt, init_centroids=init)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)  # k, D
    train_obj = [float(v) for v in np.asarray(km.obj)] if km.obj is not None else None
    return centroids, int(len(xt)), subsampled, bool(gpu), train_obj


def faiss_kmeans(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    init_centroids: np.ndarray | None = None,
    max_points_per_centroid: int = 256,
    use_gpu: str = "auto",
    batch_size: int = 65536,
    threads: int | None = None,
    normalize: bool = False,
    init_method: str = "random",
) -> KMeansResult:
    """k-means of the rows of ``x`` (N, D) with FAISS.

    Trains ``faiss.Kmeans(D, k, niter=niter, seed=seed)`` on a seeded subsample of at most
    ``k * max_points_per_centroid`` rows (all rows when N is smaller; a WARNING when
    subsampled), then assigns every row to its nearest centroid in batches of
    ``batch_size``. ``init_centroids`` (k, D) is passed to FAISS as the initialisation.
    ``threads`` sets FAISS's OpenMP thread count (None: unchanged). ``normalize``
    L2-normalises rows (training sample and every assignment batch) on the fly.
    ``init_method`` (``INIT_METHODS``) picks FAISS's initialisation when no
    ``init_centroids`` are given.
    """
    t0 = time.perf_counter()
    _check_matrix(x, "x")
    _check_positive(batch_size=batch_size)
    centroids, n_train, subsampled, gpu, train_obj = train_centroids(
        x,
        k,
        niter=niter,
        seed=seed,
        init_centroids=init_centroids,
        max_points_per_centroid=max_points_per_centroid,
        use_gpu=use_gpu,
        threads=threads,
        normalize=normalize,
        init_method=init_method,
    )
    labels, dists = assign_batched(x, centroids, batch_size=batch_size, use_gpu=use_gpu, normalize=normalize)
    objective = float(dists.astype(np.float64).sum())
    return KMeansResult(
        centroids=centroids,
        labels=labels,
        distances=dists,
        objective=objective,
        n_train=n_train,
        subsampled=subsampled,
        used_gpu=gpu,
        train_objective=train_obj,
        seconds=time.perf_counter() - t0,
    )
