"""Statistics for "which model is best, and is the gap real?": paired tests on one dataset, ranks across datasets.

- **One dataset, two entries scored on the same test rows:** a paired bootstrap of the difference in any
  metric (both entries scored on the same resampled rows), and DeLong's test for binary ROC-AUC
  (DeLong, DeLong & Clarke-Pearson 1988, with the midrank algorithm of Sun & Xu 2014). Holm's step-down
  correction over the pairs of a dataset.
- **Across datasets:** average ranks, the Friedman test (scipy) and the Nemenyi critical difference
  (Demšar 2006), whose q values come from scipy's studentized range distribution.

Everything here is plain numpy / scipy on arrays; the report decides what to compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


# ---------------------------------------------------------------------------------------------- DeLong


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their mean rank."""
    return sps.rankdata(x, axis=-1, method="average")


@dataclass(frozen=True)
class DeLong:
    auc: np.ndarray  # [K] AUC of each of the K score vectors
    cov: np.ndarray  # [K, K] DeLong covariance of the AUCs


def delong(y_true: np.ndarray, scores: np.ndarray) -> DeLong:
    """AUCs of K score vectors ``[K, N]`` on binary ``y_true`` ``[N]`` and their DeLong covariance.

    The placement values V10 (each positive's share of negatives it outranks, ties counting a half) and
    V01 (each negative's share of positives that outrank it) are computed from midranks in O(N log N).
    """
    y = np.asarray(y_true).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives (got {m} and {n})")
    r_all = _midranks(np.concatenate([pos, neg], axis=1))
    r_pos, r_neg = _midranks(pos), _midranks(neg)
    v10 = (r_all[:, :m] - r_pos) / n  # [K, m]
    v01 = 1.0 - (r_all[:, m:] - r_neg) / m  # [K, n]
    auc = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return DeLong(auc, cov)


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> tuple[float, float]:
    """(AUC_a - AUC_b, two-sided p-value) of DeLong's test for two correlated ROC curves."""
    d = delong(y_true, np.stack([score_a, score_b]))
    diff = float(d.auc[0] - d.auc[1])
    var = float(d.cov[0, 0] + d.cov[1, 1] - 2 * d.cov[0, 1])
    if var <= 0:
        return diff, 1.0 if diff == 0 else 0.0
    return diff, float(2 * sps.norm.sf(abs(diff) / np.sqrt(var)))


# ----------------------------------------------------------------------------------- paired bootstrap


