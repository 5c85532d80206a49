"""Linear heads for a whole learning-rate x weight-decay grid, trained at once.

All G = len(lrs) * len(wds) heads share every mini-batch: one batched matmul ``[B, D] x [G, D, C]``
per step, with Adam (per-head learning rate) and a cosine schedule — the trick DINOv2's linear
evaluation uses. ``wd`` is an L2 penalty ``wd/2 * ||W||^2`` in the objective, so each head solves a
regularised logistic regression, as scikit-learn's does. The head with the best validation score
is kept. The class follows scikit-learn's ``fit`` / ``predict_proba`` / ``predict`` / ``score``.

Fine-tuning's linear head (``for_finetune``) is the same classifier as one ``nn.Linear``,
zero-initialised like the grid, so ``medfm finetune --unfreeze 0 --head linear`` trains exactly
the head ``medfm probe`` would.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from collections.abc import Sequence

import numpy as np
import torch

from medfm.heads.base import Head
from medfm.targets import class_weights, loss_grad


@contextmanager
def _cpu_threads(device: torch.device, n: int):
    """Run the grid on ``n`` CPU threads: its tensors are small, and on a busy machine the thread
    barriers of every small element-wise op cost far more than they buy (measured: 5x slower with 2)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FeatureScaler:
    """Feature normalisation fitted on train: ``standard`` (z-score), ``l2`` (unit rows), or ``none``."""

    def __init__(self, mode: str = "standard"):
        self.mode = mode

    def fit(self, X) -> FeatureScaler:
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(0) if self.mode == "standard" else np.zeros(X.shape[1])
        std = X.std(0) if self.mode == "standard" else np.ones(X.shape[1])
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.mode == "l2":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return (X - self.mean_) / self.scale_


class LinearProbe(Head):
    grid_names = ("lr", "weight_decay")  # what each entry of ``grid_`` holds

    def __init__(
        self,
        task: str,
        metric: str,
        lrs: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
        wds: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
        epochs: int = 30,
        batch_size: int = 1024,
        min_steps: int = 200,
        normalize: str = "standard",
        class_weight: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.task, self.metric = task, metric
        self.lrs, self.wds = list(lrs), list(wds)
        self.epochs, self.batch_size, self.min_steps = epochs, batch_size, min_steps
        self.normalize, self.class_weight, self.seed = normalize, class_weight, seed
        self.device = torch.device(device)

    # -- preprocessing -------------------------------------------------------------------------
    def _prep(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32, device=self.device)

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        dtype = torch.float32 if self.task == "multilabel" else torch.long
        return torch.as_tensor(np.asarray(y), dtype=dtype, device=self.device)

    # -- training ------------------------------------------------------------------------------
    def fit(self, X, y, X_val, y_val, num_classes: int | None = None) -> LinearProbe:
        y, y_val = np.asarray(y), np.asarray(y_val)
        self.num_classes_ = self._num_classes(y, y_val, num_classes)
        self.scaler_ = FeatureScaler(self.normalize).fit(X)
        Xt, yt = self._prep(X), self._targets(y)
        n, d, c = Xt.shape[0], Xt.shape[1], self.num_classes_
        grid = [(lr, wd) for lr in self.lrs for wd in self.wds]
        g = len(grid)
        # All heads side by side: W is [D, G*C], so a step is two plain GEMMs whatever G is.
        lr = torch.tensor([p[0] for p in grid], device=self.device).repeat_interleave(c)  # per column
        wd = torch.tensor([p[1] for p in grid], device=self.device).repeat_interleave(c)
        W = torch.zeros(d, g * c, device=self.device)
        b = torch.zeros(g * c, device=self.device)
        state = {"W": (torch.zeros_like(W), torch.zeros_like(W)), "b": (torch.zeros_like(b), torch.zeros_like(b))}
        weight = None
        if self.class_weight:
            weight = torch.as_tensor(class_weights(y, c, self.task), device=self.device)

        gen = torch.Generator().manual_seed(self.seed)
        steps_per_epoch = math.ceil(n / self.batch_size)
        total, step = max(self.epochs * steps_per_epoch, self.min_steps), 0  # small label budgets still converge
        with torch.no_grad(), _cpu_threads(self.device, 1):
            while step < total:
                order = torch.randperm(n, generator=gen).to(self.device)
                for k in range(min(steps_per_epoch, total - step)):
                    idx = order[k * self.batch_size : (k + 1) * self.batch_size]
                    xb = Xt[idx]
                    logits = (xb @ W + b).view(len(idx), g, c)
                    dlogits = loss_grad(logits, yt[idx], self.task, weight).reshape(len(idx), g * c)  # each head's own loss
                    gW = torch.addmm(W * wd, xb.T, dlogits)  # d(mean loss)/dW + wd * W
                    gb = dlogits.sum(0)
                    step += 1
                    sched = 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
                    self._adam(W, gW, state["W"], lr * sched, step)
                    self._adam(b, gb, state["b"], lr * sched, step)

            self.grid_ = grid
            Xv = self._prep(X_val)
            probs = self._proba((Xv @ W + b).view(len(Xv), g, c)).permute(1, 0, 2).cpu().numpy()
        scores = np.array([self._safe_score(y_val, probs[i]) for i in range(g)])
        self.val_scores_ = scores
        best = self._best(scores)
        self.best_index_ = best
        self.best_params_ = {"lr": grid[best][0], "weight_decay": grid[best][1]}
        self.coef_ = W.view(d, g, c)[:, best].clone()
        self.intercept_ = b.view(g, c)[best].clone()
        return self

    @staticmethod
    def _adam(p, grad, moments, lr, step, betas=(0.9, 0.999), eps=1e-8):
        m, v = moments
        m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
        v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
        m_hat = m / (1 - betas[0] ** step)
        v_hat = v / (1 - betas[1] ** step)
        p.sub_(lr * m_hat / (v_hat.sqrt() + eps))

    def _proba(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.task == "multilabel" else torch.softmax(logits, dim=-1)

    def _safe_score(self, y, probs) -> float:
        if not np.isfinite(probs).all():
            return float("nan")  # a diverged head (too high a learning rate) simply loses
        return self._metric(y, probs)

    # -- inference -----------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        with torch.no_grad():
            return self._proba(self._prep(X) @ self.coef_ + self.intercept_).cpu().numpy()


def for_probe(cfg, task: str, metric: str, device) -> LinearProbe:
    return LinearProbe(task=task, metric=metric, lrs=cfg.lrs, wds=cfg.wds, epochs=cfg.epochs, batch_size=cfg.batch_size,
                       min_steps=cfg.min_steps, normalize=cfg.normalize, class_weight=cfg.class_weight, seed=cfg.seed,
                       device=device)


def for_finetune(dim: int, num_classes: int, cfg, num_tokens: int) -> torch.nn.Module:
    """Zero-initialised, as the probe's heads: training starts from the uniform prediction, so the
    first steps push no random gradients into the unfrozen blocks."""
    head = torch.nn.Linear(dim, num_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head
