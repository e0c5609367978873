"""One frozen dataclass per params.yaml section: the settings' single home.

Each class is the typed form of one section of params.yaml (or of a nested mapping such
as ``baseline.augment``); :func:`fer.params.coerce.build` makes it from the mapping and
:func:`fer.params.coerce.to_dict` writes it back. Field names are the params.yaml keys
(``lambda_`` for the keyword ``lambda``), in params.yaml order; ``__post_init__`` checks
ranges a JSON Schema cannot (or that library callers might get wrong) and raises
``ValueError`` naming ``section.key``.

Defaults exist for library use and tests; the pipeline's params.yaml has every key (the
schema requires them), so a default never silently stands in for a value of yours.

This module imports nothing heavy (no torch, no numpy): the Snakefile imports it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

__all__ = [
    "ARCHS",
    "FLIP_ONLY",
    "SELECT_METRICS",
    "AlignParams",
    "AugmentParams",
    "ClusteringParams",
    "ComputeParams",
    "CorpusParams",
    "DataParams",
    "DemoParams",
    "DgcnParams",
    "FersnetParams",
    "FesganParams",
    "FinetuneParams",
    "FixmatchParams",
    "FoldsParams",
    "LabelsParams",
    "JointParams",
    "RdbpParams",
    "RecognizerParams",
    "ReportParams",
    "SynthesisParams",
]

#: Recogniser backbones (``fer.models.build_model``).
ARCHS: tuple[str, ...] = ("resnet18", "vgg_small", "accnn")
#: Validation metrics a run can select its epoch on, and whether larger is better.
SELECT_METRICS: dict[str, bool] = {
    "val/mean_class_acc": True,
    "val/acc": True,
    "val/macro_f1": True,
    "val/loss": False,
}
#: Alignment modes (``fer.align.pipeline``).
LANDMARK_MODES: tuple[str, ...] = ("auto", "annotation", "detector", "none")
CHANNEL_MODES: tuple[str, ...] = ("gray", "rgb")
MULTIPLE_FACE_MODES: tuple[str, ...] = ("largest", "fail")
#: Dataset formats (``fer.data.manifest``, ``fer.data.formats``).
DATA_FORMATS: tuple[str, ...] = ("demo", "csv", "folders", "ckplus", "oulu", "fer2013", "rafdb", "affectnet")
RAFDB_IMAGES: tuple[str, ...] = ("aligned", "original")
#: Fold protocols (``fer.data.folds``).
FOLD_PROTOCOLS: tuple[str, ...] = ("subject_kfold", "official")
#: Clustering choices (``fer.clustering.guided``).
GUIDANCE_MODES: tuple[str, ...] = ("anchored", "overcluster")
EMBEDDERS: tuple[str, ...] = ("full", "baseline")
#: What the corpus row's round 0 trains on (finetune.first_round).
FIRST_ROUNDS: tuple[str, ...] = ("mixed", "real")
#: What the corpus row's round 0 starts from (finetune.start): a fresh network, or the
#: fold's trained AC-CNN (row ``accnn``; then the row ``accnn_continued`` is its control).
FINETUNE_STARTS: tuple[str, ...] = ("scratch", "accnn")
GPU_MODES: tuple[str, ...] = ("auto", "never", "always")
#: RDBP anchors (``fer.losses.rdbp``).
RDBP_ANCHORS: tuple[str, ...] = ("class_mean", "per_sample")
#: Generative-contrastive reference targets and contrasts (``fer.methods.dgcn``).
REFERENCE_TARGETS: tuple[str, ...] = ("neutral", "subject_mean")
CONTRASTS: tuple[str, ...] = ("difference", "concat")


def _finite_at_least(where: str, value: float, low: float, *, strict: bool = False) -> None:
    ok = math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f"{where} must be {'>' if strict else '>='} {low}, got {value}")


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DemoParams:
    """``demo``: sizes and nuisance strengths of the generated demo data set.

    n_subjects / images_per_expression: the labelled set (subjects ``S001``...);
    corpus_subjects / corpus_images_per_subject: the unlabelled corpus (``C0001``...);
    image_size: side of the RGB images; max_rotation_deg, scale_jitter, shift_frac:
    geometric nuisance; noise_std (0..255 units), lighting: photometric nuisance;
    intensity_min/max: expression intensity range (1 = full profile);
    landmark_noise_px: annotation noise of the written landmarks.
    """

    n_subjects: int = 24
    images_per_expression: int = 3
    corpus_subjects: int = 120
    corpus_images_per_subject: int = 8
    image_size: int = 128
    max_rotation_deg: float = 15.0
    scale_jitter: float = 0.12
    shift_frac: float = 0.08
    noise_std: float = 6.0
    lighting: float = 0.35
    intensity_min: float = 0.5
    intensity_max: float = 1.0
    landmark_noise_px: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n_subjects", "images_per_expression", "corpus_subjects", "corpus_images_per_subject"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"demo config: {name} must be a positive integer, got {v!r}")
        if not _is_int(self.image_size) or not 32 <= self.image_size <= 1024:
            raise ValueError(f"demo config: image_size must be an integer in [32, 1024], got {self.image_size!r}")
        bounded = {  # the same ranges as workflow/schemas/params.schema.yaml
            "max_rotation_deg": (0.0, 45.0),
            "scale_jitter": (0.0, 0.5),
            "shift_frac": (0.0, 0.3),
            "noise_std": (0.0, math.inf),
            "lighting": (0.0, 1.0),
            "intensity_min": (0.0, 1.0),
            "intensity_max": (0.0, 1.0),
            "landmark_noise_px": (0.0, math.inf),
        }
        for name, (lo, hi) in bounded.items():
            v = getattr(self, name)
            if not _is_num(v) or not lo <= v <= hi:
                raise ValueError(f"demo config: {name} must be a number in [{lo}, {hi}], got {v!r}")
        if self.intensity_min > self.intensity_max:
            raise ValueError(
                f"demo config: intensity_min ({self.intensity_min}) must be <= intensity_max ({self.intensity_max})"
            )


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class DataParams:
    """``data``: where the labelled dataset is and how to read it (``fer.data.manifest``)."""

    format: str = "csv"
    root: str = ""
    subject_regex: str = r"^(S\d+)_"
    label_map: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    image_extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
    frames: int = 3  # ckplus, oulu: the last N frames of each sequence
    first_frame_neutral: bool = False  # ckplus: each labelled sequence's first frame as neutral
    ferplus: bool = False  # fer2013: FERPlus majority labels from <root>/fer2013new.csv
    rafdb_images: str = "aligned"  # rafdb: aligned | original (+ the 5 manual landmarks)
    affectnet_classes: int = 8  # affectnet: 7 (no contempt) | 8

    def __post_init__(self) -> None:
        if self.format not in DATA_FORMATS:
            raise ValueError(f"data.format must be one of {DATA_FORMATS}, got {self.format!r}")
        if int(self.frames) != self.frames or self.frames < 1:
            raise ValueError(f"data.frames must be an integer >= 1, got {self.frames!r}")
        if self.rafdb_images not in RAFDB_IMAGES:
            raise ValueError(f"data.rafdb_images must be one of {RAFDB_IMAGES}, got {self.rafdb_images!r}")
        if self.affectnet_classes not in (7, 8):
            raise ValueError(f"data.affectnet_classes must be 7 or 8, got {self.affectnet_classes!r}")


@dataclass(frozen=True)
class AlignParams:
    """``align``: 5-point alignment to the ArcFace template (``fer.align.pipeline``)."""

    landmarks: str = "auto"  # auto | annotation | detector | none
    size: int = 64
    channels: str = "gray"  # gray | rgb
    face_scale: float = 0.9
    detector_upsample: int = 1
    detector_min_side: int = 160
    multiple_faces: str = "largest"  # largest | fail
    max_residual: float = 0.3  # alignment residual above this => failure (bad landmarks)
    max_failure_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.landmarks not in LANDMARK_MODES:
            raise ValueError(f"align landmarks must be one of {LANDMARK_MODES}, got {self.landmarks!r}")
        if self.channels not in CHANNEL_MODES:
            raise ValueError(f"align channels must be one of {CHANNEL_MODES}, got {self.channels!r}")
        if self.multiple_faces not in MULTIPLE_FACE_MODES:
            raise ValueError(
                f"align multiple_faces must be one of {MULTIPLE_FACE_MODES}, got {self.multiple_faces!r}"
            )
        if int(self.size) != self.size or self.size < 8:
            raise ValueError(f"align size must be an integer >= 8, got {self.size!r}")
        if not (self.face_scale > 0 and math.isfinite(self.face_scale)):
            raise ValueError(f"align face_scale must be a positive number, got {self.face_scale!r}")
        if int(self.detector_upsample) != self.detector_upsample or self.detector_upsample < 0:
            raise ValueError(f"align detector_upsample must be an integer >= 0, got {self.detector_upsample!r}")
        if int(self.detector_min_side) != self.detector_min_side or self.detector_min_side < 0:
            raise ValueError(f"align detector_min_side must be an integer >= 0, got {self.detector_min_side!r}")
        if not self.max_residual > 0:
            raise ValueError(f"align max_residual must be > 0, got {self.max_residual!r}")
        if not 0 <= self.max_failure_fraction <= 1:
            raise ValueError(f"align max_failure_fraction must be in [0, 1], got {self.max_failure_fraction!r}")

    @property
    def n_channels(self) -> int:
        """1 for gray, 3 for rgb."""
        return 1 if self.channels == "gray" else 3


@dataclass(frozen=True)
class FoldsParams:
    """``folds``: subject-independent folds with a validation split inside each training part."""

    n_folds: int = 4
    val_fraction: float = 0.2
    protocol: str = "subject_kfold"  # subject_kfold | official (the dataset's own train/test split)

    def __post_init__(self) -> None:
        if self.protocol not in FOLD_PROTOCOLS:
            raise ValueError(f"folds.protocol must be one of {FOLD_PROTOCOLS}, got {self.protocol!r}")
        if self.n_folds < 2:
            raise ValueError(f"folds.n_folds must be >= 2, got {self.n_folds}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"folds.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class LabelsParams:
    """``labels``: label budgets (fer.data.budgets). Every fold runs with all its labels;
    each fraction here adds a run of every row with only that fraction of the fold's
    training images labelled (subject-grouped, class-stratified, nested)."""

    budgets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        b = self.budgets
        if not all(isinstance(f, float) and 0 < f < 1 for f in b):
            raise ValueError(f"labels.budgets must be fractions in (0, 1) (all labels always run), got {list(b)}")
        if len(set(b)) != len(b):
            raise ValueError(f"labels.budgets repeats a fraction: {list(b)}")


@dataclass(frozen=True)
class CorpusParams:
    """``corpus``: the unlabelled face-recognition corpus and its (evaluation-only) truth."""

    root: str = ""
    truth: str = ""  # '' = no expression truth (the usual case for a real corpus)


@dataclass(frozen=True)
class ComputeParams:
    """``compute``: device preference and CPU threads per job."""

    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"compute.device must be auto, cpu or cuda, got {self.device!r}")
        if self.threads < 1:
            raise ValueError(f"compute.threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class ReportParams:
    """``report``: presentation settings of reports/index.html."""

    faces_per_class: int = 8


# ----------------------------------------------------------------------- training
@dataclass(frozen=True)
class AugmentParams:
    """``<recogniser>.augment``: magnitudes of the training augmentation
    (``fer.training.augment``; 0 / false disables a transform)."""

    hflip: bool = True
    rotate_deg: float = 10.0
    scale: float = 0.1
    shift: float = 0.06
    brightness: float = 0.2
    contrast: float = 0.2
    erasing: float = 0.0  # probability of random erasing per sample

    def __post_init__(self) -> None:
        for name in ("rotate_deg", "scale", "shift", "brightness", "contrast", "erasing"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"augment.{name} must be >= 0")
        if self.scale >= 1 or self.brightness >= 1 or self.contrast >= 1:
            raise ValueError("augment.scale, brightness and contrast must be < 1")
        if self.erasing > 1:
            raise ValueError("augment.erasing is a probability (<= 1)")

    @property
    def geometric(self) -> bool:
        """Whether any geometric transform is enabled (else the warp is skipped)."""
        return bool(self.hflip or self.rotate_deg > 0 or self.scale > 0 or self.shift > 0)


#: FERSNet's augmentation when none is given: horizontal flip only (see FersnetParams).
FLIP_ONLY = AugmentParams(hflip=True, rotate_deg=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0)


@dataclass(frozen=True)
class RecognizerParams:
    """``baseline``, ``identity``, ``accnn``: one supervised recogniser's training
    (``fer.training``): backbone, optimiser, schedule, loss, selection, augmentation."""

    init: str = "scratch"  # scratch | identity (the identity network) | a state-dict file in the project
    arch: str = "resnet18"
    width: int = 32
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9  # SGD momentum; AdamW uses (momentum, 0.999) as betas
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    class_weighting: str = "none"  # none | balanced
    select_metric: str = "val/mean_class_acc"
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    augment: AugmentParams = field(default_factory=AugmentParams)

    def __post_init__(self) -> None:
        if not self.init:
            raise ValueError("init must be scratch, identity or a path")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine|step|constant, got {self.schedule!r}")
        if self.class_weighting not in ("none", "balanced"):
            raise ValueError(f"class_weighting must be none|balanced, got {self.class_weighting!r}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {list(SELECT_METRICS)}")
        if self.width < 1 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("width and epochs must be >= 1, batch_size >= 2")
        if self.arch == "accnn" and self.width < 2:
            raise ValueError("arch accnn needs width >= 2 (its stem has width / 2 channels)")
        if self.warmup_epochs < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("warmup_epochs and weight_decay must be >= 0, lr > 0")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.momentum < 1:
            raise ValueError("label_smoothing and momentum must be in [0, 1)")
        if not isinstance(self.augment, AugmentParams):
            raise TypeError("augment must be an AugmentParams (build the section with fer.params.build)")


# -------------------------------------------------------------------- M1: FESGAN
@dataclass(frozen=True)
class FesganParams:
    """``fesgan``: FESGAN pre-training (``fer.methods.fesgan``)."""

    z_dim: int = 64
    width: int = 32
    iterations: int = 600
    batch_size: int = 32
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    r1_gamma: float = 1.0  # R1 weight on real images (penalty gamma/2 * E||grad||^2)
    r1_every: int = 4  # lazy R1: every N D steps with weight x N (1 = every step)
    w_cls: float = 1.0  # expression classification (D on real, G on fake)
    w_rec: float = 10.0  # L1 reconstruction G(E(x), e_x) vs x
    w_id: float = 5.0  # identity preservation (needs an identity network)
    w_latent: float = 1.0  # latent adversarial loss of E(x) against the prior
    ema_decay: float = 0.999  # EMA of G and E (ramped, see fer.training.ema)
    grid_every: int = 200  # sample grid every N iterations (0: only at the end)
    hflip: bool = True  # horizontal flip of the real images (the only augmentation)
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    reexpress: str = "edit"  # code: G(E(x), e) (the paper's reading) | edit: a skip-connected editor
    w_cycle: float = 10.0  # edit only: L1 of editing a re-expressed face back to its own expression
    d_warmup: int = 0  # first iterations train only D's expression head on real images (included in iterations)
    diffaugment: bool = False  # D sees real and fake images through the same random augmentation
    w_proto: float = 0.0  # L1 of a re-expressed face to the source plus proto_scale x the class-typical change
    proto_scale: float = 2.0  # how far the prototype target exaggerates the class-typical change
    unlabelled_ratio: float = 1.0  # at a label budget: unlabelled faces per labelled face in a batch (0: off)

    def __post_init__(self) -> None:
        if self.reexpress not in ("code", "edit"):
            raise ValueError(f"fesgan.reexpress must be code or edit, got {self.reexpress!r}")
        if self.z_dim < 1 or self.width < 2 or self.iterations < 1 or self.batch_size < 2:
            raise ValueError("z_dim and iterations must be >= 1, width and batch_size >= 2")
        if self.lr <= 0 or not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ValueError("lr must be > 0 and beta1, beta2 in [0, 1)")
        if self.r1_every < 1 or self.grid_every < 0:
            raise ValueError("r1_every must be >= 1 and grid_every >= 0")
        if not 0 <= self.d_warmup < self.iterations:
            raise ValueError(f"fesgan.d_warmup must be in [0, iterations), got {self.d_warmup}")
        for name in ("r1_gamma", "w_cls", "w_rec", "w_id", "w_latent", "w_cycle", "w_proto", "proto_scale",
                     "unlabelled_ratio"):
            if getattr(self, name) < 0:
                raise ValueError(f"fesgan.{name} must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")


@dataclass(frozen=True)
class SynthesisParams:
    """``synthesis``: the fold's class-balanced synthetic set (``fer.methods.synthesis``)."""

    per_class: int = 60
    prior_fraction: float = 0.5
    reexpress_from: str = "neutral"  # neutral | other (fer.methods.synthesis.REEXPRESS_FROM)

    def __post_init__(self) -> None:
        if self.per_class < 1:
            raise ValueError(f"synthesis.per_class must be >= 1, got {self.per_class}")
        if not 0 <= self.prior_fraction <= 1:
            raise ValueError(f"synthesis.prior_fraction must be in [0, 1], got {self.prior_fraction}")
        if self.reexpress_from not in ("neutral", "other"):
            raise ValueError(f"synthesis.reexpress_from must be 'neutral' or 'other', got {self.reexpress_from!r}")


