"""Provenance of a run: git commit, package versions, device.

Nothing here depends on how the report's own process was started (its thread count
differs between Snakemake and DVC): the same commit, packages and machine give the same
provenance. The training jobs' threads are a parameter (``compute.threads``), shown with
the other parameters."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from typing import Any

PACKAGES = (
    "fer", "torch", "numpy", "scikit-learn", "scikit-image", "opencv-python-headless",
    "dlib-bin", "faiss-cpu", "snakemake", "dvc", "matplotlib",
)


def git_state(cwd: str = ".") -> dict[str, Any]:
    """Commit hash and whether tracked files differ from it ("unknown" outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def provenance(cwd: str = ".") -> dict[str, Any]:
    return {"git": git_state(cwd), "packages": package_versions(), "device": device_info()}
