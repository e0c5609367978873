import numpy as np
import pytest
from scipy import stats

from fer.metrics.stats import paired_test


def test_paired_test_matches_scipy():
    a = [0.70, 0.65, 0.72, 0.68, 0.71]
    b = [0.66, 0.64, 0.69, 0.69, 0.65]
    r = paired_test(a, b)
    assert r["n"] == 5 and r["wins"] == 4 and r["losses"] == 1
    assert r["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert r["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert 0 < r["wilcoxon_p"] <= 1


def test_paired_test_degenerate():
    assert paired_test([0.5, 0.5], [0.5, 0.5])["t_p"] is None
    assert paired_test([0.5], [0.4])["wilcoxon_p"] is None
    with pytest.raises(ValueError):
        paired_test([0.1, 0.2], [0.1])
