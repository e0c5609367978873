"""Deterministic demo face-image generator (no download of any kind).

Real labelled facial-expression datasets are licensed and absent from this repository, so
the pipeline runs by default on faces generated here. The generator is built for realism
of the *task*, not of the pixels:

* **Identity.** Every subject has a persistent identity drawn from a seeded RNG: face
  shape (ellipse size, jaw), skin tone, hair (colour, style, hairline), ears, eye spacing
  / size / tilt / iris colour, brow thickness / length / arch, nose length / width, mouth
  width, lip thickness and colour, clothes, and for some subjects glasses and a beard.
  Proportions, in inter-ocular distances, follow anthropometry and the ArcFace 5-point
  template (nose tip ~0.6 and mouth corners ~1.1 below the eye line), so a similarity
  fit to the template leaves residuals like real frontal faces (about 0.1).
* **Expression** is carried by facial geometry only, through a small set of FACS-inspired
  actions (brows, lids, cheeks, nose, lips, jaw; see :data:`EXPRESSION_PROFILES`). Each
  image draws an intensity in ``[intensity_min, intensity_max]``; each subject has an
  idiosyncratic style (per-action gains, a resting-face offset, a preferred side for
  asymmetric actions) and each image a little jitter, so classes overlap somewhat, as in
  real data.
* **Nuisance** per image: an in-plane similarity (rotation, scale, shift) applied to the
  whole face, directional lighting gradient plus global brightness/contrast, Gaussian
  pixel noise, and a varied low-frequency background, so face alignment has real work to
  do. The five landmarks (eye centres, nose tip, mouth corners, as drawn for that
  expression) go through the same similarity, plus a little annotation noise.

Faces are drawn as polygons with Pillow at 2x resolution, directly in the warped frame
(every vertex goes through the similarity, which is exactly a warp of the face), then
box-downsampled, which anti-aliases the edges. A 128 x 128 image takes a few ms.

:func:`generate_demo` writes the project's "csv" dataset layout::

    <out>/expr/labels.csv            image,subject,expression
    <out>/expr/images/S001_happiness_02.png (+ .landmarks.txt)
    <out>/corpus/labels.csv          image,subject  (no expression column)
    <out>/corpus/images/C0001_0003.png (+ .landmarks.txt)
    <out>/corpus_truth.csv           image,expression  (hidden ground truth)
    <out>/demo_info.json             config, seed, counts, generator version

Every image has its own RNG, ``np.random.default_rng([seed, stream, subject, image])``,
and every identity ``np.random.default_rng([seed, stream, subject])``, so the output does
not depend on generation order, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from fer.data.landmarks import landmark_path, write_landmarks
from fer.labels import BASIC7
from fer.params import DemoParams, to_dict
from fer.utils.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

#: Bumped whenever the drawn images change for a given config and seed.
GENERATOR_VERSION = "fer-demo-1.0"

#: Supersampling factor: faces are drawn at this multiple of the output size.
SUPERSAMPLE = 2

# RNG stream ids (the second entry of every seed sequence).
_STREAM_EXPR_IDENTITY = 1
_STREAM_EXPR_IMAGE = 2
_STREAM_CORPUS_IDENTITY = 3
_STREAM_CORPUS_IMAGE = 4

#: The facial actions the renderer understands (roughly FACS action units).
ACTIONS: tuple[str, ...] = (
    "brow_inner_raise",  # AU1: inner brow up (oblique brows)
    "brow_outer_raise",  # AU2: outer brow up
    "brow_lower",  # AU4: brows down ...
    "brow_together",  # AU4: ... and drawn together
    "brow_arch",  # extra arch of a raised brow
    "eye_wide",  # AU5: upper lid raised
    "lid_droop",  # upper lid lowered (sadness)
    "lower_lid_raise",  # AU6/AU7: lower lid up, eye narrowed from below
    "cheek_raise",  # AU6: cheeks up, nasolabial folds deepen
    "nose_wrinkle",  # AU9
    "upper_lip_raise",  # AU10
    "lip_corner_up",  # AU12 (> 0) / AU15 (< 0)
    "lip_stretch",  # AU20 (> 0) / pucker-narrow (< 0)
    "lip_press",  # AU23/24: thin pressed lips
    "jaw_drop",  # AU25/26/27: mouth open
    "asymmetry",  # one-sided mouth action (disgust, contempt-like)
)

#: Action targets at intensity 1 for each class (missing actions are 0).
EXPRESSION_PROFILES: dict[str, dict[str, float]] = {
    "anger": {
        "brow_lower": 1.0,
        "brow_together": 1.0,
        "eye_wide": 0.15,
        "lower_lid_raise": 0.7,
        "lip_press": 1.0,
        "lip_stretch": -0.2,
        "lip_corner_up": -0.2,
        "nose_wrinkle": 0.15,
    },
    "disgust": {
        "nose_wrinkle": 1.0,
        "upper_lip_raise": 1.0,
        "brow_lower": 0.6,
        "brow_together": 0.4,
        "lower_lid_raise": 0.5,
        "cheek_raise": 0.35,
        "asymmetry": 0.8,
        "lip_corner_up": -0.35,
    },
    "fear": {
        "brow_inner_raise": 1.0,
        "brow_outer_raise": 0.35,
        "brow_together": 0.8,
        "brow_arch": -0.3,
        "eye_wide": 0.9,
        "lip_stretch": 0.9,
        "jaw_drop": 0.35,
        "lip_corner_up": -0.25,
    },
    "happiness": {
        "lip_corner_up": 1.0,
        "lip_stretch": 0.5,
        "jaw_drop": 0.25,
        "cheek_raise": 1.0,
        "lower_lid_raise": 0.6,
    },
    "sadness": {
        "brow_inner_raise": 1.0,
        "brow_outer_raise": -0.3,
        "brow_together": 0.4,
        "lid_droop": 0.5,
        "lip_corner_up": -0.9,
        "lip_stretch": -0.1,
    },
    "surprise": {
        "brow_inner_raise": 1.0,
        "brow_outer_raise": 1.0,
        "brow_arch": 1.0,
        "eye_wide": 1.0,
        "jaw_drop": 1.0,
        "lip_stretch": -0.35,
    },
    "neutral": {},
}

Color = tuple[int, int, int]

_SKIN_ANCHORS = np.array(
    [[255, 226, 204], [241, 194, 160], [224, 172, 132], [198, 134, 90], [141, 85, 48], [92, 58, 40]],
    dtype=np.float64,
)
_HAIR_COLORS = np.array(
    [
        [20, 16, 14],
        [45, 30, 22],
        [85, 55, 35],
        [130, 90, 55],
        [200, 165, 110],
        [150, 70, 35],
        [150, 150, 150],
    ],
    dtype=np.float64,
)
_HAIR_P = np.array([0.26, 0.24, 0.18, 0.1, 0.09, 0.06, 0.07])
_HAIR_P_DARK_SKIN = np.array([0.55, 0.25, 0.05, 0.0, 0.0, 0.0, 0.15])
_IRIS_COLORS = np.array(
    [[60, 38, 24], [95, 62, 35], [70, 100, 140], [80, 110, 70], [40, 30, 25]], dtype=np.float64
)
HAIR_STYLES: tuple[str, ...] = ("short", "long", "fringe", "receding", "shaved", "bun")


# --------------------------------------------------------------------------- config


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Identity:
    """Persistent appearance and expression style of one subject.

    Lengths are fractions of the image size, in the canonical (un-warped) frame, with the
    face centred horizontally at ``cx``.
    """

    cx: float
    cy: float
    face_w: float  # half-width of the face ellipse
    face_h: float  # half-height
    jaw: float  # width of the jaw relative to the cheeks (0.55 pointed .. 0.9 square)
    skin: Color
    hair_color: Color
    hair_style: str
    hairline: float  # hairline height as a fraction of face_h above the eyes
    hair_part: float  # -1..1: side part / asymmetry of the hairline
    eye_y: float
    eye_dx: float  # half of the inter-ocular distance
    eye_w: float  # half-width of an eye
    eye_h: float  # half-height of the open eye above its centre
    eye_tilt: float  # outer corner up (>0)
    iris_color: Color
    iris_r: float  # iris radius relative to eye_h
    brow_gap: float  # brow height above the eye centre
    brow_thick: float
    brow_len: float  # extension beyond the eye's outer corner, relative to eye_w
    brow_arch: float
    brow_color: Color
    nose_len: float  # eye line to nose tip
    nose_w: float  # half-width of the nose wings
    mouth_gap: float  # nose tip to mouth centre
    mouth_w: float  # half-width of the mouth
    lip_upper: float
    lip_lower: float
    lip_color: Color
    shirt_color: Color
    glasses: Color | None
    beard: bool
    gain: tuple[float, ...]  # per-action style gain (len(ACTIONS))
    rest: tuple[float, ...]  # per-action resting offset (len(ACTIONS))
    asym_side: float  # +1 / -1: which side a one-sided action lifts

    def actions(
        self, expression: str, intensity: float, jitter: np.ndarray | None = None
    ) -> dict[str, float]:
        """Action strengths for ``expression`` at ``intensity`` in this subject's style."""
        if expression not in EXPRESSION_PROFILES:
            raise ValueError(f"unknown expression {expression!r}; expected one of {list(BASIC7)}")
        prof = EXPRESSION_PROFILES[expression]
        out: dict[str, float] = {}
        for k, name in enumerate(ACTIONS):
            v = intensity * prof.get(name, 0.0) * self.gain[k] + self.rest[k]
            if jitter is not None:
                v += float(jitter[k])
            out[name] = v
        return out


