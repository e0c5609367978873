"""The aligned dataset artifact: images.npy (uint8, N x H x W x C) + manifest.csv + meta.json.

Images are decoded and aligned once by the alignment stage; every training stage reads
this compact array (memory-mapped) instead of re-decoding image files each epoch.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer.utils.io import read_json


@dataclass(frozen=True)
class AlignedSet:
    images: np.ndarray  # (N, H, W, C) uint8
    paths: list[str]
    subjects: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64, index into classes; -1 for an unlabelled set
    classes: list[str]
    meta: dict[str, Any]


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for n, row in enumerate(rows):
        if int(row["index"]) != n:
            raise ValueError(f"{path}: row {n + 2} has index {row['index']}, expected {n}")
    return rows


def load_aligned(
    images: str | Path, manifest: str | Path, meta: str | Path, mmap: bool = True, labelled: bool = True
) -> AlignedSet:
    """Load the aligned artifact and check that its three files agree.

    ``labelled=False`` loads an unlabelled set (the face-recognition corpus): its manifest
    must carry no labels, and ``labels`` is all -1.
    """
    arr = np.load(images, mmap_mode="r" if mmap else None, allow_pickle=False)
    rows = read_manifest(manifest)
    info = read_json(meta)
    classes = list(info["classes"])
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"{images}: expected a uint8 (N, H, W, C) array, got {arr.dtype} {arr.shape}")
    if len(rows) != arr.shape[0]:
        raise ValueError(f"{manifest} has {len(rows)} rows but {images} holds {arr.shape[0]} images")
    index = {c: i for i, c in enumerate(classes)}
    if labelled:
        unknown = sorted({r["label"] for r in rows} - set(index))
        if unknown:
            raise ValueError(f"{manifest}: labels {unknown} are not in meta.json classes {classes}")
        labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    else:
        if any(r["label"] for r in rows):
            raise ValueError(f"{manifest}: an unlabelled set must not carry expression labels")
        labels = np.full(len(rows), -1, dtype=np.int64)
    return AlignedSet(
        images=arr,
        paths=[r["path"] for r in rows],
        subjects=np.array([r["subject"] for r in rows]),
        labels=labels,
        classes=classes,
        meta=info,
    )
