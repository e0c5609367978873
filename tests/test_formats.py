"""The dataset readers (fer.data.formats) on tiny replicas of each dataset's distributed
layout: file naming and label codes as the datasets' documentation gives them, the label
mapping checked image by image, skipped files listed, and the alignment stage carrying the
official split, has_subjects and the skipped rows into its outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.align.stage import run_alignment_stage
from fer.data.aligned import read_manifest
from fer.data.formats import (
    read_affectnet,
    read_ckplus,
    read_fer2013,
    read_labelled,
    read_oulu,
    read_rafdb,
)
from fer.data.manifest import DatasetError
from fer.params import AlignParams, DataParams
from replicas import points68

EXTS = (".png", ".jpg", ".jpeg")


def _img(path: Path, value: int = 128, rgb: bool = False, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size, 3) if rgb else (size, size), value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _data(fmt: str, root: Path, **kw) -> DataParams:
    return DataParams(format=fmt, root=str(root), image_extensions=EXTS, **kw)


# ---------------------------------------------------------------- CK+


def make_ckplus(root: Path, size: int = 40) -> dict[str, str]:
    """CK+ as extracted: cohn-kanade-images/, Emotion/, Landmarks/. Returns file name -> the
    label the reader must give it (data.frames 3, first frame as neutral)."""
    seqs = {  # (subject, sequence): (n frames, emotion code or None, rgb)
        ("S005", "001"): (5, 3, False),  # disgust, grey
        ("S005", "002"): (4, None, False),  # unlabelled: skipped
        ("S010", "004"): (3, 2, True),  # contempt, RGB frames, only 3 frames
        ("S011", "001"): (6, 7, False),  # surprise
    }
    expected: dict[str, str] = {}
    names = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness", 6: "sadness",
             7: "surprise"}
    for (subj, seq), (n, code, rgb) in seqs.items():
        for k in range(1, n + 1):
            name = f"{subj}_{seq}_{k:08d}.png"
            _img(root / "cohn-kanade-images" / subj / seq / name, value=10 * k, rgb=rgb, size=size)
            if code is not None and k > n - 3:
                expected[name] = names[code]
            elif code is not None and k == 1:
                expected[name] = "neutral"
        (root / "Emotion" / subj / seq).mkdir(parents=True)
        if code is not None:
            (root / "Emotion" / subj / seq / f"{subj}_{seq}_{n:08d}_emotion.txt").write_text(
                f"   {code:.7e}\n")
        lm = root / "Landmarks" / subj / seq
        lm.mkdir(parents=True)
        for k in range(1, n + 1):
            c = size / 2
            five = [(c - 6, c - 4), (c + 6, c - 4), (c, c + 2), (c - 5, c + 8), (c + 5, c + 8)]
            (lm / f"{subj}_{seq}_{k:08d}_landmarks.txt").write_text(
                "".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points68(five)))
    (root / "cohn-kanade-images" / "ReadMe.txt").write_text("CK+ readme")
    (root / "cohn-kanade-images" / "S005" / ".DS_Store").write_text("")
    return expected


def test_ckplus_labels_frames_subjects_and_landmarks(tmp_path):
    expected = make_ckplus(tmp_path)
    found = read_ckplus(tmp_path, _data("ckplus", tmp_path, first_frame_neutral=True))
    got = {Path(r.path).name: r.label for r in found.records}
    assert got == expected
    assert {Path(r.path).name: r.subject for r in found.records} == {n: n[:4] for n in expected}
    assert found.has_subjects and all(r.split is None and r.points is not None for r in found.records)
    # the 68 points reduce to the 5 alignment points
    assert np.allclose(found.records[0].points, [(14, 16), (26, 16), (20, 22), (15, 28), (25, 28)])
    reasons = {Path(p).name: r.split(":")[0] for p, r in found.skipped}
    assert reasons == {"ReadMe.txt": "not an image", "002": "unlabelled sequence", "001": "frames not used"}
    # without the first frame as neutral, and with the last 2 frames
    found = read_ckplus(tmp_path, _data("ckplus", tmp_path, frames=2))
    assert sorted(Path(r.path).name for r in found.records) == [
        "S005_001_00000004.png", "S005_001_00000005.png", "S010_004_00000002.png", "S010_004_00000003.png",
        "S011_001_00000005.png", "S011_001_00000006.png"]
    assert "neutral" not in {r.label for r in found.records}


def test_ckplus_errors_name_the_file(tmp_path):
    make_ckplus(tmp_path)
    bad = tmp_path / "Emotion" / "S011" / "001" / "S011_001_00000006_emotion.txt"
    bad.write_text("9.0\n")
    with pytest.raises(DatasetError, match="S011_001_00000006_emotion.txt.*not one of"):
        read_ckplus(tmp_path, _data("ckplus", tmp_path))
    with pytest.raises(DatasetError, match="CK\\+ needs cohn-kanade-images"):
        read_ckplus(tmp_path / "Emotion", _data("ckplus", tmp_path))


# ---------------------------------------------------------------- Oulu-CASIA


def test_oulu_last_frames_per_sequence(tmp_path):
    root = tmp_path / "OriginalImg" / "VL" / "Strong"
    for subj, seqs in {"P001": {"Anger": 5, "Happiness": 3}, "P002": {"Surprise": 2, "Disgust": 4}}.items():
        for seq, n in seqs.items():
            for k in range(n):
                _img(root / subj / seq / f"{k:03d}.jpeg")
    (root / "readme.txt").write_text("x")
    found = read_oulu(root, _data("oulu", root))
    got = sorted((r.subject, Path(r.path).parent.name, Path(r.path).name, r.label) for r in found.records)
    assert got == [
        ("P001", "Anger", "002.jpeg", "anger"), ("P001", "Anger", "003.jpeg", "anger"),
        ("P001", "Anger", "004.jpeg", "anger"),
        ("P001", "Happiness", "000.jpeg", "happiness"), ("P001", "Happiness", "001.jpeg", "happiness"),
        ("P001", "Happiness", "002.jpeg", "happiness"),
        ("P002", "Disgust", "001.jpeg", "disgust"), ("P002", "Disgust", "002.jpeg", "disgust"),
        ("P002", "Disgust", "003.jpeg", "disgust"),
        ("P002", "Surprise", "000.jpeg", "surprise"), ("P002", "Surprise", "001.jpeg", "surprise"),
    ]
    assert found.has_subjects
    assert sorted(r.split(":")[0] for _, r in found.skipped) == ["frames not used", "frames not used", "not an image"]


# ---------------------------------------------------------------- FER2013 / FERPlus

FER_ROWS = [  # emotion, Usage; pixel value = 20 * row + 10
    (0, "Training"), (3, "PublicTest"), (6, "PrivateTest"), (5, "Training"), (4, "Training"), (1, "PrivateTest"),
]
FER_NAMES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
PLUS_COLUMNS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown",
                "NF"]
PLUS_VOTES = [  # per row: votes; expected FERPlus label or skip reason kind
    ({"anger": 8, "disgust": 2}, "anger"),
    ({"happiness": 1, "unknown": 9}, "FERPlus majority unknown"),
    ({"NF": 10}, "FERPlus majority not a face"),
    ({"surprise": 5, "fear": 5}, "FERPlus no majority"),
    ({"neutral": 5, "sadness": 4, "contempt": 1}, "neutral"),  # 5 > 9/2 once the single vote is dropped
    ({"contempt": 7, "disgust": 3}, "contempt"),
]


def make_fer2013(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for i, (code, usage) in enumerate(FER_ROWS):
            w.writerow([code, " ".join([str(20 * i + 10)] * 2304), usage])
    with open(root / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", *PLUS_COLUMNS])
        for i, ((_, usage), (votes, _)) in enumerate(zip(FER_ROWS, PLUS_VOTES, strict=True)):
            w.writerow([usage, f"fer{i:07d}.png", *[votes.get(c, 0) for c in PLUS_COLUMNS]])


def test_fer2013_codes_usage_and_pixels(tmp_path):
    make_fer2013(tmp_path)
    found = read_fer2013(tmp_path, _data("fer2013", tmp_path))
    assert [(r.label, r.split) for r in found.records] == [
        (FER_NAMES[code], {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}[usage])
        for code, usage in FER_ROWS
    ]
    assert [int(r.pixels[0, 0]) for r in found.records] == [20 * i + 10 for i in range(len(FER_ROWS))]
    assert all(r.crop and r.pixels.shape == (48, 48) and r.subject == r.path for r in found.records)
    assert not found.has_subjects and found.skipped == []


def test_ferplus_majority_votes_and_counted_drops(tmp_path):
    make_fer2013(tmp_path)
    found = read_fer2013(tmp_path, _data("fer2013", tmp_path, ferplus=True))
    labels = {int(r.path.rsplit("#", 1)[1]): r.label for r in found.records}
    skipped = {int(p.rsplit("#", 1)[1]): reason.split(":")[0] for p, reason in found.skipped}
    for i, (_, want) in enumerate(PLUS_VOTES):
        assert (labels.get(i) or skipped.get(i)) == want, i
    assert len(labels) + len(skipped) == len(FER_ROWS)


def test_fer2013_errors_name_the_row(tmp_path):
    make_fer2013(tmp_path)
    text = (tmp_path / "fer2013.csv").read_text().splitlines()
    text[2] = text[2].replace("PublicTest", "Public")
    text[3] = "7," + text[3].split(",", 1)[1]
    (tmp_path / "fer2013.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DatasetError) as e:
        read_fer2013(tmp_path, _data("fer2013", tmp_path))
    assert "fer2013.csv:3: Usage 'Public'" in str(e.value) and "fer2013.csv:4: expression code '7'" in str(e.value)


# ---------------------------------------------------------------- RAF-DB

RAF_LIST = [("train_00001.jpg", 1), ("train_00002.jpg", 7), ("train_00003.jpg", 3), ("test_0001.jpg", 4),
            ("test_0002.jpg", 6), ("train_00004.jpg", 2), ("test_0003.jpg", 5)]
RAF_NAMES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}


def make_rafdb(root: Path) -> None:
    basic = root / "basic"
    (basic / "EmoLabel").mkdir(parents=True)
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in RAF_LIST))
    for i, (name, _) in enumerate(RAF_LIST):
        stem = name[:-4]
        _img(basic / "Image" / "aligned" / f"{stem}_aligned.jpg", value=30 * i + 20, size=100)
        _img(basic / "Image" / "original" / name, value=30 * i + 20, size=120, rgb=True)
        (basic / "Annotation" / "manual").mkdir(parents=True, exist_ok=True)
        (basic / "Annotation" / "manual" / f"{stem}_manu_attri.txt").write_text(
            "45.1\t50.2\n75.3\t50.1\n60.0\t65.5\n48.2\t80.0\n72.0\t80.3\n1\n0\n2\n")
    (root / "README.txt").write_text("RAF-DB")


@pytest.mark.parametrize("images", ["aligned", "original"])
def test_rafdb_one_based_codes_and_split(tmp_path, images):
    make_rafdb(tmp_path)
    found = read_rafdb(tmp_path, _data("rafdb", tmp_path, rafdb_images=images))
    assert [(Path(r.path).name, r.label, r.split) for r in found.records] == [
        (f"{n[:-4]}_aligned.jpg" if images == "aligned" else n, RAF_NAMES[c], n.split("_")[0]) for n, c in RAF_LIST
    ]
    assert not found.has_subjects and len({r.subject for r in found.records}) == len(RAF_LIST)
    if images == "aligned":
        assert all(r.crop and r.points is None for r in found.records)
    else:
        assert all(not r.crop for r in found.records)
        assert found.records[0].points == ((45.1, 50.2), (75.3, 50.1), (60.0, 65.5), (48.2, 80.0), (72.0, 80.3))


def test_rafdb_missing_image_is_named(tmp_path):
    make_rafdb(tmp_path)
    (tmp_path / "basic" / "Image" / "aligned" / "test_0002_aligned.jpg").unlink()
    with pytest.raises(DatasetError, match="list_patition_label.txt:5: image file .*test_0002_aligned.jpg"):
        read_rafdb(tmp_path, _data("rafdb", tmp_path))


# ---------------------------------------------------------------- AffectNet

AFF_COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
               "expression", "valence", "arousal"]
AFF_ROWS = {  # file: [(image, expression, with landmarks)]
    "training.csv": [("689/a.jpg", 1, True), ("689/b.jpg", 8, True), ("12/c.png", 7, False), ("12/d.jpg", 10, True),
                     ("12/e.jpg", 6, True)],
    "validation.csv": [("3/f.jpg", 0, True), ("3/g.jpg", 9, False), ("3/h.jpg", 2, True)],
}
AFF_NAMES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
             7: "contempt"}


def make_affectnet(root: Path) -> None:
    five = [(30, 40), (50, 40), (40, 52), (32, 62), (48, 62)]
    marks = ";".join(f"{x:.2f};{y:.2f}" for x, y in points68(five))
    for name, rows in AFF_ROWS.items():
        root.mkdir(parents=True, exist_ok=True)
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(AFF_COLUMNS)
            for rel, code, lm in rows:
                _img(root / "Manually_Annotated_Images" / rel, rgb=True, size=80)
                w.writerow([rel, 10, 12, 60, 58, marks if lm else "", code, 0.1, -0.2])


@pytest.mark.parametrize("n_classes", [8, 7])
def test_affectnet_codes_exclusions_and_split(tmp_path, n_classes):
    make_affectnet(tmp_path)
    found = read_affectnet(tmp_path, _data("affectnet", tmp_path, affectnet_classes=n_classes))
    kept, skipped = [], []
    for name, rows in AFF_ROWS.items():
        for rel, code, _ in rows:
            if code >= 8 or (n_classes == 7 and code == 7):
                skipped.append(rel)
            else:
                kept.append((rel, AFF_NAMES[code], "train" if name == "training.csv" else "test"))
    assert [(r.subject, r.label, r.split) for r in found.records] == kept
    assert [str(Path(p).relative_to(tmp_path / "Manually_Annotated_Images")) for p, _ in found.skipped] == skipped
    kinds = sorted(reason.split(":")[0] for _, reason in found.skipped)
    assert kinds == sorted(["AffectNet code 8 (none)", "AffectNet code 10 (non-face)", "AffectNet code 9 (uncertain)"]
                           + (["AffectNet code 7 (contempt)"] if n_classes == 7 else []))
    by = {r.subject: r for r in found.records}
    assert np.allclose(by["689/a.jpg"].points, [(30, 40), (50, 40), (40, 52), (32, 62), (48, 62)])
    if n_classes == 8:
        assert by["12/c.png"].points is None and by["12/c.png"].box == (10, 12, 60, 58)
    assert not found.has_subjects


# ---------------------------------------------------------------- the alignment stage


def _stage(tmp_path: Path, data: DataParams, **align) -> tuple[list[dict], dict, np.ndarray, list[dict]]:
    out = tmp_path / "aligned"
    cfg = AlignParams(**{"size": 16, **align})
    run_alignment_stage(data, cfg, out, tmp_path / "metrics.json", tmp_path)
    with open(out / "qa.csv", newline="") as f:
        qa = list(csv.DictReader(f))
    return read_manifest(out / "manifest.csv"), json.loads((out / "meta.json").read_text()), np.load(
        out / "images.npy"), qa


def test_stage_fer2013_split_column_no_subjects_and_pixels(tmp_path):
    """FER2013's pixels come out resized (a face crop, no detector), each aligned image
    matching its row's label, the official split in the manifest, has_subjects false, and
    FERPlus's dropped rows in qa.csv as skipped and counted."""
    make_fer2013(tmp_path / "fer")
    manifest, meta, images, qa = _stage(tmp_path, _data("fer2013", tmp_path / "fer", ferplus=True))
    for row in manifest:
        i = int(row["path"].rsplit("#", 1)[1])
        assert int(images[int(row["index"]), 0, 0, 0]) == 20 * i + 10
        assert row["label"] == PLUS_VOTES[i][1]
        assert row["split"] == {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}[FER_ROWS[i][1]]
    assert meta["has_subjects"] is False
    assert meta["n_skipped"] == 3 and meta["skipped_reasons"] == {
        "FERPlus majority not a face": 1, "FERPlus majority unknown": 1, "FERPlus no majority": 1}
    assert meta["landmark_sources"] == {"crop": 3}
    assert [r["status"] for r in qa] == ["ok"] * 3 + ["skipped"] * 3