def _rgb(v: Sequence[float] | np.ndarray) -> Color:
    """Clip and round three numbers to an RGB colour tuple."""
    r, g, b = (round(min(255.0, max(0.0, float(x)))) for x in v)
    return (r, g, b)


def _mix(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, t: float) -> Color:
    """Linear blend ``(1 - t) * a + t * b`` of two colours."""
    return _rgb([(1 - t) * float(x) + t * float(y) for x, y in zip(a, b, strict=True)])


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one subject's persistent identity (appearance and expression style)."""
    u = rng.uniform
    # skin tone: a point on a light..dark ramp plus a small hue jitter
    t = u(0, len(_SKIN_ANCHORS) - 1)
    i0 = min(int(t), len(_SKIN_ANCHORS) - 2)
    skin_f = (1 - (t - i0)) * _SKIN_ANCHORS[i0] + (t - i0) * _SKIN_ANCHORS[i0 + 1]
    skin_f = skin_f + rng.normal(0, 6, 3) + np.array([u(-4, 8), 0, u(-6, 4)])
    skin = _rgb(skin_f)
    # darker skin goes mostly with dark hair
    hair_p = _HAIR_P if t < 2.6 else _HAIR_P_DARK_SKIN
    hair_f = _HAIR_COLORS[rng.choice(len(_HAIR_COLORS), p=hair_p / hair_p.sum())] + rng.normal(0, 8, 3)
    hair = _rgb(hair_f)
    style = str(rng.choice(HAIR_STYLES, p=[0.3, 0.3, 0.12, 0.1, 0.08, 0.1]))
    beard = bool(u() < 0.15)
    glasses: Color | None = None
    if u() < 0.2:
        glasses = _rgb(rng.choice([[25, 25, 30], [90, 60, 40], [170, 170, 180], [120, 20, 30]]))
    iris = _IRIS_COLORS[rng.integers(len(_IRIS_COLORS))] + rng.normal(0, 6, 3)
    lip_base = np.array(skin_f) * np.array([0.86, 0.62, 0.64]) + np.array([18, 0, 0])
    # proportions in units of the inter-ocular distance follow anthropometry and the
    # ArcFace 5-point template (nose tip ~0.6, mouth corners ~1.1 below the eye line)
    eye_dx = u(0.088, 0.102)
    iod = 2 * eye_dx
    face_w = eye_dx * u(2.35, 2.65)
    face_h = eye_dx * u(3.5, 3.85)
    n_act = len(ACTIONS)
    gain = np.clip(rng.normal(1.0, 0.2, n_act), 0.55, 1.45)
    rest = rng.normal(0.0, 0.06, n_act)
    rest[ACTIONS.index("jaw_drop")] = abs(rest[ACTIONS.index("jaw_drop")]) * 0.5
    rest[ACTIONS.index("asymmetry")] = abs(rest[ACTIONS.index("asymmetry")])
    shirt = rng.uniform(20, 235, 3)
    cy = u(0.49, 0.52)
    return Identity(
        cx=0.5,
        cy=cy,
        face_w=face_w,
        face_h=face_h,
        jaw=u(0.62, 0.92),
        skin=skin,
        hair_color=hair,
        hair_style=style,
        hairline=u(0.5, 0.75) if style != "receding" else u(0.78, 0.9),
        hair_part=u(-1, 1),
        eye_y=cy - u(0.0, 0.02),
        eye_dx=eye_dx,
        eye_w=eye_dx * u(0.44, 0.52),
        eye_h=u(0.014, 0.019),
        eye_tilt=u(-0.15, 0.3),
        iris_color=_rgb(iris),
        iris_r=u(1.05, 1.3),
        brow_gap=u(0.045, 0.058),
        brow_thick=u(0.009, 0.017),
        brow_len=u(0.05, 0.35),
        brow_arch=u(0.002, 0.009),
        brow_color=_mix(hair, (10, 8, 6), u(0.2, 0.5)),
        nose_len=iod * u(0.55, 0.66),
        nose_w=u(0.024, 0.034),
        mouth_gap=iod * u(0.45, 0.56),
        mouth_w=eye_dx * u(0.7, 0.88),
        lip_upper=u(0.009, 0.015),
        lip_lower=u(0.011, 0.019),
        lip_color=_rgb(lip_base),
        shirt_color=_rgb(shirt),
        glasses=glasses,
        beard=beard,
        gain=tuple(float(g) for g in gain),
        rest=tuple(float(r) for r in rest),
        asym_side=float(rng.choice([-1.0, 1.0])),
    )


