"""Atomic file writes: everything is written to a temporary name and renamed into place,
so a killed job never leaves a half-written artifact behind.

Files get the permissions an ordinary ``open(path, "w")`` would give them (``0o666``
less the user's umask), not the private ``0o600`` of :func:`tempfile.mkstemp`: a report
must stay readable to a web server or a colleague.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _create_temp(path: Path) -> Path:
    """Create an empty, new temporary file beside ``path`` with mode ``0o666`` less the
    umask (what ``open(path, "w")`` gives), and return its path."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (an empty file with the permissions of a
    normally created one); rename it onto ``path`` on success, delete it on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save to a temporary file, then rename (import torch lazily).

    torch.save is given an open file, not the temporary path: given a path it names the
    archive's root folder after the file, so the random temporary name would end up
    inside every model file and identical weights would give different bytes."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Uncompressed ``np.savez`` to a temporary file, then rename (no pickled objects)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
