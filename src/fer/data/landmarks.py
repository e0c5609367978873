"""Five-point landmark files, written beside images the way real datasets ship them.

Format: a text file named ``<image path without extension>.landmarks.txt`` with five
lines ``x y`` (pixel coordinates, origin at the top-left pixel's centre) in the order

    left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner

where left/right are as seen in the image (the ArcFace / RAF-DB 5-point convention).
Lines starting with ``#`` are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SUFFIX = ".landmarks.txt"
POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class LandmarkFileError(ValueError):
    """A landmark file that cannot be parsed."""


def landmark_path(image_path: str | Path) -> Path:
    """Path of the landmark file that belongs to ``image_path``."""
    p = Path(image_path)
    return p.with_name(p.stem + SUFFIX)


def read_landmarks(path: str | Path) -> np.ndarray:
    """Read a 5-point landmark file into a float64 array of shape (5, 2)."""
    path = Path(path)
    rows = []
    try:
        text = path.read_text()
    except OSError as e:
        raise LandmarkFileError(f"{path}: cannot read landmark file: {e}") from e
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise LandmarkFileError(f"{path}:{n}: expected 'x y', got {line!r}")
        try:
            rows.append([float(parts[0]), float(parts[1])])
        except ValueError as e:
            raise LandmarkFileError(f"{path}:{n}: not a number in {line!r}") from e
    pts = np.asarray(rows, dtype=np.float64)
    if pts.shape != (5, 2):
        raise LandmarkFileError(f"{path}: expected 5 points, found {len(rows)}")
    if not np.all(np.isfinite(pts)):
        raise LandmarkFileError(f"{path}: non-finite coordinate")
    return pts


def write_landmarks(path: str | Path, points: np.ndarray) -> None:
    """Write a (5, 2) array as a landmark file."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"expected (5, 2) points, got {pts.shape}")
    lines = ["# x y: left_eye right_eye nose mouth_left mouth_right"]
    lines += [f"{x:.2f} {y:.2f}" for x, y in pts]
    Path(path).write_text("\n".join(lines) + "\n")


def reduce_68_to_5(pts68: np.ndarray) -> np.ndarray:
    """Reduce iBUG 68-point landmarks (68, 2) to the 5-point convention (5, 2)."""
    p = np.asarray(pts68, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {p.shape}")
    eye_a = p[36:42].mean(axis=0)
    eye_b = p[42:48].mean(axis=0)
    left_eye, right_eye = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
    return np.stack([left_eye, right_eye, p[30], p[48], p[54]])
