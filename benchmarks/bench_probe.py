"""Grid-trained linear heads vs scikit-learn fitted once per grid point, on the same real cache, same run.

medfm's ``linear`` head trains the whole learning-rate x weight-decay grid (8 x 5 = 40 heads) at
once as two GEMMs per step. The baseline is what a per-point sweep does (CLIP_benchmark style):
one scikit-learn ``LogisticRegression`` (L-BFGS, to convergence, ``C = 1 / (wd * n)``) fitted per
grid point, 40 fits. L-BFGS has no learning rate, so each weight decay is fitted 8 times; the
script also prints the ratio against the 5 distinct fits alone. Both see the same standardised
real features (MobileNetV2, ImageNet weights, PneumoniaMNIST at 64 px; extracted or reused first).

    python benchmarks/bench_probe.py [--backbone mobilenetv2] [--img-size 64] [--weights PATH]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from medfm.cache import FeatureCache
from medfm.config import ExtractConfig, ProbeConfig
from medfm.extract import run_extract
from medfm.heads.linear import FeatureScaler, LinearProbe
from medfm.probe.runner import load_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="mobilenetv2")
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ex = run_extract(ExtractConfig(backbone=args.backbone, dataset=args.dataset, weights=args.weights,
                                   img_size=args.img_size))
    data, _ = load_splits(FeatureCache(ex.cache), seed=0)
    (X, y), (Xv, yv), (Xt, yt) = data["train"], data["val"], data["test"]
    defaults = ProbeConfig(cache="-")
    print(f"{args.backbone} @ {args.img_size} px on {args.dataset}: train {X.shape}, val {len(yv)}, test {len(yt)}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    grid = LinearProbe("binary" if len(np.unique(y)) == 2 else "multiclass", "roc_auc", lrs=defaults.lrs, wds=defaults.wds,
                       epochs=defaults.epochs, batch_size=defaults.batch_size, min_steps=defaults.min_steps,
                       device=args.device).fit(X, y, Xv, yv)
    t_grid = time.perf_counter() - start
    n_points = len(defaults.lrs) * len(defaults.wds)

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    scaler = FeatureScaler("standard").fit(X)
    Xs, Xvs, Xts = scaler.transform(X), scaler.transform(Xv), scaler.transform(Xt)
    fits, t_distinct, start = [], 0.0, time.perf_counter()
    for i, (_lr, wd) in enumerate((lr, wd) for lr in defaults.lrs for wd in defaults.wds):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = LogisticRegression(C=np.inf if wd == 0 else 1.0 / (wd * len(y)), max_iter=1000).fit(Xs, y)
        if i < len(defaults.wds):
            t_distinct += time.perf_counter() - t0
        fits.append(m)
    t_sk = time.perf_counter() - start
    from medfm.metrics import roc_auc

    best = max(fits, key=lambda m: roc_auc(yv, m.predict_proba(Xvs)))
    print(f"grid-trained linear heads ({n_points} heads, one pass): {t_grid:7.2f} s   test ROC-AUC {grid.score(Xt, yt):.4f}")
    print(f"scikit-learn, one fit per grid point ({n_points} fits):   {t_sk:7.2f} s   test ROC-AUC "
          f"{roc_auc(yt, best.predict_proba(Xts)):.4f} (best on val)")
    print(f"speed-up: {t_sk / t_grid:.1f}x  (vs the {len(defaults.wds)} distinct weight decays only: "
          f"{t_distinct / t_grid:.1f}x)")


if __name__ == "__main__":
    main()
