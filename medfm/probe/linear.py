"""Linear heads for a whole learning-rate x weight-decay grid, trained at once.

All G = len(lrs) * len(wds) heads share every mini-batch: one batched matmul ``[B, D] x [G, D, C]``
per step, with Adam (per-head learning rate) and a cosine schedule — the trick DINOv2's linear
evaluation uses. ``wd`` is an L2 penalty ``wd/2 * ||W||^2`` in the objective, so each head solves a
regularised logistic regression, as scikit-learn's does. The head with the best validation score
is kept. The class follows scikit-learn's ``fit`` / ``predict_proba`` / ``predict`` / ``score``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medfm.metrics import IGNORE, METRICS


class LinearProbe:
    def __init__(
        self,
        task: str,
        metric: str,
        lrs: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
        wds: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
        epochs: int = 100,
        batch_size: int = 256,
        normalize: str = "standard",
        class_weight: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.task, self.metric = task, metric
        self.lrs, self.wds = list(lrs), list(wds)
        self.epochs, self.batch_size = epochs, batch_size
        self.normalize, self.class_weight, self.seed = normalize, class_weight, seed
        self.device = torch.device(device)

    # -- preprocessing -------------------------------------------------------------------------
    def _fit_scaler(self, X: np.ndarray) -> None:
        X = X.astype(np.float64)
        self.mean_ = X.mean(0) if self.normalize == "standard" else np.zeros(X.shape[1])
        std = X.std(0) if self.normalize == "standard" else np.ones(X.shape[1])
        self.scale_ = np.where(std > 1e-12, std, 1.0)

    def _prep(self, X: np.ndarray) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float64)
        if self.normalize == "l2":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        X = (X - self.mean_) / self.scale_
        return torch.as_tensor(X, dtype=torch.float32, device=self.device)

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        dtype = torch.float32 if self.task == "multilabel" else torch.long
        return torch.as_tensor(np.asarray(y), dtype=dtype, device=self.device)

    # -- training ------------------------------------------------------------------------------
    def fit(self, X, y, X_val, y_val, num_classes: int | None = None) -> LinearProbe:
        y, y_val = np.asarray(y), np.asarray(y_val)
        self.num_classes_ = num_classes or (y.shape[1] if self.task == "multilabel" else int(max(y.max(), y_val.max())) + 1)
        self._fit_scaler(np.asarray(X))
        Xt, yt = self._prep(X), self._targets(y)
        n, d, c = Xt.shape[0], Xt.shape[1], self.num_classes_
        grid = [(lr, wd) for lr in self.lrs for wd in self.wds]
        g = len(grid)
        lr = torch.tensor([p[0] for p in grid], device=self.device).view(g, 1, 1)
        wd = torch.tensor([p[1] for p in grid], device=self.device).view(g, 1, 1)
        W = torch.zeros(g, d, c, device=self.device, requires_grad=True)
        b = torch.zeros(g, 1, c, device=self.device, requires_grad=True)
        state = {p: (torch.zeros_like(p), torch.zeros_like(p)) for p in (W, b)}
        weight = self._class_weights(y) if self.class_weight else None

        gen = torch.Generator().manual_seed(self.seed)
        steps_per_epoch = math.ceil(n / self.batch_size)
        total, step = self.epochs * steps_per_epoch, 0
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen).to(self.device)
            for k in range(steps_per_epoch):
                idx = order[k * self.batch_size : (k + 1) * self.batch_size]
                logits = torch.einsum("nd,gdc->gnc", Xt[idx], W) + b  # [G, B, C]
                loss = self._loss(logits, yt[idx], weight) + 0.5 * (wd.view(g) * (W**2).sum((1, 2))).sum()
                gW, gb = torch.autograd.grad(loss, (W, b))
                step += 1
                sched = 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
                with torch.no_grad():
                    for p, grad in ((W, gW), (b, gb)):
                        self._adam(p, grad, state[p], lr * sched, step)

        self.grid_ = grid
        with torch.no_grad():
            Xv = self._prep(X_val)
            probs = self._proba(torch.einsum("nd,gdc->gnc", Xv, W) + b).cpu().numpy()
        scores = np.array([self._safe_score(y_val, probs[i]) for i in range(g)])
        self.val_scores_ = scores
        best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
        self.best_index_ = best
        self.best_params_ = {"lr": grid[best][0], "weight_decay": grid[best][1]}
        self.coef_ = W.detach()[best].clone()
        self.intercept_ = b.detach()[best].clone()
        return self

    @staticmethod
    def _adam(p, grad, moments, lr, step, betas=(0.9, 0.999), eps=1e-8):
        m, v = moments
        m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
        v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
        m_hat = m / (1 - betas[0] ** step)
        v_hat = v / (1 - betas[1] ** step)
        p.sub_(lr * m_hat / (v_hat.sqrt() + eps))

    def _class_weights(self, y: np.ndarray) -> torch.Tensor:
        counts = (y == 1).sum(0) if self.task == "multilabel" else np.bincount(y, minlength=self.num_classes_)
        if self.task == "multilabel":  # positive weight = negatives / positives, per label
            w = ((y == 0).sum(0)) / np.maximum(counts, 1)
        else:
            w = len(y) / (self.num_classes_ * np.maximum(counts, 1))
        return torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, weight) -> torch.Tensor:
        """Sum over heads of each head's mean loss, so each head's gradient is its own."""
        g, bsz, c = logits.shape
        if self.task == "multilabel":
            known = (y != IGNORE).float()  # "not known" targets (CheXpert uncertain, policy ignore) give no gradient
            target = (y * known).expand(g, -1, -1)
            per = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none") * known
            return (per.sum((1, 2)) / known.sum().clamp(min=1)).sum()
        per = F.cross_entropy(logits.reshape(g * bsz, c), y.repeat(g), weight=weight, reduction="none").view(g, bsz)
        if weight is None:
            return per.mean(1).sum()
        return (per.sum(1) / weight[y].sum()).sum()

    def _proba(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.task == "multilabel" else torch.softmax(logits, dim=-1)

    def _safe_score(self, y, probs) -> float:
        if not np.isfinite(probs).all():
            return float("nan")  # a diverged head (too high a learning rate) simply loses
        return METRICS.get(self.metric).fn(y, probs)

    # -- inference -----------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        with torch.no_grad():
            return self._proba(self._prep(X) @ self.coef_ + self.intercept_).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        p = self.predict_proba(X)
        return (p >= 0.5).astype(np.int64) if self.task == "multilabel" else p.argmax(1)

    def score(self, X, y) -> float:
        return METRICS.get(self.metric).fn(np.asarray(y), self.predict_proba(X))