def test_stage_ckplus_uses_the_landmark_files_and_keeps_labels(tmp_path):
    expected = make_ckplus(tmp_path / "ck", size=64)
    manifest, meta, images, qa = _stage(tmp_path, _data("ckplus", tmp_path / "ck", first_frame_neutral=True),
                                        landmarks="annotation")
    assert {Path(r["path"]).name: r["label"] for r in manifest} == expected
    # each frame's grey value (10 x frame number) survives the warp: image by image
    for r in manifest:
        frame = int(Path(r["path"]).stem[-3:])
        assert abs(int(images[int(r["index"])].mean()) - 10 * frame) <= 1
    assert meta["has_subjects"] is True and meta["landmark_sources"] == {"annotation": len(expected)}
    # the readme, the unlabelled sequence, the unused frames of two sequences
    assert meta["n_skipped"] == 4 and {r["split"] for r in manifest} == {""}


def test_read_labelled_dispatches_every_format(tmp_path):
    make_rafdb(tmp_path / "raf")
    make_fer2013(tmp_path / "fer")
    assert len(read_labelled(_data("rafdb", tmp_path / "raf")).records) == len(RAF_LIST)
    assert len(read_labelled(_data("fer2013", tmp_path / "fer")).records) == len(FER_ROWS)
    with pytest.raises(DatasetError, match="not found"):
        read_labelled(_data("affectnet", tmp_path / "nowhere"))


