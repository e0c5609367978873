"""Tests of the demo face generator (fer.data.demo) and its CLI (workflow/scripts/make_demo.py)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.data.demo import (
    ACTIONS,
    EXPRESSION_PROFILES,
    GENERATOR_VERSION,
    Nuisance,
    generate_demo,
    render_face,
    sample_identity,
    sample_nuisance,
)
from fer.data.landmarks import landmark_path, read_landmarks
from fer.data.manifest import read_csv_dataset
from fer.labels import BASIC7
from fer.params import DemoParams, build

ROOT = Path(__file__).resolve().parents[1]
TINY = DemoParams(
    n_subjects=3,
    images_per_expression=1,
    corpus_subjects=2,
    corpus_images_per_subject=4,
    image_size=64,
)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _gray(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _identity(i: int):
    return sample_identity(np.random.default_rng([123, i]))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "a"
    generate_demo(out, TINY, seed=0)
    return out


# --------------------------------------------------------------------------- layout


def test_layout(demo_dir: Path) -> None:
    cols, rows = _read_csv(demo_dir / "expr" / "labels.csv")
    assert cols == ["image", "subject", "expression"]
    assert len(rows) == TINY.n_subjects * 7 * TINY.images_per_expression
    assert [r["image"] for r in rows] == sorted(r["image"] for r in rows)
    counts = Counter(r["expression"] for r in rows)
    assert set(counts) == set(BASIC7)
    assert len(set(counts.values())) == 1
    assert {r["subject"] for r in rows} == {"S001", "S002", "S003"}
    for r in rows:
        name = Path(r["image"]).name
        assert r["image"].startswith("images/")
        assert name.startswith(r["subject"] + "_")
        assert f"_{r['expression']}_" in name
        img_path = demo_dir / "expr" / r["image"]
        assert img_path.is_file() and landmark_path(img_path).is_file()
        with Image.open(img_path) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)

    ccols, crows = _read_csv(demo_dir / "corpus" / "labels.csv")
    assert ccols == ["image", "subject"]  # no expression column, ever
    assert len(crows) == TINY.corpus_subjects * TINY.corpus_images_per_subject
    assert {r["subject"] for r in crows} == {"C0001", "C0002"}
    for r in crows:
        p = demo_dir / "corpus" / r["image"]
        assert p.is_file() and landmark_path(p).is_file()
        assert Path(r["image"]).name.startswith(r["subject"] + "_")

    tcols, trows = _read_csv(demo_dir / "corpus_truth.csv")
    assert tcols == ["image", "expression"]
    assert sorted(r["image"] for r in trows) == sorted(r["image"] for r in crows)
    assert {r["expression"] for r in trows} <= set(BASIC7)
    assert not (demo_dir / "corpus" / "corpus_truth.csv").exists()

    info = json.loads((demo_dir / "demo_info.json").read_text())
    assert info["generator_version"] == GENERATOR_VERSION
    assert info["seed"] == 0
    assert info["config"] == dataclasses.asdict(TINY)
    assert info["expr_images"] == len(rows) and info["corpus_images"] == len(crows)


def test_readable_by_the_pipeline_reader(demo_dir: Path) -> None:
    recs = read_csv_dataset(demo_dir / "expr", labelled=True)
    assert len(recs) == 21 and all(r.landmarks_path for r in recs)
    assert {r.label for r in recs} == set(BASIC7)
    corpus = read_csv_dataset(demo_dir / "corpus", labelled=False)
    assert len(corpus) == 8 and all(r.label is None for r in corpus)


def test_folder_regex_matches_expr_names(demo_dir: Path) -> None:
    import re

    pat = re.compile(r"^(S\d+)_")
    for p in (demo_dir / "expr" / "images").glob("*.png"):
        m = pat.search(p.name)
        assert m and m.group(1) in {"S001", "S002", "S003"}


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_other_seed_differs(demo_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    generate_demo(again, TINY, seed=0)
    files = [
        "expr/labels.csv",
        "corpus/labels.csv",
        "corpus_truth.csv",
        "demo_info.json",
        "expr/images/S001_happiness_01.png",
        "expr/images/S003_neutral_01.png",
        "expr/images/S002_fear_01.landmarks.txt",
        "corpus/images/C0002_0004.png",
        "corpus/images/C0001_0001.landmarks.txt",
    ]
    for f in files:
        assert (demo_dir / f).read_bytes() == (again / f).read_bytes(), f
    assert sorted(p.name for p in (demo_dir / "expr" / "images").iterdir()) == sorted(
        p.name for p in (again / "expr" / "images").iterdir()
    )

    other = tmp_path / "c"
    generate_demo(other, TINY, seed=1)
    for f in ["expr/images/S001_happiness_01.png", "corpus/images/C0002_0004.png"]:
        assert (demo_dir / f).read_bytes() != (other / f).read_bytes(), f


def test_images_do_not_depend_on_set_size(demo_dir: Path, tmp_path: Path) -> None:
    bigger = dataclasses.replace(TINY, n_subjects=4, corpus_subjects=3)
    out = tmp_path / "big"
    generate_demo(out, bigger, seed=0)
    for f in ["expr/images/S002_sadness_01.png", "corpus/images/C0001_0002.png"]:
        assert (demo_dir / f).read_bytes() == (out / f).read_bytes(), f


def test_regenerating_replaces_a_previous_demo_but_not_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate_demo(out, dataclasses.replace(TINY, n_subjects=4), seed=0)
    generate_demo(out, TINY, seed=0)
    assert not list((out / "expr" / "images").glob("S004_*"))
    foreign = tmp_path / "e"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="did not write"):
        generate_demo(foreign, TINY, seed=0)
    assert (foreign / "mine.txt").exists()


# --------------------------------------------------------------------------- landmarks


def test_written_landmarks_are_geometrically_plausible(demo_dir: Path) -> None:
    size = TINY.image_size
    for p in sorted((demo_dir / "expr" / "images").glob("*.png")) + sorted(
        (demo_dir / "corpus" / "images").glob("*.png")
    ):
        pts = read_landmarks(landmark_path(p))
        assert np.all(pts >= 0) and np.all(pts <= size - 1), p
        le, re_, nose, ml, mr = pts
        eye_vec = re_ - le
        iod = float(np.linalg.norm(eye_vec))
        assert 0.12 * size < iod < 0.4 * size, (p, iod)
        # face frame: x along the eye line, y perpendicular, pointing down the face
        ex = eye_vec / iod
        ey = np.array([-ex[1], ex[0]])
        eye_mid = (le + re_) / 2
        mouth_mid = (ml + mr) / 2
        assert (mouth_mid - eye_mid) @ ey > 0.6 * iod  # mouth well below the eyes
        assert 0.2 * iod < (nose - eye_mid) @ ey < (mouth_mid - eye_mid) @ ey  # nose in between
        assert (mr - ml) @ ex > 0.1 * iod  # mouth corners left-to-right (64 px, 1 px noise)
        assert abs((nose - eye_mid) @ ex) < 0.45 * iod  # nose near the midline (1 px noise)


@pytest.mark.parametrize("rotation", [0.0, 20.0])
def test_eye_landmarks_sit_on_the_dark_pupils(rotation: float) -> None:
    size = 128
    nz = Nuisance(rotation_deg=rotation, scale=1.05, shift=(3.0, -2.0))
    for i in range(6):
        img, pts = render_face(_identity(i), "neutral", 1.0, np.random.default_rng(i), size, nz)
        g = _gray(img)
        iod = np.linalg.norm(pts[1] - pts[0])
        for eye in pts[:2]:
            x, y = np.rint(eye).astype(int)
            pupil = g[y - 1 : y + 2, x - 1 : x + 2].mean()
            # skin 0.45 inter-ocular distances below the eye (the cheek), in the face frame
            a = math.radians(rotation)
            down = np.array([math.sin(a), math.cos(a)])  # face's "down" in the rotated image
            cx, cy = np.rint(eye + 0.45 * iod * down).astype(int)
            cheek = g[cy - 1 : cy + 2, cx - 1 : cx + 2].mean()
            assert pupil < cheek - 25, (i, pupil, cheek)


def test_mouth_corner_landmarks_follow_the_expression() -> None:
    size = 128

    def corner_height(expr: str, i: int) -> tuple[float, float]:
        _, pts = render_face(_identity(i), expr, 1.0, np.random.default_rng(0), size, None, jitter_std=0)
        nose_y = pts[2, 1]
        return float(pts[3:, 1].mean() - nose_y), float(pts[4, 0] - pts[3, 0])

    for i in range(5):
        h_happy, w_happy = corner_height("happiness", i)
        h_neutral, w_neutral = corner_height("neutral", i)
        h_sad, _ = corner_height("sadness", i)
        _, w_fear = corner_height("fear", i)
        _, w_surprise = corner_height("surprise", i)
        assert h_happy < h_neutral - 1.0 < h_sad - 2.0  # smile lifts the corners, sadness drops them
        assert w_happy > w_neutral and w_fear > w_neutral > w_surprise


def test_mouth_corner_landmarks_lie_on_the_lips() -> None:
    """Each corner landmark is at the end of the drawn mouth: lip-coloured (redder than
    skin) pixels just inside the corner, none a few pixels further out."""
    size = 128
    assert any(_identity(i).beard for i in range(8)) and not all(_identity(i).beard for i in range(8))
    for i in range(8):
        idn = _identity(i)
        skin = np.array(idn.skin, dtype=np.float64)
        lip = np.array(idn.lip_color, dtype=np.float64)
        for expr in BASIC7:
            img, pts = render_face(idn, expr, 1.0, np.random.default_rng(0), size, None, jitter_std=0)
            f = img.astype(np.float64)
            red = f[..., 0] / np.maximum(f.sum(axis=-1), 1.0)  # red chromaticity
            lip_like = np.abs(red - lip[0] / lip.sum()) < np.abs(red - skin[0] / skin.sum())
            ml, mr = pts[3], pts[4]
            along = (mr - ml) / np.linalg.norm(mr - ml)
            for corner, inward in ((ml, along), (mr, -along)):
                x, y = np.rint(corner + 1.5 * inward).astype(int)
                assert lip_like[y - 1 : y + 2, x - 1 : x + 2].any(), (i, expr, "inside")
                if idn.beard:  # beard hair around the mouth may be lip-coloured
                    continue
                x, y = np.rint(corner - 6.0 * inward).astype(int)
                assert not lip_like[y - 1 : y + 2, x - 1 : x + 2].any(), (i, expr, "outside")


# --------------------------------------------------------------------------- expressions


def test_expressions_differ_for_one_identity() -> None:
    size = 64
    for i in range(3):
        idn = _identity(i)
        imgs = {
            e: render_face(idn, e, 1.0, np.random.default_rng(7), size, None, jitter_std=0)[0].astype(float)
            for e in BASIC7
        }
        for a, b in itertools.combinations(BASIC7, 2):
            changed = int((np.abs(imgs[a] - imgs[b]).max(axis=-1) > 12).sum())
            assert changed >= 20, (i, a, b, changed)


def test_identities_differ_for_one_expression() -> None:
    size = 64
    imgs = [
        render_face(_identity(i), "happiness", 1.0, np.random.default_rng(7), size, None, jitter_std=0)[0]
        for i in range(4)
    ]
    for a, b in itertools.combinations(imgs, 2):
        assert np.abs(a.astype(float) - b.astype(float)).mean() > 5.0


def test_subject_style_and_intensity_modulate_actions() -> None:
    a = _identity(0).actions("happiness", 1.0)
    b = _identity(1).actions("happiness", 1.0)
    weak = _identity(0).actions("happiness", 0.5)
    assert set(a) == set(ACTIONS)
    assert a["lip_corner_up"] != b["lip_corner_up"]  # per-subject style
    assert weak["lip_corner_up"] < a["lip_corner_up"]
    assert set(EXPRESSION_PROFILES) == set(BASIC7)
    with pytest.raises(ValueError, match="unknown expression"):
        render_face(_identity(0), "contempt", 1.0, np.random.default_rng(0), 64)


# --------------------------------------------------------------------------- nuisance


@pytest.mark.parametrize("rotation", [-15.0, 0.0, 10.0])
def test_rotation_turns_the_eye_line(rotation: float) -> None:
    nz = Nuisance(rotation_deg=rotation)
    img0, p0 = render_face(_identity(0), "surprise", 1.0, np.random.default_rng(0), 128, None, jitter_std=0)
    img, p = render_face(_identity(0), "surprise", 1.0, np.random.default_rng(0), 128, nz, jitter_std=0)
    d0 = p0[1] - p0[0]
    d = p[1] - p[0]
    angle0 = math.degrees(math.atan2(d0[1], d0[0]))
    angle = math.degrees(math.atan2(d[1], d[0]))
    # positive rotation is counter-clockwise on screen: the eye line rises to the right
    assert angle - angle0 == pytest.approx(-rotation, abs=0.05)
    assert np.linalg.norm(d) == pytest.approx(np.linalg.norm(d0), rel=1e-6)
    if rotation:
        assert np.abs(img.astype(float) - img0.astype(float)).mean() > 5.0


def test_scale_and_shift_move_the_landmarks() -> None:
    base = render_face(_identity(1), "neutral", 1.0, np.random.default_rng(0), 128, None, jitter_std=0)[1]
    nz = Nuisance(scale=1.2, shift=(5.0, -4.0))
    moved = render_face(_identity(1), "neutral", 1.0, np.random.default_rng(0), 128, nz, jitter_std=0)[1]
    centre = np.array([63.5, 63.5])
    np.testing.assert_allclose(moved, (base - centre) * 1.2 + centre + [5.0, -4.0], atol=1e-9)


def test_sampled_nuisance_respects_the_config() -> None:
    cfg = DemoParams(max_rotation_deg=5.0, scale_jitter=0.05, shift_frac=0.02, noise_std=3.0)
    for k in range(50):
        nz = sample_nuisance(np.random.default_rng(k), cfg)
        assert abs(nz.rotation_deg) <= 5.0 and abs(nz.scale - 1) <= 0.05
        assert max(abs(s) for s in nz.shift) <= 0.02 * cfg.image_size
        assert nz.noise_std == 3.0
    flat = DemoParams(max_rotation_deg=0.0, scale_jitter=0.0, shift_frac=0.0, lighting=0.0, noise_std=0.0)
    nz = sample_nuisance(np.random.default_rng(0), flat)
    assert nz.matrix(64) == pytest.approx(np.array([[1, 0, 0], [0, 1, 0]]))
    assert nz.light_gradient == 0 and nz.brightness == 0 and nz.contrast == 1


def test_noise_and_lighting_change_pixels_not_landmarks() -> None:
    clean = render_face(_identity(2), "anger", 1.0, np.random.default_rng(3), 64, None, jitter_std=0)
    nz = Nuisance(light_dir_deg=30.0, light_gradient=0.3, brightness=20.0, contrast=0.8, noise_std=6.0)
    lit = render_face(_identity(2), "anger", 1.0, np.random.default_rng(3), 64, nz, jitter_std=0)
    np.testing.assert_array_equal(clean[1], lit[1])
    assert np.abs(clean[0].astype(float) - lit[0].astype(float)).mean() > 5.0


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n_subjects": 0}, "n_subjects"),
        ({"images_per_expression": -1}, "images_per_expression"),
        ({"corpus_subjects": 2.5}, "corpus_subjects"),
        ({"corpus_images_per_subject": True}, "corpus_images_per_subject"),
        ({"image_size": 16}, "image_size"),
        ({"max_rotation_deg": 90.0}, "max_rotation_deg"),
        ({"scale_jitter": -0.1}, "scale_jitter"),
        ({"noise_std": float("nan")}, "noise_std"),
        ({"lighting": 2.0}, "lighting"),
        ({"intensity_min": 0.9, "intensity_max": 0.6}, "intensity_min"),
        ({"landmark_noise_px": -1.0}, "landmark_noise_px"),
    ],
)
def test_bad_config_raises(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DemoParams(**changes)


def test_config_from_mapping_and_seed_checks(tmp_path: Path) -> None:
    assert build(DemoParams, {"n_subjects": 5}, "demo").n_subjects == 5
    with pytest.raises(ValueError, match="unknown key demo.'n_subject'"):
        build(DemoParams, {"n_subject": 5}, "demo")
    with pytest.raises(ValueError, match="seed"):
        generate_demo(tmp_path / "x", TINY, seed=-1)


def test_params_yaml_demo_section_is_a_valid_config() -> None:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = build(DemoParams, params["demo"], "demo")
    assert dataclasses.asdict(cfg).keys() == params["demo"].keys()


# --------------------------------------------------------------------------- CLI


def test_cli_writes_the_dataset(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cfg = {
        "n_subjects": 2,
        "images_per_expression": 1,
        "corpus_subjects": 1,
        "corpus_images_per_subject": 2,
        "image_size": 48,
    }
    cmd = [
        sys.executable,
        str(ROOT / "workflow" / "scripts" / "make_demo.py"),
        "--out",
        str(out),
        "--config-json",
        json.dumps(cfg),
        "--seed",
        "3",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    _, rows = _read_csv(out / "expr" / "labels.csv")
    assert len(rows) == 14
    assert json.loads((out / "demo_info.json").read_text())["seed"] == 3
    assert "summary" in res.stderr

    bad = subprocess.run(
        [*cmd[:-3], json.dumps({"n_subject": 2}), "--seed", "3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode != 0 and "unknown key demo." in bad.stderr


def test_cli_reads_declared_params(tmp_path: Path) -> None:
    """The pipeline's call (Snakefile rule make_demo): --keys data_seed,demo from a params file
    (the training seed is not the data's)."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data_seed"], params["seed"] = 5, 7
    params["demo"].update(
        n_subjects=2, images_per_expression=1, corpus_subjects=1, corpus_images_per_subject=1
    )
    params["demo"]["image_size"] = 40
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        str(ROOT / "workflow" / "scripts" / "make_demo.py"),
        "--params",
        str(pfile),
        "--keys",
        "data_seed,demo",
        "--out",
        str(out),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads((out / "demo_info.json").read_text())
    assert info["seed"] == 5 and info["config"]["image_size"] == 40 and info["expr_images"] == 14
