"""Listing the files of a dataset folder, the one way every reader and the fingerprint see it.

:func:`walk_files` lists every file under a root, in a stable order, **following symbolic
links** (a dataset is often assembled from links to other disks): a linked sub-folder is
walked like a real one, a linked file is listed under its link's name. Nothing is skipped
without trace:

* a link that points nowhere is listed with ``broken=True`` (the readers then report the
  file by name: a csv row naming it, or an image the folder reader cannot read);
* a link loop (a folder linking to itself or to a folder above it) is a
  :class:`DatasetError` naming the link: a walk would never end;
* anything that is neither a file nor a folder (a named pipe, a socket, a device) is a
  :class:`DatasetError` naming it: reading it could block forever;
* a folder that cannot be listed (permissions) is a :class:`DatasetError` naming it.

Only exact names in ``exclude_names`` are left out (the workflow passes the marker files its
tools write into folders; the library knows no tool).

:func:`normalise_relpath` is the one spelling of a path relative to a dataset root: a csv
row's ``./img/x.png`` and ``img//x.png`` are ``img/x.png``; absolute paths and paths that
climb out of the root (``../x.png``) are errors, because files outside the root are not
part of the dataset's fingerprint (a change there would go unseen).
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat as stat_module
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetError", "FileEntry", "join", "normalise_relpath", "walk_files"]


class DatasetError(ValueError):
    """The input dataset is malformed; the message names the offending files.

    ``problems`` holds every problem found (the message shows the first ones)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems is not None else [message]


@dataclass(frozen=True)
class FileEntry:
    """One file under a root: its relative path (``/``-separated), its path as the walk
    reached it (a string: the root joined with the relative path, links not resolved)
    and, for a file, ``os.stat`` of what it points to."""

    rel: str
    path: str
    st: os.stat_result | None  # None for a broken link
    broken: bool = False  # a symbolic link whose target does not exist
    link_target: str | None = None  # what a broken link points to (os.readlink)


def _listdir(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except PermissionError as e:
        raise DatasetError(f"{folder}: cannot list this folder ({e.strerror})") from e
    except NotADirectoryError as e:
        raise DatasetError(f"{folder}: not a folder") from e
    except FileNotFoundError as e:
        raise DatasetError(f"{folder}: folder not found") from e


def join(base: str, rel: str) -> str:
    """``str(Path(base) / rel)`` for a ``base`` already in ``str(Path(...))`` form and a
    normalised ``rel``, without building Path objects (the readers and the walk join one
    per image: hundreds of thousands)."""
    if base == ".":
        return rel
    return base + rel if base.endswith("/") else f"{base}/{rel}"


def walk_files(root: str | Path, exclude_names: Collection[str] = ()) -> Iterator[FileEntry]:
    """Every file under ``root`` (module docstring), depth first, names sorted in each
    folder; links followed, loops and special files are errors."""
    try:
        st = os.stat(root)
    except FileNotFoundError as e:
        raise DatasetError(f"{root}: dataset folder not found") from e
    except OSError as e:
        raise DatasetError(f"{root}: cannot read the dataset folder ({e.strerror})") from e
    if not stat_module.S_ISDIR(st.st_mode):
        raise DatasetError(f"{root}: not a folder")
    yield from _walk(str(Path(root)), "", [(st.st_dev, st.st_ino)], frozenset(exclude_names))


def _walk(folder: str, prefix: str, ancestors: list[tuple[int, int]], exclude: frozenset[str]) -> Iterator[FileEntry]:
    for entry in _listdir(folder):
        if entry.name in exclude:
            continue
        path = join(folder, entry.name)
        rel = prefix + entry.name
        try:
            st = os.stat(path)  # follows links
        except FileNotFoundError:
            if entry.is_symlink():
                yield FileEntry(rel, path, None, broken=True, link_target=os.readlink(path))
                continue
            raise DatasetError(f"{path}: disappeared while the dataset was being listed") from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # a link chain that never ends
                raise DatasetError(f"{path}: symbolic link loop (the link never reaches a file or folder)") from e
            raise DatasetError(f"{path}: cannot read ({e.strerror})") from e
        if stat_module.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                raise DatasetError(
                    f"{path}: symbolic link loop: it leads back to a folder that contains it "
                    f"({os.path.realpath(path)}); remove the link"
                )
            yield from _walk(path, rel + "/", [*ancestors, key], exclude)
        elif stat_module.S_ISREG(st.st_mode):
            yield FileEntry(rel, path, st)
        else:
            raise DatasetError(f"{path}: neither a file nor a folder (a pipe, socket or device); remove it from the dataset")


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def normalise_relpath(rel: str) -> str:
    """The canonical spelling of a path relative to a dataset root (module docstring).

    Raises ``ValueError`` (with a message to show after the file and line) for an empty
    path, an absolute path, or a path that leaves the root."""
    text = rel.strip()
    if not text:
        raise ValueError("empty image path")
    if text.startswith(("/", "\\")) or _DRIVE.match(text):
        raise ValueError(
            f"image path {rel!r} is absolute: paths must be relative to the dataset root, so that "
            "every image is inside the folder whose content the pipeline tracks"
        )
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(
            f"image path {rel!r} leaves the dataset root: paths must stay inside it, so that "
            "every image is inside the folder whose content the pipeline tracks"
        )
    if norm == ".":
        raise ValueError(f"image path {rel!r} names the dataset root itself, not an image")
    return norm