# --------------------------------------------------------------------------- nuisance


@dataclass(frozen=True)
class Nuisance:
    """Per-image nuisance: a similarity warp, lighting, noise and annotation noise.

    ``rotation_deg`` is counter-clockwise as seen in the image (the eye line of the output
    rises to the right for positive angles); ``shift`` is in output pixels.
    """

    rotation_deg: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    light_dir_deg: float = 0.0
    light_gradient: float = 0.0  # relative brightness change from the centre to the edge
    brightness: float = 0.0  # additive, 0..255 units
    contrast: float = 1.0
    noise_std: float = 0.0
    landmark_noise_px: float = 0.0

    @staticmethod
    def none() -> Nuisance:
        """No warp, no lighting change, no noise."""
        return Nuisance()

    def matrix(self, size: int) -> np.ndarray:
        """2x3 similarity from canonical to output coordinates (in pixel-corner units)."""
        a = math.radians(self.rotation_deg)
        c, s = math.cos(a) * self.scale, math.sin(a) * self.scale
        # counter-clockwise on screen (y axis points down)
        lin = np.array([[c, s], [-s, c]])
        centre = np.array([size / 2.0, size / 2.0])
        off = centre + np.asarray(self.shift, dtype=np.float64) - lin @ centre
        return np.hstack([lin, off[:, None]])


def sample_nuisance(rng: np.random.Generator, cfg: DemoParams) -> Nuisance:
    """Draw one image's nuisance from the ranges in ``cfg``."""
    size = cfg.image_size
    lt = cfg.lighting
    return Nuisance(
        rotation_deg=float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)),
        scale=float(1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter)),
        shift=(
            float(rng.uniform(-cfg.shift_frac, cfg.shift_frac) * size),
            float(rng.uniform(-cfg.shift_frac, cfg.shift_frac) * size),
        ),
        light_dir_deg=float(rng.uniform(0, 360)),
        light_gradient=float(rng.uniform(0.2, 1.0) * lt * 0.8),
        brightness=float(rng.uniform(-1, 1) * lt * 70),
        contrast=float(1.0 + rng.uniform(-1, 0.6) * lt * 0.9),
        noise_std=float(cfg.noise_std),
        landmark_noise_px=float(cfg.landmark_noise_px),
    )


# --------------------------------------------------------------------------- drawing helpers


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40, rot: float = 0.0) -> np.ndarray:
    """``n`` points of an ellipse (optionally rotated by ``rot`` radians)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    if rot:
        c, s = math.cos(rot), math.sin(rot)
        x, y = c * x - s * y, s * x + c * y
    return np.stack([cx + x, cy + y], axis=1)


def _thick_curve(pts: np.ndarray, w0: float, w1: float) -> np.ndarray:
    """Polygon around a polyline with half-width tapering from ``w0`` to ``w1``."""
    d = np.gradient(pts, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
    w = np.linspace(w0, w1, len(pts))[:, None]
    return np.vstack([pts + nrm * w, (pts - nrm * w)[::-1]])


class _Canvas:
    """Pillow drawing in the warped frame at supersampled resolution."""

    def __init__(self, img: Image.Image, matrix: np.ndarray, size: int) -> None:
        self.draw = ImageDraw.Draw(img)
        self.m = matrix
        self.size = size
        self.k = float(SUPERSAMPLE * size)  # canonical fraction -> supersampled pixels
        self.lin_scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))

    def _xy(self, pts: np.ndarray) -> list[float]:
        """Canonical fractions -> flat [x0, y0, x1, ...] supersampled pixel-corner coords."""
        p = np.asarray(pts, dtype=np.float64) * self.size
        q = (p @ self.m[:, :2].T + self.m[:, 2]) * SUPERSAMPLE
        return q.ravel().tolist()

    def poly(self, pts: np.ndarray, fill: Color) -> None:
        """Fill a polygon given in canonical coordinates."""
        self.draw.polygon(self._xy(pts), fill=fill)

    def line(self, pts: np.ndarray, fill: Color, width: float) -> None:
        """Stroke a polyline; ``width`` is a fraction of the size (scaled with the face)."""
        w = max(1, round(width * self.k * self.lin_scale))
        self.draw.line(self._xy(pts), fill=fill, width=w, joint="curve")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A varied low-frequency background at supersampled resolution."""
    big = size * SUPERSAMPLE
    grey = rng.uniform(25, 235)
    c0 = np.clip(grey + rng.normal(0, 30, 3), 0, 255)
    c1 = np.clip(c0 + rng.normal(0, 45, 3), 0, 255)
    g = int(rng.integers(3, 7))
    tex = rng.normal(0, rng.uniform(8, 35), (g, g, 3))
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:g, 0:g] / (g - 1) - 0.5
    ramp = (np.cos(a) * xx + np.sin(a) * yy + 0.5)[..., None]
    small = c0 * (1 - ramp) + c1 * ramp + tex
    img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize(
        (big, big), Image.Resampling.BICUBIC
    )
    if rng.uniform() < 0.5:  # some out-of-focus clutter (shelves, door frames, ...)
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            col = _mix(c0, rng.uniform(0, 255) + rng.normal(0, 30, 3), rng.uniform(0.2, 0.6))
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * big
            w, h = rng.uniform(0.1, 0.6, 2) * big
            d.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
    return img


