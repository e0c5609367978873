"""Replicas of the real datasets' distributed layouts, built from the demo's faces (csv
layout: labels.csv with image, subject, expression, and a 5-point ``.landmarks.txt`` per
image): the file naming, label codes and side files of each dataset's documentation, so
that a reader is run on exactly what a user unpacks.

Each builder writes the replica under ``root`` and returns what the pipeline must make of
it: key -> canonical label, where the key is :func:`manifest_key` of the aligned
manifest's ``path`` for that format (the replica's own file naming).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

CK_CODES = {"neutral": 0, "anger": 1, "contempt": 2, "disgust": 3, "fear": 4, "happiness": 5, "sadness": 6,
            "surprise": 7}
OULU_FOLDERS = {"anger": "Anger", "disgust": "Disgust", "fear": "Fear", "happiness": "Happiness",
                "sadness": "Sadness", "surprise": "Surprise"}
FER2013_CODES = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "sadness": 4, "surprise": 5, "neutral": 6}
RAFDB_CODES = {"surprise": 1, "fear": 2, "disgust": 3, "happiness": 4, "sadness": 5, "anger": 6, "neutral": 7}
AFFECTNET_CODES = {"neutral": 0, "happiness": 1, "sadness": 2, "surprise": 3, "fear": 4, "disgust": 5, "anger": 6,
                   "contempt": 7}


def demo_rows(expr: Path) -> list[dict[str, str]]:
    """The demo set's rows (image, subject, expression), in file order."""
    with open(expr / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def five_points(expr: Path, image: str) -> np.ndarray:
    """The demo image's 5 alignment points (x, y)."""
    from fer.data.landmarks import read_landmarks

    return np.asarray(read_landmarks(expr / (image[: -len(".png")] + ".landmarks.txt")), dtype=float)


def points68(five) -> np.ndarray:
    """68 points (iBUG order) whose 5-point reduction is ``five``: eye centres from
    36-41 / 42-47, nose tip 30, mouth corners 48 / 54."""
    p = np.tile(np.asarray(five[2], dtype=float), (68, 1))
    p[36:42], p[42:48], p[30], p[48], p[54] = five[0], five[1], five[2], five[3], five[4]
    return p


def ckplus(expr: Path, root: Path) -> dict[str, str]:
    """CK+: per subject and expression one sequence (frame 1 the subject's neutral face,
    frames 2-4 the expression), its Emotion file on the last frame, 68-point Landmarks
    files, a readme beside the images. Labels with data.frames 3 and
    data.first_frame_neutral true. Key: the frame's file name."""
    rows = demo_rows(expr)
    neutral = {r["subject"]: r["image"] for r in rows if r["expression"] == "neutral"}
    subjects = {s: f"S{i + 5:03d}" for i, s in enumerate(sorted(neutral))}
    expected = {}
    for n, r in enumerate(r for r in rows if r["expression"] != "neutral"):
        subj, seq = subjects[r["subject"]], f"{n + 1:03d}"
        for k, image in enumerate([neutral[r["subject"]], r["image"], r["image"], r["image"]], start=1):
            name = f"{subj}_{seq}_{k:08d}.png"
            dest = root / "cohn-kanade-images" / subj / seq / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(expr / image, dest)
            marks = root / "Landmarks" / subj / seq / f"{subj}_{seq}_{k:08d}_landmarks.txt"
            marks.parent.mkdir(parents=True, exist_ok=True)
            marks.write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points68(five_points(expr, image))))
            expected[name] = "neutral" if k == 1 else r["expression"]
        emotion = root / "Emotion" / subj / seq / f"{subj}_{seq}_00000004_emotion.txt"
        emotion.parent.mkdir(parents=True, exist_ok=True)
        emotion.write_text(f"   {CK_CODES[r['expression']]:.7e}\n")
    (root / "cohn-kanade-images" / "ReadMe.txt").write_text("a readme shipped beside the images\n")
    return expected


def oulu(expr: Path, root: Path) -> dict[str, str]:
    """Oulu-CASIA VL/Strong: P001/Anger/000.jpeg ... per subject and expression (no
    neutral class; frame 000 the subject's neutral face, then the expression; data.frames 3
    keeps the last three). No landmark files (Oulu ships none): the detector aligns.
    Key: subject/Expression/frame."""
    rows = demo_rows(expr)
    neutral = {r["subject"]: r["image"] for r in rows if r["expression"] == "neutral"}
    subjects = {s: f"P{i + 1:03d}" for i, s in enumerate(sorted(neutral))}
    base = root / "OriginalImg" / "VL" / "Strong"
    seqs: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["expression"] != "neutral":
            seqs.setdefault((r["subject"], r["expression"]), []).append(r["image"])
    expected = {}
    for (subject, expression), images in sorted(seqs.items()):
        frames = [neutral[subject], *images, images[-1]][-4:]
        for k, image in enumerate(frames):
            rel = f"{subjects[subject]}/{OULU_FOLDERS[expression]}/{k:03d}.jpeg"
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.open(expr / image).convert("RGB").save(base / rel, quality=95)
            if k >= len(frames) - 3:
                expected[rel] = expression
    (base / "readme.txt").write_text("Oulu-CASIA NIR&VIS facial expression database\n")
    return expected


def _split(subject: str, subjects: list[str]) -> str:
    """The official split a replica gives a demo subject: the last one test, the one before
    validation where the dataset has a validation part, the rest train."""
    return "test" if subject == subjects[-1] else "val" if subject == subjects[-2] else "train"