def test_stage_rafdb_and_affectnet_use_their_annotations(tmp_path):
    """RAF-DB original images aligned on the manual 5 points, aligned images resized;
    AffectNet aligned on its 68 points, a row without them cut out along its face box;
    each aligned image's grey value matches its file, its label its code."""
    make_rafdb(tmp_path / "raf")
    for images, source in (("original", "annotation"), ("aligned", "crop")):
        manifest, meta, arr, _ = _stage(tmp_path / images, _data("rafdb", tmp_path / "raf", rafdb_images=images))
        assert meta["landmark_sources"] == {source: len(RAF_LIST)} and meta["has_subjects"] is False
        for r in manifest:
            i = [n[:-4] for n, _ in RAF_LIST].index(r["subject"])
            assert r["label"] == RAF_NAMES[RAF_LIST[i][1]] and r["split"] == RAF_LIST[i][0].split("_")[0]
            assert abs(float(arr[int(r["index"])].mean()) - (30 * i + 20)) <= 2
        assert meta["splits"] == {"test": 3, "train": 4}
    make_affectnet(tmp_path / "aff")
    manifest, meta, _, qa = _stage(tmp_path / "a", _data("affectnet", tmp_path / "aff"))
    assert [(r["subject"], r["label"], r["split"]) for r in manifest] == [
        ("689/a.jpg", "happiness", "train"), ("12/c.png", "contempt", "train"), ("12/e.jpg", "anger", "train"),
        ("3/f.jpg", "neutral", "test"), ("3/h.jpg", "sadness", "test")]
    assert meta["landmark_sources"] == {"annotation": 4, "crop": 1}
    assert meta["skipped_reasons"] == {"AffectNet code 10 (non-face)": 1, "AffectNet code 8 (none)": 1,
                                       "AffectNet code 9 (uncertain)": 1}
    assert sum(r["status"] == "skipped" for r in qa) == 3


