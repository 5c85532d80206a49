"""The L-BFGS weight-decay path solves scikit-learn's regularised logistic regression (same optimum)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from medfm.logistic_path import IGNORE, fit_path, predict_proba

N, D = 600, 24


def _data(task, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    if task == "multilabel":
        y = (X @ rng.normal(size=(D, 3)) + 2 * rng.logistic(size=(N, 3)) > 0).astype(np.int64)
        y[rng.random((N, 3)) < 0.25] = IGNORE
        return X, y
    c = 2 if task == "binary" else classes
    return X, (X @ rng.normal(size=(D, c)) + 3 * rng.gumbel(size=(N, c))).argmax(1)


def _reference(X, y, wd, **kw):
    return LogisticRegression(C=1.0 / (wd * len(y)), tol=1e-10, max_iter=10_000, **kw).fit(X, y)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_path_matches_scikit_learn_at_every_weight_decay(task):
    X, y = _data(task)
    wds = [1e-4, 1e-1, 1e-2]  # any order in, the same order out
    fits = fit_path(X, y, task, wds, tol=1e-8, dtype=torch.float64)
    assert [f.weight_decay for f in fits] == wds
    for fit in fits:
        ref = _reference(X, y, fit.weight_decay)
        assert fit.converged
        assert np.abs(fit.coef.numpy().T - ref.coef_).max() < 1e-4 * max(1.0, np.abs(ref.coef_).max())
        assert np.abs(predict_proba(fit, X, task) - ref.predict_proba(X)).max() < 1e-4


def test_float32_data_reach_the_same_optimum_within_float32_accuracy():
    X, y = _data("multiclass", seed=1)
    fit = fit_path(X, y, "multiclass", [1e-2])[0]  # default: float32 data, tol 1e-4
    ref = _reference(X, y, 1e-2)
    assert fit.converged and np.abs(predict_proba(fit, X, "multiclass") - ref.predict_proba(X)).max() < 2e-3


def test_sample_weights_equal_scikit_learns_class_weights():
    X, y = _data("multiclass", seed=2, classes=3)
    keep = (y != 0) | (np.arange(N) % 4 == 0)  # make class 0 rare
    X, y = X[keep], y[keep]
    counts = np.bincount(y)
    sw = (len(y) / (3 * counts))[y]
    fit = fit_path(X, y, "multiclass", [1e-2], sample_weight=sw, tol=1e-6, dtype=torch.float64)[0]
    # scikit-learn weights the summed loss; medfm's objective is the weighted mean: C scales by the weight sum
    ref = LogisticRegression(C=1.0 / (1e-2 * sw.sum()), class_weight="balanced", tol=1e-10, max_iter=10_000).fit(X, y)
    assert np.abs(predict_proba(fit, X, "multiclass") - ref.predict_proba(X)).max() < 1e-4


def test_multilabel_fits_each_label_on_its_known_rows_only():
    X, y = _data("multilabel", seed=3)
    fit = fit_path(X, y, "multilabel", [1e-2], tol=1e-6, dtype=torch.float64)[0]
    for label in range(3):
        known = y[:, label] != IGNORE
        ref = _reference(X[known], y[known, label], 1e-2)
        assert np.abs(fit.coef[:, label].numpy() - ref.coef_[0]).max() < 1e-4
        assert abs(float(fit.intercept[label]) - ref.intercept_[0]) < 1e-4
    # an unknown entry changed to anything leaves the fit exactly as it is
    y2 = y.copy()
    y2[y2 == IGNORE] = 1
    other = fit_path(X, np.where(y == IGNORE, IGNORE, y2), "multilabel", [1e-2], tol=1e-6, dtype=torch.float64)[0]
    assert torch.equal(other.coef, fit.coef)
