"""The probing protocol on real data: heads, label budgets, seeds, CIs.

Real caches are session-scoped and made through the real CLI in the session's cache folder, so
they are shared: the PneumoniaMNIST MobileNetV2 (real ImageNet weights) 112 px cache is the one
`medfm demo` makes in test_end_to_end (reused, not recomputed, when that ran first), and the
BreastMNIST DINOv2-S (real weights) 42 px token cache is reused by test_sweep_report's sweep.
"""

import numpy as np
import pytest

from medfm.cache import FeatureCache
from medfm.config import ProbeConfig
from medfm.data.splits import stratified_partition
from medfm.probe import run_probe
from medfm.heads.linear import LinearProbe
from medfm.heads.logreg import LogRegProbe
from medfm.probe.runner import load_splits
from medfm.probe.tokens import TokenRows
from medfm.protocol import _resampled_metric, bootstrap_ci
from medfm.targets import label_budget
from medfm.metrics import roc_auc
from medfm.report.aggregate import group_rows
from medfm.results import ResultsStore


@pytest.fixture(scope="session")
def pneumonia_cache(session_cli, data_root, mobilenet_weights) -> FeatureCache:
    ex = session_cli.json("extract", "--backbone", "mobilenetv2", "--dataset", "pneumoniamnist", "--img-size", 112,
                          "--data-root", data_root)  # exactly the demo's extraction
    return FeatureCache(ex["cache"])


@pytest.fixture(scope="session")
def breast_tokens(session_cli, data_root, dinov2_s_weights, tmp_path_factory) -> FeatureCache:
    # its own path: the session's shared cache may already hold this fingerprint made with other chunk rows
    # (chunking is not part of a cache's identity), and these tests need several chunks
    path = tmp_path_factory.mktemp("breast-tokens") / "dinov2-tokens.zarr"
    ex = session_cli.json(*breast_token_extract_args(data_root, dinov2_s_weights), "--cache", path)
    return FeatureCache(ex["cache"])


def breast_token_extract_args(data_root, weights):
    return ("extract", "--backbone", "dinov2_vits14", "--weights", weights, "--dataset", "breastmnist",
            "--img-size", 42, "--tokens", "--chunk-rows", 128, "--data-root", data_root)  # several chunks to stream


DEIT_EPOCHS = 3


def probe(cache, tmp_path, **kw) -> dict:
    cfg = ProbeConfig(cache=str(cache.path), out=str(tmp_path / f"run-{len(list(tmp_path.iterdir()))}"),
                      results=str(tmp_path / "results.sqlite"), **kw)
    return run_probe(cfg)


def test_grid_linear_head_within_0_01_of_tuned_logistic_regression(pneumonia_cache):
    data, _ = load_splits(pneumonia_cache, seed=0)
    (X, y), (Xv, yv), (Xt, yt) = data["train"], data["val"], data["test"]
    ours = LinearProbe("binary", "roc_auc", solver="grid").fit(X, y, Xv, yv)  # the grid solver's defaults
    ref = LogRegProbe("binary", "roc_auc").fit(X, y, Xv, yv)  # scikit-learn, tuned over the same wd grid
    a, b = ours.score(Xt, yt), ref.score(Xt, yt)
    assert a > 0.8 and b > 0.8, (a, b)
    assert abs(a - b) < 0.01, (a, b)
    assert len(ours.val_scores_) == 40 and len(ref.val_scores_) == 5
    # the default solver solves scikit-learn's problem at each weight decay: the same val scores and test score
    exact = LinearProbe("binary", "roc_auc").fit(X, y, Xv, yv)  # the defaults `medfm probe` uses
    # (below wd 1e-4 the problem is nearly unregularised: any point with a gradient under the shared tolerance
    # is a solution, and the two solvers stop at different ones)
    posed = np.array(exact.grid_) >= 1e-4
    assert np.abs(exact.val_scores_ - ref.val_scores_)[posed].max() < 2e-3, (exact.val_scores_, ref.val_scores_)
    assert exact.best_params_ == ref.best_params_
    assert abs(exact.score(Xt, yt) - b) < 2e-3, (exact.score(Xt, yt), b)


def test_knn_probe_beats_chance_with_ci_and_predictions(pneumonia_cache, tmp_path):
    rec = probe(pneumonia_cache, tmp_path, head="knn")
    assert rec["headline_metric"]["value"] > 0.85
    lo, hi = rec["headline_metric"]["ci95"]
    assert lo < rec["headline_metric"]["value"] < hi and hi - lo < 0.15
    assert rec["hyperparameters"]["k"] in (10, 20, 50, 100, 200) and len(rec["grid"]) == 5
    preds = rec["predictions"]["test"]
    assert len(preds["y_true"]) == rec["n"]["test"] == 624
    assert roc_auc(np.array(preds["y_true"]), np.array(preds["y_score"])) == pytest.approx(rec["test"]["roc_auc"], abs=1e-3)


def test_deit_head_trains_from_streamed_token_cache_and_beats_chance(breast_tokens, tmp_path):
    assert breast_tokens.meta["backbone"]["token_shape"] == [9, 384]
    rec = probe(breast_tokens, tmp_path, head="deit", head_depth=1, deit_weights="random", epochs=DEIT_EPOCHS, bootstrap=0)
    assert rec["n"]["train"] == 546
    assert rec["headline_metric"]["value"] > 0.75, rec["history"]
    assert rec["hyperparameters"]["depth"] == 1 and rec["hyperparameters"]["init"] == "random"
    assert len(rec["history"]) == DEIT_EPOCHS and all(np.isfinite(h["train_loss"]) for h in rec["history"])


