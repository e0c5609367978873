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
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fer.data.landmarks import SUFFIX as LANDMARK_SUFFIX
from fer.data.landmarks import landmark_path
from fer.labels import UnknownLabelError, canonical_label, dataset_classes

MAX_LISTED = 20


class DatasetError(ValueError):
    """The input dataset is malformed; the message lists the offending files."""


@dataclass(frozen=True)
class Record:
    """One input image."""

    path: str  # path of the image file (root joined with the relative path)
    subject: str
    label: str | None  # canonical expression name, None for unlabelled sets
    landmarks_path: str | None  # landmark file beside the image, if it exists


def _raise_problems(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{what}: {len(problems)} problem(s):\n{shown}{more}")


def _landmarks_for(image: Path) -> str | None:
    lm = landmark_path(image)
    return str(lm) if lm.exists() else None


def read_csv_dataset(
    root: str | Path, label_map: Mapping[str, str] | None = None, labelled: bool = True
) -> list[Record]:
    """Read ``<root>/labels.csv`` (columns image, subject[, expression])."""
    root = Path(root)
    table = root / "labels.csv"
    if not table.is_file():
        raise DatasetError(f"{table}: not found (the csv format needs labels.csv in the dataset root)")
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        need = ["image", "subject"] + (["expression"] if labelled else [])
        missing = [c for c in need if c not in columns]
        if missing:
            raise DatasetError(f"{table}: missing column(s) {missing}; found {columns}")
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{table}: no rows")
    problems: list[str] = []
    records: list[Record] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        rel = (row.get("image") or "").strip()
        subject = (row.get("subject") or "").strip()
        where = f"{table}:{n}"
        if not rel:
            problems.append(f"{where}: empty image path")
            continue
        if not subject:
            problems.append(f"{where}: empty subject id for {rel}")
            continue
        if rel in seen:
            problems.append(f"{where}: image {rel} listed twice")
            continue
        seen.add(rel)
        image = root / rel
        if not image.is_file():
            problems.append(f"{where}: image file {image} does not exist")
            continue
        label = None
        if labelled:
            try:
                label = canonical_label(row.get("expression") or "", label_map, where=where)
            except UnknownLabelError as e:
                problems.append(str(e))
                continue
        records.append(Record(str(image), subject, label, _landmarks_for(image)))
    _raise_problems(problems, str(table))
    return records


def read_folder_dataset(
    root: str | Path,
    subject_regex: str,
    image_extensions: Sequence[str],
    label_map: Mapping[str, str] | None = None,
) -> list[Record]:
    """Read ``<root>/<class>/<image>`` with subject ids parsed from file names."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    pattern = re.compile(subject_regex)
    exts = {e.lower() for e in image_extensions}
    problems: list[str] = []
    records: list[Record] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            problems.append(f"{entry}: a file directly in the dataset root (expected one folder per class)")
            continue
        try:
            label = canonical_label(entry.name, label_map, where=str(entry))
        except UnknownLabelError as e:
            problems.append(str(e))
            continue
        for path in sorted(entry.rglob("*")):
            if path.is_dir() or path.name.startswith("."):
                continue
            if path.name.endswith(LANDMARK_SUFFIX):
                continue
            if path.suffix.lower() not in exts:
                problems.append(
                    f"{path}: not an image (extension {path.suffix!r} is not in data.image_extensions)"
                )
                continue
            m = pattern.search(path.name)
            if not m or not m.group(1):
                problems.append(f"{path}: data.subject_regex {subject_regex!r} does not match the file name")
                continue
            records.append(Record(str(path), m.group(1), label, _landmarks_for(path)))
    _raise_problems(problems, str(root))
    if not records:
        raise DatasetError(f"{root}: no images found")
    return records


def read_dataset(
    fmt: str,
    root: str | Path,
    *,
    subject_regex: str = r"^(S\d+)_",
    image_extensions: Sequence[str] = (".png", ".jpg", ".jpeg"),
    label_map: Mapping[str, str] | None = None,
) -> list[Record]:
    """Read a labelled expression dataset in format ``demo``, ``csv`` or ``folders``."""
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
