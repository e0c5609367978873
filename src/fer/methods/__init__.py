"""fer.methods: one module per compared method, each exposing a per-fold entry point.

Every method trains on the fold's ``train`` indices, selects on ``val`` only and touches
``test`` once at the end (see ``fer.methods.baseline`` for the shared protocol).
"""

from __future__ import annotations

from fer.methods.baseline import run_baseline_fold
from fer.methods.joint import run_joint_fold

__all__ = ["run_baseline_fold", "run_joint_fold"]
