"""The dataset listing (links followed, nothing skipped silently) and the content fingerprint
that alignment depends on: it changes exactly when a file's path, size or content does,
and its hash cache only saves time."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from fer.data.files import DatasetError, normalise_relpath, walk_files
from fer.data.fingerprint import (
    RACY_NS,
    HashCache,
    compute_fingerprint,
    fingerprint_is_current,
    write_fingerprint,
)

OLD = time.time() - 3600  # a file time safely outside the racy window


def _file(path, content: bytes | str, when: float | None = OLD):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if when is not None:
        os.utime(path, (when, when))
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "ds"
    _file(root / "labels.csv", "image,subject,expression\nimg/a.png,S1,happy\nimg/b.png,S1,sad\n")
    _file(root / "img" / "a.png", b"A" * 100)
    _file(root / "img" / "b.png", b"B" * 100)
    return root


# ----------------------------------------------------------------------------- listing
def test_walk_follows_links_and_reports_what_it_cannot_read(tmp_path):
    root = tmp_path / "ds"
    _file(root / "happy" / "S1_a.png", "x")
    _file(tmp_path / "elsewhere" / "S2_b.png", "y")
    os.symlink(tmp_path / "elsewhere", root / "happy" / "linked")  # a linked sub-folder
    os.symlink(tmp_path / "nowhere.png", root / "happy" / "S3_c.png")  # a broken link
    _file(root / "happy" / ".snakemake_timestamp", "")
    entries = list(walk_files(root, exclude_names={".snakemake_timestamp"}))
    assert [e.rel for e in entries] == ["happy/S1_a.png", "happy/S3_c.png", "happy/linked/S2_b.png"]
    assert [e.broken for e in entries] == [False, True, False]
    assert entries[1].link_target == str(tmp_path / "nowhere.png")

    os.symlink(root, root / "happy" / "loop")  # a link back up the tree
    with pytest.raises(DatasetError, match="symbolic link loop") as e:
        list(walk_files(root))
    assert "happy/loop" in str(e.value)
    os.unlink(root / "happy" / "loop")
    os.mkfifo(root / "happy" / "pipe")
    with pytest.raises(DatasetError, match="neither a file nor a folder") as e:
        list(walk_files(root))
    assert "pipe" in str(e.value)
    with pytest.raises(DatasetError, match="not found"):
        list(walk_files(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("img/x.png", "img/x.png"), ("./img/x.png", "img/x.png"), ("img//x.png", "img/x.png"),
     ("img/../img/x.png", "img/x.png"), (" img/x.png ", "img/x.png")],
)
def test_relative_paths_have_one_spelling(raw, norm):
    assert normalise_relpath(raw) == norm


@pytest.mark.parametrize(
    ("raw", "needle"),
    [("/data/img/x.png", "absolute"), ("C:\\data\\x.png", "absolute"), ("../x.png", "leaves the dataset root"),
     ("img/../../x.png", "leaves the dataset root"), ("", "empty"), (".", "root itself")],
)
def test_paths_outside_the_root_are_refused(raw, needle):
    with pytest.raises(ValueError, match=needle):
        normalise_relpath(raw)


# ----------------------------------------------------------------------------- fingerprint
def _fp(root, cache=None):
    return compute_fingerprint(root, cache)[0]


def test_fingerprint_sees_every_content_change_and_nothing_else(tree, tmp_path):
    base = _fp(tree)
    assert base.files == 3 and base.bytes == sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())

    os.utime(tree / "img" / "a.png", None)  # touched: same content
    assert _fp(tree) == base
    copy = tmp_path / "copy"
    os.system(f"cp -r {tree} {copy}")  # another place, other times, same content
    assert _fp(copy).sha256 == base.sha256

    changes = {
        "added": lambda r: _file(r / "img" / "c.png", b"C"),
        "removed": lambda r: (r / "img" / "b.png").unlink(),
        "renamed": lambda r: (r / "img" / "b.png").rename(r / "img" / "b2.png"),
        "edited": lambda r: _file(r / "img" / "a.png", b"A" * 99 + b"a"),
        "relabelled in place": lambda r: _file(
            r / "labels.csv", "image,subject,expression\nimg/a.png,S1,happy\nimg/b.png,S1,fear\n"
        ),
    }
    seen = {base.sha256}
    for name, change in changes.items():
        r = tmp_path / name.replace(" ", "_")
        os.system(f"cp -a {tree} {r}")
        assert _fp(r).sha256 == base.sha256, name
        change(r)
        assert _fp(r).sha256 not in seen, name
        seen.add(_fp(r).sha256)


def test_cache_saves_hashing_and_never_changes_the_answer(tree, tmp_path, monkeypatch):
    # the files were just made: their change times are recent (racy window made short here)
    monkeypatch.setattr("fer.data.fingerprint.RACY_NS", 0)
    cache = tmp_path / "state" / "hashes.sqlite"
    cold, stats = compute_fingerprint(tree, cache)
    assert (stats.hashed, stats.cached) == (3, 0)
    warm, stats = compute_fingerprint(tree, cache)
    assert warm == cold and (stats.hashed, stats.cached) == (0, 3)
    assert warm == _fp(tree)  # the same with no cache at all

    # A same-size edit whose modification time is put back (cp -p, rsync -t do that): the
    # change time still differs, so the cache does not answer for it.
    labels = tree / "labels.csv"
    before = labels.stat()
    _file(labels, labels.read_text().replace("sad", "fea"), when=None)
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert labels.stat().st_size == before.st_size and labels.stat().st_mtime_ns == before.st_mtime_ns
    edited, stats = compute_fingerprint(tree, cache)
    assert edited.sha256 != cold.sha256 and stats.hashed == 1
    assert edited == _fp(tree)

    # Removed files leave the cache; a damaged cache file is replaced, not trusted.
    (tree / "img" / "b.png").unlink()
    compute_fingerprint(tree, cache)
    with sqlite3.connect(cache) as con:
        assert {r for (r,) in con.execute("SELECT rel FROM files")} == {"img/a.png", "labels.csv"}
    cache.write_bytes(b"not a database" * 100)
    assert compute_fingerprint(tree, cache)[0] == _fp(tree)


def test_recent_files_are_hashed_but_not_cached(tree, tmp_path, monkeypatch):
    """Git's racy-clean rule: a file changed within RACY_NS of the listing could change
    again within the same time stamp, so its hash is not kept."""
    cache = tmp_path / "hashes.sqlite"
    _file(tree / "img" / "new.png", b"N", when=None)  # just written
    assert (time.time_ns() - (tree / "img" / "new.png").stat().st_mtime_ns) < RACY_NS
    assert compute_fingerprint(tree, cache)[1].hashed == 4
    # (the fixture's files have old modification times but new change times: racy too)
    assert HashCache(cache).load(str(tree.resolve())) == {}
    monkeypatch.setattr("fer.data.fingerprint.RACY_NS", 0)  # as if the window had passed
    assert compute_fingerprint(tree, cache)[1].hashed == 4
    assert set(HashCache(cache).load(str(tree.resolve()))) == {"img/new.png", "img/a.png", "img/b.png", "labels.csv"}
    assert compute_fingerprint(tree, cache)[1].cached == 4


def test_fingerprint_file_is_rewritten_only_when_the_content_changes(tree, tmp_path):
    out = tmp_path / "data" / "fingerprints" / "dataset.json"
    cache = tmp_path / "hashes.sqlite"
    assert not fingerprint_is_current(tree, out, cache)
    changed, fp, _ = write_fingerprint(tree, out, cache)
    assert changed and json.loads(out.read_text()) == {
        "format": 1, "root": str(tree), "files": 3, "bytes": fp.bytes, "sha256": fp.sha256,
    }
    os.utime(out, (OLD, OLD))
    stamp = out.stat().st_mtime_ns
    assert fingerprint_is_current(tree, out, cache)
    assert write_fingerprint(tree, out, cache)[0] is False and out.stat().st_mtime_ns == stamp
    _file(tree / "img" / "c.png", b"C")
    assert not fingerprint_is_current(tree, out, cache)
    assert write_fingerprint(tree, out, cache)[0] is True and out.stat().st_mtime_ns != stamp
    assert len(out.read_bytes()) < 300  # small, whatever the dataset's size


def test_an_unreadable_file_is_named(tree, monkeypatch):
    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("fer.data.fingerprint.file_sha256", denied)
    with pytest.raises(DatasetError, match=r"a.png: cannot read \(Permission denied\)"):
        compute_fingerprint(tree)
