"""The linear head's two solvers (exact L-BFGS path, the default; the lr x wd grid), checked against scikit-learn."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medfm.heads.linear import LinearProbe


def blobs(n, d=20, c=3, sep=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * sep
    y = rng.integers(0, c, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_grid_head_matches_logistic_regression_on_separable_data():
    Xall, yall = blobs(2100)
    (X, y), (Xv, yv), (Xt, yt) = (Xall[:1200], yall[:1200]), (Xall[1200:1500], yall[1200:1500]), (Xall[1500:], yall[1500:])
    probe = LinearProbe("multiclass", "roc_auc", epochs=30, solver="grid").fit(X, y, Xv, yv)
    ours = roc_auc_score(yt, probe.predict_proba(Xt), multi_class="ovr")
    ref = LogisticRegression(max_iter=2000).fit(X, y)
    theirs = roc_auc_score(yt, ref.predict_proba(Xt), multi_class="ovr")
    assert ours > 0.8 and abs(ours - theirs) < 0.01
    assert probe.predict(Xt).shape == (600,) and np.allclose(probe.predict_proba(Xt).sum(1), 1, atol=1e-5)
    assert len(probe.val_scores_) == 8 * 5 and probe.best_params_ == dict(zip(("lr", "weight_decay"), probe.grid_[probe.best_index_]))


def test_weight_decay_grid_is_real_regularisation():
    X, y = blobs(400, d=50)
    probe = LinearProbe("multiclass", "accuracy", lrs=[1e-2], wds=[0.0, 1.0], epochs=50, solver="grid")
    probe.fit(X, y, X, y)
    # retrain each grid point alone and compare weight norms: strong L2 must shrink them
    norms = []
    for wd in (0.0, 1.0):
        p = LinearProbe("multiclass", "accuracy", lrs=[1e-2], wds=[wd], epochs=50, solver="grid").fit(X, y, X, y)
        norms.append(float(p.coef_.norm()))
    assert norms[1] < 0.5 * norms[0]


def test_same_seed_same_head_and_diverged_heads_lose():
    X, y = blobs(300, c=2)
    a = LinearProbe("binary", "roc_auc", lrs=[1e-2, 1e6], wds=[0.0], epochs=5, seed=3, solver="grid").fit(X, y, X, y)
    b = LinearProbe("binary", "roc_auc", lrs=[1e-2, 1e6], wds=[0.0], epochs=5, seed=3, solver="grid").fit(X, y, X, y)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.best_params_["lr"] == pytest.approx(1e-2)


def test_multilabel_head():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 10)).astype(np.float32)
    Y = (X[:, :4] + 0.3 * rng.normal(size=(500, 4)) > 0).astype(np.uint8)
    probe = LinearProbe("multilabel", "roc_auc", epochs=20, class_weight=True, solver="grid").fit(X, Y, X, Y)
    assert probe.predict_proba(X).shape == (500, 4) and probe.score(X, Y) > 0.95


@pytest.mark.parametrize("task, classes", [("binary", 2), ("multiclass", 3)])
def test_default_lbfgs_head_is_scikit_learns_tuned_logistic_regression(task, classes):
    """The default solver solves the logreg head's problem at every weight decay: same val choice, same scores."""
    from medfm.heads.logreg import LogRegProbe

    Xall, yall = blobs(1500, c=classes, sep=0.4)
    (X, y), (Xv, yv), (Xt, yt) = (Xall[:900], yall[:900]), (Xall[900:1200], yall[900:1200]), (Xall[1200:], yall[1200:])
    wds = [1e-1, 1e-2, 1e-3]
    ours = LinearProbe(task, "roc_auc", wds=wds).fit(X, y, Xv, yv)
    ref = LogRegProbe(task, "roc_auc", wds=wds).fit(X, y, Xv, yv)
    assert ours.grid_ == wds and len(ours.val_scores_) == 3 and all(p["converged"] for p in ours.path_)
    assert np.abs(ours.val_scores_ - ref.val_scores_).max() < 2e-3
    assert ours.best_params_ == ref.best_params_
    assert np.abs(ours.predict_proba(Xt) - ref.predict_proba(Xt)).max() < 5e-3
    assert np.allclose(ours.predict_proba(Xt).sum(1), 1, atol=1e-5)


def test_lbfgs_head_class_weights_and_multilabel():
    X, y = blobs(600, c=3, sep=0.5)
    keep = (y != 0) | (np.arange(600) % 5 == 0)  # class 0 rare
    X, y = X[keep], y[keep]
    plain = LinearProbe("multiclass", "balanced_accuracy", wds=[1e-2]).fit(X, y, X, y)
    weighted = LinearProbe("multiclass", "balanced_accuracy", wds=[1e-2], class_weight=True).fit(X, y, X, y)
    assert (weighted.predict(X) == 0).sum() > (plain.predict(X) == 0).sum()  # the rare class gains predictions
    rng = np.random.default_rng(0)
    Xm = rng.normal(size=(500, 10)).astype(np.float32)
    Y = (Xm[:, :4] + 0.3 * rng.normal(size=(500, 4)) > 0).astype(np.uint8)
    probe = LinearProbe("multilabel", "roc_auc", class_weight=True).fit(Xm, Y, Xm, Y)
    assert probe.predict_proba(Xm).shape == (500, 4) and probe.score(Xm, Y) > 0.95