def test_stage_skips_readme_files_but_an_unreadable_image_stays_an_error(tmp_path):
    from fer.align.pipeline import AlignmentFailedError

    root = tmp_path / "set"
    for i, cls in enumerate(["happy", "sad", "angry"]):
        _img(root / cls / f"S{i:03d}_a.png")
    (root / "README.md").write_text("readme")
    (root / "LICENSE.txt").write_text("licence")
    (root / "sad" / "list.txt").write_text("labels")
    data = DataParams(format="folders", root=str(root), image_extensions=EXTS)
    manifest, meta, _, qa = _stage(tmp_path / "ok", data, landmarks="none")
    assert len(manifest) == 3 and meta["n_skipped"] == 3 and meta["skipped_reasons"] == {"not an image": 3}
    assert sorted(Path(r["path"]).name for r in qa if r["status"] == "skipped") == ["LICENSE.txt", "README.md",
                                                                                    "list.txt"]
    (root / "sad" / "S009_b.png").write_bytes(b"not a png")
    with pytest.raises(AlignmentFailedError, match=r"S009_b.png: unreadable image"):
        _stage(tmp_path / "bad", data, landmarks="none")


def test_report_counts_skipped_files_apart_from_failed_images():
    from fer.report.html import alignment_qa_html

    qa = [{"path": "a.png", "status": "ok", "reason": "", "landmark_source": "crop"},
          {"path": "b.png", "status": "failed", "reason": "unreadable image: b.png: empty", "landmark_source": "crop"},
          {"path": "README.txt", "status": "skipped", "reason": "not an image: extension '.txt'", "landmark_source": ""},
          {"path": "x.csv#3", "status": "skipped", "reason": "FERPlus majority unknown: ...", "landmark_source": ""}]
    html = "".join(alignment_qa_html(qa, {"failure_fraction": 0.5}))
    assert "<td class=\"l\">2</td><td class=\"\">1</td><td class=\"\">1</td>" in html  # 2 inputs, 1 aligned, 1 failed
    assert "1 image(s) failed alignment" in html and "README.txt" not in html
    assert "2 file(s) or row(s) of the dataset were not read as images" in html
    assert "not an image" in html and "FERPlus majority unknown" in html


