"""Report figures (matplotlib, Agg backend): confusion matrices, training curves and
grids of aligned faces. Each function returns PNG bytes and optionally writes a file."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fer.utils.io import atomic_path  # noqa: E402


def _png(fig, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data


def confusion_figure(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str, path: str | Path | None = None
) -> bytes:
    """Row-normalised confusion matrix with counts; rows are true classes."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(m[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig, path)


def curves_figure(curves: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path | None = None) -> bytes:
    """Training loss and validation accuracy per epoch, one line per fold."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, rows in curves.items():
        ep = [r["epoch"] for r in rows]
        axes[0].plot(ep, [r["train/loss"] for r in rows], label=name)
        axes[1].plot(ep, [r["val/acc"] for r in rows], label=name)
    axes[0].set_title("train/loss")
    axes[1].set_title("val/acc (model selection split)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    return _png(fig, path)


def faces_grid(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    per_class: int,
    seed: int = 0,
    path: str | Path | None = None,
) -> bytes:
    """A grid of aligned faces: one row per class, ``per_class`` random examples each."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    fig, axes = plt.subplots(k, per_class, figsize=(per_class * 0.9, k * 0.95), squeeze=False)
    for i, name in enumerate(classes):
        idx = np.flatnonzero(labels == i)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(pick):
                img = np.asarray(images[pick[j]])
                if img.shape[-1] == 1:
                    ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255)
                else:
                    ax.imshow(img)
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return _png(fig, path)


def budget_curve_figure(
    points: Mapping[str, Sequence[tuple[float, Sequence[float], Sequence[float]]]], path: str | Path | None = None
) -> bytes:
    """Accuracy and mean-class accuracy against the labelled fraction, one line per row
    (the fold mean) with the fold spread (mean ± standard deviation) as a band.
    ``points[row]`` = [(fraction, per-fold test/acc, per-fold test/mean_class_acc), ...]."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = plt.get_cmap("tab20").colors
    styles = ("-", "--", ":", "-.")
    fractions = sorted({p[0] for pts in points.values() for p in pts})
    for i, (name, pts) in enumerate(points.items()):
        pts = sorted(pts, key=lambda p: p[0])
        x = [p[0] for p in pts]
        for ax, j in zip(axes, (1, 2)):
            vals = [np.asarray(p[j], dtype=float) for p in pts]
            mean = np.array([100 * v.mean() for v in vals])
            std = np.array([100 * (v.std(ddof=1) if v.size > 1 else 0.0) for v in vals])
            colour = colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
            ax.plot(x, mean, marker="o", color=colour, linestyle=styles[i % len(styles)], label=name)
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.10)
    for ax, title in zip(axes, ("test accuracy (%)", "test mean-class accuracy (%)")):
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{100 * f:g} %" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("labelled share of each fold's training images")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _png(fig, path)
