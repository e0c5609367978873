"""The real expression datasets, read in the layouts they are distributed in.

``data.format`` selects the reader (:func:`read_labelled`); each maps the dataset's own
codes to the canonical names of :mod:`fer.labels` and says what it did not read:
:class:`fer.data.manifest.DatasetRead` carries the records, the skipped files or rows
(each with a reason, listed in the alignment's QA table) and whether the dataset has
subject ids. A dataset without them (FER2013, RAF-DB, AffectNet, a folders dataset with
``subject_regex: ''``) gives every image its own subject id (its path); its official
split travels with each record (``Record.split``).

``ckplus`` (CK+, Lucey et al. 2010), ``root`` holding the three extracted archives::

    cohn-kanade-images/S005/001/S005_001_00000011.png
    Emotion/S005/001/S005_001_00000011_emotion.txt     one float: 0 neutral, 1 anger,
                                                       2 contempt, 3 disgust, 4 fear,
                                                       5 happy, 6 sadness, 7 surprise
    Landmarks/S005/001/S005_001_00000011_landmarks.txt optional, 68 points "x y"

    Only sequences with an emotion file are used (the others are listed as skipped): the
    last ``data.frames`` frames of each, labelled with its code, and with
    ``data.first_frame_neutral`` its first frame as neutral. Subject = the ``S005``
    folder. A frame's 68 landmarks, where given, are reduced to the 5 alignment points.

``oulu`` (Oulu-CASIA), ``root`` = one lighting/intensity folder such as
``OriginalImg/VL/Strong`` (the distribution's root or ``OriginalImg`` selects
``VL/Strong`` below it, the subset the literature uses): ``P001/Anger/000.jpeg``; the last
``data.frames`` frames of each ``P###/<expression>`` sequence; subject = ``P001``.

``fer2013`` (Goodfellow et al. 2013), ``root/fer2013.csv``: columns ``emotion`` (0 angry,
1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral), ``pixels`` (2304 grey values
of a 48 x 48 face crop) and ``Usage`` (Training -> train, PublicTest -> val,
PrivateTest -> test). With ``data.ferplus`` the labels are FERPlus's majority votes from
``root/fer2013new.csv`` (Barsoum et al. 2016; same rows, columns Usage, Image name,
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF): as in
FERPlus's own code, single votes are discarded, the label is the emotion with more than
half of the remaining votes, and rows whose majority is ``unknown`` or ``NF`` (not a
face), or that have no majority, are skipped with their reason. The images are face crops
already: they are resized, not aligned.

``rafdb`` (RAF-DB basic, Li et al. 2017), ``root`` holding ``basic/``:
``basic/EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``; 1 surprise, 2 fear,
3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral); ``data.rafdb_images: aligned``
reads ``basic/Image/aligned/train_00001_aligned.jpg`` (100 x 100 crops: resized, not
aligned), ``original`` reads ``basic/Image/original/train_00001.jpg`` aligned on the
first five lines of ``basic/Annotation/manual/train_00001_manu_attri.txt`` (left eye,
right eye, nose tip, left and right mouth corner). Split = the name's prefix.

``affectnet`` (Mollahosseini et al. 2017), ``root`` holding ``training.csv``,
``validation.csv`` and ``Manually_Annotated_Images/`` (the paths of the csv files'
``subDirectory_filePath`` column are relative to it): ``expression`` 0 neutral, 1 happy,
2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt; 8 (none), 9 (uncertain) and
10 (non-face) are not expressions and are skipped with their reason, and so is contempt
with ``data.affectnet_classes: 7``. The 68 ``facial_landmarks`` (``x;y;x;y;...``) give
the alignment points; a row without them is cut out along its face box
(``face_x, face_y, face_width, face_height``) and resized. training.csv -> train,
validation.csv -> test (AffectNet's test set is not public).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from fer.data.files import DatasetError
from fer.data.landmarks import reduce_68_to_5
from fer.data.manifest import DatasetRead, Record, _landmarks_for, _raise_problems, read_csv_dataset, read_folders
from fer.params import DataParams

__all__ = [
    "AFFECTNET_CODES",
    "CKPLUS_CODES",
    "CORPUS_IMAGE_EXTENSIONS",
    "FER2013_CODES",
    "FERPLUS_COLUMNS",
    "RAFDB_CODES",
    "read_affectnet",
    "read_ckplus",
    "read_corpus",
    "read_fer2013",
    "read_labelled",
    "read_oulu",
    "read_rafdb",
]

#: CK+ Emotion/*_emotion.txt codes.
CKPLUS_CODES = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness", 6: "sadness",
                7: "surprise"}
#: fer2013.csv ``emotion`` codes.
FER2013_CODES = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral"}
#: FERPlus fer2013new.csv vote columns -> canonical name (None: not an expression).
FERPLUS_COLUMNS = {"neutral": "neutral", "happiness": "happiness", "surprise": "surprise", "sadness": "sadness",
                   "anger": "anger", "disgust": "disgust", "fear": "fear", "contempt": "contempt",
                   "unknown": None, "NF": None}
FER2013_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
#: RAF-DB basic list_patition_label.txt codes (1-based).
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
#: AffectNet ``expression`` codes 0-7; 8-10 are not expressions (:data:`AFFECTNET_EXCLUDED`).
AFFECTNET_CODES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
                   7: "contempt"}
AFFECTNET_EXCLUDED = {8: "none", 9: "uncertain", 10: "non-face"}
AFFECTNET_FILES = {"training.csv": "train", "validation.csv": "test"}
AFFECTNET_IMAGES = "Manually_Annotated_Images"


def _code(text: str, codes: dict[int, str], where: str) -> int:
    """An integer code written as ``3``, ``3.0`` or ``3.0000000e+00``; must be in ``codes``."""
    try:
        value = float(text.strip())
    except ValueError:
        raise DatasetError(f"{where}: expression code {text.strip()!r} is not a number") from None
    if value != int(value) or int(value) not in codes:
        raise DatasetError(f"{where}: expression code {text.strip()!r} is not one of {sorted(codes)}")
    return int(value)


def _points_file(path: Path, n: int, first_lines_only: bool = False) -> np.ndarray:
    """``n`` points ``x y`` (whitespace- or tab-separated), one a line; with
    ``first_lines_only`` further lines (RAF-DB's attributes) are ignored."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the landmark file ({e})") from None
    if first_lines_only:
        lines = lines[:n]
    try:
        pts = np.array([[float(v) for v in ln.split()] for ln in lines], dtype=np.float64)
    except ValueError:
        raise DatasetError(f"{path}: a landmark line is not two numbers") from None
    if pts.shape != (n, 2) or not np.all(np.isfinite(pts)):
        raise DatasetError(f"{path}: expected {n} lines 'x y', found shape {pts.shape}")
    return pts


def _five(pts68: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in reduce_68_to_5(pts68))


def _images_in(folder: Path, exts: set[str], skipped: list[tuple[str, str]]) -> list[Path]:
    """The image files of one sequence folder, by name; other files are skipped (listed)."""
    out = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            continue
        if f.is_dir():
            skipped.append((str(f), "not an image: a folder inside a sequence folder"))
        elif f.suffix.lower() in exts:
            out.append(f)
        else:
            skipped.append((str(f), f"not an image: extension {f.suffix!r} is not in data.image_extensions"))
    return out


def _subfolders(folder: Path, skipped: list[tuple[str, str]], exts: set[str], problems: list[str]) -> list[Path]:
    """The sub-folders of ``folder``; a non-image file beside them is skipped (listed), an
    image file there is a problem (it belongs to no sequence)."""
    out = []
    for e in sorted(folder.iterdir()):
        if e.name.startswith("."):
            continue
        if e.is_dir():
            out.append(e)
        elif e.suffix.lower() in exts:
            problems.append(f"{e}: an image outside the sequence folders")
        else:
            skipped.append((str(e), f"not an image: extension {e.suffix!r} is not in data.image_extensions"))
    return out


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found ({what})")


def _sequence_frames(
    frames: list[Path], n: int, seq: Path, skipped: list[tuple[str, str]], first: bool = False
) -> list[Path]:
    """The last ``n`` frames (and with ``first`` the first); the count of the others is listed."""
    used = frames[-n:]
    unused = len(frames) - len(used) - (1 if first and len(frames) > n else 0)
    if unused > 0:
        skipped.append((str(seq), f"frames not used: {unused} of {len(frames)} frames (data.frames = {n})"))
    return used


#: Image extensions of a face-recognition corpus in the folder-per-identity layout.
CORPUS_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_corpus(root: str | Path) -> DatasetRead:
    """The face-recognition corpus (``corpus.root``): ``labels.csv`` (columns image, subject;
    any expression column is never read) when the root has one, else one folder per
    identity, ``<identity>/<image>``, as CASIA-WebFace, VGGFace2 and LFW ship (files at the
    root and non-image files are skipped and listed; an image directly at the root belongs
    to no identity and is an error). A 5-point landmark file beside an image is used."""
    root = Path(root)
    if (root / "labels.csv").is_file():
        return DatasetRead(read_csv_dataset(root, labelled=False), [], has_subjects=True)
    _require_dir(root, "corpus.root")
    exts = set(CORPUS_IMAGE_EXTENSIONS)
    problems: list[str] = []
    skipped: list[tuple[str, str]] = []
    records: list[Record] = []
    for ident in _subfolders(root, skipped, exts, problems):
        for f in _images_in(ident, exts, skipped):
            records.append(Record(str(f), ident.name, None, _landmarks_for(str(f))))
    _raise_problems(problems, str(root))
    if not records:
        raise DatasetError(f"{root}: neither labels.csv (columns image, subject) nor <identity>/<image> folders with "
                           f"images ({', '.join(CORPUS_IMAGE_EXTENSIONS)}): corpus.root is the face-recognition corpus")
    return DatasetRead(records, skipped, has_subjects=True)


def read_ckplus(root: str | Path, data: DataParams) -> DatasetRead:
    """CK+ (module docstring)."""
    root = Path(root)
    images, emotion, marks = root / "cohn-kanade-images", root / "Emotion", root / "Landmarks"
    _require_dir(images, "CK+ needs cohn-kanade-images/ (extended-cohn-kanade-images.zip) in data.root")
    _require_dir(emotion, "CK+ needs Emotion/ (Emotion_labels.zip) in data.root")
    exts = {e.lower() for e in data.image_extensions}
    problems: list[str] = []
    skipped: list[tuple[str, str]] = []
    records: list[Record] = []

    def points(frame: Path, subject: str, seq: str) -> tuple[tuple[float, float], ...] | None:
        lm = marks / subject / seq / f"{frame.stem}_landmarks.txt"
        if not lm.is_file():
            return None
        return _five(_points_file(lm, 68))

    for subj in _subfolders(images, skipped, exts, problems):
        for seq in _subfolders(subj, skipped, exts, problems):
            label_dir = emotion / subj.name / seq.name
            labels = sorted(label_dir.glob("*_emotion.txt")) if label_dir.is_dir() else []
            if not labels:
                skipped.append((str(seq), "unlabelled sequence: no Emotion/.../*_emotion.txt"))
                continue
            if len(labels) > 1:
                problems.append(f"{label_dir}: {len(labels)} emotion files, expected one")
                continue
            try:
                code = _code(labels[0].read_text(), CKPLUS_CODES, str(labels[0]))
            except DatasetError as e:
                problems.append(str(e))
                continue
            frames = _images_in(seq, exts, skipped)
            if not frames:
                problems.append(f"{seq}: labelled by {labels[0]} but holds no image")
                continue
            used = [(f, CKPLUS_CODES[code]) for f in _sequence_frames(
                frames, data.frames, seq, skipped, data.first_frame_neutral)]
            if data.first_frame_neutral and len(frames) > data.frames:
                used.insert(0, (frames[0], "neutral"))
            for f, label in used:
                try:
                    pts = points(f, subj.name, seq.name)
                except DatasetError as e:
                    problems.append(str(e))
                    continue
                records.append(Record(str(f), subj.name, label, None, points=pts))
    _raise_problems(problems, str(root))
    if not records:
        raise DatasetError(f"{root}: no labelled CK+ sequence found (Emotion/<subject>/<sequence>/*_emotion.txt)")
    return DatasetRead(records, skipped, has_subjects=True)


def read_oulu(root: str | Path, data: DataParams) -> DatasetRead:
    """Oulu-CASIA (module docstring)."""
    from fer.labels import UnknownLabelError, canonical_label

    root = Path(root)
    _require_dir(root, "data.root")
    if not any(d.is_dir() and re.fullmatch(r"P\d+", d.name) for d in root.iterdir()):
        # the distribution's root (or OriginalImg/): the literature's subset, VL/Strong, below it
        below = [d for d in (root / "VL" / "Strong", root / "OriginalImg" / "VL" / "Strong") if d.is_dir()]
        if not below:
            raise DatasetError(f"{root}: no P###/ subject folder, and no VL/Strong or OriginalImg/VL/Strong below it: "
                               "data.root is the Oulu-CASIA folder that holds P001/, P002/, ... (e.g. "
                               "OriginalImg/VL/Strong, the subset the literature uses)")
        root = below[0]
    exts = {e.lower() for e in data.image_extensions}
    problems: list[str] = []
    skipped: list[tuple[str, str]] = []
    records: list[Record] = []
    for subj in _subfolders(root, skipped, exts, problems):
        for seq in _subfolders(subj, skipped, exts, problems):
            try:
                label = canonical_label(seq.name, data.label_map, where=str(seq))
            except UnknownLabelError as e:
                problems.append(str(e))
                continue
            frames = _images_in(seq, exts, skipped)
            if not frames:
                problems.append(f"{seq}: sequence folder holds no image")
                continue
            for f in _sequence_frames(frames, data.frames, seq, skipped):
                records.append(Record(str(f), subj.name, label, None))
    _raise_problems(problems, str(root))
    if not records:
        raise DatasetError(f"{root}: no P###/<expression>/ sequence found (data.root is one folder such as VL/Strong)")
    return DatasetRead(records, skipped, has_subjects=True)


def _csv_rows(path: Path, need: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DatasetError(f"{path}: not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        for n, row in enumerate(reader, start=2):
            yield n, row


def _ferplus_label(row: dict[str, str], where: str) -> tuple[str | None, str]:
    """FERPlus majority (module docstring): (canonical label, '') or (None, skip reason)."""
    try:
        votes = {c: float(row[c] or 0) for c in FERPLUS_COLUMNS}
    except ValueError:
        raise DatasetError(f"{where}: a vote count is not a number") from None
    votes = {c: (v if v > 1 else 0.0) for c, v in votes.items()}  # a single vote is an outlier
    total = sum(votes.values())
    best = max(votes, key=lambda c: votes[c])
    if total <= 0 or votes[best] <= 0.5 * total:
        return None, "FERPlus no majority: no emotion has more than half of the votes"
    if best == "unknown":
        return None, "FERPlus majority unknown: the annotators' majority is 'unknown'"
    if best == "NF":
        return None, "FERPlus majority not a face: the annotators' majority is 'NF'"
    return FERPLUS_COLUMNS[best], ""


def read_fer2013(root: str | Path, data: DataParams) -> DatasetRead:
    """FER2013, optionally with FERPlus labels (module docstring)."""
    root = Path(root)
    table = root / "fer2013.csv"
    problems: list[str] = []
    skipped: list[tuple[str, str]] = []
    records: list[Record] = []
    plus: list[tuple[int, dict[str, str]]] | None = None
    if data.ferplus:
        plus = list(_csv_rows(root / "fer2013new.csv", ["Usage", "Image name", *FERPLUS_COLUMNS]))
    count = 0
    for i, (n, row) in enumerate(_csv_rows(table, ["emotion", "pixels", "Usage"])):
        count += 1
        where = f"{table}:{n}"
        path = f"{table}#{i}"
        usage = (row["Usage"] or "").strip()
        if usage not in FER2013_USAGE:
            problems.append(f"{where}: Usage {usage!r} is not one of {sorted(FER2013_USAGE)}")
            continue
        try:
            values = np.array(row["pixels"].split(), dtype=np.int64)
        except (ValueError, AttributeError):
            problems.append(f"{where}: pixels are not integers")
            continue
        if values.size != 48 * 48 or values.min() < 0 or values.max() > 255:
            problems.append(f"{where}: pixels must be 2304 values 0-255 (48 x 48), found {values.size}")
            continue
        if plus is None:
            try:
                label = FER2013_CODES[_code(row["emotion"] or "", FER2013_CODES, where)]
            except DatasetError as e:
                problems.append(str(e))
                continue
        else:
            if i >= len(plus):
                problems.append(f"{where}: fer2013new.csv has only {len(plus)} rows (FERPlus labels every row)")
                continue
            pn, prow = plus[i]
            pwhere = f"{root / 'fer2013new.csv'}:{pn}"
            if (prow["Usage"] or "").strip() != usage:
                problems.append(f"{pwhere}: Usage {prow['Usage']!r} but {where} says {usage!r} (rows out of order?)")
                continue
            try:
                label, reason = _ferplus_label(prow, pwhere)
            except DatasetError as e:
                problems.append(str(e))
                continue
            if label is None:
                skipped.append((path, reason))
                continue
        pixels = values.astype(np.uint8).reshape(48, 48)
        records.append(Record(path, path, label, None, split=FER2013_USAGE[usage], crop=True, pixels=pixels))
    if plus is not None and len(plus) > count:
        problems.append(f"{root / 'fer2013new.csv'}: {len(plus)} rows but fer2013.csv has {count}")
    _raise_problems(problems, str(table))
    if not records:
        raise DatasetError(f"{table}: no rows")
    return DatasetRead(records, skipped, has_subjects=False)


def read_rafdb(root: str | Path, data: DataParams) -> DatasetRead:
    """RAF-DB basic (module docstring)."""
    root = Path(root)
    basic = root / "basic"
    table = basic / "EmoLabel" / "list_patition_label.txt"
    if not table.is_file():
        raise DatasetError(f"{table}: not found (data.root must hold RAF-DB's basic/ folder)")
    aligned = data.rafdb_images == "aligned"
    folder = basic / "Image" / ("aligned" if aligned else "original")
    _require_dir(folder, f"data.rafdb_images is {data.rafdb_images!r}")
    problems: list[str] = []
    records: list[Record] = []
    seen: set[str] = set()
    for n, line in enumerate(table.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{table}:{n}"
        parts = line.split()
        if len(parts) != 2:
            problems.append(f"{where}: expected '<image> <code>', got {line!r}")
            continue
        name, code = parts
        stem = os.path.splitext(name)[0]
        split = "train" if stem.startswith("train_") else "test" if stem.startswith("test_") else None
        if split is None:
            problems.append(f"{where}: image name {name!r} starts with neither train_ nor test_")
            continue
        if name in seen:
            problems.append(f"{where}: {name} listed twice")
            continue
        seen.add(name)
        try:
            label = RAFDB_CODES[_code(code, RAFDB_CODES, where)]
        except DatasetError as e:
            problems.append(str(e))
            continue
        image = folder / (f"{stem}_aligned{os.path.splitext(name)[1]}" if aligned else name)
        if not image.is_file():
            problems.append(f"{where}: image file {image} does not exist")
            continue
        pts = None
        if not aligned:
            lm = basic / "Annotation" / "manual" / f"{stem}_manu_attri.txt"
            if not lm.is_file():
                problems.append(f"{where}: landmark file {lm} does not exist (data.rafdb_images: original)")
                continue
            try:
                pts = tuple((float(x), float(y)) for x, y in _points_file(lm, 5, first_lines_only=True))
            except DatasetError as e:
                problems.append(str(e))
                continue
        records.append(Record(str(image), stem, label, None, split=split, points=pts, crop=aligned))
    _raise_problems(problems, str(table))
    if not records:
        raise DatasetError(f"{table}: no rows")
    return DatasetRead(records, [], has_subjects=False)


def read_affectnet(root: str | Path, data: DataParams) -> DatasetRead:
    """AffectNet (module docstring)."""
    root = Path(root)
    images = root / AFFECTNET_IMAGES
    _require_dir(images, "AffectNet's images, the folder the csv paths are relative to")
    need = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks", "expression"]
    problems: list[str] = []
    skipped: list[tuple[str, str]] = []
    records: list[Record] = []
    codes = dict(AFFECTNET_CODES) if data.affectnet_classes == 8 else {
        k: v for k, v in AFFECTNET_CODES.items() if v != "contempt"}
    for name, split in AFFECTNET_FILES.items():
        table = root / name
        for n, row in _csv_rows(table, need):
            where = f"{table}:{n}"
            rel = (row["subDirectory_filePath"] or "").strip()
            path = str(images / rel)
            try:
                code = _code(row["expression"] or "", {**AFFECTNET_CODES, **AFFECTNET_EXCLUDED}, where)
            except DatasetError as e:
                problems.append(str(e))
                continue
            if code in AFFECTNET_EXCLUDED:
                skipped.append((path, f"AffectNet code {code} ({AFFECTNET_EXCLUDED[code]}): not an expression"))
                continue
            if code not in codes:
                skipped.append((path, f"AffectNet code {code} (contempt): left out by data.affectnet_classes = 7"))
                continue
            if not rel or not os.path.isfile(path):
                problems.append(f"{where}: image file {path} does not exist")
                continue
            pts = None
            marks = (row["facial_landmarks"] or "").strip()
            if marks:
                try:
                    values = [float(v) for v in marks.split(";") if v.strip()]
                except ValueError:
                    problems.append(f"{where}: facial_landmarks is not a list of numbers")
                    continue
                if len(values) != 136:
                    problems.append(f"{where}: facial_landmarks holds {len(values)} numbers, expected 136 (68 points)")
                    continue
                pts = _five(np.array(values, dtype=np.float64).reshape(68, 2))
            try:
                box = tuple(int(float(row[k])) for k in ("face_x", "face_y", "face_width", "face_height"))
            except (TypeError, ValueError):
                problems.append(f"{where}: the face box is not four numbers")
                continue
            if box[2] <= 0 or box[3] <= 0:
                problems.append(f"{where}: the face box {box} is empty")
                continue
            records.append(Record(path, rel, codes[code], None, split=split, points=pts, box=box))
    _raise_problems(problems, str(root))
    if not records:
        raise DatasetError(f"{root}: no expression rows in {list(AFFECTNET_FILES)}")
    return DatasetRead(records, skipped, has_subjects=False)


READERS: dict[str, Callable[[Path, DataParams], DatasetRead]] = {
    "ckplus": read_ckplus,
    "oulu": read_oulu,
    "fer2013": read_fer2013,
    "rafdb": read_rafdb,
    "affectnet": read_affectnet,
}


def read_labelled(data: DataParams) -> DatasetRead:
    """Read the labelled dataset that the ``data`` section describes, in any format."""
    root = Path(data.root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if data.format in ("demo", "csv"):
        return DatasetRead(read_csv_dataset(root, data.label_map, labelled=True), [], has_subjects=True)
    if data.format == "folders":
        return read_folders(root, data.subject_regex, data.image_extensions, data.label_map)
    if data.format in READERS:
        return READERS[data.format](root, data)
    raise DatasetError(f"unknown data.format {data.format!r}")
