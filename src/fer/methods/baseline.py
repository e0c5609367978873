"""The supervised baseline, one fold: a CNN trained on the fold's real training images
(params section ``baseline``; the AC-CNN's real-only row uses the same function with the
``accnn`` section). Everything around the network is the shared per-fold protocol
(``fer.training.protocol``): train/val only during training, the test split predicted
once at the end, the last-epoch accuracy beside the selected one for information.

Outputs (``FoldOutputs``): the model (``model_from_weights`` rebuilds it), the metrics
JSON (``METRIC_KEYS``), the learning curve (``CURVE_COLUMNS``).
"""

from __future__ import annotations

from typing import Any

from fer.params import RecognizerParams
from fer.training.driver import fit
from fer.training.optim import EvalSetup
from fer.training.protocol import Fold, FoldOutputs, finish_fold, recognizer_meta

__all__ = ["run_baseline_fold"]


def run_baseline_fold(fold: Fold, cfg: RecognizerParams, out: FoldOutputs, *, method: str = "baseline") -> dict[str, Any]:
    """Train, select and test a supervised recogniser on one fold; write its outputs.

    ``method`` is recorded in the checkpoint meta (e.g. ``"accnn"`` for the AC-CNN's
    real-only row, ``cfg.arch == "accnn"``). Returns the metrics written.
    """
    model = fold.build_recognizer(cfg)
    train, val = fold.part("train"), fold.part("val")
    result = fit(model, train, val, cfg, num_classes=fold.num_classes, device=fold.device, seed=fold.seed,
                 resume_path=out.resume, log_path=out.log)
    ev = EvalSetup.for_params(cfg, fold.device)
    meta = recognizer_meta(method, cfg, fold.classes, fold.images.shape, result, fold.seed)
    return finish_fold(fold, model, result, ev, out, meta=meta)