def test_token_rows_stream_every_row_once_chunk_by_chunk(breast_tokens):
    arr = breast_tokens.tokens("train")  # on-disk zarr array, several chunks
    assert arr.chunks[0] < arr.shape[0]
    rows = np.array([3, 500, 7, 1, 260, 511])
    tr = TokenRows(arr, rows)
    seen = []
    for x, pos in tr.batches(4, rng=np.random.default_rng(0)):
        assert np.array_equal(x, np.asarray(arr[np.sort(rows[pos])], dtype=np.float32)[np.argsort(np.argsort(rows[pos]))])
        seen += pos.tolist()
    assert sorted(seen) == list(range(6))
    ordered = np.concatenate([p for _, p in tr.batches(4)])
    assert ordered.tolist() == np.argsort(rows, kind="stable").tolist()


def test_fractions_and_seeds_give_distinct_reproducible_subsets(pneumonia_cache, tmp_path):
    y = pneumonia_cache.labels("train")
    a, b, c = label_budget(y, 0.1, 0), label_budget(y, 0.1, 0), label_budget(y, 0.1, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(a) == pytest.approx(0.1 * len(y), abs=2) and len(label_budget(y, 0.01, 0)) == pytest.approx(47, abs=2)
    assert abs(np.mean(y[a]) - np.mean(y)) < 0.01  # stratified
    tiny = label_budget(y, 1e-4, 5)
    assert set(y[tiny]) == {0, 1}  # at least one sample per class, however small the budget
    assert np.array_equal(label_budget(y, 1.0, 3), np.arange(len(y)))
    multilabel = (np.random.default_rng(0).random((200, 5)) < 0.05).astype(np.uint8)
    keep = label_budget(multilabel, 0.05, 0)
    assert (multilabel[keep].sum(0) > 0).all() and np.array_equal(keep, label_budget(multilabel, 0.05, 0))

    recs = [probe(pneumonia_cache, tmp_path, head="knn", fraction=0.1, seed=s) for s in (0, 1, 2, 0)]
    shas = [r["train_rows_sha256"] for r in recs]
    assert shas[0] == shas[3] and len(set(shas[:3])) == 3
    assert [r["stored"] for r in recs] == [True, True, True, False]  # the rerun of seed 0 is the same run
    store = ResultsStore(tmp_path / "results.sqlite")
    assert len(store) == 3
    (g,) = group_rows(store.records(), n_boot=200)
    values = [r["headline_metric"]["value"] for r in recs[:3]]
    assert g.seeds == [0, 1, 2] and g.mean == pytest.approx(np.mean(values)) and g.std == pytest.approx(np.std(values, ddof=1))
    assert g.std > 0 and g.ci[0] < g.mean < g.ci[1]


def test_fast_bootstrap_auc_equals_registry_auc_on_each_resample():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    s = np.round(rng.random((150, 3)) + 0.4 * np.eye(3)[y], 2)  # ties included
    idx = rng.integers(0, 150, (30, 150))
    assert np.allclose(_resampled_metric("roc_auc", y, s, idx), [roc_auc(y[i], s[i]) for i in idx])
    y2 = (s[:, 1] + rng.normal(0, 0.3, 150) > 0.7).astype(int)
    lo, hi = bootstrap_ci("roc_auc", y2, s[:, [0, 1]], 500)
    assert lo < roc_auc(y2, s[:, [0, 1]]) < hi
    parts = stratified_partition(y, {"a": 0.5, "b": 0.5}, 0)
    assert len(parts["a"]) + len(parts["b"]) == 150


def _code_bootstrap_ci(data, statistic=np.mean, alpha=0.05, num_samples=5000):
    """Study 3's ``bootstrap_ci`` (GuanghuiFU/medical_dino_eval @f2b17be, eval_biu.py:L11-18), re-typed."""
    n = len(data)
    rng = np.random.RandomState(47)
    samples = rng.choice(data, size=(num_samples, n), replace=True)
    stat = np.sort(statistic(samples, axis=1))
    return stat[int(alpha / 2 * num_samples)], stat[int((1 - alpha / 2) * num_samples)]


def test_mean_of_replicates_is_study3s_interval_drawn_in_blocks():
    from medfm.protocol import bootstrap_replicates, mean_of_replicates_ci

    y = np.random.default_rng(1).integers(0, 3, 120)
    scores = np.random.default_rng(2).dirichlet(np.ones(3), 120)
    reps = bootstrap_replicates("accuracy", y, scores, 700)
    assert len(reps) == 700 and 0 < reps.std() < 0.1
    lo, hi = mean_of_replicates_ci(reps)
    assert (lo, hi) == tuple(float(v) for v in _code_bootstrap_ci(reps))  # the same numbers, bit for bit
    assert (lo, hi) == mean_of_replicates_ci(reps, rows_per_draw=7)  # block size does not move the draws
    p_lo, p_hi = np.percentile(reps, [2.5, 97.5])
    assert hi - lo < (p_hi - p_lo) / 10  # the mean's interval: far narrower than the metric's
    assert lo < reps.mean() < hi