# --------------------------------------------------------------------------- face geometry


class _Mouth(NamedTuple):
    """Mouth polygons and curves in canonical fractions of the size."""

    corners: np.ndarray  # (2, 2): image-left corner, image-right corner
    upper: np.ndarray  # upper-lip polygon
    lower: np.ndarray  # lower-lip polygon
    opening: np.ndarray  # dark mouth cavity polygon
    teeth: np.ndarray  # upper-teeth polygon
    open_top: np.ndarray  # (n, 2) inner edge of the upper lip
    gap: float  # largest vertical opening


def _mouth(idn: Identity, a: dict[str, float], mx: float, my: float) -> _Mouth:
    """Lip, opening and teeth geometry for the action strengths ``a``."""
    n = 25
    tt = np.linspace(-1, 1, n)
    stretch = a["lip_stretch"]
    hw = idn.mouth_w * (1 + 0.32 * stretch + 0.12 * max(0.0, a["lip_corner_up"]))
    hw = max(hw, idn.mouth_w * 0.55)
    up = a["lip_corner_up"]
    asym = a["asymmetry"] * idn.asym_side
    # corner heights (y down): left / right corner of the image
    c_l = my - 0.024 * up - 0.012 * asym - 0.004 * a["upper_lip_raise"]
    c_r = my - 0.024 * up + 0.012 * asym - 0.004 * a["upper_lip_raise"]
    mid = 0.5 * (c_l + c_r)
    bend = 1 - tt**2
    lipline = c_l + (c_r - c_l) * (tt + 1) / 2 + (my - mid) * bend
    xs = mx + hw * tt
    open_amt = max(0.0, a["jaw_drop"]) * 0.05
    raise_side = 1.0 + 0.8 * a["asymmetry"] * idn.asym_side * tt  # which half the upper lip lifts
    ulr = max(0.0, a["upper_lip_raise"]) * 0.011 * np.clip(raise_side, 0.2, 2.0)
    roundness = np.clip(0.5 + 0.6 * max(0.0, -stretch) + 0.5 * max(0.0, a["jaw_drop"] - 0.5), 0.5, 1.0)
    prof = np.clip(bend, 0, 1) ** roundness
    open_top = lipline - (0.25 * open_amt) * prof - ulr * np.sqrt(np.clip(bend, 0, 1))
    open_bot = lipline + open_amt * prof
    press = np.clip(1 - 0.65 * max(0.0, a["lip_press"]), 0.25, 1.0)
    sq = np.sqrt(np.clip(bend, 0, 1))
    cupid = 1 - 0.35 * np.exp(-((tt / 0.13) ** 2)) + 0.1 * np.exp(-(((np.abs(tt) - 0.3) / 0.15) ** 2))
    top = open_top - idn.lip_upper * press * sq * cupid
    bot = open_bot + idn.lip_lower * press * sq * (1 - 0.25 * max(0.0, stretch))
    upper = np.vstack([np.stack([xs, top], 1), np.stack([xs, open_top], 1)[::-1]])
    lower = np.vstack([np.stack([xs, open_bot], 1), np.stack([xs, bot], 1)[::-1]])
    opening = np.vstack([np.stack([xs, open_top], 1), np.stack([xs, open_bot], 1)[::-1]])
    gap = float(np.max(open_bot - open_top))
    teeth_h = np.minimum(open_bot - open_top, 0.014) * (np.abs(tt) < 0.78)
    teeth = np.vstack([np.stack([xs, open_top], 1), np.stack([xs, open_top + teeth_h], 1)[::-1]])
    return _Mouth(
        corners=np.array([[xs[0], lipline[0]], [xs[-1], lipline[-1]]]),
        upper=upper,
        lower=lower,
        opening=opening,
        teeth=teeth,
        open_top=np.stack([xs, open_top], 1),
        gap=gap,
    )


