"""The default linear probe vs scikit-learn's fair baseline, same process, synthetic sizes and real features.

medfm's default linear head (``--solver lbfgs``) solves the regularised logistic regression at each
weight decay of ``medfm probe``'s grid by full-batch L-BFGS in torch, warm-started along the path, and
keeps the best on val. The baseline is what a careful scikit-learn user would run for the same answer:
``LogisticRegression`` (lbfgs, default tolerance, ``C = 1 / (wd * n)``) on float64 standardised features,
warm-started along the same path (largest weight decay first), best on val. Both are timed in this
process; medfm's time includes its own standardisation, the baseline's does not.

Sizes: synthetic, seeded 5-class data (d = 768 by default) at 5k / 20k / 80k / 200k training rows
(val and test 5,000 rows each), then real cached features (MobileNetV2, ImageNet weights, over
PneumoniaMNIST at 64 px; extracted or reused first). Acceptance (issue 16): >= 3x at 20k, 80k, 200k;
not slower at 5k and on the real features; val and test scores within 0.005 of scikit-learn's.

    python benchmarks/bench_probe.py [--rows 5000,20000,80000,200000] [--dim 768] [--no-real] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from medfm.config import ProbeConfig
from medfm.heads.linear import FeatureScaler, LinearProbe
from medfm.metrics import roc_auc


def synthetic(n: int, d: int, classes: int, seed: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def sklearn_path(Xs, y, Xvs, yv, wds):
    """scikit-learn, warm-started along the path from the largest weight decay; the best on val."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000, warm_start=True)
    best, best_val, iterations = None, -np.inf, 0
    for wd in sorted(wds, reverse=True):
        model.set_params(C=np.inf if wd == 0 else 1.0 / (wd * len(y)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Xs, y)
        iterations += int(model.n_iter_.max())
        val = roc_auc(yv, model.predict_proba(Xvs))
        if val > best_val:
            best_val, best = val, (model.coef_.copy(), model.intercept_.copy())
    model.coef_, model.intercept_ = best
    return model, best_val, iterations


def compare(name: str, X, y, Xv, yv, Xt, yt, wds, device: str, need: float, repeats: int) -> dict:
    """Both sides ``repeats`` times, interleaved (medfm, scikit-learn, medfm, ...): on a shared machine a
    load spike then hits both; each side's best time is compared."""
    task = "binary" if len(np.unique(y)) == 2 else "multiclass"
    scaler = FeatureScaler("standard").fit(X)
    Xs, Xvs, Xts = scaler.transform(X), scaler.transform(Xv), scaler.transform(Xt)
    t_ours, t_ref, cpu_ours, cpu_ref = [], [], [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        ours = LinearProbe(task, "roc_auc", wds=wds, device=device).fit(X, y, Xv, yv)
        t_ours.append(time.perf_counter() - start), cpu_ours.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        ref, ref_val, ref_iters = sklearn_path(Xs, y, Xvs, yv, wds)
        t_ref.append(time.perf_counter() - start), cpu_ref.append(time.process_time() - cpu)
    ours_val, ours_test = float(ours.val_scores_[ours.best_index_]), ours.score(Xt, yt)
    ref_test = roc_auc(yt, ref.predict_proba(Xts))
    ratio = min(t_ref) / min(t_ours)
    evals = sum(p["evaluations"] for p in ours.path_)
    ok = ratio >= need and abs(ours_val - ref_val) <= 0.005 and abs(ours_test - ref_test) <= 0.005
    print(f"| {name} | {X.shape[0]:,} x {X.shape[1]} | {min(t_ours):.2f} s ({evals} passes) | {min(t_ref):.2f} s "
          f"({ref_iters} iterations) | **{ratio:.1f}x** (need {need:g}x) | {ours_val:.4f} / {ref_val:.4f} "
          f"| {ours_test:.4f} / {ref_test:.4f} | {min(cpu_ref) / min(cpu_ours):.1f}x | {'PASS' if ok else 'FAIL'} |", flush=True)
    return {"name": name, "ratio": ratio, "ok": ok}


def real_features(device: str):
    from medfm.cache import FeatureCache
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract
    from medfm.probe.runner import load_splits

    ex = run_extract(ExtractConfig(backbone="mobilenetv2", dataset="pneumoniamnist", img_size=64, device=device))
    data, _ = load_splits(FeatureCache(ex.cache), seed=0)
    return ex.cache, (data["train"], data["val"], data["test"])


def budget_sweep(cache_path, fractions, seeds, repeats: int) -> None:
    """Issue 16's second table: a label-budget sweep of the default head on one cache, each row run in this
    process one probe at a time (each opens and reads the cache, as ``medfm probe`` does) vs the sweep's way
    (``LoadedCache``: read and verified once). Same rows: same ``train_rows_sha256``, metrics within 1e-3."""
    import tempfile

    from medfm.probe.loaded import LoadedCache
    from medfm.probe.runner import run_probe
    from medfm.ui import console

    rows = [(f, s) for f in fractions for s in seeds]

    def run(tmp, tag, loaded):
        records = {}
        for f, s in rows:
            cfg = ProbeConfig(cache=str(cache_path), fraction=f, seed=s, results=f"{tmp}/{tag}.sqlite", out=f"{tmp}/{tag}-{f}-{s}")
            records[(f, s)] = run_probe(cfg, loaded) if loaded is not None else run_probe(cfg)
        return records

    times = {"one by one": [], "cache loaded once": []}
    with tempfile.TemporaryDirectory() as tmp, console.capture():  # the probes' own progress lines are not the table
        for r in range(repeats):
            start = time.perf_counter()
            alone = run(tmp, f"alone{r}", None)
            times["one by one"].append(time.perf_counter() - start)
            start = time.perf_counter()
            swept = run(tmp, f"loaded{r}", LoadedCache(cache_path))
            times["cache loaded once"].append(time.perf_counter() - start)
    same_rows = all(alone[k]["train_rows_sha256"] == swept[k]["train_rows_sha256"] for k in rows)
    worst = max(abs(alone[k][split][m] - swept[k][split][m]) for k in rows for split in ("val", "test") for m in alone[k][split])
    one, once = min(times["one by one"]), min(times["cache loaded once"])
    print(f"\nlabel-budget sweep: {len(fractions)} fractions x {len(seeds)} seeds = {len(rows)} probes of the default "
          f"linear head, in this process, best of {repeats} interleaved runs")
    print("| cache | one probe at a time | cache loaded once | ratio | same train_rows_sha256 | largest metric difference |")
    print("|---|---|---|---|---|---|")
    print(f"| {cache_path.name} | {one:.2f} s | {once:.2f} s | **{one / once:.2f}x** | {same_rows} | {worst:.1e} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="5000,20000,80000,200000")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fractions", default="0.05,0.1,0.25,0.5,1.0", help="the label-budget sweep's fractions")
    ap.add_argument("--seeds", default="0,1,2", help="the label-budget sweep's seeds")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, interleaved; the best of each is compared")
    args = ap.parse_args()
    wds = ProbeConfig(cache="-").wds
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; weight decays {wds}; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print("| data | train | medfm lbfgs (passes over X) | scikit-learn path (L-BFGS iterations) | ratio "
          "| val AUC medfm / sklearn | test AUC medfm / sklearn | CPU-time ratio | |")
    print("|---|---|---|---|---|---|---|---|---|")
    centers = np.random.default_rng(42).normal(size=(args.classes, args.dim)) * 0.05
    results = []
    for n in (int(r) for r in args.rows.split(",")):
        X, y = synthetic(n, args.dim, args.classes, 0, centers)
        Xv, yv = synthetic(5000, args.dim, args.classes, 1, centers)
        Xt, yt = synthetic(5000, args.dim, args.classes, 2, centers)
        results.append(compare(f"synthetic {args.classes}-class", X, y, Xv, yv, Xt, yt, wds, args.device,
                               need=1.0 if n < 20000 else 3.0, repeats=args.repeats))
    if not args.no_real:
        cache_path, ((X, y), (Xv, yv), (Xt, yt)) = real_features(args.device)
        results.append(compare("PneumoniaMNIST, MobileNetV2 @ 64 px", X, y, Xv, yv, Xt, yt, wds, args.device, need=1.0,
                               repeats=args.repeats))
    print(f"{sum(r['ok'] for r in results)} of {len(results)} rows PASS; load average {os.getloadavg()[0]:.2f}")
    if not args.no_real:
        budget_sweep(cache_path, [float(f) for f in args.fractions.split(",")], [int(s) for s in args.seeds.split(",")],
                     args.repeats)
        print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
