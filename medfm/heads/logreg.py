"""scikit-learn ``LogisticRegression`` tuned over the same weight-decay grid: the reference probe.

The linear head's objective is mean loss + ``wd/2 * ||W||^2``; scikit-learn minimises
``C * sum(loss) + 1/2 * ||W||^2``, the same problem when ``C = 1 / (wd * n)`` (``wd = 0``: no
penalty). Each grid point is one L-BFGS fit to convergence; the best on val is kept.
Multilabel tasks fit one binary model per label, on the rows where that label is known
(``medfm.targets``: an ignored entry is left out of its label's fit, and only of that one).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from medfm.heads.base import Head
from medfm.heads.linear import FeatureScaler
from medfm.targets import known_mask


class LogRegProbe(Head):
    grid_names = ("weight_decay",)  # what each entry of ``grid_`` holds

    def __init__(self, task: str, metric: str, wds: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
                 normalize: str = "standard", class_weight: bool = False, max_iter: int = 1000, seed: int = 0):
        self.task, self.metric, self.wds = task, metric, list(wds)
        self.normalize, self.class_weight, self.max_iter, self.seed = normalize, class_weight, max_iter, seed

    def _model(self, wd: float, n: int):
        from sklearn.linear_model import LogisticRegression

        kw = {"C": np.inf if wd == 0 else 1.0 / (wd * n)}
        return LogisticRegression(max_iter=self.max_iter, class_weight="balanced" if self.class_weight else None,
                                  random_state=self.seed, **kw)

    def _fit_one(self, wd: float, Xs: np.ndarray, y: np.ndarray):
        """One grid point: a model, or (multilabel) one per label fitted on its known rows only."""
        if self.task != "multilabel":
            return self._model(wd, len(y)).fit(Xs, y)
        known = known_mask(y)
        per_label = []
        for c in range(y.shape[1]):
            rows = np.flatnonzero(known[:, c])
            t = y[rows, c]
            if len(np.unique(t)) < 2:  # nothing to separate: predict the known prevalence (0.5 if none known)
                per_label.append(float(t.mean()) if len(t) else 0.5)
            else:
                per_label.append(self._model(wd, len(rows)).fit(Xs[rows], t))
        return per_label

    def fit(self, X, y, X_val, y_val, num_classes: int | None = None) -> LogRegProbe:
        from sklearn.exceptions import ConvergenceWarning

        y = np.asarray(y)
        self.num_classes_ = self._num_classes(y, y_val, num_classes)
        self.scaler_ = FeatureScaler(self.normalize).fit(X)
        Xs, Xv = self.scaler_.transform(X), self.scaler_.transform(X_val)
        models, scores = [], []
        for wd in self.wds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = self._fit_one(wd, Xs, y)
            models.append(m)
            scores.append(self._metric(np.asarray(y_val), self._full_proba(m, Xv)))
        self.val_scores_ = np.array(scores, dtype=np.float64)
        best = self._best(self.val_scores_)
        self.model_ = models[best]
        self.grid_ = self.wds
        self.best_params_ = {"weight_decay": self.wds[best]}
        return self

    def _full_proba(self, model, Xs) -> np.ndarray:
        if self.task == "multilabel":
            return np.stack([np.full(len(Xs), m) if isinstance(m, float) else m.predict_proba(Xs)[:, 1] for m in model], 1)
        p = model.predict_proba(Xs)
        full = np.zeros((len(Xs), self.num_classes_))
        full[:, model.classes_] = p  # a class missing from a small label budget gets probability 0
        return full

    def predict_proba(self, X) -> np.ndarray:
        return self._full_proba(self.model_, self.scaler_.transform(X))


def for_probe(cfg, task: str, metric: str, device) -> LogRegProbe:
    return LogRegProbe(task=task, metric=metric, wds=cfg.wds, normalize=cfg.normalize, class_weight=cfg.class_weight,
                       seed=cfg.seed)