def fer2013(expr: Path, root: Path) -> dict[str, str]:
    """fer2013.csv: emotion code, 2304 grey pixels (48 x 48 face crop), Usage
    (Training / PublicTest / PrivateTest). Key: the row number."""
    rows = demo_rows(expr)
    subjects = sorted({r["subject"] for r in rows})
    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    with open(root / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for i, r in enumerate(rows):
            face = np.asarray(Image.open(expr / r["image"]).convert("L").resize((48, 48), Image.Resampling.BOX))
            w.writerow([FER2013_CODES[r["expression"]], " ".join(map(str, face.ravel().tolist())),
                        usage[_split(r["subject"], subjects)]])
            expected[str(i)] = r["expression"]
    return expected


def rafdb(expr: Path, root: Path) -> dict[str, str]:
    """RAF-DB basic: EmoLabel/list_patition_label.txt (1-based codes) and
    Image/aligned/<name>_aligned.jpg (100 x 100 aligned crops). Key: the aligned file name."""
    rows = demo_rows(expr)
    subjects = sorted({r["subject"] for r in rows})
    basic = root / "basic"
    (basic / "EmoLabel").mkdir(parents=True)
    (basic / "Image" / "aligned").mkdir(parents=True)
    counts = {"train": 0, "test": 0}
    lines, expected = [], {}
    for r in rows:
        split = "test" if _split(r["subject"], subjects) == "test" else "train"
        counts[split] += 1
        name = f"{split}_{counts[split]:05d}.jpg" if split == "train" else f"test_{counts[split]:04d}.jpg"
        Image.open(expr / r["image"]).convert("RGB").resize((100, 100)).save(
            basic / "Image" / "aligned" / f"{name[:-4]}_aligned.jpg", quality=95)
        lines.append(f"{name} {RAFDB_CODES[r['expression']]}\n")
        expected[f"{name[:-4]}_aligned.jpg"] = r["expression"]
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("".join(lines))
    (root / "README.txt").write_text("Real-world Affective Faces Database\n")
    return expected


def affectnet(expr: Path, root: Path) -> dict[str, str]:
    """AffectNet: training.csv / validation.csv (the official test part) with the image path
    under Manually_Annotated_Images/, the face box, 68 landmarks as x;y;... and the
    expression code; one extra row of code 8 (none: not an expression, left out and counted).
    Key: the csv's image path."""
    rows = demo_rows(expr)
    subjects = sorted({r["subject"] for r in rows})
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
              "expression", "valence", "arousal"]
    tables = {"training.csv": [], "validation.csv": []}
    expected = {}
    for i, r in enumerate(rows):
        rel = f"{i % 7 + 1}/{Path(r['image']).stem}.jpg"
        dest = root / "Manually_Annotated_Images" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(expr / r["image"]).convert("RGB")
        img.save(dest, quality=95)
        marks = ";".join(f"{x:.2f};{y:.2f}" for x, y in points68(five_points(expr, r["image"])))
        table = "validation.csv" if _split(r["subject"], subjects) == "test" else "training.csv"
        tables[table].append([rel, 0, 0, img.width, img.height, marks, AFFECTNET_CODES[r["expression"]], 0.0, 0.0])
        expected[rel] = r["expression"]
    first = tables["training.csv"][0]
    tables["training.csv"].append([first[0], *first[1:6], 8, 0.0, 0.0])  # code 8: none
    for name, table in tables.items():
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(table)
    return expected


def class_folders(expr: Path, root: Path) -> dict[str, str]:
    """One folder per class, the subject id at the start of each file name
    (data.subject_regex '^(S\\d+)_'), the 5-point landmark file beside each image and a
    label list at the root. Key: the file name."""
    expected = {}
    for r in demo_rows(expr):
        dest = root / r["expression"] / Path(r["image"]).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(expr / r["image"], dest)
        shutil.copy2(expr / (r["image"][: -len(".png")] + ".landmarks.txt"), dest.with_suffix(".landmarks.txt"))
        expected[dest.name] = r["expression"]
    (root / "labels.txt").write_text("anger disgust fear happiness sadness surprise neutral\n")
    return expected


#: format -> (builder, the params.yaml data keys that select it, key of a manifest path)
def _last(n: int) -> Callable[[str], str]:
    return lambda path: "/".join(Path(path).parts[-n:])


REPLICAS: dict[str, tuple[Callable[[Path, Path], dict[str, str]], dict[str, object], Callable[[str], str]]] = {
    "ckplus": (ckplus, {"data.format": "ckplus", "data.first_frame_neutral": True, "align.landmarks": "auto"},
               _last(1)),
    "oulu": (oulu, {"data.format": "oulu", "align.landmarks": "auto", "align.max_failure_fraction": 0.35}, _last(3)),
    "fer2013": (fer2013, {"data.format": "fer2013", "align.landmarks": "auto", "folds.protocol": "official"},
                lambda path: path.rsplit("#", 1)[-1]),
    "rafdb": (rafdb, {"data.format": "rafdb", "align.landmarks": "auto", "folds.protocol": "official"}, _last(1)),
    "affectnet": (affectnet, {"data.format": "affectnet", "align.landmarks": "auto", "folds.protocol": "official"},
                  _last(2)),
    "folders": (class_folders, {"data.format": "folders", "data.subject_regex": r"^(S\d+)_",
                                "align.landmarks": "auto"}, _last(1)),
}


def manifest_key(fmt: str, path: str) -> str:
    return REPLICAS[fmt][2](path)
