"""GPU lock pool: concurrent jobs get distinct devices; locks die with the process."""

import os
import subprocess
import sys
import textwrap

import pytest

from fer.utils import device as dev


def _claim_in_child(lock_dir, visible, hold_s):
    code = textwrap.dedent(f"""
        import os, time
        from fer.utils.device import claim_gpu
        gid = claim_gpu({str(lock_dir)!r}, wait_s=0.5, poll_s=0.1)
        print(gid, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
        time.sleep({hold_s})
    """)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible)
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_jobs_get_distinct_gpus(tmp_path):
    a = _claim_in_child(tmp_path, "0,1", 3)
    first = a.stdout.readline().split()
    b = _claim_in_child(tmp_path, "0,1", 0)
    second = b.communicate(timeout=30)[0].split()
    assert first == ["0", "0"]
    assert second == ["1", "1"]  # device 0 is held by the first job
    c = _claim_in_child(tmp_path, "0", 0)  # only device 0 visible and held: times out
    _, err = c.communicate(timeout=30)
    assert c.returncode != 0 and "no free GPU" in err
    a.kill()
    a.wait()
    d = _claim_in_child(tmp_path, "0", 0)  # the killed job's lock is released
    assert d.communicate(timeout=30)[0].split() == ["0", "0"]


def test_no_gpu_means_cpu(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert dev.claim_gpu(tmp_path) is None
    before = torch.get_num_threads()
    try:
        assert dev.select_device("auto", threads=1).type == "cpu"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        dev.select_device("cuda")
    with pytest.raises(ValueError):
        dev.select_device("tpu")
