"""Device choice for GPU jobs: one device per concurrent job, CPU fallback.

Snakemake caps concurrent GPU jobs with ``--resources gpu=N`` but never says *which* GPU a
job got. Each GPU job therefore claims a device through a pool of lock files: a
non-blocking ``flock`` on ``<lock_dir>/gpu<i>.lock`` for each visible device; the first
free one is taken and held for the life of the process (the kernel releases it when the
process dies, even by SIGKILL). ``CUDA_VISIBLE_DEVICES`` is then set to that device
before CUDA is initialised, so the job and any children see exactly one GPU. This works
the same under Snakemake, ``dvc repro`` and ``dvc queue start -j N``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_HELD: list[IO[str]] = []  # open lock files, kept for the life of the process


def _visible_gpu_ids() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    if not torch.cuda.is_available():
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def claim_gpu(lock_dir: str | Path | None = None, wait_s: float = 3600.0, poll_s: float = 2.0) -> str | None:
    """Claim one free GPU id from the visible ones and pin ``CUDA_VISIBLE_DEVICES`` to it.

    Returns the claimed id, or None when there is no GPU. Blocks (polling) while every
    device is held by another job, up to ``wait_s`` seconds.
    """
    ids = _visible_gpu_ids()
    if not ids:
        return None
    lock_root = Path(lock_dir or os.environ.get("FER_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "fer-gpu-locks"))
    lock_root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for gid in ids:
            f = open(lock_root / f"gpu{gid}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            _HELD.append(f)
            os.environ["CUDA_VISIBLE_DEVICES"] = gid
            log.info("claimed GPU %s (lock %s)", gid, f.name)
            return gid
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {ids} after {wait_s:.0f} s (locks in {lock_root})")
        time.sleep(poll_s)


def select_device(preference: str = "auto", threads: int = 0):
    """Return the torch device for this job.

    ``preference``: ``auto`` (a claimed GPU if any, else CPU), ``cuda`` (error without a
    GPU) or ``cpu``. ``threads`` > 0 sets torch's CPU thread count exactly (CPU results
    depend on it, so the pipeline passes a parameter); 0 uses OMP_NUM_THREADS if set, else
    all cores.
    """
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device preference {preference!r}")
    gid = None
    if preference != "cpu":
        gid = claim_gpu()
        if gid is None and preference == "cuda":
            raise RuntimeError("compute.device is cuda but no CUDA device is visible")
    import torch

    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    if gid is not None:
        dev = torch.device("cuda", 0)
        log.info("device: cuda (%s)", torch.cuda.get_device_name(dev))
        return dev
    log.info("device: cpu (%d threads)", torch.get_num_threads())
    return torch.device("cpu")
