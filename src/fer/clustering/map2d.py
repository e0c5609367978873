"""2-D maps of embeddings for the report: t-SNE of a seeded subsample, coloured by label.

Used to show the expression-guided clustering of M4 (Fang et al., Sensors 2023, who show
feature-space visualisations of their clusters). Project's reading: PCA to at most 50
dimensions, then scikit-learn's exact-seeded Barnes-Hut t-SNE (PCA initialisation,
perplexity min(30, (M - 1) / 3)) on at most ``max_points`` rows drawn without replacement
by ``numpy.random.default_rng(seed)`` (sorted indices, memmap-friendly).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fer.clustering.kmeans import gather_rows  # noqa: E402

__all__ = ["embedding_map", "map_png"]


def embedding_map(feats: np.ndarray, *, seed: int, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``(idx (M,) int64 sorted row indices, xy (M, 2) float32)`` t-SNE coordinates."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if not isinstance(feats, np.ndarray) or feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating):
        raise ValueError(f"feats must be a floating (N, D) array, got {getattr(feats, 'shape', None)}")
    n, d = feats.shape
    if n < 5:
        raise ValueError(f"a t-SNE map needs at least 5 points, got {n}")
    if max_points < 5:
        raise ValueError(f"max_points must be >= 5, got {max_points}")
    rng = np.random.default_rng(seed)
    idx = np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, replace=False))
    x = gather_rows(feats, idx.astype(np.int64))  # M, D (checked finite)
    m = len(idx)
    n_comp = min(50, d, m)
    if n_comp < d:
        x = PCA(n_components=n_comp, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, (m - 1) / 3.0))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return idx.astype(np.int64), xy.astype(np.float32)


def map_png(
    xy: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str, kept: np.ndarray | None = None
) -> bytes:
    """Scatter of ``xy`` (M, 2) coloured by ``labels`` (M,) (class indices; -1 or not
    ``kept``: grey), legend with the class names -> PNG bytes (Agg backend)."""
    xy = np.asarray(xy)
    labels = np.asarray(labels)
    if xy.ndim != 2 or xy.shape[1] != 2 or labels.shape != (len(xy),):
        raise ValueError(f"xy must be (M, 2) and labels (M,), got {xy.shape} and {labels.shape}")
    if labels.size and (labels.max() >= len(classes) or labels.min() < -1):
        raise ValueError(f"labels must lie in [-1, {len(classes)})")
    grey = labels < 0
    if kept is not None:
        kept = np.asarray(kept, dtype=bool)
        if kept.shape != labels.shape:
            raise ValueError(f"kept shape {kept.shape} does not match labels {labels.shape}")
        grey = grey | ~kept
    fig = Figure(figsize=(6.4, 5.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if grey.any():
        ax.scatter(xy[grey, 0], xy[grey, 1], s=5, c="0.75", label="not kept" if kept is not None else "unknown")
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for c, name in enumerate(classes):
        sel = (labels == c) & ~grey
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=cmap(c % cmap.N), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=7, markerscale=2, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()
