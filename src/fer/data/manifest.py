"""Dataset input formats -> one list of records (image path, subject, label, landmarks).

Two formats are read (see the README, "Your own dataset"):

``csv`` (also what the demo generator writes)
    ``<root>/labels.csv`` with columns ``image`` (path relative to root), ``subject`` and,
    for labelled sets, ``expression``. RAF-DB / AffectNet / FER2013 list files convert
    to this with a few lines.

``folders``
    ``<root>/<class name>/<file>``: one folder per expression class; the subject id is
    group 1 of ``subject_regex`` matched on the file name (for example ``^(S\\d+)_`` for
    CK+-style names such as ``S005_001_00000011.png``).

Either format may ship a 5-point landmark file beside each image
(``fer.data.landmarks``). Class names map to the canonical label set
(``fer.labels``); unknown names, missing files, unparseable subject ids and unexpected
files are errors that name the file. Nothing is skipped silently.
"""

from __future__ import annotations

import csv
import os
import re
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer.data.files import DatasetError, join, normalise_relpath, walk_files
from fer.data.landmarks import SUFFIX as LANDMARK_SUFFIX
from fer.labels import UnknownLabelError, canonical_label, dataset_classes

__all__ = [
    "DatasetError",
    "DatasetRead",
    "Record",
    "SPLIT_NAMES",
    "read_csv_dataset",
    "read_dataset",
    "read_folder_dataset",
    "resolve_classes",
]

MAX_LISTED = 20


@dataclass(frozen=True)
class Record:
    """One input image."""

    path: str  # path of the image file (root joined with the relative path)
    subject: str
    label: str | None  # canonical expression name, None for unlabelled sets
    landmarks_path: str | None  # landmark file beside the image, if it exists
    #: The dataset's official split of this image ('train' | 'val' | 'test'), None without one.
    split: str | None = None
    #: Five annotated points (``fer.data.landmarks`` order) read from the dataset's own
    #: annotation (CK+ 68-point files, RAF-DB manual 5 points, AffectNet's 68 points).
    points: tuple[tuple[float, float], ...] | None = None
    #: The image is already a face crop (FER2013, RAF-DB aligned): resized, not aligned,
    #: unless ``align.landmarks`` is ``detector``.
    crop: bool = False
    #: The decoded grey pixels when the dataset ships no image file (FER2013's csv).
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: A face box (x, y, w, h) in the image: the face is cut out of the image and used as
    #: a crop when the record has no points (AffectNet rows without landmarks).
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class DatasetRead:
    """A labelled dataset as read: its records, the files that were not read as images
    (``(path, reason)``: readme and licence files, rows a dataset marks as not an
    expression; listed in the QA table, never fatal), and whether its subject ids are
    real (False: every image is its own subject, see the README)."""

    records: list[Record]
    skipped: list[tuple[str, str]]
    has_subjects: bool = True


def _raise_problems(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{what}: {len(problems)} problem(s):\n{shown}{more}", problems)


def _landmarks_for(image: str) -> str | None:
    """The landmark file beside ``image`` (``fer.data.landmarks.landmark_path``, on
    strings: this runs once per image), or None."""
    lm = os.path.splitext(image)[0] + LANDMARK_SUFFIX
    return lm if os.path.exists(lm) else None


def _read_table(table: Path, need: Sequence[str]) -> tuple[list[str], list[dict]]:
    """The rows of a csv list file. UTF-8 with or without a byte-order mark (Excel writes
    one); every row must have as many fields as the header."""
    try:
        with open(table, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, restkey="\0extra", restval=None)
            columns = list(reader.fieldnames or [])
            missing = [c for c in need if c not in columns]
            if missing:
                raise DatasetError(f"{table}: missing column(s) {missing}; found {columns}")
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{table}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "save it as UTF-8 (for example 'CSV UTF-8' in Excel)"
        ) from None
    except csv.Error as e:
        raise DatasetError(f"{table}: not a readable csv file ({e})") from None
    return columns, rows


