"""The canonical 5-point face template that every aligned face is warped onto.

The reference is the ArcFace / insightface 112x112 template, whose points are given in
the same convention as :mod:`fer.data.landmarks`: left eye centre, right eye centre,
nose tip, left mouth corner, right mouth corner, left/right as seen in the image, pixel
coordinates with the origin at the centre of the top-left pixel (the ``cv2.warpAffine``
convention).

``face_scale`` controls how much of the head the crop shows. The ArcFace template was
designed for identity recognition and crops tightly: the eyebrows touch the top edge and
the chin is cut off. Expression recognition needs the brows (AU1/AU2/AU4) and the
chin/jaw (AU17, AU26), so the pipeline default is ``face_scale=0.9``, which shrinks the
template points towards the image centre: the face becomes 10 % smaller in the output and
more of the forehead, chin and cheeks enter the crop. ``face_scale > 1`` zooms in.
"""

from __future__ import annotations

import numpy as np

#: Side of the square image the reference template is defined for.
TEMPLATE_SIZE = 112

#: ArcFace / insightface 5-point template for a 112x112 crop, shape (5, 2), (x, y).
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye (image left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float64,
)
ARCFACE_112.setflags(write=False)


def template_points(size: int, face_scale: float = 1.0) -> np.ndarray:
    """Template landmark positions for a ``size`` x ``size`` output, shape (5, 2) float64.

    The 112-px template is rescaled to ``size`` (pixel-centre convention: a point at
    pixel-centre coordinate ``p`` maps to ``(p + 0.5) * size / 112 - 0.5``, so the image
    centre stays the image centre), then scaled by ``face_scale`` about the image centre
    ``((size - 1) / 2, (size - 1) / 2)``. ``face_scale < 1`` zooms out (the face is smaller
    and more of the head — brows, forehead, chin — is kept); ``1`` is the ArcFace crop.
    """
    if int(size) != size or size < 8:
        raise ValueError(f"template size must be an integer >= 8, got {size!r}")
    if not np.isfinite(face_scale) or face_scale <= 0:
        raise ValueError(f"face_scale must be a positive number, got {face_scale!r}")
    size = int(size)
    pts = (ARCFACE_112 + 0.5) * (size / TEMPLATE_SIZE) - 0.5
    centre = (size - 1) / 2.0
    return (pts - centre) * float(face_scale) + centre


def interocular_distance(points: np.ndarray) -> float:
    """Distance between the two eye centres of a (5, 2) point set."""
    pts = np.asarray(points, dtype=np.float64)
    return float(np.linalg.norm(pts[1] - pts[0]))
