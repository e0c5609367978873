"""Least-squares 2-D similarity transforms (rotation + uniform scale + translation).

A similarity has four degrees of freedom, so two distinct points determine it; collinear
point sets are therefore fine. What is degenerate is a point set whose points all
coincide (no scale or rotation can be read from it) — :func:`estimate_similarity` raises
``ValueError`` for that instead of returning a meaningless or singular matrix.
"""

from __future__ import annotations

import numpy as np

from fer.align.template import interocular_distance, template_points


def _as_points(pts: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite coordinates")
    return a


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src`` onto ``dst`` (Umeyama 1991), as a (2, 3) matrix.

    Minimises ``sum ||s R src_i + t - dst_i||^2`` over rotations ``R`` (det +1, never a
    reflection), scales ``s > 0`` and translations ``t``. The result ``M`` satisfies
    ``dst ≈ src @ M[:, :2].T + M[:, 2]`` and is usable directly with ``cv2.warpAffine``.

    Raises ``ValueError`` for mismatched shapes, fewer than two points, non-finite values,
    all source points coinciding, all destination points coinciding, or point sets with
    no non-degenerate similarity between them (best-fit scale zero).
    """
    src = _as_points(src, "src")
    dst = _as_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    if n < 2:
        raise ValueError(f"a similarity needs at least 2 point pairs, got {n}")

    mu_s = src.mean(axis=0)
    mu_d = dst.mean(axis=0)
    sc = src - mu_s
    dc = dst - mu_d
    var_s = float(np.mean(np.sum(sc**2, axis=1)))
    var_d = float(np.mean(np.sum(dc**2, axis=1)))
    # Relative tolerance: spread compared with the magnitude of the coordinates.
    tol_s = 1e-10 * max(1.0, float(np.abs(src).max()))
    tol_d = 1e-10 * max(1.0, float(np.abs(dst).max()))
    if np.sqrt(var_s) <= tol_s:
        raise ValueError(
            "degenerate source points: all points coincide, so no rotation or scale can be estimated"
        )
    if np.sqrt(var_d) <= tol_d:
        raise ValueError(
            "degenerate destination points: all points coincide, so the transform would be singular"
        )

    cov = dc.T @ sc / n
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0  # force a proper rotation (no reflection)
    rot = u @ np.diag(d) @ vt
    scale = float(np.dot(sing, d)) / var_s
    if not scale > 1e-12 * np.sqrt(var_d / var_s):
        raise ValueError(
            "degenerate point configuration: the best-fitting similarity has zero scale "
            "(source and destination point sets have no consistent shape)"
        )
    t = mu_d - scale * rot @ mu_s
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = t
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"affine matrix must have shape (2, 3), got {m.shape}")
    p = np.asarray(pts, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def similarity_scale(m: np.ndarray) -> float:
    """Uniform scale factor of a similarity (square root of the linear part's |det|)."""
    m = np.asarray(m, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def alignment_residual(
    m: np.ndarray, src: np.ndarray, dst: np.ndarray, size: int, face_scale: float = 1.0
) -> float:
    """RMS distance between ``m``-transformed ``src`` and ``dst``, in inter-ocular distances.

    The denominator is the eye-to-eye distance of the template at ``size`` and
    ``face_scale`` (:func:`fer.align.template.template_points`), so the value is
    dimensionless and does not change with the output size or zoom. 0 means the landmarks
    are an exact similarity image of the template; values around 0.05-0.15 are typical for
    real frontal faces (expressions move the mouth corners); values near or above 0.3 mean
    the landmarks do not look like a face seen from the front (wrong points, wrong order,
    extreme profile).
    """
    src = _as_points(src, "src")
    dst = _as_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    iod = interocular_distance(template_points(size, face_scale))
    diff = apply_affine(m, src) - dst
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1))) / iod)