def read_csv_dataset(
    root: str | Path, label_map: Mapping[str, str] | None = None, labelled: bool = True
) -> list[Record]:
    """Read ``<root>/labels.csv`` (columns image, subject[, expression]).

    Image paths are relative to ``root`` and are normalised before use
    (:func:`fer.data.files.normalise_relpath`: ``./img/x.png`` is ``img/x.png``); an
    absolute path or one that leaves the root is an error, and so is an image listed twice
    (under any spelling, or through a link to the same file)."""
    root = Path(root)
    base = str(root)
    table = root / "labels.csv"
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if not table.is_file():
        raise DatasetError(f"{table}: not found (the csv format needs labels.csv in the dataset root)")
    columns, rows = _read_table(table, ["image", "subject"] + (["expression"] if labelled else []))
    if not rows:
        raise DatasetError(f"{table}: no rows")
    problems: list[str] = []
    records: list[Record] = []
    seen: dict[str, int] = {}  # normalised path -> line
    files: dict[tuple[int, int], tuple[int, str]] = {}  # (device, inode) -> (line, path)
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{table}:{n}"
        if "\0extra" in row or any(row.get(c) is None for c in columns):
            got = len(columns) + len(row.get("\0extra") or []) - sum(row.get(c) is None for c in columns)
            problems.append(f"{where}: {got} field(s), the header has {len(columns)} (a comma inside an unquoted value?)")
            continue
        raw = row.get("image") or ""
        subject = (row.get("subject") or "").strip()
        try:
            rel = normalise_relpath(raw)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        if not subject:
            problems.append(f"{where}: empty subject id for {rel}")
            continue
        if rel in seen:
            spelled = f" (as {raw.strip()!r})" if raw.strip() != rel else ""
            problems.append(f"{where}: image {rel}{spelled} listed twice (first on line {seen[rel]})")
            continue
        seen[rel] = n
        image = join(base, rel)
        try:
            st = os.stat(image)
        except OSError:
            problems.append(f"{where}: image file {image} does not exist")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{where}: {image} is not a file")
            continue
        same = files.get((st.st_dev, st.st_ino))
        if same is not None:
            problems.append(f"{where}: image {rel} is the same file as {same[1]} on line {same[0]} (a link?)")
            continue
        files[(st.st_dev, st.st_ino)] = (n, rel)
        label = None
        if labelled:
            try:
                label = canonical_label(row.get("expression") or "", label_map, where=where)
            except UnknownLabelError as e:
                problems.append(str(e))
                continue
        records.append(Record(image, subject, label, _landmarks_for(image)))
    _raise_problems(problems, str(table))
    return records


#: Top-level folder names of the split-first export layout (``train/<class>/*``) -> split.
SPLIT_NAMES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _split_layout(root: Path) -> list[tuple[Path, str | None]]:
    """The class-folder parents of a folders dataset: ``[(root, None)]`` for
    ``<root>/<class>/*``, or ``[(root/train, 'train'), (root/test, 'test'), ...]`` when
    every top-level folder is a split name (``SPLIT_NAMES``). A mix is an error."""
    dirs = [e for e in sorted(root.iterdir()) if not e.name.startswith(".") and e.is_dir()]
    splits = [e for e in dirs if e.name.lower() in SPLIT_NAMES]
    if not splits:
        return [(root, None)]
    if len(splits) != len(dirs):
        others = [e.name for e in dirs if e not in splits]
        raise DatasetError(
            f"{root}: top-level folders {[e.name for e in splits]} are split names but {others} are not; "
            "use either <root>/<class>/<image> or <root>/<split>/<class>/<image> (split: train, val, test)"
        )
    return [(e, SPLIT_NAMES[e.name.lower()]) for e in splits]


def read_folder_dataset(
    root: str | Path,
    subject_regex: str,
    image_extensions: Sequence[str],
    label_map: Mapping[str, str] | None = None,
) -> list[Record]:
    """The records of :func:`read_folders` (the skipped files are dropped from the answer;
    :func:`read_folders` lists them)."""
    return read_folders(root, subject_regex, image_extensions, label_map).records


