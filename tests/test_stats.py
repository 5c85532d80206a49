"""medfm.stats against independent computations and known values (Demšar 2006; DeLong 1988)."""

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from medfm.stats import (average_ranks, weighted_auc, cd_groups, critical_difference, delong, delong_test, friedman,
                         holm, nemenyi_q, paired_bootstrap)


def _slow_delong_variance(y, s):
    """O(n^2) placement values straight from the definition: psi(x, y) = 1 if x > y, 1/2 if equal."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


@pytest.mark.parametrize("rounding", [None, 1])  # 1 decimal: many ties
def test_delong_variance_equals_the_direct_placement_computation(rounding):
    rng = np.random.default_rng(3)
    y = (rng.random(157) < 0.4).astype(int)
    s = rng.normal(size=157) + 0.8 * y
    if rounding is not None:
        s = np.round(s, rounding)
    auc, var = _slow_delong_variance(y, s)
    d = delong(y, s[None])
    assert d.auc[0] == pytest.approx(auc, abs=1e-12) and d.auc[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert d.cov[0, 0] == pytest.approx(var, rel=1e-10)


def _correlated_pair(rng, n, mu_a, mu_b):
    y = (rng.random(n) < 0.5).astype(int)
    shared = rng.normal(size=n)
    return y, mu_a * y + shared + rng.normal(size=n), mu_b * y + shared + rng.normal(size=n)


def test_delong_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(0)
    p = [delong_test(*_correlated_pair(rng, 120, 1.0, 1.0))[1] for _ in range(600)]
    assert sps.kstest(p, "uniform").pvalue > 0.01
    # and the test has power when the AUCs really differ
    power = np.mean([delong_test(*_correlated_pair(rng, 120, 2.0, 0.5))[1] < 0.05 for _ in range(100)])
    assert power > 0.8


def test_paired_bootstrap_ci_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(1)
    mu_a, mu_b = 1.2, 0.8  # each score ~ N(mu * y, 2): AUC = Phi(mu / 2)
    true = sps.norm.cdf(mu_a / 2) - sps.norm.cdf(mu_b / 2)
    covered = []
    for sim in range(500):
        y, a, b = _correlated_pair(rng, 300, mu_a, mu_b)
        r = paired_bootstrap(y, a, b, resamples=500, seed=sim)
        covered.append(r.low <= true <= r.high)
    assert 0.92 <= np.mean(covered) <= 0.98, np.mean(covered)


def test_paired_bootstrap_with_a_metric_function_matches_the_vectorised_auc():
    rng = np.random.default_rng(2)
    y, a, b = _correlated_pair(rng, 200, 1.5, 0.5)
    fast = paired_bootstrap(y, a, b, resamples=300, seed=7)
    slow = paired_bootstrap(y, a, b, roc_auc_score, resamples=300, seed=7)
    assert fast.diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert (fast.low, fast.high, fast.p_value) == pytest.approx((slow.low, slow.high, slow.p_value), abs=1e-12)
    assert fast.low > 0 and fast.p_value < 0.05
    rows = rng.integers(0, 200, size=(5, 200))
    counts = np.stack([np.bincount(r, minlength=200) for r in rows])
    assert weighted_auc(y, a, counts) == pytest.approx([roc_auc_score(y[r], a[r]) for r in rows], abs=1e-12)
    tied = np.round(a, 1)  # ties between positives and negatives count a half
    assert weighted_auc(y, tied, counts) == pytest.approx([roc_auc_score(y[r], tied[r]) for r in rows], abs=1e-12)


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_nemenyi_uses_demsars_q_and_the_cd_formula():
    for k, q in ((3, 2.343), (4, 2.569), (5, 2.728)):
        assert nemenyi_q(k) == pytest.approx(q, abs=1e-3)  # Demšar's table truncates to 3 decimals
    assert critical_difference(4, 10) == pytest.approx(nemenyi_q(4) * np.sqrt(4 * 5 / (6 * 10)))
    assert critical_difference(3, 14) == pytest.approx(2.343 * np.sqrt(3 * 4 / 84), abs=2e-3)


def test_friedman_statistic_equals_the_rank_formula_by_hand():
    # 4 datasets x 3 models (higher is better), no ties. Ranks per row (1 = best):
    table = np.array([[0.90, 0.80, 0.70],   # 1 2 3
                      [0.85, 0.88, 0.60],   # 2 1 3
                      [0.95, 0.70, 0.75],   # 1 3 2
                      [0.70, 0.65, 0.60]])  # 1 2 3
    rank_sums = np.array([1 + 2 + 1 + 1, 2 + 1 + 3 + 2, 3 + 3 + 2 + 3])  # 5, 8, 11
    n, k = 4, 3
    chi2 = 12 / (n * k * (k + 1)) * (rank_sums ** 2).sum() - 3 * n * (k + 1)  # = 4.5
    assert chi2 == pytest.approx(4.5)
    f = friedman(table)
    assert f.statistic == pytest.approx(chi2) and f.p_value == pytest.approx(sps.chi2.sf(4.5, 2))
    assert f.ranks == pytest.approx(rank_sums / n) and average_ranks(table) == pytest.approx([1.25, 2.0, 2.75])


def test_cd_groups_are_the_maximal_runs_within_the_critical_difference():
    assert cd_groups(np.array([1.0, 1.5, 3.0, 3.2]), 0.6) == [(0, 1), (2, 3)]
    assert cd_groups(np.array([2.0, 1.0, 1.4, 1.9]), 1.0) == [(1, 2, 3, 0)]
    assert cd_groups(np.array([1.0, 2.0, 3.0]), 0.5) == []
