"""The head registry: each entry builds an (unfitted) head from a ``ProbeConfig``.

``linear`` (grid-trained), ``logreg`` (scikit-learn reference over the same weight-decay grid),
``knn`` (cosine, temperature-weighted) and ``deit`` (the studies' attention head, trained from tokens).

Heads follow scikit-learn's shape — ``fit(X, y, X_val, y_val)``, ``predict_proba``, ``predict``,
``score`` — and report what they chose in ``best_params_``.
"""

from __future__ import annotations

from collections.abc import Callable

from medfm.config import ProbeConfig
from medfm.probe.linear import LinearProbe
from medfm.registry import Registry

HeadFactory = Callable[..., object]
HEADS: Registry[HeadFactory] = Registry("head", "medfm probe --help")


@HEADS.register("linear")
def linear_head(cfg: ProbeConfig, task: str, metric: str, device) -> LinearProbe:
    return LinearProbe(task=task, metric=metric, lrs=cfg.lrs, wds=cfg.wds, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, min_steps=cfg.min_steps, normalize=cfg.normalize, class_weight=cfg.class_weight,
                       seed=cfg.seed, device=device)


@HEADS.register("logreg")
def logreg_head(cfg: ProbeConfig, task: str, metric: str, device):
    from medfm.probe.logreg import LogRegProbe

    return LogRegProbe(task=task, metric=metric, wds=cfg.wds, normalize=cfg.normalize, class_weight=cfg.class_weight,
                       seed=cfg.seed)


@HEADS.register("knn")
def knn_head(cfg: ProbeConfig, task: str, metric: str, device):
    from medfm.probe.knn import KNNProbe

    return KNNProbe(task=task, metric=metric, ks=cfg.ks, temperature=cfg.temperature, device=device)


@HEADS.register("deit")
def deit_head(cfg: ProbeConfig, task: str, metric: str, device):
    from medfm.probe.deit_head import DeiTProbe

    return DeiTProbe(task=task, metric=metric, depth=cfg.head_depth, deit_weights=cfg.deit_weights, epochs=cfg.epochs,
                     batch_size=cfg.head_batch_size, lr=cfg.head_lr, class_weight=cfg.class_weight, seed=cfg.seed,
                     device=device)
