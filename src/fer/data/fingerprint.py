"""Content fingerprint of a dataset folder: what alignment depends on, for every tool.

A folder's own modification time says nothing about the files inside it (Snakemake judges
a folder input by it), so the pipeline depends on a small **fingerprint file** instead: the
SHA-256 of the list of every file's relative path, size and content SHA-256, one line
each in the walk's order (names sorted)
(:func:`fer.data.files.walk_files`: symbolic links followed, nothing skipped). Adding,
removing, renaming, editing or relabelling one image (or editing one row of
``labels.csv`` in place) changes it; touching a file, copying the dataset elsewhere or
changing only file times does not. :func:`write_fingerprint` rewrites the file only when
its text changes, so the file's own modification time moves exactly when the content did.

Hashing a 400k-image set on every run would take minutes, so content hashes are cached in
a SQLite file (:class:`HashCache`, kept by the workflow under ``state/``) keyed by the
file's relative path and its ``(size, mtime_ns, ctime_ns, device, inode)``. The change
time and the inode are in the key because tools that copy with ``-p`` / ``rsync -t``
restore a file's modification time: a replaced image of the same size keeps its mtime but
not its ctime. A file modified within :data:`RACY_NS` of the listing is hashed but not
cached (its time stamp may not yet tell a later edit apart, as in git's "racy clean"
rule). The cache only saves time: with it or without it the fingerprint is the same.

The fingerprint file (``json``, ``format``, ``root``, ``files``, ``bytes``, ``sha256``) is
a few hundred bytes, whatever the dataset's size.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from fer.data.files import DatasetError, walk_files
from fer.utils.io import write_text

__all__ = [
    "FORMAT",
    "RACY_NS",
    "Fingerprint",
    "FingerprintStats",
    "HashCache",
    "compute_fingerprint",
    "file_sha256",
    "fingerprint_is_current",
    "save_fingerprint",
    "write_fingerprint",
]

#: Version of the fingerprint's definition (part of the file: a new definition re-runs alignment once).
FORMAT = 1
#: Files whose modification or change time is this recent (ns) are hashed but not cached.
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class Fingerprint:
    """The fingerprint of one folder: file count, total bytes, SHA-256 of the listing."""

    root: str
    files: int
    bytes: int
    sha256: str

    def text(self) -> str:
        """The fingerprint file's text (stable: same content, same text)."""
        doc = {"format": FORMAT, "root": self.root, "files": self.files, "bytes": self.bytes, "sha256": self.sha256}
        return json.dumps(doc, indent=2) + "\n"


@dataclass(frozen=True)
class FingerprintStats:
    """How a fingerprint was computed: files listed, hashed now, taken from the cache."""

    files: int
    hashed: int
    cached: int
    seconds: float


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's content."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_dev}:{st.st_ino}"


