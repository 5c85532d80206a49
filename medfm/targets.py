"""Training targets: the label budget, the known-label mask, class weights and the masked losses.

Every head (linear, logreg, kNN, DeiT) and fine-tuning take their targets from here, so one
policy holds everywhere:

- **Unknown labels.** A multilabel entry equal to ``IGNORE`` (255; CheXpert's uncertain labels
  under ``uncertain=ignore``) is *not known*: it contributes exactly zero to every loss, gradient,
  kNN vote and class weight, and the metrics leave it out of its column.
- **Label budget.** ``label_budget(labels, fraction, seed)`` is the one function that picks the
  training rows for ``--fraction``, for ``medfm probe`` and ``medfm finetune`` alike, so the same
  (dataset, fraction, seed) trains both on the same rows (same ``train_rows_sha256``).
- **Losses** are per-sample means (the mean over all entries of the batch, ignored ones counting
  zero), so gradient accumulation and DDP rank shares give exactly the big batch's gradient.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medfm.cache.fingerprint import fingerprint
from medfm.data.splits import stratified_partition
from medfm.metrics import IGNORE

__all__ = ["IGNORE", "class_weights", "known_mask", "label_budget", "loss_grad", "masked_loss", "rows_sha256"]

TOP_UP_SALT = 1_000_003  # the single-label top-up draws from its own stream, so the stratified draw stays as it was


# -- the label budget --------------------------------------------------------------------------

def label_budget(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the training rows kept under a label budget of ``fraction``.

    - ``fraction >= 1``: every row.
    - single-label: a stratified ``fraction`` of each class (largest-remainder rounding), then one
      random row of each class the draw left out (a class with a single sample, a tiny budget), so
      every class present in train keeps >= 1 row.
    - multilabel: ``max(1, round(fraction * n))`` random rows, then for each label with no known
      positive among them one random known positive, and likewise one known negative, so every
      label that train can teach is taught. Ignored entries count as neither.

    Draws use numpy's PCG64 (stable across numpy versions): the same (labels, fraction, seed) gives
    the same rows on every machine; different seeds give different rows.
    """
    y = np.asarray(labels)
    n = len(y)
    if fraction >= 1.0:
        return np.arange(n)
    if y.ndim == 2:
        rng = np.random.Generator(np.random.PCG64(seed))
        keep = set(rng.permutation(n)[: max(1, round(fraction * n))].tolist())
        for c in range(y.shape[1]):
            for value in (1, 0):
                _top_up(keep, np.flatnonzero(y[:, c] == value), rng)
        return np.array(sorted(keep), dtype=np.int64)
    keep = set(stratified_partition(y, {"keep": fraction, "rest": 1.0 - fraction}, seed)["keep"].tolist())
    rng = np.random.Generator(np.random.PCG64(seed + TOP_UP_SALT))
    for cls in np.unique(y):
        _top_up(keep, np.flatnonzero(y == cls), rng)
    return np.array(sorted(keep), dtype=np.int64)


def _top_up(keep: set, members: np.ndarray, rng: np.random.Generator) -> None:
    """Add one random member when none is kept yet (and there is one to add)."""
    if len(members) and not keep.intersection(members.tolist()):
        keep.add(int(members[rng.integers(len(members))]))


def rows_sha256(rows: np.ndarray) -> str:
    """The digest of the training rows a run used (``train_rows_sha256`` in every record)."""
    return fingerprint({"rows": np.asarray(rows).tolist()})


# -- known labels and class weights --------------------------------------------------------------

def known_mask(labels):
    """True where a target is known: multilabel entries other than ``IGNORE``; every single-label row.

    Works on numpy arrays and torch tensors alike (returns the same kind).
    """
    if labels.ndim == 1:
        return labels == labels  # all True, same kind and device
    return labels != IGNORE


def class_weights(labels: np.ndarray, num_classes: int, task: str) -> np.ndarray:
    """Loss weights from the training labels, counting known labels only.

    multilabel: a positive weight per label = known negatives / known positives (BCE ``pos_weight``);
    single-label: ``n / (C * count_c)`` per class (scikit-learn's "balanced"; mean 1 over the rows).
    """
    y = np.asarray(labels)
    if task == "multilabel":
        return ((y == 0).sum(0) / np.maximum((y == 1).sum(0), 1)).astype(np.float32)
    counts = np.bincount(y, minlength=num_classes)
    return (len(y) / (num_classes * np.maximum(counts, 1))).astype(np.float32)


# -- the masked losses -----------------------------------------------------------------------------

def masked_loss(logits: torch.Tensor, y: torch.Tensor, task: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of a batch: logits ``[B, C]``, targets ``[B]`` (class) or ``[B, C]`` (multilabel).

    multilabel: BCE with ``pos_weight`` = ``weight``, summed over the known entries and divided by
    ``B * C`` (ignored entries add exactly 0 to the loss and its gradient); single-label:
    ``mean_i(w[y_i] * CE_i)`` (``w`` = 1 without weights).
    """
    logits = logits.float()
    if task == "multilabel":
        known = known_mask(y)
        t = torch.where(known, y.float(), torch.zeros((), device=y.device))
        per = F.binary_cross_entropy_with_logits(logits, t, pos_weight=weight, reduction="none")
        return torch.where(known, per, torch.zeros((), device=per.device)).sum() / per.numel()
    y = y.long()
    per = F.cross_entropy(logits, y, reduction="none")
    return (per * weight[y]).mean() if weight is not None else per.mean()


def loss_grad(logits: torch.Tensor, y: torch.Tensor, task: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Closed-form gradient of ``masked_loss`` w.r.t. the logits, for many heads at once.

    ``logits`` is ``[B, ..., C]`` (e.g. ``[B, G, C]``: G heads of a grid, each with its own loss);
    the result has the same shape. Used where autograd would cost more than the maths (the linear
    grid); ``test_targets`` checks it against autograd of ``masked_loss``.
    """
    bsz, c = logits.shape[0], logits.shape[-1]
    lead = (bsz,) + (1,) * (logits.ndim - 2)
    if task == "multilabel":
        known = known_mask(y).to(logits.dtype)
        t = (torch.where(known > 0, y.to(logits.dtype), torch.zeros((), dtype=logits.dtype, device=y.device))).view(*lead, c)
        pw = weight if weight is not None else 1.0
        grad = torch.sigmoid(logits) * (pw * t + 1 - t) - pw * t
        return grad * known.view(*lead, c) / (bsz * c)
    y = y.long()
    grad = torch.softmax(logits, dim=-1) - F.one_hot(y, c).to(logits.dtype).view(*lead, c)
    w = weight[y] if weight is not None else torch.ones(bsz, dtype=logits.dtype, device=logits.device)
    return grad * (w / bsz).view(*lead, 1)
