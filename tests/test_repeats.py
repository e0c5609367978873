"""fer.metrics.repeats: two rows compared fold by fold over repeated runs, by hand."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from fer.metrics.repeats import compare_repeats

ROOT = Path(__file__).resolve().parents[1]

# 3 runs of the row, 2 of the reference, 2 folds
ROW = [[0.50, 0.80], [0.60, 0.90], [0.70, 0.85]]
REF = [[0.80, 0.70], [0.94, 0.80]]


def test_per_fold_means_sds_difference_and_standard_error() -> None:
    c = compare_repeats(ROW, REF)
    f0, f1 = c["folds"]
    assert c["repeats"] == {"row": 3, "reference": 2}
    # fold 0: row 0.5, 0.6, 0.7 -> mean 0.6, sd 0.1; reference 0.80, 0.94 -> mean 0.87, var 0.0098
    assert f0["row_mean"] == pytest.approx(0.6) and f0["row_sd"] == pytest.approx(0.1)
    assert f0["reference_mean"] == pytest.approx(0.87) and f0["reference_sd"] == pytest.approx(math.sqrt(0.0098))
    se0 = math.sqrt(0.01 / 3 + 0.0098 / 2)
    assert f0["diff"] == pytest.approx(-0.27) and f0["se"] == pytest.approx(se0)
    assert f0["below"]  # -0.27 < -2 x 0.0907
    # Welch's t by hand: t = diff / se, Welch-Satterthwaite degrees of freedom
    df = se0**4 / ((0.01 / 3) ** 2 / 2 + (0.0098 / 2) ** 2 / 1)
    assert f0["welch_p"] == pytest.approx(2 * stats.t.sf(0.27 / se0, df))
    # fold 1: row 0.8, 0.9, 0.85 -> 0.85 (sd 0.05); reference 0.7, 0.8 -> 0.75: above, not below
    assert f1["diff"] == pytest.approx(0.10) and f1["row_sd"] == pytest.approx(0.05) and not f1["below"]
    assert c["folds_below"] == [0]
    assert c["mean_diff"] == pytest.approx((-0.27 + 0.10) / 2)


def test_noise_is_the_references_pooled_within_fold_sd() -> None:
    c = compare_repeats(ROW, REF)
    noise = math.sqrt((0.0098 + 0.005) / 2)  # one degree of freedom per fold
    assert c["reference_noise_sd"] == pytest.approx(noise)
    assert c["single_run_diff_sd"] == pytest.approx(math.sqrt(2) * noise)
    s = c["single_runs_below_noise"]
    # cut -0.1217: fold 0 row - reference pairs -0.3 -0.44 -0.2 -0.34 -0.1 -0.24 (5 below), fold 1 none
    assert s["row_vs_reference"] == {"n": 12, "below": 5, "worst": pytest.approx(-0.44)}
    # reference pairs: fold 0 -0.14 (below) and +0.14, fold 1 -0.1 (not below) and +0.1
    assert s["reference_vs_itself"] == {"n": 4, "below": 1, "worst": pytest.approx(-0.14)}


def test_constant_rows_have_no_p_value_and_repeats_must_share_folds() -> None:
    c = compare_repeats([[0.5], [0.5]], [[0.6], [0.6]])
    assert c["folds"][0]["welch_p"] is None and c["folds"][0]["below"]
    # below by one to two standard errors is not "below": -0.15 with se 0.0764
    f = compare_repeats([[0.6], [0.7], [0.8]], [[0.8], [0.9]])["folds"][0]
    assert f["diff"] == pytest.approx(-0.15) and f["se"] == pytest.approx(math.sqrt(0.01 / 3 + 0.005 / 2))
    assert not f["below"]
    with pytest.raises(ValueError, match="share the folds"):
        compare_repeats(ROW, [[0.8], [0.9]])
    with pytest.raises(ValueError, match="repeats >= 2"):
        compare_repeats([[0.5, 0.6]], REF)
    with pytest.raises(ValueError, match="non-finite"):
        compare_repeats(ROW, np.array([[0.8, np.nan], [0.9, 0.8]]))


# ----------------------------------------------------------------------------- benchmarks/repeats.py
def _workspace(root: Path, seed: int, accs: dict[str, list[float]], folds: str = '{"n_folds": 2}') -> Path:
    from fer.training.checkpoint import save_weights
    from fer.utils.io import write_json

    (root / "data").mkdir(parents=True)
    (root / "data" / "folds.json").write_text(folds)
    (root / "params.yaml").write_text(f"seed: {seed}\ndata_seed: 0\nfolds: {{n_folds: 2}}\n")
    for row, values in accs.items():
        for k, acc in enumerate(values):
            write_json(root / "metrics" / row / f"fold-{k}.json", {"test/acc": acc, "best_epoch": 3})
            save_weights(root / "models" / row / f"fold-{k}.pt", {"w": torch.zeros(1)},
                         {"seed": seed + k, "best_epoch": 3})
    return root


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "repeats.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_script_reads_the_runs_and_refuses_stale_or_mismatched_ones(tmp_path: Path) -> None:
    a = _workspace(tmp_path / "a", 0, {"corpus": ROW[0], "ref": REF[0]})
    b = _workspace(tmp_path / "b", 1000, {"corpus": ROW[1], "ref": REF[1]})
    out = tmp_path / "c.json"
    proc = _script("--runs", str(a), str(b), "--row", "corpus", "--reference", "ref", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    c = json.loads(out.read_text())
    assert c["seeds"] == [0, 1000] and c["row"] == ROW[:2] and c["reference"] == REF
    assert c["folds"][0]["diff"] == pytest.approx(np.mean([0.5, 0.6]) - 0.87)
    # a copy of run a whose params say seed 2000 but whose models are still a's: stale
    shutil.copytree(a, tmp_path / "stale")
    (tmp_path / "stale" / "params.yaml").write_text("seed: 2000\ndata_seed: 0\nfolds: {n_folds: 2}\n")
    proc = _script("--runs", str(a), str(tmp_path / "stale"), "--row", "corpus", "--reference", "ref")
    assert proc.returncode == 1 and "stale or unfinished" in proc.stderr and "fold-0.pt" in proc.stderr
    # the same seed twice is not a repeat; other folds are not the same folds; a missing fold is named
    proc = _script("--runs", str(a), str(a), "--row", "corpus", "--reference", "ref")
    assert proc.returncode == 1 and "same training seed" in proc.stderr
    other = _workspace(tmp_path / "other", 7, {"corpus": ROW[2], "ref": REF[1]}, folds='{"n_folds": 2, "seed": 7}')
    proc = _script("--runs", str(a), str(other), "--row", "corpus", "--reference", "ref")
    assert proc.returncode == 1 and "folds.json differ" in proc.stderr
    (b / "metrics" / "ref" / "fold-1.json").unlink()
    proc = _script("--runs", str(a), str(b), "--row", "corpus", "--reference", "ref")
    assert proc.returncode == 1 and "fold-1.json: missing" in proc.stderr
