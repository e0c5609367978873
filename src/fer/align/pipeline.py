"""The alignment stage: images (+ optional 5-point annotations) -> aligned face crops.

Every input image ends up either as one aligned ``size`` x ``size`` crop or as a
``failed`` row with a reason in the QA table; nothing is dropped silently. The stage
fails as a whole (:class:`AlignmentFailedError`, raised by :func:`check_failures`) when
more than ``max_failure_fraction`` of the images fail. The evidence comes first and the
artifact last: the QA table and the full list of failures go to a folder that is not an
output of the stage (:func:`write_evidence`; the workflow uses the job's log folder), then
the checks run, and only then is the aligned set written, all files or none
(:func:`write_aligned`), so a failed stage leaves no partial output behind.

Landmark sources (``AlignParams.landmarks``):

``auto``        the record's landmark file when it has one, otherwise the dlib detector;
``annotation``  the landmark file is required — an image without one fails;
``detector``    always the dlib detector (landmark files are ignored);
``none``        the images are already face crops: they are only resized (area
                interpolation) to ``size`` x ``size``, no landmarks are used.

A record that is a face crop already (``AlignRecord.crop``: FER2013's 48 x 48 pixels,
RAF-DB's aligned images, an AffectNet face box without landmarks) and has no landmarks is
resized the same way in modes ``auto`` and ``none`` (landmark source ``crop`` in the QA
table); ``detector`` runs the detector on it, ``annotation`` fails it. Points given in
memory (``AlignRecord.points``: converted from a dataset's own annotation) count as an
annotation.

Alignment is a least-squares similarity (rotation, uniform scale, translation) from the
five points onto the ArcFace template scaled by ``face_scale``
(:mod:`fer.align.template`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer.align.detect import DETECT_MAX_SIDE, Detection, Dlib68Detector
from fer.align.similarity import alignment_residual, apply_affine, estimate_similarity, similarity_scale
from fer.align.template import template_points
from fer.data.landmarks import LandmarkFileError, read_landmarks
from fer.params import AlignParams, to_dict
from fer.utils.images import ImageReadError, read_image
from fer.utils.io import atomic_path, write_text

__all__ = [
    "make_detector",
    "AlignRecord",
    "AlignResult",
    "AlignOutput",
    "AlignmentFailedError",
    "align_image",
    "align_records",
    "write_aligned",
    "write_evidence",
    "check_failures",
    "run_alignment",
    "select_largest",
    "failure_kind",
    "warp_to_template",
    "QA_COLUMNS",
    "MANIFEST_COLUMNS",
]

QA_COLUMNS = ("path", "subject", "label", "split", "status", "reason", "landmark_source", "n_faces", "residual")
MANIFEST_COLUMNS = ("index", "path", "subject", "label", "split")

#: Landmarks further than this fraction of the image side outside the image are rejected.
OUTSIDE_TOLERANCE = 0.05
#: Boxes whose sides differ by less than this factor (one level of dlib's 6/5 HOG image
#: pyramid) count as the same size when picking the largest face; the higher score wins.
SIZE_TIE_FACTOR = 1.2


class AlignmentFailedError(RuntimeError):
    """Too many images failed to align (see qa.csv for every image's reason)."""


def make_detector(cfg: AlignParams) -> Dlib68Detector:
    """The face detector of the ``align`` settings."""
    return Dlib68Detector(
        upsample=cfg.detector_upsample,
        min_side=cfg.detector_min_side,
        max_side=max(DETECT_MAX_SIDE, cfg.detector_min_side),
    )


@dataclass
class AlignRecord:
    """One input row: an image file, its subject id, its label (None when unlabelled)
    and its 5-point landmark file (None when there is none)."""

    path: str
    subject: str
    label: str | None = None
    landmarks_path: str | None = None
    split: str | None = None  # the dataset's official split ('train' | 'val' | 'test'), if any
    points: Sequence[Sequence[float]] | None = None  # 5 annotated points given in memory
    crop: bool = False  # already a face crop: resized unless align.landmarks is 'detector'
    pixels: np.ndarray | None = None  # grey (H, W) or RGB pixels instead of an image file
    box: tuple[int, int, int, int] | None = None  # face box (x, y, w, h): cut out when no points


@dataclass
class AlignResult:
    image: np.ndarray | None  # (size, size, C) uint8, None when failed
    status: str  # "ok" | "failed"
    reason: str  # "" when ok
    landmark_source: str  # "annotation" | "detector" | "none"
    n_faces: int | None = None  # detector mode only
    residual: float | None = None  # alignment residual (inter-ocular units)


@dataclass
class AlignOutput:
    images: np.ndarray  # (N_ok, size, size, C) uint8
    kept: list[int]  # indices into the records of the ok rows, same order as images
    qa: list[dict]  # one row per input record, keys QA_COLUMNS
    qa_path: str | None = field(default=None)  # set by write_evidence
    #: What the dataset's reader did not read as an image (QA-table rows, status ``skipped``):
    #: listed in qa.csv after the images, counted in meta.json, never a failure.
    skipped: list[dict] = field(default_factory=list)
    has_subjects: bool = True  # False: the dataset has no subject ids (each image its own)
    failures_path: str | None = field(default=None)  # set by write_evidence

    @property
    def n_input(self) -> int:
        return len(self.qa)

    @property
    def n_failed(self) -> int:
        return sum(1 for r in self.qa if r["status"] != "ok")

    @property
    def failure_fraction(self) -> float:
        return self.n_failed / self.n_input if self.qa else 0.0


def failure_kind(reason: str) -> str:
    """The stable category of a QA reason: the text before its first colon
    (``unreadable image``, ``landmark file unreadable``, ``no landmark file``,
    ``no face detected``, ``several faces``, ``landmarks outside image``,
    ``degenerate landmarks``, ``residual too high``)."""
    return reason.split(":", 1)[0].strip()


def _failed(
    reason: str, source: str, n_faces: int | None = None, residual: float | None = None
) -> AlignResult:
    return AlignResult(None, "failed", reason, source, n_faces, residual)


def select_largest(dets: Sequence[Detection]) -> Detection:
    """The main face: the largest box, where boxes whose sides differ by less than one HOG
    pyramid level (factor 1.2) count as equally large and the higher score decides.

    (The tie rule matters: on ``skimage.data.astronaut`` with upsampling, dlib also fires
    on the mission patch with a box as large as the face but a much lower score.)
    """
    if not dets:
        raise ValueError("no detections")
    sides = [math.sqrt(d.area) for d in dets]
    biggest = max(sides)
    candidates = [d for d, s in zip(dets, sides, strict=True) if s * SIZE_TIE_FACTOR >= biggest]
    return max(candidates, key=lambda d: d.score)


def _to_channels(img: np.ndarray, channels: str) -> np.ndarray:
    import cv2

    if channels == "gray":
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    return img


def warp_to_template(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warp ``rgb`` with the (2, 3) similarity ``m`` into a ``size`` x ``size`` crop.

    ``cv2.warpAffine`` with bilinear interpolation and ``BORDER_REPLICATE``: where the
    crop reaches past the photo's edge the edge pixels are repeated instead of filling
    with black, because constant black corners appear only in some images (the
    off-centre or large faces) and a CNN can learn to key on them.

    When the warp shrinks by more than 2x, the relevant region is first reduced with area
    interpolation (an anti-aliasing pre-filter; plain bilinear sampling would alias), and
    the warp is adjusted so the result is geometrically the same.
    """
    import cv2

    m = np.asarray(m, dtype=np.float64)
    h, w = rgb.shape[:2]
    s = similarity_scale(m)
    if s < 0.5:
        inv = cv2.invertAffineTransform(m)
        corners = apply_affine(inv, np.array([[-1, -1], [size, -1], [-1, size], [size, size]], float))
        x0 = max(int(math.floor(corners[:, 0].min())) - 2, 0)
        y0 = max(int(math.floor(corners[:, 1].min())) - 2, 0)
        x1 = min(int(math.ceil(corners[:, 0].max())) + 2, w - 1)
        y1 = min(int(math.ceil(corners[:, 1].max())) + 2, h - 1)
        if x1 > x0 and y1 > y0:
            crop = rgb[y0 : y1 + 1, x0 : x1 + 1]
            cw, ch = crop.shape[1], crop.shape[0]
            nw, nh = max(2, round(cw * s)), max(2, round(ch * s))
            if nw < cw and nh < ch:
                small = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
                fx, fy = nw / cw, nh / ch
                # small pixel (u, v) -> original ((u + .5) / fx - .5 + x0, (v + .5) / fy - .5 + y0)
                t = np.array([[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0]])
                m = np.hstack([m[:, :2] @ t[:, :2], (m[:, :2] @ t[:, 2] + m[:, 2])[:, None]])
                rgb = small
    return cv2.warpAffine(
        np.ascontiguousarray(rgb),
        m,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def align_image(
    rgb: np.ndarray,
    landmarks: np.ndarray | None,
    cfg: AlignParams,
    detector: Dlib68Detector | None = None,
) -> AlignResult:
    """Align one H x W x 3 uint8 RGB image.

    ``landmarks`` is the image's annotated (5, 2) points or None. Which source is used
    follows ``cfg.landmarks`` (module doc); in ``detector`` mode the annotation is
    ignored. ``detector`` is created from ``cfg`` when needed and not given (the models
    are cached per process, but pass one to avoid re-creating it per image).
    Expected problems (no face, several faces with ``multiple_faces="fail"``, degenerate
    or out-of-image landmarks, residual above ``max_residual``) give a ``failed`` result
    with a reason; programming errors raise.
    """
    import cv2

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"align_image expects an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}"
        )
    h, w = rgb.shape[:2]
    size = int(cfg.size)

    if cfg.landmarks == "none":
        out = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        return AlignResult(_to_channels(out, cfg.channels), "ok", "", "none")

    n_faces: int | None = None
    if cfg.landmarks == "detector" or (cfg.landmarks == "auto" and landmarks is None):
        source = "detector"
        if detector is None:
            detector = make_detector(cfg)
        dets = detector.detect(rgb)
        n_faces = len(dets)
        if not dets:
            return _failed(f"no face detected: the dlib HOG detector found no face in the {w}x{h} image", source, 0)
        if len(dets) > 1 and cfg.multiple_faces == "fail":
            return _failed(
                f"several faces: {len(dets)} faces detected in the {w}x{h} image and "
                "align.multiple_faces is 'fail'",
                source,
                n_faces,
            )
        pts = select_largest(dets).points5
    else:
        source = "annotation"
        if landmarks is None:
            return _failed("no landmark file: align.landmarks is 'annotation' but this image has none", source)
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (5, 2):
            return _failed(f"degenerate landmarks: shape {pts.shape}, expected (5, 2)", source)

    tol_x, tol_y = OUTSIDE_TOLERANCE * w, OUTSIDE_TOLERANCE * h
    outside = (
        (pts[:, 0] < -tol_x) | (pts[:, 0] > w - 1 + tol_x) | (pts[:, 1] < -tol_y) | (pts[:, 1] > h - 1 + tol_y)
    )
    if outside.any():
        return _failed(
            f"landmarks outside image: {int(outside.sum())} of 5 points lie outside the {w}x{h} image "
            f"(landmarks for a different image size?)",
            source,
            n_faces,
        )

    dst = template_points(size, cfg.face_scale)
    try:
        m = estimate_similarity(pts, dst)
    except ValueError as e:
        return _failed(f"degenerate landmarks: {e}", source, n_faces)
    residual = alignment_residual(m, pts, dst, size, cfg.face_scale)
    if residual > cfg.max_residual:
        return _failed(
            f"residual too high: alignment residual {residual:.3f} > max_residual "
            f"{cfg.max_residual:g}; the 5 landmarks "
            "do not fit a frontal face (wrong points or order, or strong head pose)",
            source,
            n_faces,
            residual,
        )
    out = warp_to_template(rgb, m, size)
    return AlignResult(_to_channels(out, cfg.channels), "ok", "", source, n_faces, residual)


def _progress(it, total: int, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc="align", unit="img")


def _record_image(rec: AlignRecord) -> np.ndarray:
    """The record's H x W x 3 uint8 RGB image: its pixels, else its image file."""
    if rec.pixels is None:
        return read_image(rec.path)
    px = np.asarray(rec.pixels, dtype=np.uint8)
    if px.ndim == 2:
        px = np.repeat(px[..., None], 3, axis=2)
    if px.ndim != 3 or px.shape[2] != 3 or 0 in px.shape:
        raise ImageReadError(f"{rec.path}: pixels of shape {px.shape}, expected (H, W) or (H, W, 3)")
    return px


def _resize_crop(rgb: np.ndarray, rec: AlignRecord, cfg: AlignParams) -> AlignResult:
    """A face crop (or the record's face box cut out of the image, clamped to it) resized
    to ``size`` x ``size``: landmark source ``crop``."""
    import cv2

    if rec.box is not None:
        x, y, w, h = rec.box
        H, W = rgb.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return _failed(f"degenerate landmarks: face box {rec.box} lies outside the {W}x{H} image", "crop")
        rgb = rgb[y0:y1, x0:x1]
    out = cv2.resize(np.ascontiguousarray(rgb), (cfg.size, cfg.size), interpolation=cv2.INTER_AREA)
    return AlignResult(_to_channels(out, cfg.channels), "ok", "", "crop")


def align_records(records: Sequence[AlignRecord], cfg: AlignParams, progress: bool = False) -> AlignOutput:
    """Align every record; returns the ok crops, their record indices and one QA row per record.

    Per-image problems (unreadable image, unreadable landmark file, no face, ...) become
    ``failed`` QA rows with a reason. The detector is created once, and only when needed.
    """
    detector: Dlib68Detector | None = None
    images: list[np.ndarray] = []
    kept: list[int] = []
    qa: list[dict] = []

    for i, rec in _progress(enumerate(records), len(records), progress):
        use_annotation = cfg.landmarks in ("auto", "annotation") and rec.landmarks_path is not None
        if cfg.landmarks == "none":
            source_if_failed = "none"
        elif use_annotation or cfg.landmarks == "annotation":
            source_if_failed = "annotation"
        else:
            source_if_failed = "detector"
        has_points = rec.points is not None and cfg.landmarks in ("auto", "annotation")
        if has_points:
            use_annotation, source_if_failed = False, "annotation"
        try:
            rgb = _record_image(rec)
        except ImageReadError as e:
            res = _failed(f"unreadable image: {e}", source_if_failed)
        else:
            landmarks = None
            res = None
            if has_points:
                landmarks = np.asarray(rec.points, dtype=np.float64)
            elif (rec.crop or rec.box is not None) and cfg.landmarks in ("auto", "none"):
                res = _resize_crop(rgb, rec, cfg)
            if res is None and use_annotation:
                try:
                    landmarks = read_landmarks(rec.landmarks_path)
                except LandmarkFileError as e:
                    res = _failed(f"landmark file unreadable: {e}", "annotation")
            if res is None:
                if detector is None and (
                    cfg.landmarks == "detector" or (cfg.landmarks == "auto" and landmarks is None)
                ):
                    detector = make_detector(cfg).load()
                try:
                    res = align_image(rgb, landmarks, cfg, detector)
                except Exception as e:  # a bug or environment problem, not a bad image
                    raise RuntimeError(f"aligning {rec.path} failed unexpectedly: {e}") from e
        qa.append(
            {
                "path": str(rec.path),
                "subject": rec.subject,
                "label": rec.label,
                "split": rec.split,
                "status": res.status,
                "reason": res.reason,
                "landmark_source": res.landmark_source,
                "n_faces": res.n_faces,
                "residual": res.residual,
            }
        )
        if res.status == "ok":
            images.append(res.image)
            kept.append(i)

    c = cfg.n_channels
    arr = (
        np.stack(images).astype(np.uint8, copy=False)
        if images
        else np.zeros((0, cfg.size, cfg.size, c), dtype=np.uint8)
    )
    return AlignOutput(images=arr, kept=kept, qa=qa)


def _csv_text(columns: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: _csv_value(r.get(k)) for k in columns})
    return buf.getvalue()


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _summary(output: AlignOutput, cfg: AlignParams, classes: Sequence[str]) -> dict:
    ok_rows = [r for r in output.qa if r["status"] == "ok"]
    residuals = np.array([r["residual"] for r in ok_rows if r["residual"] is not None], dtype=np.float64)
    reasons = Counter(failure_kind(r["reason"]) for r in output.qa if r["status"] != "ok")
    return {
        "size": int(cfg.size),
        "channels": cfg.channels,
        "face_scale": float(cfg.face_scale),
        "landmarks": cfg.landmarks,
        "classes": list(classes),
        "n_input": output.n_input,
        "n_ok": len(ok_rows),
        "n_failed": output.n_failed,
        "failure_fraction": output.failure_fraction,
        "landmark_sources": dict(Counter(r["landmark_source"] for r in ok_rows)),
        "landmark_sources_all": dict(Counter(r["landmark_source"] for r in output.qa)),
        "failure_reasons": dict(reasons),
        "residual_median": float(np.median(residuals)) if residuals.size else None,
        "residual_p95": float(np.percentile(residuals, 95)) if residuals.size else None,
        "has_subjects": output.has_subjects,
        "n_skipped": len(output.skipped),
        "skipped_reasons": dict(sorted(Counter(failure_kind(r["reason"]) for r in output.skipped).items())),
        "splits": dict(sorted(Counter(r["split"] for r in ok_rows if r.get("split")).items())),
        "config": to_dict(cfg),
    }


def write_evidence(evidence_dir: str | Path, output: AlignOutput, cfg: AlignParams) -> tuple[Path, Path]:
    """Write the QA table and the full list of failures into ``evidence_dir``, a folder
    that is not a declared output of the stage (the job's log folder), so both survive a
    failed stage: Snakemake deletes the declared outputs of a failed job.

    * ``qa.csv``: every input row, columns :data:`QA_COLUMNS` (as ``qa.csv`` of the
      aligned set);
    * ``failures.txt``: a header line with the counts and the threshold, then one line per
      failed image, ``<path>: <reason>`` (all of them, not the first few).

    Sets ``output.qa_path`` and ``output.failures_path``; returns both paths.
    """
    evidence_dir = Path(evidence_dir)
    qa_path = evidence_dir / "qa.csv"
    failures_path = evidence_dir / "failures.txt"
    write_text(qa_path, _csv_text(QA_COLUMNS, output.qa + output.skipped))
    failed = [r for r in output.qa if r["status"] != "ok"]
    lines = [
        f"# {len(failed)} of {output.n_input} images failed to align ({output.failure_fraction:.1%}); "
        f"align.max_failure_fraction = {cfg.max_failure_fraction:g}"
    ]
    lines += [f"{r['path']}: {r['reason']}" for r in failed]
    write_text(failures_path, "\n".join(lines) + "\n")
    output.qa_path, output.failures_path = str(qa_path), str(failures_path)
    return qa_path, failures_path


def write_aligned(
    out_dir: str | Path,
    output: AlignOutput,
    records: Sequence[AlignRecord],
    cfg: AlignParams,
    classes: Sequence[str],
    extra_json: Mapping[str | Path, object] | None = None,
) -> None:
    """Write ``images.npy``, ``manifest.csv``, ``qa.csv`` and ``meta.json`` into ``out_dir``.

    * ``images.npy``: uint8 (N_ok, size, size, C), C = 1 for gray, 3 for rgb;
    * ``manifest.csv``: ``index,path,subject,label`` per kept image (index = row in images.npy;
      label empty for unlabelled images);
    * ``qa.csv``: every input row with ``status,reason,landmark_source,n_faces,residual``;
    * ``meta.json``: ``size, channels, face_scale, landmarks, classes, n_input, n_ok,
      n_failed, failure_fraction, landmark_sources`` (counts over the ok images),
      ``landmark_sources_all`` (over all inputs), ``failure_reasons`` (counts per
      :func:`failure_kind`), ``residual_median, residual_p95`` (over the ok images with
      landmarks; null when none), ``has_subjects`` (False: every image is its own
      subject), ``n_skipped`` and ``skipped_reasons`` (what the reader did not read, by
      kind), ``splits`` (ok images per official split; empty without one) and ``config``
      (the whole AlignParams);
    * ``extra_json``: more JSON files written with them (path -> object; the stage's metrics).

    All or nothing: every file is written to a temporary name first and the files are
    renamed into place only when all of them are complete, so an error leaves none of them.
    Call it after :func:`check_failures`, so a failed stage writes no declared output (its
    evidence is in :func:`write_evidence`'s folder).
    """
    out_dir = Path(out_dir)
    if len(records) != len(output.qa):
        raise ValueError(f"{len(records)} records but the alignment output has {len(output.qa)} QA rows")
    if len(output.kept) != len(output.images):
        raise ValueError(f"{len(output.kept)} kept indices but {len(output.images)} images")
    expected = (cfg.size, cfg.size, cfg.n_channels)
    if output.images.dtype != np.uint8 or output.images.shape[1:] != expected:
        raise ValueError(
            f"aligned images are {output.images.dtype} {output.images.shape}, expected uint8 (N, *{expected})"
        )
    class_set = set(classes)
    manifest = []
    for row, i in enumerate(output.kept):
        rec = records[i]
        if rec.label not in (None, "") and rec.label not in class_set:
            raise ValueError(f"{rec.path}: label {rec.label!r} is not one of the classes {list(classes)}")
        manifest.append(
            {"index": row, "path": str(rec.path), "subject": rec.subject, "label": rec.label, "split": rec.split}
        )

    texts: dict[Path, str] = {
        out_dir / "manifest.csv": _csv_text(MANIFEST_COLUMNS, manifest),
        out_dir / "qa.csv": _csv_text(QA_COLUMNS, output.qa + output.skipped),
        out_dir / "meta.json": json.dumps(_summary(output, cfg, classes), indent=2) + "\n",
    }
    for path, obj in (extra_json or {}).items():
        texts[Path(path)] = json.dumps(obj, indent=2) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:  # each atomic_path renames on a clean exit only
        images_tmp = stack.enter_context(atomic_path(out_dir / "images.npy"))
        tmps = {path: stack.enter_context(atomic_path(path)) for path in texts}
        with open(images_tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(output.images, dtype=np.uint8), allow_pickle=False)
        for path, text in texts.items():
            tmps[path].write_text(text)


def check_failures(
    output: AlignOutput,
    cfg: AlignParams,
    qa_path: str | Path | None = None,
    failures_path: str | Path | None = None,
) -> None:
    """Raise :class:`AlignmentFailedError` when the failed fraction exceeds
    ``cfg.max_failure_fraction`` (or there is no input at all). The message names the QA
    table and the list of failures (default: where :func:`write_evidence` put them)."""
    qa_path = qa_path or output.qa_path
    failures_path = failures_path or output.failures_path
    where = f"; every image's status is in {qa_path}" if qa_path else ""
    if output.n_input == 0:
        raise AlignmentFailedError(f"alignment got no input images{where}")
    frac = output.failure_fraction
    if frac <= cfg.max_failure_fraction:
        return
    failed = [r for r in output.qa if r["status"] != "ok"]
    if failures_path:
        where += f", and all {len(failed)} failures are listed in {failures_path}"
    first = "\n".join(f"  {r['path']}: {r['reason']}" for r in failed[:5])
    more = f"\n  ... and {len(failed) - 5} more" if len(failed) > 5 else ""
    raise AlignmentFailedError(
        f"{len(failed)} of {output.n_input} images failed to align ({frac:.1%}), more than "
        f"align.max_failure_fraction = {cfg.max_failure_fraction:g}{where}. First failures:\n"
        f"{first}{more}"
    )


def run_alignment(
    records: Sequence[AlignRecord],
    out_dir: str | Path,
    cfg: AlignParams,
    classes: Sequence[str],
    progress: bool = False,
    evidence_dir: str | Path | None = None,
) -> AlignOutput:
    """align_records -> write_evidence (with ``evidence_dir``) -> check_failures ->
    write_aligned: a failed check writes nothing into ``out_dir``."""
    output = align_records(records, cfg, progress=progress)
    if evidence_dir is not None:
        write_evidence(evidence_dir, output, cfg)
    check_failures(output, cfg)
    write_aligned(out_dir, output, records, cfg, classes)
    return output