def test_report_names_the_protocol_and_its_split_sizes():
    from fer.report.html import protocol_html

    assert "Subject-independent" in protocol_html({"folds": []})
    text = protocol_html({"protocol": "official", "split_sizes": {"train": 80, "val": 10, "test": 12}}, False)
    assert "official split" in text and "train 80, validation 10, test 12 images" in text and "no subject ids" in text


def test_oulu_root_of_the_distribution_selects_vl_strong(tmp_path):
    for light in ("VL", "NI"):
        for subj in ("P001", "P002"):
            for k in range(3):
                _img(tmp_path / "OriginalImg" / light / "Strong" / subj / "Fear" / f"{k:03d}.jpeg")
    found = read_oulu(tmp_path, _data("oulu", tmp_path))
    assert len(found.records) == 6 and all("/VL/Strong/" in r.path for r in found.records)
    with pytest.raises(DatasetError, match="no P###/ subject folder, and no VL/Strong"):
        read_oulu(tmp_path / "OriginalImg" / "NI", _data("oulu", tmp_path))


def test_params_know_whether_a_format_has_subject_ids(tmp_path):
    """The DAG is planned from params.yaml before the dataset is read
    (fer.params.dataset_has_subjects): it must agree with what each reader finds."""
    from fer.params import dataset_has_subjects, to_dict

    make_ckplus(tmp_path / "ck")
    make_rafdb(tmp_path / "raf")
    make_fer2013(tmp_path / "fer")
    make_affectnet(tmp_path / "aff")
    for sub in ("S001_a.png", "S002_b.png"):
        _img(tmp_path / "folders" / "happiness" / sub)
    _img(tmp_path / "oulu" / "P001" / "Fear" / "000.jpeg")
    cases = [("ckplus", "ck", {}), ("rafdb", "raf", {}), ("fer2013", "fer", {}), ("affectnet", "aff", {}),
             ("oulu", "oulu", {}), ("folders", "folders", {"subject_regex": r"^(S\d+)_"}),
             ("folders", "folders", {"subject_regex": ""})]
    for fmt, sub, kw in cases:
        data = _data(fmt, tmp_path / sub, **kw)
        assert dataset_has_subjects(to_dict(data)) == read_labelled(data).has_subjects, (fmt, kw)


