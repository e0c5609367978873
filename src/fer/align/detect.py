"""Face detection and 5-point landmarks with dlib, using weights that ship offline.

* Detector: dlib's HOG + linear SVM frontal face detector (built into dlib, no file).
* Landmarks: dlib's 68-point shape predictor (iBUG 300-W), from the
  ``face_recognition_models`` package, reduced to the 5-point convention of
  :mod:`fer.data.landmarks`:

  ====================  ====================================
  5-point               68-point (0-based iBUG indices)
  ====================  ====================================
  left/right eye        mean of 36-41 and of 42-47; the one
                        with the smaller x is the image-left
  nose tip              30
  left/right mouth      48 and 54 (outer mouth corners)
  ====================  ====================================

The HOG detector's smallest face is about 80x80 px (40x40 after one upsampling), so
images whose shorter side is below ``min_side`` are first enlarged (bilinear) and all
coordinates are mapped back to the original pixel grid. Large images are the other way
round: dlib's time and memory grow with the pixel count (times 4 per upsampling; an
8000x8000 photo took 28 s and 3.1 GB), so an image whose longer side exceeds ``max_side``
(default :data:`DETECT_MAX_SIDE`, 1024 px: 0.7 s at one upsampling) is reduced with area
interpolation before detection and the landmarks are mapped back. A face then needs about
40 px in the reduced image (4 % of the longer side at one upsampling), which the faces of
expression datasets exceed by far. Nothing is downloaded: the
weights' location is found without importing ``face_recognition_models`` (which imports
the deprecated ``pkg_resources``).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer.data.landmarks import reduce_68_to_5

__all__ = [
    "Detection",
    "DetectorUnavailableError",
    "Dlib68Detector",
    "reduce_68_to_5",
    "shape_predictor_path",
]

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
#: Images whose longer side is larger are reduced to it before detection (module docstring).
DETECT_MAX_SIDE = 1024


class DetectorUnavailableError(RuntimeError):
    """dlib or the shape-predictor weights are not installed."""


@dataclass
class Detection:
    """One detected face.

    ``box`` is ``(x0, y0, x1, y1)`` in pixel coordinates of the input image (dlib's
    inclusive rectangle, may extend past the image border); ``points5`` is a (5, 2)
    float64 array in the :mod:`fer.data.landmarks` order; ``score`` is the HOG detector's
    SVM margin (higher is more confident; 0 is dlib's default threshold).
    """

    box: tuple[float, float, float, float]
    points5: np.ndarray
    score: float

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def shape_predictor_path() -> Path:
    """Location of ``shape_predictor_68_face_landmarks.dat`` in ``face_recognition_models``."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailableError(
            "the Python package 'face_recognition_models' (dlib model weights) is not installed; "
            "install face-recognition-models==0.3.0 (it is listed in pyproject.toml / requirements.lock)"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "models" / PREDICTOR_FILE
        if path.is_file():
            return path
    raise DetectorUnavailableError(
        f"{PREDICTOR_FILE} not found under {list(spec.submodule_search_locations)}/models; "
        "the face_recognition_models installation is incomplete — reinstall face-recognition-models"
    )


_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}


def _models():
    """(frontal face detector, 68-point shape predictor), loaded once per process."""
    with _LOCK:
        if "detector" not in _MODELS:
            try:
                import dlib
            except ImportError as e:
                raise DetectorUnavailableError(
                    f"cannot import dlib ({e}); install dlib-bin==20.0.1.post1"
                ) from e
            path = shape_predictor_path()
            try:
                predictor = dlib.shape_predictor(str(path))
            except RuntimeError as e:
                raise DetectorUnavailableError(f"{path}: cannot load dlib shape predictor: {e}") from e
            _MODELS["predictor"] = predictor
            _MODELS["detector"] = dlib.get_frontal_face_detector()
            _MODELS["dlib"] = dlib
        return _MODELS["dlib"], _MODELS["detector"], _MODELS["predictor"]


class Dlib68Detector:
    """dlib HOG face detector + 68-point shape predictor, reduced to 5 points.

    ``upsample``: how many times dlib doubles the image before scanning (each doubling
    halves the smallest detectable face and roughly quadruples the time).
    ``min_side``: images whose shorter side is smaller are enlarged to this size first.
    ``max_side``: images whose longer side is larger are reduced to this size first (0: never).
    The models are loaded on the first call to :meth:`detect` and shared by all instances
    in the process.
    """

    def __init__(self, upsample: int = 1, min_side: int = 160, max_side: int = DETECT_MAX_SIDE):
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f"upsample must be an integer >= 0, got {upsample!r}")
        if int(min_side) != min_side or min_side < 0:
            raise ValueError(f"min_side must be an integer >= 0, got {min_side!r}")
        if int(max_side) != max_side or max_side < 0 or (max_side and max_side < min_side):
            raise ValueError(f"max_side must be an integer >= min_side ({min_side}) or 0, got {max_side!r}")
        self.upsample = int(upsample)
        self.min_side = int(min_side)
        self.max_side = int(max_side)

    def load(self) -> Dlib68Detector:
        """Load the models now (otherwise done lazily); raises DetectorUnavailableError."""
        _models()
        return self

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Detect faces in an H x W x 3 uint8 RGB (or H x W uint8 gray) image.

        Returns detections sorted by decreasing score, in the input's pixel coordinates.
        """
        import cv2

        img = np.asarray(rgb)
        if img.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got dtype {img.dtype}")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise ValueError(f"expected an H x W x 3 RGB or H x W gray image, got shape {img.shape}")
        h, w = img.shape[:2]
        if h == 0 or w == 0:
            return []
        _, detector, predictor = _models()

        f = 1.0
        if min(h, w) < self.min_side:
            f = self.min_side / min(h, w)
            nw, nh = max(1, round(w * f)), max(1, round(h * f))
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            fx, fy = nw / w, nh / h
        elif self.max_side and max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            nw, nh = max(1, round(w * f)), max(1, round(h * f))
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / w, nh / h
        else:
            fx = fy = 1.0
        img = np.ascontiguousarray(img)

        rects, scores, _ = detector.run(img, self.upsample, 0.0)
        out: list[Detection] = []
        for rect, score in zip(rects, scores, strict=True):
            shape = predictor(img, rect)
            pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
            box = np.array(
                [[rect.left(), rect.top()], [rect.right(), rect.bottom()]], dtype=np.float64
            )
            if f != 1.0:
                # pixel-centre convention: x_orig = (x_big + 0.5) / f - 0.5
                scale = np.array([fx, fy])
                pts = (pts + 0.5) / scale - 0.5
                box = (box + 0.5) / scale - 0.5
            out.append(
                Detection(
                    box=(float(box[0, 0]), float(box[0, 1]), float(box[1, 0]), float(box[1, 1])),
                    points5=reduce_68_to_5(pts),
                    score=float(score),
                )
            )
        out.sort(key=lambda d: -d.score)
        return out