def _render_canonical_face(cv: _Canvas, idn: Identity, a: dict[str, float]) -> np.ndarray:
    """Draw the whole head; return the five canonical landmarks (fractions of the size)."""
    skin = idn.skin
    dark = (40, 22, 18)
    shadow = _mix(skin, dark, 0.22)
    cx, cy, fw, fh = idn.cx, idn.cy, idn.face_w, idn.face_h
    jaw_drop = max(0.0, a["jaw_drop"])
    fh_low = fh + 0.022 * jaw_drop  # the chin moves down with the jaw

    # head outline: an ellipse whose lower half narrows to the jaw
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    sin_t = np.sin(t)
    down = np.clip(sin_t, 0, 1)
    kx = 1 - (1 - idn.jaw) * down**2.2
    head = np.stack([cx + fw * np.cos(t) * kx, cy + np.where(sin_t > 0, fh_low, fh) * sin_t], 1)

    # hair behind the head
    hc = idn.hair_color
    st = idn.hair_style
    if st == "long":
        cv.poly(_ellipse(cx, cy - 0.02, fw * 1.28, fh * 1.12, 48), hc)
        cv.poly(
            np.array(
                [
                    [cx - fw * 1.28, cy - 0.02],
                    [cx + fw * 1.28, cy - 0.02],
                    [cx + fw * 1.42, cy + fh * 1.2],
                    [cx - fw * 1.42, cy + fh * 1.2],
                ]
            ),
            hc,
        )
    elif st in ("short", "fringe", "bun"):
        cv.poly(_ellipse(cx, cy - fh * 0.16, fw * 1.06, fh * 0.98, 48), hc)
        if st == "bun":
            cv.poly(_ellipse(cx, cy - fh * 1.12, fw * 0.42, fh * 0.3, 32), _mix(hc, dark, 0.1))

    # neck and shoulders
    nw = fw * 0.5
    neck = np.array(
        [[cx - nw, cy + fh * 0.5], [cx + nw, cy + fh * 0.5], [cx + nw * 1.05, 1.1], [cx - nw * 1.05, 1.1]]
    )
    cv.poly(neck, _mix(skin, dark, 0.28))
    sh_y = cy + fh * 1.25
    shirt = np.vstack(
        [
            [[cx - 0.6, 1.2], [cx - 0.6, sh_y + 0.12]],
            np.stack(
                [cx + np.linspace(-0.42, 0.42, 20), sh_y + 0.09 * np.abs(np.linspace(-1, 1, 20)) ** 1.8], 1
            ),
            [[cx + 0.6, sh_y + 0.12], [cx + 0.6, 1.2]],
        ]
    )
    cv.poly(shirt, idn.shirt_color)
    cv.poly(
        np.array([[cx - nw * 1.05, sh_y - 0.005], [cx + nw * 1.05, sh_y - 0.005], [cx, sh_y + 0.07]]),
        _mix(skin, dark, 0.3),
    )

    # ears
    for sgn in (-1.0, 1.0):
        ex = cx + sgn * fw * 0.97
        ear_y = idn.eye_y + 0.035
        cv.poly(_ellipse(ex, ear_y, 0.028, 0.06, 24), _mix(skin, dark, 0.12))
        cv.poly(_ellipse(ex + sgn * 0.006, ear_y, 0.014, 0.04, 16), _mix(skin, dark, 0.3))

    # face with simple shading: darker rim, lighter centre
    cv.poly(head, shadow)
    inner = np.stack([cx + (head[:, 0] - cx) * 0.93, cy - 0.004 + (head[:, 1] - cy) * 0.95], 1)
    cv.poly(inner, _mix(skin, dark, 0.08))
    inner2 = np.stack([cx + (head[:, 0] - cx) * 0.8, cy - 0.01 + (head[:, 1] - cy) * 0.86], 1)
    cv.poly(inner2, skin)

    eye_y = idn.eye_y
    nose_tip_y = eye_y + idn.nose_len - 0.005 * max(0.0, a["nose_wrinkle"])
    my = nose_tip_y + idn.mouth_gap + 0.004 * jaw_drop

    # beard (under everything else on the lower face)
    if idn.beard:
        bc = _mix(idn.hair_color, skin, 0.3)
        # lower face outline from the right jaw through the chin to the left jaw
        lower = head[(head[:, 1] > my - 0.035) & (np.sin(t) > 0)]
        beard_inner = np.array(
            [
                [cx - fw * 0.72, my - 0.035],
                [cx - idn.mouth_w * 1.3, my],
                [cx - idn.mouth_w * 0.8, my + 0.022 + 0.03 * jaw_drop],
                [cx, my + 0.03 + 0.03 * jaw_drop],
                [cx + idn.mouth_w * 0.8, my + 0.022 + 0.03 * jaw_drop],
                [cx + idn.mouth_w * 1.3, my],
                [cx + fw * 0.72, my - 0.035],
            ]
        )
        cv.poly(np.vstack([lower, beard_inner]), bc)
        # moustache
        mous = np.array(
            [
                [cx - idn.mouth_w * 1.05, my - 0.002],
                [cx - idn.nose_w * 0.8, nose_tip_y + 0.018],
                [cx + idn.nose_w * 0.8, nose_tip_y + 0.018],
                [cx + idn.mouth_w * 1.05, my - 0.002],
                [cx, my - 0.01],
            ]
        )
        cv.poly(mous, bc)

    # cheeks: blush patches and raised cheek highlight
    cheek = max(0.0, a["cheek_raise"])
    for sgn in (-1.0, 1.0):
        chx = cx + sgn * (idn.eye_dx + 0.012)
        chy = eye_y + 0.07 - 0.02 * cheek
        cv.poly(
            _ellipse(chx, chy, 0.05, 0.034 + 0.004 * cheek, 24),
            _mix(skin, (205, 90, 90), 0.04 + 0.08 * cheek),
        )
        if cheek > 0.15:
            cv.poly(
                _ellipse(chx - sgn * 0.004, chy - 0.008, 0.02, 0.012, 16),
                _mix(skin, (255, 255, 255), 0.12 * cheek),
            )

    # mouth geometry (needed for the nasolabial folds)
    mouth = _mouth(idn, a, cx, my)
    corners = mouth.corners

    # nasolabial folds: deepen with smiles and disgust
    # (from the nose wing, bulging outwards, to below and outside the mouth corner)
    fold = float(np.clip(0.06 + 0.4 * cheek + 0.3 * max(0.0, a["upper_lip_raise"]), 0, 0.55))
    for k, sgn in enumerate((-1.0, 1.0)):
        p0 = np.array([cx + sgn * idn.nose_w * 1.3, nose_tip_y + 0.004])
        p2 = corners[k] + np.array([sgn * 0.02, 0.022])
        ctrl = np.array([p2[0] + sgn * (0.012 + 0.01 * cheek), p0[1] + 0.35 * (p2[1] - p0[1])])
        s = np.linspace(0, 1, 12)[:, None]
        curve = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * ctrl + s**2 * p2
        cv.line(curve, _mix(skin, dark, fold), 0.0035)

    # nose: bridge shadow, wings, nostrils, tip
    nw_ = idn.nose_w * (1 + 0.15 * max(0.0, a["nose_wrinkle"]) + 0.1 * max(0.0, a["upper_lip_raise"]))
    bridge = np.array(
        [[cx + 0.01, eye_y + 0.005], [cx + 0.012, nose_tip_y - 0.02], [cx + nw_ * 0.7, nose_tip_y]]
    )
    cv.line(bridge, _mix(skin, dark, 0.18), 0.004)
    for sgn in (-1.0, 1.0):
        wing = _ellipse(cx + sgn * nw_ * 0.82, nose_tip_y + 0.006, nw_ * 0.38, nw_ * 0.42, 20)
        cv.poly(wing, _mix(skin, dark, 0.2))
    cv.poly(_ellipse(cx, nose_tip_y + 0.003, nw_ * 0.72, nw_ * 0.55, 24), _mix(skin, dark, 0.12))
    cv.poly(_ellipse(cx, nose_tip_y - 0.002, nw_ * 0.55, nw_ * 0.45, 24), _mix(skin, (255, 255, 255), 0.06))
    for sgn in (-1.0, 1.0):
        cv.poly(
            _ellipse(cx + sgn * nw_ * 0.45, nose_tip_y + nw_ * 0.5, nw_ * 0.24, nw_ * 0.13, 16), (55, 30, 28)
        )
    if a["nose_wrinkle"] > 0.1:
        wr = float(np.clip(a["nose_wrinkle"], 0, 1.2))
        for k in range(3):
            yk = eye_y + 0.012 + 0.009 * k
            cv.line(
                np.array([[cx - 0.013, yk], [cx, yk - 0.003], [cx + 0.013, yk]]),
                _mix(skin, dark, 0.3 * wr),
                0.003,
            )

    # mouth
    if mouth.gap > 0.002:
        cv.poly(mouth.opening, (70, 22, 28))
        cv.poly(mouth.teeth, (235, 230, 220))
    cv.poly(mouth.upper, _mix(idn.lip_color, dark, 0.12))
    cv.poly(mouth.lower, idn.lip_color)
    cv.line(mouth.open_top, _mix(idn.lip_color, dark, 0.5), 0.003)

    # eyes
    eye_centres = []
    for sgn in (-1.0, 1.0):
        ex = cx + sgn * idn.eye_dx
        eye_centres.append((ex, eye_y))
        w = idn.eye_w * (1 + 0.06 * max(0.0, a["eye_wide"]))
        hu = idn.eye_h * (
            1 + 0.85 * a["eye_wide"] - 0.45 * a["lid_droop"] - 0.2 * max(0.0, a["lower_lid_raise"])
        )
        hl = idn.eye_h * 0.8 * (1 + 0.35 * a["eye_wide"] - 0.6 * max(0.0, a["lower_lid_raise"]))
        hu, hl = max(hu, idn.eye_h * 0.25), max(hl, idn.eye_h * 0.15)
        tt = np.linspace(-1, 1, 21)
        xs = ex + w * tt
        tilt = -idn.eye_tilt * idn.eye_h * tt * sgn  # outer corner up
        upper = eye_y + tilt - hu * (1 - tt**2) ** 0.8
        lower = eye_y + tilt + hl * (1 - tt**2) ** 1.1
        # socket shading
        cv.poly(
            _ellipse(ex, eye_y - 0.3 * idn.eye_h - 0.3 * hu, w * 1.3, idn.eye_h * 1.2 + 0.9 * hu, 28),
            _mix(skin, dark, 0.07),
        )
        sclera = np.vstack([np.stack([xs, upper], 1), np.stack([xs, lower], 1)[::-1]])
        cv.poly(sclera, (238, 236, 230))
        # iris, clipped by the lids
        r = idn.iris_r * idn.eye_h
        ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        ix = ex + r * np.cos(ang)
        iy = eye_y + r * np.sin(ang)
        ti = np.clip((ix - ex) / w, -1, 1)
        tilt_i = -idn.eye_tilt * idn.eye_h * ti * sgn
        iy = np.clip(iy, eye_y + tilt_i - hu * (1 - ti**2) ** 0.8, eye_y + tilt_i + hl * (1 - ti**2) ** 1.1)
        cv.poly(np.stack([ix, iy], 1), idn.iris_color)
        pr = r * 0.45
        py = np.clip(eye_y + pr * np.sin(ang), eye_y - hu, eye_y + hl)
        cv.poly(np.stack([ex + pr * np.cos(ang), py], 1), (12, 10, 10))
        if hu > idn.eye_h * 0.5:
            cv.poly(_ellipse(ex + r * 0.3, eye_y - r * 0.3, r * 0.18, r * 0.18, 10), (250, 250, 250))
        # lids: dark upper lid line with lashes, faint lower lid, crease
        cv.line(np.stack([xs, upper], 1), (30, 20, 18), 0.0055)
        cv.line(np.stack([xs[3:-2], lower[3:-2]], 1), _mix(skin, dark, 0.35), 0.002)
        crease = upper - 0.35 * idn.eye_h - 0.15 * hu
        cv.line(np.stack([xs[2:-2], crease[2:-2]], 1), _mix(skin, dark, 0.25), 0.0025)
        if a["lower_lid_raise"] > 0.2:  # bulge under the eye
            cv.line(
                np.stack([xs[4:-4], lower[4:-4] + 0.008], 1),
                _mix(skin, dark, 0.18 * min(1.0, a["lower_lid_raise"])),
                0.002,
            )

    # brows
    raise_mean = 0.5 * (max(0.0, a["brow_inner_raise"]) + max(0.0, a["brow_outer_raise"]))
    for sgn in (-1.0, 1.0):
        u_in = idn.eye_dx - idn.eye_w * 0.95 - 0.012 * a["brow_together"]
        u_out = idn.eye_dx + idn.eye_w * (1 + idn.brow_len)
        base = eye_y - idn.brow_gap
        y_in = base + 0.02 * a["brow_lower"] - 0.026 * a["brow_inner_raise"]
        y_out = base - 0.003 + 0.008 * a["brow_lower"] - 0.022 * a["brow_outer_raise"]
        s = np.linspace(0, 1, 16)
        xs = cx + sgn * (u_in + (u_out - u_in) * s)
        arch = idn.brow_arch + 0.008 * a["brow_arch"] + 0.004 * max(0.0, a["brow_outer_raise"])
        bump = np.sin(np.pi * np.clip(s / 0.62, 0, 1) * 0.5) * np.where(
            s < 0.62, 1.0, 1 - ((s - 0.62) / 0.38) ** 2
        )
        ys = y_in + (y_out - y_in) * s - max(arch, 0.0) * bump
        th = idn.brow_thick * 0.5
        cv.poly(_thick_curve(np.stack([xs, ys], 1), th, th * 0.4), idn.brow_color)
    # glabella lines (brows drawn together and down)
    gl = max(0.0, a["brow_lower"]) * 0.5 + max(0.0, a["brow_together"]) * 0.5
    if gl > 0.2:
        for sgn in (-1.0, 1.0):
            gx = cx + sgn * 0.008
            cv.line(
                np.array(
                    [[gx, eye_y - idn.brow_gap - 0.012], [gx + sgn * 0.002, eye_y - idn.brow_gap + 0.012]]
                ),
                _mix(skin, dark, 0.3 * min(gl, 1.0)),
                0.0025,
            )
    # forehead wrinkles (brows raised)
    if raise_mean > 0.25:
        for k in range(3):
            yk = eye_y - idn.brow_gap - 0.04 - 0.016 * k
            xs = cx + np.linspace(-0.07, 0.07, 9)
            ys = yk - 0.006 * np.cos(np.linspace(-1.2, 1.2, 9))
            cv.line(np.stack([xs, ys], 1), _mix(skin, dark, 0.22 * min(1.0, raise_mean)), 0.002)

    # front hair over the forehead
    if st != "shaved":
        hl_y = eye_y - idn.hairline * fh
        if st == "fringe":
            hl_y = eye_y - idn.brow_gap - 0.035
        n = 31
        tt = np.linspace(-1, 1, n)
        edge_x = cx + tt * fw * 1.02
        temple = eye_y - 0.02
        ys = hl_y + (temple - hl_y) * np.abs(tt) ** 2.5 + 0.02 * idn.hair_part * tt * (1 - tt**2)
        if st == "fringe":
            ys = ys + 0.006 * np.sin(tt * 14) ** 2
        if st == "receding":
            ys = ys + 0.03 * np.exp(-(((np.abs(tt) - 0.55) / 0.2) ** 2))
        arc_t = np.linspace(np.pi, 2 * np.pi, 40)
        top = np.stack([cx + fw * 1.04 * np.cos(arc_t), cy + fh * 1.04 * np.sin(arc_t)], 1)
        top = top[top[:, 1] < temple]
        cap = np.vstack([top, np.stack([edge_x, ys], 1)[::-1]])
        cv.poly(cap, hc)

    # glasses
    if idn.glasses is not None:
        gw = 0.0045
        for sgn in (-1.0, 1.0):
            ex = cx + sgn * idn.eye_dx
            tt = np.linspace(0, 2 * np.pi, 33)
            rx, ry = idn.eye_w * 1.75, idn.eye_w * 1.25
            fx = ex + rx * np.sign(np.cos(tt)) * np.abs(np.cos(tt)) ** 0.6
            fy = eye_y + 0.004 + ry * np.sign(np.sin(tt)) * np.abs(np.sin(tt)) ** 0.6
            cv.line(np.stack([fx, fy], 1), idn.glasses, gw)
            cv.line(
                np.array([[ex + sgn * rx, eye_y - 0.004], [cx + sgn * fw * 0.99, eye_y + 0.005]]),
                idn.glasses,
                gw,
            )
        cv.line(
            np.array(
                [
                    [cx - idn.eye_dx + idn.eye_w * 1.75, eye_y],
                    [cx, eye_y - 0.008],
                    [cx + idn.eye_dx - idn.eye_w * 1.75, eye_y],
                ]
            ),
            idn.glasses,
            gw,
        )

    nose_tip = (cx, nose_tip_y)
    return np.array([eye_centres[0], eye_centres[1], nose_tip, corners[0], corners[1]], dtype=np.float64)


