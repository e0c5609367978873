"""Dataset input formats: csv (the demo layout) and folder-per-class; clear errors."""

import numpy as np
import pytest
from PIL import Image

from fer.data.landmarks import landmark_path, read_landmarks, write_landmarks, LandmarkFileError
from fer.data.manifest import DatasetError, read_dataset, resolve_classes

EXTS = [".png", ".jpg"]


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)


def test_folders_format(tmp_path):
    for cls, names in {"happy": ["S001_a.png", "S002_b.png"], "Sad": ["S001_c.jpg"]}.items():
        for n in names:
            _img(tmp_path / cls / n)
    write_landmarks(landmark_path(tmp_path / "happy" / "S001_a.png"), np.arange(10).reshape(5, 2))
    recs = read_dataset("folders", tmp_path, subject_regex=r"^(S\d+)_", image_extensions=EXTS)
    assert [(r.subject, r.label) for r in recs] == [("S001", "sadness"), ("S001", "happiness"), ("S002", "happiness")]
    assert recs[1].landmarks_path and recs[2].landmarks_path is None
    assert resolve_classes(recs) == ["happiness", "sadness"]


def test_folders_format_errors_name_the_files(tmp_path):
    _img(tmp_path / "happy" / "S001_a.png")
    _img(tmp_path / "happy" / "nosubject.png")
    (tmp_path / "happy" / "notes.txt").write_text("x")
    _img(tmp_path / "bored" / "S003_a.png")
    _img(tmp_path / "stray.png")
    with pytest.raises(DatasetError) as e:
        read_dataset("folders", tmp_path, subject_regex=r"^(S\d+)_", image_extensions=EXTS)
    msg = str(e.value)
    assert "nosubject.png" in msg and "does not match" in msg
    assert "notes.txt" in msg and "not an image" in msg
    assert "'bored'" in msg
    assert "stray.png" in msg


def test_folders_label_map(tmp_path):
    _img(tmp_path / "1" / "S001_a.png")
    recs = read_dataset("folders", tmp_path, subject_regex=r"^(S\d+)_", image_extensions=EXTS, label_map={"1": "anger"})
    assert recs[0].label == "anger"


def test_csv_format(tmp_path):
    _img(tmp_path / "images" / "a.png")
    _img(tmp_path / "images" / "b.png")
    (tmp_path / "labels.csv").write_text("image,subject,expression\nimages/a.png,S1,Happy\nimages/b.png,S2,neutral\n")
    recs = read_dataset("csv", tmp_path)
    assert [(r.subject, r.label) for r in recs] == [("S1", "happiness"), ("S2", "neutral")]


def test_csv_errors(tmp_path):
    _img(tmp_path / "images" / "a.png")
    (tmp_path / "labels.csv").write_text(
        "image,subject,expression\nimages/a.png,S1,happy\nimages/missing.png,S1,happy\nimages/a.png,S1,happy\n"
        "images/a2.png,,happy\n"
    )
    with pytest.raises(DatasetError) as e:
        read_dataset("csv", tmp_path)
    msg = str(e.value)
    assert "labels.csv:3" in msg and "missing.png does not exist" in msg
    assert "listed twice" in msg
    assert "empty subject" in msg
    (tmp_path / "labels.csv").write_text("image,subject\nimages/a.png,S1\n")
    with pytest.raises(DatasetError, match="missing column"):
        read_dataset("csv", tmp_path)
    (tmp_path / "labels.csv").write_text("image,subject,expression\nimages/a.png,S1,grumpy\n")
    with pytest.raises(DatasetError, match="grumpy"):
        read_dataset("csv", tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        read_dataset("csv", tmp_path / "nowhere")


def test_requested_classes_must_be_present(tmp_path):
    _img(tmp_path / "happy" / "S001_a.png")
    recs = read_dataset("folders", tmp_path, subject_regex=r"^(S\d+)_", image_extensions=EXTS)
    with pytest.raises(DatasetError, match="no images"):
        resolve_classes(recs, ["happiness", "fear"])


def test_landmark_files(tmp_path):
    p = tmp_path / "x.landmarks.txt"
    pts = np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10.5]])
    write_landmarks(p, pts)
    np.testing.assert_allclose(read_landmarks(p), pts)
    p.write_text("1 2\n3 4\n")
    with pytest.raises(LandmarkFileError, match="expected 5 points"):
        read_landmarks(p)
    p.write_text("1 2\n3 x\n")
    with pytest.raises(LandmarkFileError, match=":2"):
        read_landmarks(p)
