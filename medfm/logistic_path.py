"""Regularised logistic regression along a weight-decay path: full-batch L-BFGS in torch, warm-started.

The problem is scikit-learn's (``C = 1 / (wd * n)``): mean loss + ``wd / 2 * ||W||^2``, intercept not
penalised, with
- ``binary``: one logit, sigmoid loss (as scikit-learn's binary model);
- ``multiclass``: softmax over C logits, every column penalised (scikit-learn's multinomial);
- ``multilabel``: one sigmoid per label, each label's loss a mean over its *known* rows (entries equal to
  ``IGNORE`` contribute nothing), so the labels are independent problems solved side by side.

Convergence is scikit-learn's test (``gtol``): the largest absolute gradient entry of that objective
below ``tol``; a fit stops there, as scikit-learn's does, not tighter.

Why it is fast (measured in ``benchmarks/bench_probe.py``; the profile is in benchmarks/README.md):
- One evaluation is two skinny GEMMs over float32 data, laid out as MKL runs them fastest: the weights
  are stored ``[K, D]`` so the forward pass is ``X W^T`` and the gradient ``G^T X`` (the ``[D, N] x [N, K]``
  orientation is 4-6x slower for K = 5). On CPU, ``X`` is read in row blocks that stay in cache between
  the two GEMMs. The logits of a block are tiny (``[rows, K]``): the loss and ``dloss/dz`` are computed
  from them in float64, so the line search compares float64 losses.
- The data part of the objective does not depend on the weight decay, so the evaluation where one fit
  stopped is the next fit's starting evaluation: a warm start costs no pass over ``X``.
- The L-BFGS curvature pairs move along the path too: the penalty is quadratic, so a pair ``(s, y)``
  of one weight decay is exactly ``(s, y + (wd' - wd) P s)`` for the next (``P`` masks the intercept).
  Every later fit's first step is a steepest-descent one scaled by their curvature, the rest quasi-Newton.
- The L-BFGS state (history, line search, convergence test) is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfm.metrics import IGNORE  # a multilabel entry that is not known

_MAX_HALVINGS = 30  # line-search step 2^-30: below it no decrease is measurable
_BLOCK_BYTES = 3 << 20  # CPU: rows per block ~3 MB of features (1,024 rows at d = 768): measured fastest, 64 vs 72 ms per pass at 80k rows
_FLUSH_BLOCKS = 64  # float32 gradient partial sums are added into the float64 total every this many blocks


@dataclass
class PathFit:
    weight_decay: float
    coef: torch.Tensor  # [D, K] (K = 1 for binary)
    intercept: torch.Tensor  # [K]
    iterations: int
    evaluations: int
    converged: bool


class _Objective:
    """The data part of the objective (mean weighted loss, no penalty) and its gradient.

    ``theta`` (float64) is ``[W (K x D, row-major), b (K)]``. One call reads ``X`` once (CPU: block by
    block) and returns the loss and gradient in float64.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, task: str, sample_weight: torch.Tensor | None,
                 label_weight: torch.Tensor | None, block_rows: int | None = None, num_classes: int | None = None):
        self.X, self.task = X, task
        n, self.d = X.shape
        self.k = 1 if task == "binary" else (y.shape[1] if task == "multilabel" else max(int(y.max()) + 1, num_classes or 0))
        if block_rows is None:
            block_rows = max(64, _BLOCK_BYTES // max(1, self.d * X.element_size())) if X.device.type == "cpu" else n
        self.block = block_rows
        self.pool, self.ranges = None, []  # set by ``workers``
        # per-entry targets and weights are kept transposed, [K, N]: a block's logits are [K, rows], so the
        # softmax runs over the short leading axis (torch's log_softmax over a last axis of 5 is 10x slower)
        f64 = dict(dtype=torch.float64, device=X.device)
        if task == "multilabel":
            known = y != IGNORE
            target = torch.where(known, y, torch.zeros_like(y)).to(**f64)
            pos_w = label_weight.to(**f64) if label_weight is not None else torch.ones(self.k, **f64)
            # an entry weighs its label's positive weight when positive, 1 when negative, 0 when unknown,
            # over the label's (weighted) known count: each label's loss is a mean over its known rows
            entry = known.to(**f64) * torch.where(target > 0, pos_w, torch.ones_like(target))
            self.weight = (entry / entry.sum(0).clamp(min=1e-12)).T.contiguous()
            self.target = target.T.contiguous()
            return
        w = sample_weight.to(**f64) if sample_weight is not None else torch.ones(n, **f64)
        self.weight = (w / w.sum())[None, :]  # [1, N]
        if task == "binary":
            self.target = y.to(**f64)[None, :]
        else:  # one-hot times the row weight: the loss is -<Yw, log p>, the gradient w p - Yw
            self.target = torch.zeros(self.k, n, **f64).scatter_(0, y.long()[None, :], 1.0) * self.weight

    @contextmanager
    def workers(self, threads: int):
        """CPU: split the rows into ``threads`` contiguous ranges, each worked by one Python thread running
        single-threaded torch ops (they release the GIL). Measured: MKL's own threads on a ``[K, D] x [D, rows]``
        GEMM barely help, and one barrier per pass costs less than one per block."""
        n = self.X.shape[0]
        blocks = -(-n // self.block)
        threads = min(threads, blocks)
        if self.X.device.type != "cpu" or threads <= 1:
            yield self
            return
        cuts = [self.block * (blocks * i // threads) for i in range(threads)] + [n]
        self.ranges = list(zip(cuts[:-1], cuts[1:]))
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                self.pool = pool
                yield self
        finally:
            self.pool, self.ranges = None, []
            torch.set_num_threads(before)

    def size(self) -> int:
        return self.d * self.k + self.k

    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``W [K, D]`` and ``b [K]`` as views of ``theta``."""
        return theta[: self.d * self.k].view(self.k, self.d), theta[self.d * self.k:]

    def __call__(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        W64, b64 = self.unpack(theta)
        W, b = W64.to(self.X.dtype), b64.to(self.X.dtype)[:, None]
        if self.pool is None:
            parts = [self._rows(0, self.X.shape[0], W, b)]
        else:
            parts = list(self.pool.map(lambda r: self._rows(r[0], r[1], W, b), self.ranges))
        loss, gW, gb = (sum(p[i] for p in parts[1:]) + parts[0][i] for i in range(3))  # a fixed order: deterministic
        return float(loss), torch.cat([gW.reshape(-1), gb])

    def _rows(self, begin: int, end: int, W: torch.Tensor, b: torch.Tensor):
        """Loss and gradient of rows ``begin:end``, block by block: each block's two GEMMs read it from cache."""
        loss = torch.zeros((), dtype=torch.float64, device=self.X.device)
        gW = torch.zeros(self.k, self.d, dtype=torch.float64, device=self.X.device)
        gb = torch.zeros(self.k, dtype=torch.float64, device=self.X.device)
        part = torch.zeros(self.k, self.d, dtype=self.X.dtype, device=self.X.device)
        for i, start in enumerate(range(begin, end, self.block)):
            xb = self.X[start:min(start + self.block, end)]
            z = torch.addmm(b, W, xb.T).double()  # [K, rows]
            block_loss, g = self._loss_grad(z, slice(start, start + len(xb)))
            loss += block_loss
            gb += g.sum(1)
            part.addmm_(g.to(self.X.dtype), xb)
            if (i + 1) % _FLUSH_BLOCKS == 0:  # float32 partial sums of at most this many blocks
                gW += part
                part.zero_()
        gW += part
        return loss, gW, gb

    def _loss_grad(self, z: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted loss of a block and d(loss)/dz, in float64 (``z`` is ``[K, rows]``: cheap)."""
        w, t = self.weight[:, rows], self.target[:, rows]
        if self.task == "multiclass":
            logp = torch.log_softmax(z, dim=0)
            return -(t * logp).sum(), logp.exp_().mul_(w).sub_(t)  # t is one-hot x row weight
        loss = (w * (F.softplus(z) - t * z)).sum()  # BCE with logits
        return loss, torch.sigmoid(z).sub_(t).mul_(w)


class _Penalty:
    """``wd / 2 * ||W||^2`` on the weights of ``theta`` (not the intercept), and its gradient."""

    def __init__(self, objective: _Objective):
        self.n_weights = objective.d * objective.k

    def masked(self, v: torch.Tensor) -> torch.Tensor:
        out = v.clone()
        out[self.n_weights:] = 0
        return out

    def add(self, f: float, g: torch.Tensor, theta: torch.Tensor, wd: float) -> tuple[float, torch.Tensor]:
        w = theta[: self.n_weights]
        g = g.clone()
        g[: self.n_weights] += wd * w
        return f + 0.5 * wd * float(w @ w), g


class _History:
    """L-BFGS curvature pairs, kept as ``(s, y_data)`` (the data part of the gradient change), so the same
    pairs serve every weight decay: ``y = y_data + wd * P s`` exactly."""

    def __init__(self, penalty: _Penalty, size: int = 10):
        self.penalty, self.size = penalty, size
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y_data, P s)
        self.wd = 0.0
        self.ys: list[torch.Tensor] = []

    def at(self, wd: float) -> None:
        self.wd = wd
        self.ys = [y + wd * ps for _, y, ps in self.pairs]

    def add(self, s: torch.Tensor, y_data: torch.Tensor) -> None:
        ps = self.penalty.masked(s)
        y = y_data + self.wd * ps
        if float(s @ y) <= 1e-10 * float(y @ y):  # keep a pair only when it adds positive curvature
            return
        self.pairs.append((s, y_data, ps)), self.ys.append(y)
        if len(self.pairs) > self.size:
            self.pairs.pop(0), self.ys.pop(0)

    def clear(self) -> None:
        self.pairs.clear(), self.ys.clear()

    def first_direction(self, g: torch.Tensor) -> torch.Tensor:
        """A fit's first step: steepest descent, as scikit-learn's (scipy restarts L-BFGS for every fit), but
        scaled by the carried curvature instead of ``1/||g||``. Why not a quasi-Newton step with the carried
        pairs: below wd 1e-4 the gradient test leaves a flat valley of solutions, and that step lands in it
        farther from scikit-learn's point (measured: val AUC 2.3e-3 apart at wd 1e-4 on PneumoniaMNIST,
        against 1.5e-3), for 0-3 passes saved per path."""
        if not self.pairs:
            return self.direction(g)
        s, y = self.pairs[-1][0], self.ys[-1]
        return -g * (float(s @ y) / float(y @ y))

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """``-H g`` by the two-loop recursion; a short steepest-descent step when there is no history."""
        if not self.pairs:
            return -g * min(1.0, 1.0 / float(g.abs().sum()))
        q = g.clone()
        alphas = []
        for (s, _, _), y in zip(reversed(self.pairs), reversed(self.ys)):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q -= a * y
        s_last, y_last = self.pairs[-1][0], self.ys[-1]
        q *= float(s_last @ y_last) / float(y_last @ y_last)
        for ((s, _, _), y), a in zip(zip(self.pairs, self.ys), reversed(alphas)):
            q += (a - float(y @ q) / float(y @ s)) * s
        return -q


def _lbfgs(objective: _Objective, penalty: _Penalty, history: _History, theta: torch.Tensor,
           f_data: float, g_data: torch.Tensor, wd: float, tol: float, max_iter: int):
    """Minimise data part + penalty from ``theta`` (whose data part is ``f_data, g_data``): L-BFGS with a
    backtracking Armijo line search. Returns the final point, its data part, iterations, evaluations and
    whether the gradient test passed."""
    history.at(wd)
    f, g = penalty.add(f_data, g_data, theta, wd)
    evaluations, it = 0, 0
    while float(g.abs().max()) > tol and it < max_iter:
        d = history.direction(g) if it else history.first_direction(g)
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction (numerical trouble): restart from steepest descent
            history.clear()
            d = history.direction(g)
            slope = float(g @ d)
        step, halvings = 1.0, 0
        while True:
            new_theta = theta + step * d
            new_f_data, new_g_data = objective(new_theta)
            evaluations += 1
            new_f, new_g = penalty.add(new_f_data, new_g_data, new_theta, wd)
            if new_f <= f + 1e-4 * step * slope:
                break
            if halvings == _MAX_HALVINGS:  # no decrease the objective can resolve: as close as it gets
                return theta, f_data, g_data, it, evaluations, False
            step, halvings = step * 0.5, halvings + 1
        history.add(new_theta - theta, new_g_data - g_data)
        theta, f_data, g_data, f, g = new_theta, new_f_data, new_g_data, new_f, new_g
        it += 1
    return theta, f_data, g_data, it, evaluations, float(g.abs().max()) <= tol


def fit_path(X, y, task: str, weight_decays: Sequence[float], *, sample_weight=None, label_weight=None,
             tol: float = 1e-4, max_iter: int = 1000, dtype: torch.dtype = torch.float32,
             device: str | torch.device = "cpu", block_rows: int | None = None,
             threads: int | None = None, num_classes: int | None = None) -> list[PathFit]:
    """One fit per weight decay (returned in the order given), solved from the largest to the smallest.

    ``X``: ``[N, D]`` features (already normalised; a float32 tensor is used as it is); ``y``: ``[N]`` class
    indices, or ``[N, L]`` 0/1 with ``IGNORE`` for unknown entries (multilabel). ``sample_weight``
    (single-label) weights rows; ``label_weight`` (multilabel) is each label's positive weight. ``threads``
    (CPU): row ranges worked in parallel, torch's thread count by default. ``num_classes`` (multiclass): the
    dataset's class count, when a class has no train row (its logit is then driven down, never chosen).
    """
    Xt = torch.as_tensor(X, dtype=dtype, device=device).contiguous()
    yt = torch.as_tensor(np.asarray(y), device=device)
    sw = None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight), dtype=torch.float64, device=device)
    lw = None if label_weight is None else torch.as_tensor(np.asarray(label_weight), dtype=torch.float64, device=device)
    objective = _Objective(Xt, yt, task, sw, lw, block_rows, num_classes)
    with objective.workers(torch.get_num_threads() if threads is None else threads):
        return _path(objective, weight_decays, tol, max_iter)


def _path(objective: _Objective, weight_decays: Sequence[float], tol: float, max_iter: int) -> list[PathFit]:
    penalty = _Penalty(objective)
    history = _History(penalty)
    theta = torch.zeros(objective.size(), dtype=torch.float64, device=objective.X.device)
    f_data, g_data = objective(theta)
    evaluations = 1
    fits: dict[int, PathFit] = {}
    for i in sorted(range(len(weight_decays)), key=lambda j: -weight_decays[j]):
        wd = float(weight_decays[i])
        theta, f_data, g_data, it, evals, ok = _lbfgs(objective, penalty, history, theta, f_data, g_data, wd,
                                                      tol, max_iter)
        W, b = objective.unpack(theta)
        fits[i] = PathFit(wd, W.T.cpu().clone(), b.cpu().clone(), it, evals + evaluations, ok)
        evaluations = 0
    return [fits[i] for i in range(len(weight_decays))]


def predict_proba(fit: PathFit, X, task: str) -> np.ndarray:
    """Class probabilities ``[N, C]`` (binary: both columns) or per-label probabilities (multilabel)."""
    z = torch.as_tensor(np.asarray(X), dtype=torch.float64) @ fit.coef + fit.intercept
    if task == "binary":
        p = torch.sigmoid(z[:, 0])
        return torch.stack([1 - p, p], dim=1).numpy()
    return (torch.softmax(z, dim=1) if task == "multiclass" else torch.sigmoid(z)).numpy()