# --------------------------------------------------------------------------- public rendering


def render_face(
    identity: Identity,
    expression: str,
    intensity: float,
    rng: np.random.Generator,
    size: int = 128,
    nuisance: Nuisance | None = None,
    jitter_std: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one face image and its five landmarks.

    Args:
        identity: the subject (from :func:`sample_identity`).
        expression: one of :data:`fer.labels.BASIC7`.
        intensity: expression intensity (0 = rest pose, 1 = full profile).
        rng: per-image generator; draws the background, action jitter and noise.
        size: output width and height in pixels.
        nuisance: warp, lighting and noise; ``None`` means :meth:`Nuisance.none`
            (the background is still drawn).
        jitter_std: std of the per-image random jitter of every action.

    Returns:
        ``(image, landmarks)``: an ``(size, size, 3)`` uint8 RGB array and a ``(5, 2)``
        float array of ``x y`` pixel coordinates (origin at the top-left pixel's centre)
        in the order left eye, right eye, nose tip, left mouth corner, right mouth corner
        (left/right as seen in the image).
    """
    if expression not in EXPRESSION_PROFILES:
        raise ValueError(f"unknown expression {expression!r}; expected one of {list(BASIC7)}")
    nz = nuisance if nuisance is not None else Nuisance.none()
    jitter = rng.normal(0.0, jitter_std, len(ACTIONS)) if jitter_std > 0 else None
    act = identity.actions(expression, float(intensity), jitter)
    m = nz.matrix(size)

    canvas_img = _background(rng, size)
    cv = _Canvas(canvas_img, m, size)
    canon = _render_canonical_face(cv, identity, act)

    img = np.asarray(canvas_img.reduce(SUPERSAMPLE), dtype=np.float64)
    # lighting: global contrast/brightness and a directional multiplicative gradient
    if nz.contrast != 1.0 or nz.brightness != 0.0:
        img = (img - 128.0) * nz.contrast + 128.0 + nz.brightness
    if nz.light_gradient != 0.0:
        a = math.radians(nz.light_dir_deg)
        coords = (np.arange(size, dtype=np.float64) - (size - 1) / 2) / (size / 2)
        grad = math.cos(a) * coords[None, :] + math.sin(a) * coords[:, None]
        img = img * (1.0 + nz.light_gradient * grad)[..., None]
    if nz.noise_std > 0:
        img = img + rng.normal(0.0, nz.noise_std, img.shape)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    pts = canon * size
    pts = pts @ m[:, :2].T + m[:, 2] - 0.5  # corner -> centre coordinates
    if nz.landmark_noise_px > 0:
        pts = pts + rng.normal(0.0, nz.landmark_noise_px, pts.shape)
    return out, pts


# --------------------------------------------------------------------------- data set


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _write_image(path: Path, img: np.ndarray, pts: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(_png_bytes(img))
    with atomic_path(landmark_path(path)) as tmp:
        write_landmarks(tmp, pts)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The text of a CSV file (``\n`` line ends) with the demo's layout: the header, then
    the rows (also used by ``benchmarks/no_class_corpus.py`` to write files of the same
    layout)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


_OWNED = {"expr", "corpus", "corpus_truth.csv", "demo_info.json"}


def _prepare_out(out: Path) -> None:
    """Create ``out``; remove a previous demo there, refuse to touch anything else."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"demo output {out} exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWNED)
        if foreign:
            raise ValueError(
                f"demo output directory {out} holds files the generator did not write: {foreign[:5]}; "
                "choose an empty or new directory"
            )
        for name in sorted(_OWNED):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _intensity(rng: np.random.Generator, cfg: DemoParams) -> float:
    return float(rng.uniform(cfg.intensity_min, cfg.intensity_max))


def generate_demo(out_dir: str | Path, cfg: DemoParams, seed: int) -> dict[str, Any]:
    """Write the demo data set (layout in the module docstring) and return a summary.

    ``seed`` must be a non-negative integer; the same ``(cfg, seed)`` gives byte-identical
    files. An existing ``out_dir`` is cleared if it only holds a previous demo, and
    refused (ValueError) if it holds anything else.
    """
    if not isinstance(cfg, DemoParams):
        raise TypeError(f"cfg must be a DemoParams, got {type(cfg).__name__}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    out = Path(out_dir)
    _prepare_out(out)
    size = cfg.image_size
    w_s = max(3, len(str(cfg.n_subjects)))
    w_k = max(2, len(str(cfg.images_per_expression)))
    w_c = max(4, len(str(cfg.corpus_subjects)))
    w_ck = max(4, len(str(cfg.corpus_images_per_subject)))

    # labelled expression set
    expr_rows: list[list[str]] = []
    for si in range(cfg.n_subjects):
        sid = f"S{si + 1:0{w_s}d}"
        ident = sample_identity(np.random.default_rng([seed, _STREAM_EXPR_IDENTITY, si]))
        for ei, expr in enumerate(BASIC7):
            for k in range(cfg.images_per_expression):
                rng = np.random.default_rng([seed, _STREAM_EXPR_IMAGE, si, ei, k])
                nz = sample_nuisance(rng, cfg)
                img, pts = render_face(ident, expr, _intensity(rng, cfg), rng, size, nz)
                rel = f"images/{sid}_{expr}_{k + 1:0{w_k}d}.png"
                _write_image(out / "expr" / rel, img, pts)
                expr_rows.append([rel, sid, expr])
    expr_rows.sort()
    write_text(out / "expr" / "labels.csv", csv_text(["image", "subject", "expression"], expr_rows))

    # unlabelled corpus with hidden truth
    corpus_rows: list[list[str]] = []
    truth_rows: list[list[str]] = []
    counts_corpus = dict.fromkeys(BASIC7, 0)
    for ci in range(cfg.corpus_subjects):
        cid = f"C{ci + 1:0{w_c}d}"
        ident = sample_identity(np.random.default_rng([seed, _STREAM_CORPUS_IDENTITY, ci]))
        for k in range(cfg.corpus_images_per_subject):
            rng = np.random.default_rng([seed, _STREAM_CORPUS_IMAGE, ci, k])
            expr = BASIC7[int(rng.integers(len(BASIC7)))]
            nz = sample_nuisance(rng, cfg)
            img, pts = render_face(ident, expr, _intensity(rng, cfg), rng, size, nz)
            rel = f"images/{cid}_{k + 1:0{w_ck}d}.png"
            _write_image(out / "corpus" / rel, img, pts)
            corpus_rows.append([rel, cid])
            truth_rows.append([rel, expr])
            counts_corpus[expr] += 1
    corpus_rows.sort()
    truth_rows.sort()
    write_text(out / "corpus" / "labels.csv", csv_text(["image", "subject"], corpus_rows))
    write_text(out / "corpus_truth.csv", csv_text(["image", "expression"], truth_rows))

    summary: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "config": to_dict(cfg),
        "classes": list(BASIC7),
        "expr_images": len(expr_rows),
        "expr_subjects": cfg.n_subjects,
        "expr_images_per_class": cfg.n_subjects * cfg.images_per_expression,
        "corpus_images": len(corpus_rows),
        "corpus_subjects": cfg.corpus_subjects,
        "corpus_images_per_class": counts_corpus,
    }
    write_json(out / "demo_info.json", summary)
    log.info(
        "demo data written to %s: %d labelled images (%d subjects), %d corpus images (%d identities)",
        out,
        len(expr_rows),
        cfg.n_subjects,
        len(corpus_rows),
        cfg.corpus_subjects,
    )
    return summary
