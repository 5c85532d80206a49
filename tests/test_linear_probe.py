"""The grid-trained linear head, checked against scikit-learn on the same data."""

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
    probe = LinearProbe("multiclass", "roc_auc", epochs=30).fit(X, y, Xv, yv)
    ours = roc_auc_score(yt, probe.predict_proba(Xt), multi_class="ovr")
    ref = LogisticRegression(max_iter=2000).fit(X, y)
    theirs = roc_auc_score(yt, ref.predict_proba(Xt), multi_class="ovr")
    assert ours > 0.8 and abs(ours - theirs) < 0.01
    assert probe.predict(Xt).shape == (600,) and np.allclose(probe.predict_proba(Xt).sum(1), 1, atol=1e-5)
    assert len(probe.val_scores_) == 8 * 5 and probe.best_params_ == dict(zip(("lr", "weight_decay"), probe.grid_[probe.best_index_]))


def test_weight_decay_grid_is_real_regularisation():
    X, y = blobs(400, d=50)
    probe = LinearProbe("multiclass", "accuracy", lrs=[1e-2], wds=[0.0, 1.0], epochs=50)
    probe.fit(X, y, X, y)
    # retrain each grid point alone and compare weight norms: strong L2 must shrink them
    norms = []
    for wd in (0.0, 1.0):
        p = LinearProbe("multiclass", "accuracy", lrs=[1e-2], wds=[wd], epochs=50).fit(X, y, X, y)
        norms.append(float(p.coef_.norm()))
    assert norms[1] < 0.5 * norms[0]


def test_same_seed_same_head_and_diverged_heads_lose():
    X, y = blobs(300, c=2)
    a = LinearProbe("binary", "roc_auc", lrs=[1e-2, 1e6], wds=[0.0], epochs=5, seed=3).fit(X, y, X, y)
    b = LinearProbe("binary", "roc_auc", lrs=[1e-2, 1e6], wds=[0.0], epochs=5, seed=3).fit(X, y, X, y)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.best_params_["lr"] == pytest.approx(1e-2)


def test_multilabel_head():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 10)).astype(np.float32)
    Y = (X[:, :4] + 0.3 * rng.normal(size=(500, 4)) > 0).astype(np.uint8)
    probe = LinearProbe("multilabel", "roc_auc", epochs=20, class_weight=True).fit(X, Y, X, Y)
    assert probe.predict_proba(X).shape == (500, 4) and probe.score(X, Y) > 0.95