def test_corpus_in_one_folder_per_identity(tmp_path):
    """CASIA-WebFace / VGGFace2 / LFW layout: <identity>/<image>; a readme at the root and a
    list file inside an identity folder are skipped; an image at the root is an error; a
    csv corpus is read as before. Through the corpus alignment stage, every image keeps its
    identity and the skipped files are listed in its QA table."""
    from fer.align.stage import run_corpus_alignment_stage
    from fer.data.formats import read_corpus
    from fer.params import CorpusParams

    root = tmp_path / "casia"
    for ident, n in {"0000045": 2, "0000099": 3}.items():
        for k in range(n):
            _img(root / ident / f"{k + 1:03d}.jpg", value=40 * k + 20, size=24)
    (root / "README").write_text("CASIA-WebFace")
    (root / "0000099" / "list.txt").write_text("x")
    found = read_corpus(root)
    assert sorted((r.subject, Path(r.path).name) for r in found.records) == [
        ("0000045", "001.jpg"), ("0000045", "002.jpg"), ("0000099", "001.jpg"), ("0000099", "002.jpg"),
        ("0000099", "003.jpg")]
    assert all(r.label is None for r in found.records) and len(found.skipped) == 2

    out = tmp_path / "aligned"
    run_corpus_alignment_stage(CorpusParams(root=str(root)), AlignParams(size=16, landmarks="none"), out,
                               tmp_path / "m.json", tmp_path / "evidence")
    manifest = read_manifest(out / "manifest.csv")
    assert sorted(r["subject"] for r in manifest) == ["0000045"] * 2 + ["0000099"] * 3
    with open(out / "qa.csv", newline="") as f:
        assert sum(r["status"] == "skipped" for r in csv.DictReader(f)) == 2

    _img(root / "stray.jpg")
    with pytest.raises(DatasetError, match="stray.jpg: an image outside"):
        read_corpus(root)
    with pytest.raises(DatasetError, match="neither labels.csv"):
        (tmp_path / "empty").mkdir()
        read_corpus(tmp_path / "empty")
