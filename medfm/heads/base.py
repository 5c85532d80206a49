"""What every probe estimator shares, written once (scikit-learn's ``ClassifierMixin`` idea).

A head estimator implements ``fit(X, y, X_val, y_val, num_classes=None) -> self`` (choosing its
hyper-parameters on val) and ``predict_proba(X) -> [N, C]``; ``predict`` and ``score`` come from
here, so a threshold or a metric means the same for every head. What ``X`` is (pooled features or
token rows) is declared in the head registry (``medfm.heads.HEADS``), not by the estimator.
"""

from __future__ import annotations

import numpy as np

from medfm.metrics import METRICS


class Head:
    task: str  # binary | multiclass | multilabel
    metric: str  # the metric that chooses hyper-parameters (and ``score`` reports)

    def fit(self, X, y, X_val, y_val, num_classes: int | None = None) -> Head:
        raise NotImplementedError

    def predict_proba(self, X) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        """Class indices (argmax), or for multilabel tasks 0/1 per label at probability 0.5."""
        p = self.predict_proba(X)
        return (p >= 0.5).astype(np.int64) if self.task == "multilabel" else p.argmax(1)

    def score(self, X, y) -> float:
        """The head's metric on (X, y)."""
        return self._metric(np.asarray(y), self.predict_proba(X))

    # -- helpers the estimators share -----------------------------------------------------------------
    def _metric(self, y, probs) -> float:
        return METRICS.get(self.metric).fn(y, probs)

    def _num_classes(self, y: np.ndarray, y_val: np.ndarray, num_classes: int | None) -> int:
        """The dataset's class count when given; else labels' width (multilabel) or largest class + 1."""
        if num_classes:
            return int(num_classes)
        if self.task == "multilabel":
            return int(y.shape[1])
        return int(max(y.max(), np.asarray(y_val).max())) + 1

    @staticmethod
    def _best(scores: np.ndarray) -> int:
        """Index of the best validation score; NaN (a diverged or undefined point) never wins."""
        return int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
