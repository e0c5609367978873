"""Identity network trained inside the pipeline on the face-recognition corpus.

No pretrained face-identity network (LightCNN, ArcFace, VGGFace2) installs offline, so
FESGAN's identity-preservation loss and the synthetic set's identity-diversity measure
use a recogniser trained here: a closed-set identity classifier over the corpus's
identities (the corpus carries identity labels; its hidden expression labels are never
read). Its penultimate features, L2-normalised, are the identity embedding.

Protocol: the corpus must not contain the labelled set's test subjects. For the demo this
holds by construction (corpus identities are drawn from a separate random stream); for
real data it is the user's responsibility (disjoint identities are assumed), and one
identity network then serves every fold.

Without a corpus (``corpus.root: ''``) each fold trains its own identity network on the
fold's training subjects only (:func:`fold_training_faces`): the identity terms then
compare faces with identities the fold may train on, never with its validation or test
subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer.models import build_model
from fer.params import RecognizerParams
from fer.training.checkpoint import clear_resume, save_weights
from fer.training.driver import fit
from fer.training.init import load_start
from fer.training.protocol import model_from_weights, recognizer_meta, write_curve
from fer.utils.io import write_json


def fold_training_faces(
    images: np.ndarray, subjects: np.ndarray, fold: Mapping[str, Sequence[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """The faces and subject ids of a fold's TRAINING subjects only (``fold["train"]``;
    never its validation or test subjects): what the identity network learns from when
    there is no face-recognition corpus (``corpus.root: ''``)."""
    subjects = np.asarray(subjects)
    keep = np.isin(subjects, list(fold["train"]))
    if not keep.any():
        raise ValueError("the fold has no training images")
    return images[keep], subjects[keep]


def identity_split(subjects: np.ndarray, val_per_identity: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``val_per_identity`` images of every identity that has more than that
    many (closed-set identification: the same identities, other images)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for s in np.unique(subjects):
        idx = np.flatnonzero(subjects == s)
        idx = idx[rng.permutation(len(idx))]
        k = val_per_identity if len(idx) > val_per_identity else 0
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def train_identity_net(
    images: np.ndarray,
    subjects: np.ndarray,
    cfg: RecognizerParams,
    *,
    seed: int,
    device: torch.device,
    out_model: Path,
    out_metrics: Path,
    out_curve: Path,
    resume_path: Path | None = None,
    log_path: Path | None = None,
    val_per_identity: int = 1,
    start: Path | None = None,
) -> dict[str, Any]:
    """Train the identity classifier on corpus images and their identity ids (its backbone
    loaded from ``start`` first when given: ``fer.training.init.load_start``)."""
    subjects = np.asarray(subjects)
    names = sorted(set(subjects.tolist()))
    if len(names) < 2:
        raise ValueError("the identity network needs at least two corpus identities")
    y = np.searchsorted(np.asarray(names), subjects).astype(np.int64)
    tr, va = identity_split(subjects, val_per_identity, seed)
    if len(va) == 0:
        raise ValueError("no corpus identity has more than one image; cannot validate the identity network")
    _, h, w, c = images.shape
    torch.manual_seed(seed)
    model = build_model(cfg.arch, len(names), c, cfg.width, input_size=max(h, w))
    if start is not None:
        load_start(model, start)
    result = fit(model, (images[tr], y[tr]), (images[va], y[va]), cfg, num_classes=len(names),
                 device=device, seed=seed, resume_path=resume_path, log_path=log_path)
    best = result.selected_row()
    meta = recognizer_meta("identity", cfg, names, images.shape, result, seed)
    metrics = {
        "identity/val_acc": float(best["val/acc"]),
        "identity/n_identities": len(names),
        "identity/n_train": int(len(tr)),
        "identity/n_val": int(len(va)),
        "identity/best_epoch": int(result.best_epoch),
    }
    save_weights(out_model, result.best_state, meta)
    write_curve(Path(out_curve), result.history)
    write_json(out_metrics, metrics)
    clear_resume(resume_path)
    return metrics


class IdentityEmbedder(nn.Module):
    """Frozen identity embedding: images in [-1, 1] (N, C, H, W) -> L2-normalised (N, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> IdentityEmbedder:  # stays in eval mode (BatchNorm statistics frozen)
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model.features(x), dim=1)  # N, D


def load_identity_net(path: str | Path, device: torch.device | str = "cpu") -> IdentityEmbedder:
    model, _ = model_from_weights(path, device)
    return IdentityEmbedder(model).to(device)