@dataclass(frozen=True)
class JointParams:
    """``joint``: joint recogniser + generator training (``fer.methods.joint``)."""

    synth_ratio: float = 0.5  # synthetic samples per real sample in each batch
    gen_lr: float = 1e-4  # generator Adam, betas (0.5, 0.999)
    gen_anchor_weight: float = 1.0  # L1 to the frozen pre-trained generator (0: off)

    def __post_init__(self) -> None:
        _finite_at_least("joint.synth_ratio", self.synth_ratio, 0, strict=True)
        _finite_at_least("joint.gen_lr", self.gen_lr, 0, strict=True)
        _finite_at_least("joint.gen_anchor_weight", self.gen_anchor_weight, 0)


@dataclass(frozen=True)
class FixmatchParams:
    """``fixmatch``: the FixMatch row (fer.methods.fixmatch; its recogniser: section
    baseline). Paper values (Sohn et al. 2020) in comments."""

    threshold: float = 0.95  # confidence above which a weak view's prediction is a pseudo-label (paper 0.95; demo 0.7)
    unlabelled_ratio: float = 2.0  # unlabelled images per labelled image in each batch (paper mu = 7)
    lambda_u: float = 1.0  # weight of the unlabelled loss (paper 1)
    weak_shift: float = 0.125  # weak view: flip + shift of up to this fraction of the side (paper 12.5 %)
    strong_ops: int = 2  # RandAugment operations per strong view (paper 2)
    strong_magnitude: float = 1.0  # upper bound of each operation's random magnitude (fraction of its range)
    cutout: float = 0.5  # Cutout square's side up to this fraction of the image side (paper 0.5)

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"fixmatch.threshold must be in (0, 1], got {self.threshold}")
        if not self.unlabelled_ratio > 0 or self.lambda_u < 0:
            raise ValueError("fixmatch.unlabelled_ratio must be > 0 and fixmatch.lambda_u >= 0")
        if not 0 <= self.weak_shift < 0.5:
            raise ValueError(f"fixmatch.weak_shift must be in [0, 0.5), got {self.weak_shift}")
        for name in ("strong_magnitude", "cutout"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"fixmatch.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.strong_ops < 0:
            raise ValueError(f"fixmatch.strong_ops must be >= 0, got {self.strong_ops}")


@dataclass(frozen=True)
class RdbpParams:
    """``rdbp``: the intra-class loss with real data-guided back-propagation
    (``fer.losses.rdbp``)."""

    lambda_: float = 0.1  # weight of the intra-class loss (params.yaml key: lambda)
    stop_gradient: bool = True  # RDBP: real features are fixed anchors
    anchor: str = "class_mean"  # class_mean | per_sample

    def __post_init__(self) -> None:
        _finite_at_least("rdbp.lambda", self.lambda_, 0)
        if self.anchor not in RDBP_ANCHORS:
            raise ValueError(f"rdbp.anchor must be one of {RDBP_ANCHORS}, got {self.anchor!r}")


# ------------------------------------------------------ M4: clustering + AC-CNN
@dataclass(frozen=True)
class ClusteringParams:
    """``clustering``: expression-guided FAISS clustering of the corpus
    (``fer.clustering.guided``)."""

    embedder: str = "full"  # recogniser that embeds the corpus in round 0 (used by the pipeline)
    guidance: str = "anchored"  # anchored | overcluster
    clusters_per_class: int = 10  # overcluster: k = clusters_per_class * num_classes
    neighbours: int = 10  # overcluster: labelled nearest neighbours voting a cluster's class
    niter: int = 20
    max_points_per_centroid: int = 256
    keep_fraction: float = 0.5  # per class, the most confident fraction kept
    balance: bool = True  # cap every class's kept count at the smallest non-zero one
    normalize: bool = True  # L2-normalise features before clustering
    use_gpu: str = "auto"  # auto | never | always
    anchor_weight: float = 0.75  # anchored: weight of the labelled class mean in each update
    batch_size: int = 65536  # rows per streamed assignment batch
    # reject a corpus face beyond this quantile of its class's training-image distances to
    # the class anchor (fer.clustering.guided, "Rejection"); 1.0 = off, no face is rejected
    reject_quantile: float = 1.0
    # at a label budget, cluster the fold's unlabelled in-domain faces with the corpus
    in_domain: bool = True

    def __post_init__(self) -> None:
        if self.embedder not in EMBEDDERS:
            raise ValueError(f"clustering.embedder must be one of {EMBEDDERS}, got {self.embedder!r}")
        if self.guidance not in GUIDANCE_MODES:
            raise ValueError(f"clustering.guidance must be one of {GUIDANCE_MODES}, got {self.guidance!r}")
        if self.use_gpu not in GPU_MODES:
            raise ValueError(f"clustering.use_gpu must be one of {GPU_MODES}, got {self.use_gpu!r}")
        for name in ("clusters_per_class", "neighbours", "niter", "max_points_per_centroid", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"clustering.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"clustering.keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if not 0.0 <= self.anchor_weight <= 1.0:
            raise ValueError(f"clustering.anchor_weight must be in [0, 1], got {self.anchor_weight}")
        if not 0.0 < self.reject_quantile <= 1.0:  # also rejects NaN
            raise ValueError(f"clustering.reject_quantile must be in (0, 1] (1 = off), got {self.reject_quantile}")


@dataclass(frozen=True)
class FinetuneParams:
    """``finetune``: corpus fine-tuning of the AC-CNN (``fer.methods.corpus``)."""

    epochs: int = 8  # epochs of each training round (every other setting: the accnn section)
    rounds: int = 1  # re-clustering rounds after round 0 (0: cluster once, then fine-tune)
    pseudo_ratio: float = 0.5  # pseudo-labelled samples per real sample in each batch
    pseudo_weight: float = 0.5  # weight of the CE on pseudo-labelled images
    confidence_weighting: bool = True  # multiply each pseudo CE by its clustering confidence
    #: multiply ``pseudo_weight`` by the round's pseudo-label reliability measured on the
    #: fold's VALIDATION faces (``stats["check"]["reliability"]``: chance-corrected accuracy of
    #: the pseudo-labels the clustering gives them; ``fer.clustering.guided.pseudo_label_check``);
    #: a reliability of 0 trains the round on the labelled images only, as the control row
    validation_weighting: bool = False
    synthetic_weight: float = 0.0  # weight of the CE on the fold's synthetic set (0: not used)
    synthetic_ratio: float = 0.5  # synthetic samples per real sample (synthetic_weight > 0)
    #: round 0's training data: ``mixed`` (real + pseudo-labelled, from a fresh network) |
    #: ``real`` (the labelled images only: the AC-CNN is learned on labelled data first, then
    #: clusters the corpus, and rounds 1.. fine-tune it on real + pseudo-labelled images)
    first_round: str = "mixed"
    #: rounds r >= 1 (and round 0 with ``start: accnn``): the start weights (round r-1's
    #: selected network; the trained AC-CNN) compete in round r's validation selection as
    #: epoch 0, so a round that never beats them changes nothing
    keep_start: bool = False
    #: round 0's start: ``scratch`` (a fresh network; the row's budget is (rounds + 1) x
    #: epochs, the baseline's) | ``accnn`` (the fold's trained AC-CNN, row accnn, trained
    #: (rounds + 1) x epochs MORE; compared with row accnn_continued, the same extra epochs
    #: on the labelled images only)
    start: str = "scratch"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"finetune.epochs must be >= 1, got {self.epochs}")
        if self.first_round not in FIRST_ROUNDS:
            raise ValueError(f"finetune.first_round must be one of {list(FIRST_ROUNDS)}, got {self.first_round!r}")
        if self.first_round == "real" and self.rounds < 1:
            raise ValueError("finetune.first_round 'real' trains round 0 on the labelled images only, so it needs "
                             f"finetune.rounds >= 1 for any pseudo-labelled round, got {self.rounds}")
        if self.rounds < 0:
            raise ValueError(f"finetune.rounds must be >= 0, got {self.rounds}")
        if self.start not in FINETUNE_STARTS:
            raise ValueError(f"finetune.start must be one of {list(FINETUNE_STARTS)}, got {self.start!r}")
        if self.start == "accnn" and self.first_round == "real":
            raise ValueError("finetune.start 'accnn' starts round 0 from the AC-CNN already trained on the labelled "
                             "images, which is what first_round 'real' would train: set first_round: mixed (with "
                             "start: accnn) or start: scratch (with first_round: real)")
        for name in ("pseudo_ratio", "synthetic_ratio"):
            _finite_at_least(f"finetune.{name}", getattr(self, name), 0, strict=True)
        for name in ("pseudo_weight", "synthetic_weight"):
            _finite_at_least(f"finetune.{name}", getattr(self, name), 0)


# ------------------------------------------------------- M2: generative-contrastive
@dataclass(frozen=True)
class DgcnParams:
    """``dgcn``: the generative-contrastive network on top of the ``baseline`` recogniser
    section, whose ``epochs`` it does not use (``fer.methods.dgcn``)."""

    reference_target: str = "neutral"  # neutral | subject_mean
    contrast: str = "difference"  # difference | concat
    gen_width: int = 8  # generator's first-stage channels
    latent_dim: int = 128  # generator bottleneck code
    gen_epochs: int = 8  # step 1: generator alone (L1 to the reference target)
    cls_epochs: int = 5  # step 2: contrastive net, generator frozen
    e2e_epochs: int = 3  # step 3: end to end
    gen_lr: float = 0.002  # generator Adam, betas (0.5, 0.999)
    rec_weight: float = 10.0  # step 3: weight of the reconstruction L1
    e2e_lr_scale: float = 0.3  # step 3: both LRs times this
    dropout: float = 0.3  # before the contrastive classifier

    def __post_init__(self) -> None:
        if self.reference_target not in REFERENCE_TARGETS:
            raise ValueError(
                f"dgcn.reference_target must be one of {REFERENCE_TARGETS}, got {self.reference_target!r}"
            )
        if self.contrast not in CONTRASTS:
            raise ValueError(f"dgcn.contrast must be difference|concat, got {self.contrast!r}")
        for name in ("gen_width", "latent_dim", "gen_epochs", "cls_epochs", "e2e_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"dgcn.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gen_lr", "e2e_lr_scale"):
            _finite_at_least(f"dgcn.{name}", getattr(self, name), 0, strict=True)
        _finite_at_least("dgcn.rec_weight", self.rec_weight, 0)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dgcn.dropout must be in [0, 1), got {self.dropout}")


# --------------------------------------------------------------------- M3: FERSNet
@dataclass(frozen=True)
class FersnetParams:
    """``fersnet``: FERSNet training (``fer.methods.fersnet``). Defaults are the demo
    preset (64 px gray faces, CPU budget); presets/paper.yaml holds the authors' values.

    ``augment`` defaults to horizontal flip only (:data:`FLIP_ONLY`): the pipeline's
    sub-pixel shift stalled this small strided network on the demo within its epoch
    budget (measured); the paper preset adds the authors' crops.
    """

    width: int = 8  # stem channels; stage i has width * 2**i
    stages: int = 3  # down-sampling stages (= ConvFLUs = decoder levels)
    gate_kernel: int = 1  # ConvFLU kernel: 1 (authors' 2021 code) | 3 (2020 paper)
    dropout: float = 0.3  # before the classifier
    disc_width: int = 16  # PatchGAN first-layer channels
    disc_layers: int = 3  # PatchGAN stride-2 layers
    epochs: int = 6  # authors: 500
    batch_size: int = 16  # authors: 8
    lr: float = 2e-3  # authors: 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 5e-4  # Adam L2 on every parameter
    lr_milestones: tuple[int, ...] = ()  # epochs after which LR x0.1 (authors: 150, 400)
    label_smoothing: float = 0.0
    w_l1: float = 1.0
    w_id: float = 0.05
    w_adv: float = 0.3
    w_cycle: float = 0.0  # authors: 0.5 (with the residual edit it shrank the edits, README)
    w_expr: float = 0.0  # project's: CE of the synthesised face's target expression under the network's own
    # recognition branch, frozen for this term (StarGAN's domain-classification loss; authors: none)
    synthesis: str = "residual"  # residual (project's: source + learned edit) | unet (authors': the decoder draws)
    proto_scale: float = 2.0  # residual: the class offsets start at proto_scale x the expression prototypes
    d_steps: int = 1  # discriminator updates per generator step (authors: 3)
    synth_per_image: int = 2  # "synth" row: target expressions per training image (0: all others)
    synth_ratio: float = 0.5  # "synth" row: synthetic images per real image in each batch
    grid_rows: int = 6  # validation faces in the synthesis grid
    select_metric: str = "val/mean_class_acc"
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    augment: AugmentParams = field(default_factory=lambda: FLIP_ONLY)

    def __post_init__(self) -> None:
        ms = self.lr_milestones
        if isinstance(ms, list):
            object.__setattr__(self, "lr_milestones", tuple(ms))
            ms = self.lr_milestones
        if not isinstance(ms, tuple) or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms):
            raise ValueError(f"fersnet.lr_milestones must be a list of epochs >= 1, got {ms!r}")
        if list(ms) != sorted(set(ms)):
            raise ValueError(f"fersnet.lr_milestones must be strictly increasing, got {list(ms)}")
        if self.width < 1 or self.stages < 1 or self.disc_width < 1 or self.disc_layers < 1:
            raise ValueError("fersnet.width, stages, disc_width and disc_layers must be >= 1")
        if self.gate_kernel not in (1, 3):
            raise ValueError(f"fersnet.gate_kernel must be 1 or 3, got {self.gate_kernel}")
        if self.synthesis not in ("unet", "residual"):
            raise ValueError(f"fersnet.synthesis must be unet or residual, got {self.synthesis!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.d_steps < 1:
            raise ValueError("fersnet.epochs and d_steps must be >= 1, batch_size >= 2")
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.weight_decay >= 0):
            raise ValueError("fersnet: lr > 0, beta1/beta2 in [0, 1), weight_decay >= 0 required")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("fersnet.dropout and label_smoothing must be in [0, 1)")
        for name in ("w_l1", "w_id", "w_adv", "w_cycle", "w_expr"):
            _finite_at_least(f"fersnet.{name}", getattr(self, name), 0)
        _finite_at_least("fersnet.synth_ratio", self.synth_ratio, 0, strict=True)
        _finite_at_least("fersnet.proto_scale", self.proto_scale, 0)
        if self.synth_per_image < 0 or self.grid_rows < 0:
            raise ValueError("fersnet.synth_per_image and grid_rows must be >= 0")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"fersnet.select_metric must be one of {list(SELECT_METRICS)}")
        if not isinstance(self.augment, AugmentParams):
            raise TypeError("fersnet.augment must be an AugmentParams (build the section with fer.params.build)")
