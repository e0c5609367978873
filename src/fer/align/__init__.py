"""fer.align: 5-point similarity alignment of face images onto the ArcFace template.

Landmarks come from annotation files (:mod:`fer.data.landmarks`) or from dlib's HOG
detector + 68-point shape predictor (:mod:`fer.align.detect`); see
:mod:`fer.align.pipeline` for the stage itself.
"""

from fer.align.detect import Detection, DetectorUnavailableError, Dlib68Detector
from fer.align.pipeline import (
    AlignmentFailedError,
    AlignOutput,
    AlignRecord,
    AlignResult,
    align_image,
    align_records,
    check_failures,
    run_alignment,
    write_aligned,
)
from fer.align.similarity import alignment_residual, apply_affine, estimate_similarity
from fer.align.template import ARCFACE_112, template_points

__all__ = [
    "ARCFACE_112",
    "AlignOutput",
    "AlignRecord",
    "AlignResult",
    "AlignmentFailedError",
    "Detection",
    "DetectorUnavailableError",
    "Dlib68Detector",
    "align_image",
    "align_records",
    "alignment_residual",
    "apply_affine",
    "check_failures",
    "estimate_similarity",
    "run_alignment",
    "template_points",
    "write_aligned",
]