def read_folders(
    root: str | Path,
    subject_regex: str,
    image_extensions: Sequence[str],
    label_map: Mapping[str, str] | None = None,
) -> DatasetRead:
    """Read ``<root>/<class>/<image>`` or ``<root>/<split>/<class>/<image>`` (split
    ``train``, ``val`` or ``test``: the official split travels with each record).

    The subject id is group 1 of ``subject_regex`` on the file name; an empty
    ``subject_regex`` means the dataset has no subject ids: every image is its own
    subject (its path relative to the root) and ``has_subjects`` is False.

    Sub-folders of a class folder are read too, symbolic links followed
    (:func:`fer.data.files.walk_files`); a class folder without images, an image file
    directly in the root, and the same file reached twice (through links), are errors.
    Files with an extension that is not in ``image_extensions`` (a readme, a licence, a
    label list) in the root or in a class folder are skipped and listed in ``skipped``.
    Hidden files (names starting with ``.``) and landmark files are not images."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    pattern = re.compile(subject_regex) if subject_regex else None
    exts = {e.lower() for e in image_extensions}
    problems: list[str] = []
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    files: dict[tuple[int, int], str] = {}
    base = str(root)

    def not_image(path: str) -> bool:
        suffix = os.path.splitext(path)[1]
        if suffix.lower() in exts:
            return False
        skipped.append((path, f"not an image: extension {suffix!r} is not in data.image_extensions"))
        return True

    layout = _split_layout(root)
    if layout[0][1] is not None:  # files beside the split folders
        for entry in sorted(root.iterdir()):
            if not entry.name.startswith(".") and not entry.is_dir() and not not_image(str(entry)):
                problems.append(f"{entry}: an image directly in the dataset root (expected <split>/<class>/<image>)")
    for parent, split in layout:
        for entry in sorted(parent.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                if not not_image(str(entry)):
                    problems.append(
                        f"{entry}: an image directly in {'the dataset root' if split is None else 'a split folder'} "
                        "(expected one folder per class)"
                    )
                continue
            try:
                label = canonical_label(entry.name, label_map, where=str(entry))
            except UnknownLabelError as e:
                problems.append(str(e))
                continue
            n_images = 0
            try:
                listed = list(walk_files(entry))
            except DatasetError as e:
                problems.extend(e.problems)
                continue
            for f in listed:
                path, name = f.path, os.path.basename(f.path)
                if name.startswith(".") or name.endswith(LANDMARK_SUFFIX) or not_image(path):
                    continue
                n_images += 1
                if f.broken:
                    problems.append(f"{path}: broken symbolic link (to {f.link_target})")
                    continue
                assert f.st is not None
                key = (f.st.st_dev, f.st.st_ino)
                if key in files:
                    problems.append(f"{path}: the same file as {files[key]} (a link?); each image must appear once")
                    continue
                files[key] = path
                if pattern is None:
                    subject = os.path.relpath(path, base)
                else:
                    m = pattern.search(name)
                    if not m or not m.group(1):
                        problems.append(f"{path}: data.subject_regex {subject_regex!r} does not match the file name")
                        continue
                    subject = m.group(1)
                records.append(Record(path, subject, label, _landmarks_for(path), split=split))
            if n_images == 0:
                problems.append(
                    f"{entry}: class folder holds no images (extensions {sorted(exts)}); add its images, "
                    "or remove the folder"
                )
    _raise_problems(problems, str(root))
    if not records:
        raise DatasetError(f"{root}: no images found")
    return DatasetRead(records, skipped, has_subjects=pattern is not None)


def read_dataset(
    fmt: str,
    root: str | Path,
    *,
    subject_regex: str = r"^(S\d+)_",
    image_extensions: Sequence[str] = (".png", ".jpg", ".jpeg"),
    label_map: Mapping[str, str] | None = None,
) -> list[Record]:
    """Read a labelled expression dataset in format ``demo``, ``csv`` or ``folders``
    (the dataset-specific formats: :func:`fer.data.formats.read_labelled`)."""
    if fmt in ("demo", "csv"):
        return read_csv_dataset(root, label_map, labelled=True)
    if fmt == "folders":
        return read_folder_dataset(root, subject_regex, image_extensions, label_map)
    raise DatasetError(f"unknown data.format {fmt!r} (expected demo, csv or folders)")


def resolve_classes(records: Sequence[Record], requested: Sequence[str] = ()) -> list[str]:
    """Ordered class list of a labelled dataset; raises on empty requested classes."""
    found = Counter(r.label for r in records if r.label is not None)
    try:
        return dataset_classes(found, requested)
    except (ValueError, UnknownLabelError) as e:
        raise DatasetError(str(e)) from e
