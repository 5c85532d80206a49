"""The head registry: each entry builds an (unfitted) head from a ``ProbeConfig``.

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
                       batch_size=cfg.batch_size, normalize=cfg.normalize, class_weight=cfg.class_weight,
                       seed=cfg.seed, device=device)
