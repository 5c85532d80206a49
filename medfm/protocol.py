"""The evaluation protocol: bootstrap confidence intervals and seed statistics.

(The label budget lives with the other training-target rules in ``medfm.targets.label_budget``.)

- ``bootstrap_ci``: percentile 95 % interval of a metric over test-set resamples (study 3 used
  5,000 resamples; medfm's default is 1,000).
- ``seed_summary``: mean ± std over seeds, as reports print them.
"""

from __future__ import annotations

import warnings

import numpy as np

from medfm.metrics import METRICS


def bootstrap_ci(metric: str, y: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile (1 - alpha) interval of ``metric`` over ``n_boot`` resamples of the rows."""
    return bootstrap_ci_multi(metric, y, [scores], n_boot, seed, alpha)


def bootstrap_ci_multi(metric: str, y: np.ndarray, score_sets: list[np.ndarray], n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float] | None:
    """CI of the metric averaged over several prediction sets of the same test rows (e.g. seeds).

    Each resample draws one set of row indices and scores every set on it, so the interval covers
    the test-set sampling error of the seed-mean that a report prints.
    """
    if n_boot <= 0:
        return None
    y = np.asarray(y)
    sets = [np.asarray(x, dtype=np.float64) for x in score_sets]
    rng = np.random.Generator(np.random.PCG64(seed))
    vals = []
    for lo in range(0, n_boot, BOOT_BLOCK):
        idx = rng.integers(0, len(y), (min(BOOT_BLOCK, n_boot - lo), len(y)))
        per_set = [_resampled_metric(metric, y, x, idx) for x in sets]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            vals.append(np.nanmean(np.stack(per_set), axis=0))
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


BOOT_BLOCK = 100  # resamples scored at once (memory: BOOT_BLOCK x n counts)
CI_METHODS = ("percentile", "mean_of_replicates")


def bootstrap_replicates(metric: str, y: np.ndarray, scores: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """The metric on ``n_boot`` resamples of the rows (the same draws as ``bootstrap_ci``), non-finite ones dropped."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    rng = np.random.Generator(np.random.PCG64(seed))
    vals = []
    for lo in range(0, n_boot, BOOT_BLOCK):
        idx = rng.integers(0, len(y), (min(BOOT_BLOCK, n_boot - lo), len(y)))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            vals.append(_resampled_metric(metric, y, scores, idx))
    v = np.concatenate(vals) if vals else np.zeros(0)
    return v[np.isfinite(v)]


def mean_of_replicates_ci(replicates: np.ndarray, alpha: float = 0.05, num_samples: int = 5000,
                          rows_per_draw: int = 250) -> tuple[float, float]:
    """Study 3's printed interval (``eval_biu.py:L11-24`` @f2b17be): a bootstrap CI of the MEAN of the metric's
    bootstrap replicates, ``np.random.RandomState(47)`` drawing ``num_samples`` resamples of the replicates,
    bounds at sorted positions ``int(alpha / 2 * num_samples)`` and ``int((1 - alpha / 2) * num_samples)``. It
    measures how well 5,000 replicates pin their own mean, not the metric's uncertainty, so it is far narrower
    than a percentile CI; medfm computes it to reproduce the paper's numbers. Drawn in blocks of rows from the
    one RandomState, which gives the same numbers as the code's single ``choice(size=(num_samples, n))``."""
    data = np.asarray(replicates, dtype=np.float64)
    rng = np.random.RandomState(47)
    means = np.concatenate([rng.choice(data, size=(min(rows_per_draw, num_samples - k), len(data)), replace=True).mean(axis=1)
                            for k in range(0, num_samples, rows_per_draw)])
    means.sort()
    return float(means[int(alpha / 2 * num_samples)]), float(means[int((1 - alpha / 2) * num_samples)])


def ci_record(metric: str, y: np.ndarray, scores: np.ndarray, n_boot: int, method: str = "percentile") -> dict:
    """What a run records about its test metric's interval: ``ci95`` (None without resamples), the resamples and
    the method; ``mean_of_replicates`` also records the replicates' mean (study 3 reports it as the metric)."""
    if method not in CI_METHODS:
        from medfm.errors import MedfmError

        raise MedfmError(f"--ci {method!r} is not a CI method", f"use one of: {', '.join(CI_METHODS)}")
    out: dict = {"ci95": None, "bootstrap": n_boot}
    if method != "percentile":
        out["ci"] = method
    if n_boot <= 0:
        return out
    if method == "percentile":
        ci = bootstrap_ci(metric, y, scores, n_boot, seed=0)
        out["ci95"] = list(ci) if ci else None
        return out
    replicates = bootstrap_replicates(metric, y, scores, n_boot, seed=0)
    if len(replicates):
        out["ci95"] = list(mean_of_replicates_ci(replicates))
        out["replicate_mean"] = float(replicates.mean())
    return out


def _resampled_metric(metric: str, y: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The metric on each resample (rows of ``idx``). ROC-AUC is computed for all resamples at once
    from resample counts over one sort (exactly ``roc_auc`` on the resampled rows, ties counted
    half); other metrics call the registry function per resample."""
    if metric != "roc_auc":
        fn = METRICS.get(metric).fn
        return np.array([fn(y[i], scores[i]) for i in idx])
    b, n = idx.shape
    counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
    if y.ndim == 1 and scores.shape[1] == 2:
        return _weighted_auc(y == 1, scores[:, 1], counts)
    onehot = y if y.ndim == 2 else np.eye(scores.shape[1], dtype=np.int64)[y]
    cols = np.stack([_weighted_auc(onehot[:, c] > 0, scores[:, c], counts) for c in range(scores.shape[1])])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(cols, axis=0)  # mean over the columns with both classes present, as roc_auc does


def _weighted_auc(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of rows weighted by ``counts`` [B, n]; NaN where a resample lacks a class."""
    order = np.argsort(score, kind="mergesort")
    s, pos_row = score[order], positive[order]
    w = counts[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    pos = np.add.reduceat(w * pos_row, starts, axis=1)
    neg = np.add.reduceat(w * ~pos_row, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(all="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def seed_summary(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
