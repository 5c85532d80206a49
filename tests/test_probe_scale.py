"""Issue 16: the exact probe's fast paths keep their answers.

- a label-budget sweep reads its cache once, and each row equals ``medfm probe`` run alone (real MobileNetV2
  features of the 128-image PneumoniaMNIST subset at 32 px);
- the rank-based AUC equals scikit-learn's, ties included;
- the float32 standardisation equals the float64 one to float32 rounding;
- the threaded objective equals the single-threaded one.
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medfm.config import ProbeConfig, SweepConfig
from medfm.heads.linear import FeatureScaler
from medfm.logistic_path import fit_path
from medfm.metrics import _binary_auc
from medfm.probe import loaded
from medfm.probe.runner import run_probe
from medfm.results import ResultsStore
from medfm.sweep import run_sweep


def test_a_label_budget_sweep_reads_its_cache_once_and_equals_probes_run_alone(pneu_tiny_cache, pneu_subset, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE", str(pneu_tiny_cache.parent.parent))  # the sweep reuses the session's tiny cache
    opened = []
    monkeypatch.setattr(loaded.LoadedCache, "__init__", lambda self, *a, _init=loaded.LoadedCache.__init__, **k:
                        (_init(self, *a, **k), opened.append(self))[0])
    summary = run_sweep(SweepConfig(backbones=["mobilenetv2"], datasets=[str(pneu_subset)], img_size=32,
                                    fractions=[0.5, 1.0], seeds=[0, 1], probe={"bootstrap": 0},
                                    results=str(tmp_path / "sweep.sqlite"), out=str(tmp_path / "sweep")))
    assert summary["probes"]["ran"] == 4 and summary["caches"][f"{pneu_subset}/mobilenetv2"] == str(pneu_tiny_cache)
    [cache] = opened
    assert cache.reads == 2 * 3  # features and labels of train, val, test: once, for the four rows
    swept = {(r["fraction"], r["seed"]): r for r in ResultsStore(tmp_path / "sweep.sqlite").records()}
    assert len(swept) == 4
    for (fraction, seed), row in swept.items():
        alone = run_probe(ProbeConfig(cache=str(pneu_tiny_cache), fraction=fraction, seed=seed, bootstrap=0,
                                      results=str(tmp_path / "alone.sqlite"), out=str(tmp_path / f"alone-{fraction}-{seed}")))
        assert alone["train_rows_sha256"] == row["train_rows_sha256"]
        assert alone["n"] == row["n"] and alone["hyperparameters"] == row["hyperparameters"]
        for split in ("val", "test"):
            for name, value in alone[split].items():
                assert row[split][name] == pytest.approx(value, abs=1e-3), (fraction, seed, split, name)
    assert len({r["train_rows_sha256"] for r in swept.values()}) == 3  # the budgets really differ (the full one: one set)


def test_rank_auc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 200))
        t = rng.integers(0, 2, n)
        if t.min() == t.max():
            continue
        score = np.round(rng.normal(size=n) + t, int(rng.integers(0, 3)))  # 0 decimals: many ties
        assert _binary_auc(t, score) == pytest.approx(roc_auc_score(t, score), abs=1e-12)


def test_float32_standardisation_equals_float64_to_rounding():
    X = (np.random.default_rng(1).normal(size=(3000, 40)) * np.linspace(0.1, 5, 40) + 30).astype(np.float32)
    scaler = FeatureScaler("standard").fit(X)
    X64 = X.astype(np.float64)
    assert np.abs(scaler.mean_ - X64.mean(0)).max() < 1e-5 * X64.std(0).min()
    assert np.abs(scaler.scale_ / X64.std(0) - 1).max() < 1e-6
    assert np.abs(scaler.transform32(X).numpy() - scaler.transform(X)).max() < 1e-5


def test_threaded_objective_equals_one_thread():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 30)).astype(np.float32)
    y = (X @ rng.normal(size=(30, 3)) + rng.gumbel(size=(3000, 3))).argmax(1)
    one = fit_path(X, y, "multiclass", [1e-2, 1e-3], block_rows=256, threads=1)
    two = fit_path(X, y, "multiclass", [1e-2, 1e-3], block_rows=256, threads=2)
    for a, b in zip(one, two):
        assert a.converged and b.converged
        assert torch.allclose(a.coef, b.coef, atol=1e-4) and torch.allclose(a.intercept, b.intercept, atol=1e-4)


def test_a_class_without_train_rows_gets_a_column_and_no_probability():
    from medfm.heads.linear import LinearProbe

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 8))
    y = (X[:, :4] + rng.gumbel(size=(400, 4))).argmax(1)
    train, val = y != 3, np.arange(400) >= 300  # class 3, the last, never in train; in val it is
    probe = LinearProbe("multiclass", "roc_auc").fit(X[train], y[train], X[val], y[val], num_classes=4)
    p = probe.predict_proba(X[val])
    assert p.shape == (val.sum(), 4) and p[:, 3].max() < 1e-3 and np.isfinite(probe.val_scores_).all()
