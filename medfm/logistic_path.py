"""Regularised logistic regression along a weight-decay path: full-batch L-BFGS in torch, warm-started.

The problem is scikit-learn's (``C = 1 / (wd * n)``): mean loss + ``wd / 2 * ||W||^2``, intercept not
penalised, with
- ``binary``: one logit, sigmoid loss (as scikit-learn's binary model);
- ``multiclass``: softmax over C logits, every column penalised (scikit-learn's multinomial);
- ``multilabel``: one sigmoid per label, each label's loss a mean over its *known* rows (entries equal to
  ``IGNORE`` contribute nothing), so the labels are independent problems solved side by side.

Why it is fast: the path runs from the largest weight decay to the smallest, each fit starting where the
previous one stopped (the solutions move little between neighbours); the data are float32 and each
function evaluation reads them once, in row blocks that stay in cache while the forward logits and the
backward ``X_b^T G_b`` are computed (a plain implementation reads ``X`` twice per evaluation, in float64).
The L-BFGS state (history, line search, convergence test) is float64, so the float32 data do not limit
the accuracy of the optimiser's decisions. Convergence is scikit-learn's test: the largest absolute
gradient entry below ``tol``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = 255  # as medfm.metrics.IGNORE: a multilabel entry that is not known

_MAX_HALVINGS = 20  # line-search step 2^-20: below it no decrease is measurable in float32
_BLOCK_BYTES = 4 << 20  # rows per block: ~4 MB of features, so a block is still in cache for its backward GEMM


@dataclass
class PathFit:
    weight_decay: float
    coef: torch.Tensor  # [D, K] (K = 1 for binary)
    intercept: torch.Tensor  # [K]
    iterations: int
    evaluations: int
    converged: bool


class _Objective:
    """Mean (weighted) logistic loss + wd/2 ||W||^2 and its gradient, one read of X per evaluation."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, task: str, sample_weight: torch.Tensor | None,
                 label_weight: torch.Tensor | None):
        self.X, self.task = X, task
        n, self.d = X.shape
        self.k = 1 if task == "binary" else (y.shape[1] if task == "multilabel" else int(y.max()) + 1)
        self.block = max(256, _BLOCK_BYTES // max(1, X.shape[1] * X.element_size()))
        if task == "multilabel":
            known = (y != IGNORE)
            self.target = torch.where(known, y, torch.zeros_like(y)).to(X.dtype)
            pos_w = label_weight if label_weight is not None else torch.ones(self.k, dtype=X.dtype)
            # weight of each entry: its label's positive weight when positive, 1 when negative, 0 when unknown,
            # over the label's (weighted) known count: each label's loss is a mean over its known rows
            entry = known.to(X.dtype) * torch.where(self.target > 0, pos_w.to(X.dtype), torch.ones_like(self.target))
            self.entry_weight = entry / entry.sum(0).clamp(min=1e-12)
        else:
            w = sample_weight.to(X.dtype) if sample_weight is not None else torch.ones(n, dtype=X.dtype)
            self.row_weight = w / w.sum()
            self.target = y.to(X.dtype) if task == "binary" else y.long()

    def size(self) -> int:
        return self.d * self.k + self.k

    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return theta[: self.d * self.k].view(self.d, self.k), theta[self.d * self.k:]

    def __call__(self, theta: torch.Tensor, wd: float) -> tuple[float, torch.Tensor]:
        W64, b64 = self.unpack(theta)
        W, b = W64.to(self.X.dtype), b64.to(self.X.dtype)
        loss = 0.0
        gW = torch.zeros(self.d, self.k, dtype=torch.float64)
        gb = torch.zeros(self.k, dtype=torch.float64)
        for start in range(0, self.X.shape[0], self.block):
            xb = self.X[start:start + self.block]
            z = torch.addmm(b, xb, W)
            part, g = self._loss_grad(z, slice(start, start + len(xb)))
            loss += part
            gW += (xb.T @ g).double()
            gb += g.sum(0).double()
        gW += wd * W64
        loss += 0.5 * wd * float((W64 * W64).sum())
        return loss, torch.cat([gW.reshape(-1), gb])

    def _loss_grad(self, z: torch.Tensor, rows: slice) -> tuple[float, torch.Tensor]:
        """Weighted loss of a block and d(loss)/dz, already weighted."""
        if self.task == "multiclass":
            y, w = self.target[rows], self.row_weight[rows]
            logp = torch.log_softmax(z, dim=1)
            loss = -(w * logp.gather(1, y[:, None])[:, 0]).sum()
            g = logp.exp()
            g[torch.arange(len(y)), y] -= 1
            return float(loss), g * w[:, None]
        t = self.target[rows]
        w = self.entry_weight[rows] if self.task == "multilabel" else self.row_weight[rows, None]
        t = t if self.task == "multilabel" else t[:, None]
        loss = (w * (torch.nn.functional.softplus(z) - t * z)).sum()  # BCE with logits
        return float(loss), (torch.sigmoid(z) - t) * w


def _lbfgs(fun, theta: torch.Tensor, wd: float, tol: float, max_iter: int, history: int = 10):
    """Minimise ``fun(theta, wd) -> (f, g)`` from ``theta``: L-BFGS, backtracking Armijo line search."""
    f, g = fun(theta, wd)
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    evaluations, it = 1, 0
    while float(g.abs().max()) > tol and it < max_iter:
        # two-loop recursion: d = -H g
        q = g.clone()
        alphas = []
        for s, y in zip(reversed(s_hist), reversed(y_hist)):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q -= a * y
        if s_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        else:
            q *= min(1.0, 1.0 / float(g.abs().sum()))  # first step: a short one along -g
        for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += (a - float(y @ q) / float(y @ s)) * s
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction (numerical trouble): restart from steepest descent
            s_hist.clear(), y_hist.clear()
            d, slope = -g, -float(g @ g)
        step, halvings = 1.0, 0
        while True:
            new_theta = theta + step * d
            new_f, new_g = fun(new_theta, wd)
            evaluations += 1
            if new_f <= f + 1e-4 * step * slope:
                break
            if halvings == _MAX_HALVINGS:  # no decrease the float32 objective can resolve: as close as it gets
                return theta, it, evaluations, False
            step, halvings = step * 0.5, halvings + 1
        s, y = new_theta - theta, new_g - g
        if float(s @ y) > 1e-10 * float(y @ y):  # keep the pair only when it adds positive curvature
            s_hist.append(s), y_hist.append(y)
            if len(s_hist) > history:
                s_hist.pop(0), y_hist.pop(0)
        theta, f, g = new_theta, new_f, new_g
        it += 1
    return theta, it, evaluations, float(g.abs().max()) <= tol


def fit_path(X, y, task: str, weight_decays: Sequence[float], *, sample_weight=None, label_weight=None,
             tol: float = 1e-4, max_iter: int = 1000, dtype: torch.dtype = torch.float32) -> list[PathFit]:
    """One fit per weight decay (returned in the order given), solved from the largest to the smallest.

    ``X``: ``[N, D]`` features (already normalised); ``y``: ``[N]`` class indices, or ``[N, L]`` 0/1 with
    ``IGNORE`` for unknown entries (multilabel). ``sample_weight`` (single-label) weights rows;
    ``label_weight`` (multilabel) is each label's positive weight.
    """
    Xt = torch.as_tensor(np.asarray(X), dtype=dtype).contiguous()
    yt = torch.as_tensor(np.asarray(y))
    sw = None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight), dtype=torch.float64)
    lw = None if label_weight is None else torch.as_tensor(np.asarray(label_weight), dtype=torch.float64)
    objective = _Objective(Xt, yt, task, sw, lw)
    theta = torch.zeros(objective.size(), dtype=torch.float64)
    fits: dict[int, PathFit] = {}
    for i in sorted(range(len(weight_decays)), key=lambda j: -weight_decays[j]):
        wd = float(weight_decays[i])
        theta, it, evals, ok = _lbfgs(objective, theta, wd, tol, max_iter)
        W, b = objective.unpack(theta)
        fits[i] = PathFit(wd, W.clone(), b.clone(), it, evals, ok)
    return [fits[i] for i in range(len(weight_decays))]


def predict_proba(fit: PathFit, X, task: str) -> np.ndarray:
    """Class probabilities ``[N, C]`` (binary: both columns) or per-label probabilities (multilabel)."""
    z = torch.as_tensor(np.asarray(X), dtype=torch.float64) @ fit.coef + fit.intercept
    if task == "binary":
        p = torch.sigmoid(z[:, 0])
        return torch.stack([1 - p, p], dim=1).numpy()
    return (torch.softmax(z, dim=1) if task == "multiclass" else torch.sigmoid(z)).numpy()
