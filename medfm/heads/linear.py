"""Linear heads: an exact solver along the weight-decay path (default), or a whole lr x wd grid trained at once.

``solver="lbfgs"`` (the default): for each weight decay, the regularised logistic regression
(mean loss + ``wd/2 * ||W||^2``, scikit-learn's problem with ``C = 1 / (wd * n)``) solved to
scikit-learn's tolerance by full-batch L-BFGS, warm-started along the path (``medfm.logistic_path``).

``solver="grid"`` (the studies' protocol): all G = len(lrs) * len(wds) heads share every mini-batch:
one batched matmul ``[B, D] x [G, D, C]`` per step, with Adam (per-head learning rate) and a cosine
schedule — the trick DINOv2's linear evaluation uses — for a fixed number of epochs.

Either way the head with the best validation score is kept. The class follows scikit-learn's
``fit`` / ``predict_proba`` / ``predict`` / ``score``.

Fine-tuning's linear head (``for_finetune``) is the same classifier as one ``nn.Linear``,
zero-initialised like the grid, so ``medfm finetune --unfreeze 0 --head linear`` trains exactly
the head ``medfm probe --solver grid`` would.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from collections.abc import Sequence

import numpy as np
import torch

from medfm.heads.base import Head
from medfm.logistic_path import fit_path
from medfm.logistic_path import predict_proba as path_proba
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
    """Feature normalisation fitted on train: ``standard`` (z-score), ``l2`` (unit rows), or ``none``.

    The statistics are float64, accumulated block by block (a 200k x 768 float32 cache is never copied
    whole into float64: 1.2 GB). ``transform`` is float64; ``transform32`` hands the exact solver its float32
    input in one float32 pass (within 1 float32 ulp of transforming in float64 and casting)."""

    _CHUNK_ROWS = 512

    def __init__(self, mode: str = "standard"):
        self.mode = mode

    def fit(self, X) -> FeatureScaler:
        X = torch.as_tensor(np.asarray(X))
        n, d = X.shape
        self.mean_, self.scale_ = np.zeros(d), np.ones(d)
        if self.mode != "standard" or n == 0:
            return self
        # one pass: deviations from a pilot mean (the first rows') in float32, summed per small block and the
        # block sums added in float64; no cancellation to speak of, and 4x faster than float64 blocks
        pilot = X[:self._CHUNK_ROWS].double().mean(0)
        pilot32 = pilot.float()
        total, squares = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        for start in range(0, n, self._CHUNK_ROWS):
            dev = X[start:start + self._CHUNK_ROWS].float() - pilot32
            total += dev.sum(0).double()
            squares += dev.square_().sum(0).double()
        shift = total / n
        std = (squares / n - shift.square()).clamp_(min=0).sqrt().numpy()
        self.mean_, self.scale_ = (pilot + shift).numpy(), np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.mode == "l2":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return (X - self.mean_) / self.scale_

    def transform32(self, X) -> torch.Tensor:
        if self.mode == "l2":
            return torch.as_tensor(self.transform(X), dtype=torch.float32)
        X = torch.as_tensor(np.asarray(X))
        mean, inv_scale = torch.as_tensor(self.mean_, dtype=torch.float32), torch.as_tensor(1 / self.scale_, dtype=torch.float32)
        # numpy's allocator asks the kernel for huge pages: first-touching 250 MB is then 4x faster (measured)
        out = torch.from_numpy(np.empty(tuple(X.shape), dtype=np.float32))
        for start in range(0, len(X), 8 * self._CHUNK_ROWS):
            rows = slice(start, start + 8 * self._CHUNK_ROWS)
            torch.sub(X[rows].to(torch.float32), mean, out=out[rows]).mul_(inv_scale)
        return out


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
        solver: str = "lbfgs",
    ):
        self.task, self.metric, self.solver = task, metric, solver
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
        if self.solver == "lbfgs":
            return self._fit_path(X, y, X_val, y_val)
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

    def _fit_path(self, X, y, X_val, y_val) -> LinearProbe:
        """The exact solver: one regularised logistic regression per weight decay, solved along the path
        (``medfm.logistic_path``), the best on val kept. Binary tasks fit one logit (scikit-learn's model),
        stored as the logit pair (0, z) so prediction is the same softmax for every solver."""
        c = self.num_classes_
        weight = class_weights(y, c, self.task) if self.class_weight else None
        sample_weight = weight[y] if weight is not None and self.task != "multilabel" else None
        label_weight = weight if weight is not None and self.task == "multilabel" else None
        task = "binary" if self.task == "binary" and c == 2 else self.task
        fits = fit_path(self.scaler_.transform32(X), y, task, self.wds, sample_weight=sample_weight,
                        label_weight=label_weight, device=self.device, num_classes=c if task == "multiclass" else None)
        Xv = self.scaler_.transform(X_val)
        self.val_scores_ = np.array([self._safe_score(y_val, path_proba(f, Xv, task)) for f in fits])
        best = self._best(self.val_scores_)
        self.grid_names = ("weight_decay",)
        self.grid_, self.best_index_ = list(self.wds), best
        self.best_params_ = {"weight_decay": self.wds[best]}
        self.path_ = [{"weight_decay": f.weight_decay, "iterations": f.iterations, "evaluations": f.evaluations,
                       "converged": f.converged} for f in fits]
        coef, intercept = fits[best].coef, fits[best].intercept
        if task == "binary":
            coef, intercept = torch.cat([torch.zeros_like(coef), coef], 1), torch.cat([torch.zeros_like(intercept), intercept])
        self.coef_ = coef.to(torch.float32).to(self.device)
        self.intercept_ = intercept.to(torch.float32).to(self.device)
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
                       device=device, solver=cfg.solver)


def for_finetune(dim: int, num_classes: int, cfg, num_tokens: int) -> torch.nn.Module:
    """Zero-initialised, as the probe's heads: training starts from the uniform prediction, so the
    first steps push no random gradients into the unfrozen blocks."""
    head = torch.nn.Linear(dim, num_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head
