"""fer.utils.io: atomic writes with the user's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from fer.utils import io


def _writers(tmp_path: Path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {
        "text": (tmp_path / "report.html", lambda p: io.write_text(p, "<html></html>")),
        "json": (tmp_path / "m.json", lambda p: io.write_json(p, {"a": 1})),
        "npy": (tmp_path / "a.npy", lambda p: io.save_npy(p, a)),
        "npz": (tmp_path / "a.npz", lambda p: io.save_npz(p, x=a)),
        "torch": (tmp_path / "m.pt", lambda p: io.save_torch(p, {"w": torch.zeros(2)})),
    }


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_get_the_users_umask(tmp_path, umask, mask):
    """Every writer creates its file as open(path, "w") would: 0o666 less the umask
    (mkstemp's private 0o600 made the report unreadable to a web server or a colleague)."""
    umask(mask)
    for name, (path, write) in _writers(tmp_path).items():
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, (name, oct(path.stat().st_mode))
        # rewriting an existing file (the atomic rename) gives the same mode
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, name


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    io.write_text(target, "one")
    io.write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
