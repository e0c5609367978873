"""Dataset input formats: csv (the demo layout) and folder-per-class; clear errors."""

import numpy as np
import pytest
from PIL import Image

from fer.data.landmarks import landmark_path, read_landmarks, write_landmarks, LandmarkFileError
from pathlib import Path

from fer.data.manifest import DatasetError, read_dataset, read_folders, resolve_classes

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
    assert "notes.txt" not in msg  # a non-image file is skipped (listed), not a problem
    assert "'bored'" in msg
    assert "stray.png" in msg and "an image directly in the dataset root" in msg


def test_folders_skip_non_image_files_and_list_them(tmp_path):
    """Readme, licence and label-list files beside the images are listed as skipped, not fatal."""
    _img(tmp_path / "happy" / "S001_a.png")
    _img(tmp_path / "sad" / "S002_b.jpg")
    (tmp_path / "README.txt").write_text("readme")
    (tmp_path / "LICENSE").write_text("licence")
    (tmp_path / "happy" / "labels.csv").write_text("x")
    found = read_folders(tmp_path, r"^(S\d+)_", EXTS)
    assert [(Path(r.path).name, r.subject, r.label, r.split) for r in found.records] == [
        ("S001_a.png", "S001", "happiness", None), ("S002_b.jpg", "S002", "sadness", None)]
    assert sorted(Path(p).name for p, _ in found.skipped) == ["LICENSE", "README.txt", "labels.csv"]
    assert all(reason.startswith("not an image") for _, reason in found.skipped)
    assert found.has_subjects


def test_folders_split_layout_without_subjects(tmp_path):
    """The export layout train/<class>, test/<class>, val/<class>; subject_regex '' = no subject ids."""
    _img(tmp_path / "train" / "angry" / "0001.png")
    _img(tmp_path / "train" / "happy" / "0002.png")
    _img(tmp_path / "val" / "happy" / "0003.png")
    _img(tmp_path / "test" / "angry" / "0004.png")
    (tmp_path / "classes.txt").write_text("angry happy")
    found = read_folders(tmp_path, "", EXTS)
    got = sorted((r.subject, r.label, r.split) for r in found.records)
    assert got == [("test/angry/0004.png", "anger", "test"), ("train/angry/0001.png", "anger", "train"),
                   ("train/happy/0002.png", "happiness", "train"), ("val/happy/0003.png", "happiness", "val")]
    assert not found.has_subjects
    assert [Path(p).name for p, _ in found.skipped] == ["classes.txt"]
    _img(tmp_path / "disgust" / "0005.png")  # a class folder beside the split folders
    with pytest.raises(DatasetError, match="split names"):
        read_folders(tmp_path, "", EXTS)


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


# ----------------------------------------------------------------------------- issue 9, point 7
def test_images_in_a_linked_subfolder_are_read(tmp_path):
    """A class folder assembled from links: the linked sub-folder's images are read (they
    were skipped with no trace: pathlib's rglob does not enter linked folders)."""
    root = tmp_path / "ds"
    _img(root / "happy" / "S001_a.png")
    _img(tmp_path / "disk2" / "happy" / "S002_b.png")
    _img(root / "sad" / "S001_c.png")
    (root / "happy" / "more").symlink_to(tmp_path / "disk2" / "happy")
    recs = read_dataset("folders", root, subject_regex=r"^(S\d+)_", image_extensions=EXTS)
    assert sorted(r.subject for r in recs if r.label == "happiness") == ["S001", "S002"]
    # the same file reached twice (a link inside the dataset to its own folder) is an error
    (root / "sad" / "again").symlink_to(root / "happy" / "more")
    with pytest.raises(DatasetError, match="the same file as"):
        read_dataset("folders", root, subject_regex=r"^(S\d+)_", image_extensions=EXTS)


def test_an_empty_class_folder_is_an_error(tmp_path):
    _img(tmp_path / "happy" / "S001_a.png")
    _img(tmp_path / "sad" / "S001_b.png")
    (tmp_path / "fear").mkdir()
    (tmp_path / "surprise" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        read_dataset("folders", tmp_path, subject_regex=r"^(S\d+)_", image_extensions=EXTS)
    msg = str(e.value)
    assert f"{tmp_path / 'fear'}: class folder holds no images" in msg
    assert f"{tmp_path / 'surprise'}: class folder holds no images" in msg


@pytest.mark.parametrize(
    ("row", "needle"),
    [("/abs/images/a.png", "is absolute"), ("../outside/a.png", "leaves the dataset root"),
     ("images/../../outside/a.png", "leaves the dataset root")],
)
def test_csv_paths_must_stay_inside_the_root(tmp_path, row, needle):
    """Files outside the root are not in the dataset's fingerprint: a change there would
    go unseen, so such rows are refused (they were accepted)."""
    root = tmp_path / "ds"
    _img(root / "images" / "a.png")
    _img(tmp_path / "outside" / "a.png")
    row = row.replace("/abs", str(root))
    (root / "labels.csv").write_text(f"image,subject,expression\nimages/a.png,S1,happy\n{row},S2,sad\n")
    with pytest.raises(DatasetError, match=needle) as e:
        read_dataset("csv", root)
    assert "labels.csv:3" in str(e.value)


def test_csv_same_image_under_two_spellings_is_listed_twice(tmp_path):
    _img(tmp_path / "img" / "x.png")
    (tmp_path / "labels.csv").write_text("image,subject,expression\nimg/x.png,S1,happy\n./img/x.png,S1,sad\n")
    with pytest.raises(DatasetError, match=r"labels.csv:3: image img/x.png \(as './img/x.png'\) listed twice \(first on line 2\)"):
        read_dataset("csv", tmp_path)
    # and through a link to the same file
    (tmp_path / "alias").symlink_to(tmp_path / "img")
    (tmp_path / "labels.csv").write_text("image,subject,expression\nimg/x.png,S1,happy\nalias/x.png,S1,sad\n")
    with pytest.raises(DatasetError, match="is the same file as img/x.png on line 2"):
        read_dataset("csv", tmp_path)


def test_csv_written_by_excel_reads(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: it is not part of the first
    column's name (it was: "missing column(s) ['image']; found ['\\ufeffimage', ...]")."""
    _img(tmp_path / "img" / "x.png")
    (tmp_path / "labels.csv").write_bytes("image,subject,expression\r\nimg/x.png,S1,happy\r\n".encode("utf-8-sig"))
    (rec,) = read_dataset("csv", tmp_path)
    assert (rec.subject, rec.label) == ("S1", "happiness")
    (tmp_path / "labels.csv").write_bytes("image,subject,expression\nimg/x.png,Sé,happy\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        read_dataset("csv", tmp_path)


def test_csv_rows_with_the_wrong_number_of_fields(tmp_path):
    _img(tmp_path / "img" / "x,1.png")
    _img(tmp_path / "img" / "y.png")
    (tmp_path / "labels.csv").write_text("image,subject,expression\nimg/x,1.png,S1,happy\nimg/y.png,S2\n")
    with pytest.raises(DatasetError) as e:
        read_dataset("csv", tmp_path)
    msg = str(e.value)
    assert "labels.csv:2: 4 field(s), the header has 3" in msg and "labels.csv:3: 2 field(s)" in msg
