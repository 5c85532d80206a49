"""Weighted k-nearest-neighbour probe (DINO's kNN evaluation): cosine similarity, temperature weights.

Features are L2-normalised; a neighbour votes for its class with weight ``exp(cos / T)``. The
whole ``ks`` sweep is scored from one top-k search (the largest k), and the k with the best
validation metric is kept. Multilabel tasks get per-label weighted votes (probabilities): a
neighbour whose label is not known (``medfm.targets``) casts no vote on that label, and a label
none of the k neighbours knows falls back to its known prevalence in train.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medfm.heads.base import Head
from medfm.targets import known_mask


class KNNProbe(Head):
    grid_names = ("k",)  # what each entry of ``grid_`` holds

    def __init__(self, task: str, metric: str, ks: Sequence[int] = (10, 20, 50, 100, 200), temperature: float = 0.07,
                 chunk: int = 1024, device: str | torch.device = "cpu"):
        self.task, self.metric = task, metric
        self.ks, self.temperature, self.chunk = sorted(set(int(k) for k in ks)), temperature, chunk
        self.device = torch.device(device)

    def _norm(self, X) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device)
        return torch.nn.functional.normalize(X, dim=1)

    def fit(self, X, y, X_val, y_val, num_classes: int | None = None) -> KNNProbe:
        y = np.asarray(y)
        self.num_classes_ = self._num_classes(y, y_val, num_classes)
        self.train_ = self._norm(X)
        if y.ndim == 2:  # a vote for each known positive; an ignored entry is neither a vote nor a voter
            positive, known = (y == 1).astype(np.float32), known_mask(y).astype(np.float32)
        else:
            positive = np.eye(self.num_classes_, dtype=np.float32)[y]
            known = np.ones_like(positive)
        self.targets_ = torch.as_tensor(positive, device=self.device)
        self.known_ = torch.as_tensor(known, device=self.device)  # who may vote on each label
        self.prior_ = torch.as_tensor(positive.sum(0) / np.maximum(known.sum(0), 1), device=self.device)
        ks = [k for k in self.ks if k <= len(y)] or [len(y)]
        probs = self._proba_for_ks(X_val, ks)
        self.val_scores_ = np.array([self._metric(np.asarray(y_val), p) for p in probs])
        best = self._best(self.val_scores_)
        self.k_ = ks[best]
        self.grid_ = ks
        self.best_params_ = {"k": self.k_, "temperature": self.temperature}
        return self

    def _proba_for_ks(self, X, ks: list[int]) -> list[np.ndarray]:
        Q = self._norm(X)
        kmax = max(ks)
        out = [[] for _ in ks]
        with torch.no_grad():
            for lo in range(0, len(Q), self.chunk):
                sim, idx = (Q[lo : lo + self.chunk] @ self.train_.T).topk(kmax, dim=1)  # sorted, best first
                w = torch.exp(sim / self.temperature)
                votes = w.unsqueeze(-1) * self.targets_[idx]  # [q, kmax, C]
                voters = w.unsqueeze(-1) * self.known_[idx]
                for j, k in enumerate(ks):
                    s = votes[:, :k].sum(1)
                    if self.task == "multilabel":
                        weight = voters[:, :k].sum(1)
                        s = torch.where(weight > 0, s / weight.clamp_min(1e-30), self.prior_.expand_as(s))
                    else:
                        s = s / s.sum(1, keepdim=True).clamp_min(1e-30)
                    out[j].append(s.cpu().numpy())
        return [np.concatenate(o) if o else np.zeros((0, self.num_classes_), np.float32) for o in out]

    def predict_proba(self, X) -> np.ndarray:
        return self._proba_for_ks(X, [self.k_])[0]


def for_probe(cfg, task: str, metric: str, device) -> KNNProbe:
    return KNNProbe(task=task, metric=metric, ks=cfg.ks, temperature=cfg.temperature, device=device)