def weighted_auc(y_true: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary ROC-AUC of one score vector ``[N]`` under each row of sample multiplicities ``weights`` ``[B, N]``.

    A bootstrap resample is the original rows taken with multiplicities, so its AUC is the weighted
    Mann-Whitney statistic: sum over (positive i, negative j) of w_i w_j psi(s_i, s_j), psi = 1 if s_i > s_j and
    1/2 if equal, over W_pos W_neg. The scores are sorted once; each resample then costs a cumulative sum
    instead of a sort. A row without both classes gives NaN.
    """
    order = np.argsort(np.asarray(score, dtype=np.float64), kind="stable")
    sorted_scores = np.asarray(score, dtype=np.float64)[order]
    y = np.asarray(y_true).astype(bool)[order]
    w = np.asarray(weights, dtype=np.float64)[:, order]
    neg = w * ~y
    upto = np.cumsum(neg, axis=1)  # negative weight at or below each position
    first = np.searchsorted(sorted_scores, sorted_scores, side="left")  # start of each tie group
    last = np.searchsorted(sorted_scores, sorted_scores, side="right") - 1  # its end
    below = upto[:, first] - neg[:, first]  # negative weight strictly below the value
    tied = upto[:, last] - below  # negative weight at the value
    wins = (w[:, y] * (below[:, y] + 0.5 * tied[:, y])).sum(axis=1)
    w_pos, w_neg = w[:, y].sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((w_pos > 0) & (w_neg > 0), wins / (w_pos * w_neg), np.nan)


@dataclass(frozen=True)
class PairedDifference:
    diff: float  # metric(a) - metric(b) on the test rows as they are
    low: float  # 95 % percentile-bootstrap CI of the difference
    high: float
    p_value: float  # two-sided bootstrap p-value of "no difference"
    resamples: int  # resamples where both metrics were defined


def paired_bootstrap(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray,
                     metric: Callable[[np.ndarray, np.ndarray], float] | None = None, *, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> PairedDifference:
    """The difference ``metric(a) - metric(b)`` with a paired bootstrap CI: both entries on the same resampled rows.

    ``metric(y_true, score)`` is any medfm metric; without one, binary ROC-AUC on 1-D scores is used,
    vectorised over all resamples. The p-value is twice the smaller tail share of resampled differences
    on either side of 0 (the percentile-bootstrap test that matches the CI: p < 1 - level exactly when the
    CI excludes 0), floored at 1 / resamples.
    """
    y = np.asarray(y_true)
    a, b = np.asarray(score_a), np.asarray(score_b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(resamples, len(y)))
    if metric is None:
        once = np.ones((1, len(y)))
        diff = float(weighted_auc(y, a, once)[0] - weighted_auc(y, b, once)[0])
        counts = np.zeros((resamples, len(y)))
        np.add.at(counts, (np.arange(resamples)[:, None], idx), 1.0)
        boot = weighted_auc(y, a, counts) - weighted_auc(y, b, counts)
    else:
        diff = float(metric(y, a) - metric(y, b))
        boot = np.array([metric(y[i], a[i]) - metric(y[i], b[i]) for i in idx], dtype=np.float64)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return PairedDifference(diff, float("nan"), float("nan"), float("nan"), 0)
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    p = min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean()))
    return PairedDifference(diff, float(low), float(high), max(p, 1 / boot.size), int(boot.size))


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the pairs of one dataset)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    k = len(p)
    adjusted = np.empty(k)
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (k - step) * p[i]))
        adjusted[i] = running
    return adjusted


# ------------------------------------------------------------------------------------ across datasets


def average_ranks(table: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Mean rank of each model (columns) over datasets (rows); rank 1 is the best, ties share their mean rank."""
    t = np.asarray(table, dtype=np.float64)
    return _midranks(-t if higher_is_better else t).mean(axis=0)


@dataclass(frozen=True)
class Friedman:
    statistic: float  # Friedman's chi-square (scipy, with its tie correction)
    p_value: float
    ranks: np.ndarray  # average rank of each model


def friedman(table: np.ndarray, higher_is_better: bool = True) -> Friedman:
    """Friedman test of "all models rank alike" over a datasets x models table (>= 3 models, >= 2 datasets)."""
    t = np.asarray(table, dtype=np.float64)
    if t.shape[1] < 3 or t.shape[0] < 2:
        raise ValueError(f"the Friedman test needs >= 3 models and >= 2 datasets (got {t.shape[1]} and {t.shape[0]})")
    stat, p = sps.friedmanchisquare(*(t[:, j] for j in range(t.shape[1])))
    return Friedman(float(stat), float(p), average_ranks(t, higher_is_better))


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Demšar's q_alpha for k models: the studentized range quantile (infinite df) divided by sqrt(2)."""
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))


def critical_difference(k: int, n_datasets: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks: q_alpha * sqrt(k (k + 1) / (6 N))."""
    return nemenyi_q(k, alpha) * float(np.sqrt(k * (k + 1) / (6 * n_datasets)))


def cd_groups(ranks: np.ndarray, cd: float) -> list[tuple[int, ...]]:
    """Maximal runs of models (indices, best rank first) whose average ranks lie within ``cd`` of each other.

    These are the bars of a critical-difference diagram; a run contained in a longer one is dropped.
    """
    order = list(np.argsort(ranks))
    groups: list[tuple[int, ...]] = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and ranks[order[end + 1]] - ranks[order[start]] <= cd:
            end += 1
        group = tuple(order[start:end + 1])
        if len(group) > 1 and not any(set(group) <= set(g) for g in groups):
            groups.append(group)
    return groups