class HashCache:
    """Content hashes of files, keyed by (root, relative path) and the file's stamp
    (size, mtime_ns, ctime_ns, device, inode). A SQLite file: concurrent readers and
    writers are safe, and a changed image rewrites one row, not the whole cache. A
    damaged cache file is replaced by an empty one (it is only a cache)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute(
            "CREATE TABLE IF NOT EXISTS files (root TEXT NOT NULL, rel TEXT NOT NULL, stamp TEXT NOT NULL, "
            "sha256 TEXT NOT NULL, PRIMARY KEY (root, rel))"
        )
        return con

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError:
            self.path.unlink(missing_ok=True)
            return self._connect()

    def load(self, root: str) -> dict[str, tuple[str, str]]:
        """rel -> (stamp, sha256) of every cached file under ``root``."""
        con = self._open()
        try:
            rows = con.execute("SELECT rel, stamp, sha256 FROM files WHERE root = ?", (root,)).fetchall()
        except sqlite3.DatabaseError:
            con.close()
            self.path.unlink(missing_ok=True)
            return {}
        con.close()
        return {rel: (stamp, sha) for rel, stamp, sha in rows}

    def update(self, root: str, put: dict[str, tuple[str, str]], remove: Collection[str]) -> None:
        """Store ``put`` (rel -> (stamp, sha256)) and forget ``remove`` under ``root``."""
        if not put and not remove:
            return
        con = self._open()
        try:
            with con:
                con.executemany(
                    "INSERT OR REPLACE INTO files (root, rel, stamp, sha256) VALUES (?, ?, ?, ?)",
                    [(root, rel, stamp, sha) for rel, (stamp, sha) in put.items()],
                )
                con.executemany("DELETE FROM files WHERE root = ? AND rel = ?", [(root, rel) for rel in remove])
        finally:
            con.close()


def compute_fingerprint(
    root: str | Path, cache_path: str | Path | None = None, exclude_names: Collection[str] = ()
) -> tuple[Fingerprint, FingerprintStats]:
    """The fingerprint of the folder ``root`` (module docstring). With ``cache_path``,
    content hashes are read from and written to that :class:`HashCache`."""
    start = time.perf_counter()
    now = time.time_ns()
    cache = HashCache(cache_path) if cache_path is not None else None
    key = str(Path(root).resolve())
    known = cache.load(key) if cache is not None else {}
    listing = hashlib.sha256()
    put: dict[str, tuple[str, str]] = {}
    seen: set[str] = set()
    n_files = n_bytes = hashed = cached = 0
    for entry in walk_files(root, exclude_names):
        n_files += 1
        if entry.broken:
            row = f"{entry.rel!r}\t-\tbroken symbolic link to {entry.link_target!r}\n"
        else:
            st = entry.st
            assert st is not None
            stamp = _stamp(st)
            hit = known.get(entry.rel)
            if hit is not None and hit[0] == stamp:
                sha = hit[1]
                cached += 1
            else:
                try:
                    sha = file_sha256(entry.path)
                except OSError as e:
                    raise DatasetError(f"{entry.path}: cannot read ({e.strerror})") from e
                hashed += 1
                if now - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
                    put[entry.rel] = (stamp, sha)
            seen.add(entry.rel)
            n_bytes += st.st_size
            row = f"{entry.rel!r}\t{st.st_size}\t{sha}\n"
        listing.update(row.encode("utf-8", "surrogateescape"))
    if cache is not None:
        cache.update(key, put, [rel for rel in known if rel not in seen])
    fp = Fingerprint(root=str(root), files=n_files, bytes=n_bytes, sha256=listing.hexdigest())
    return fp, FingerprintStats(n_files, hashed, cached, time.perf_counter() - start)


def _current_text(out: str | Path) -> str | None:
    try:
        return Path(out).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def save_fingerprint(out: str | Path, fp: Fingerprint) -> bool:
    """Write ``fp`` to ``out`` only when its text differs from what ``out`` holds
    (atomically); return whether it was rewritten."""
    text = fp.text()
    if _current_text(out) == text:
        return False
    write_text(out, text)
    return True


def write_fingerprint(
    root: str | Path, out: str | Path, cache_path: str | Path | None = None, exclude_names: Collection[str] = ()
) -> tuple[bool, Fingerprint, FingerprintStats]:
    """Compute the fingerprint of ``root`` and :func:`save_fingerprint` it to ``out``.
    Returns (rewritten, fingerprint, stats)."""
    fp, stats = compute_fingerprint(root, cache_path, exclude_names)
    return save_fingerprint(out, fp), fp, stats


def fingerprint_is_current(
    root: str | Path, out: str | Path, cache_path: str | Path | None = None, exclude_names: Collection[str] = ()
) -> bool:
    """Whether ``out`` holds the fingerprint of ``root`` as it is now (False when missing)."""
    fp, _ = compute_fingerprint(root, cache_path, exclude_names)
    return _current_text(out) == fp.text()
