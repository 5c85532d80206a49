"""One training epoch and one evaluation pass; the schedule.

The loss is ``medfm.targets.masked_loss``, the one every probe head uses: ``mean_i(w[y_i] * CE_i)``
(class weights of mean 1 over the training set; all 1 without ``--class-weight``), or for
multilabel tasks BCE summed over the known entries / (B * C), ignored entries contributing zero.
Being a plain per-sample mean, DDP's gradient average over equal-sized rank shares equals the
single-process gradient of the global batch.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

from medfm.errors import MedfmError
from medfm.distributed import Dist
from medfm.finetune.distributed import clip_grad_norm
from medfm.targets import masked_loss


def warmup_cosine(total_steps: int, warmup_steps: int):
    """lr multiplier per optimiser step: linear warm-up to 1, then cosine to 0."""

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _check(errors: list[str]) -> None:
    if errors:
        more = f" (and {len(errors) - 1} more in this batch)" if len(errors) > 1 else ""
        raise MedfmError(errors[0] + more, "fix or remove that file, then rerun with --resume")


def train_epoch(model, loader, labels: torch.Tensor, opt, sched, *, task, weight, accum, clip, device, amp,
                d: Dist, on_batch=None) -> float:
    """One pass over this rank's share; returns the mean training loss over all ranks."""
    model.train()
    n_batches = len(loader)
    total, count = 0.0, 0
    opt.zero_grad(set_to_none=True)
    params = [p for g in opt.param_groups for p in g["params"]]
    for k, (images, idx, errors) in enumerate(loader):
        _check(errors)
        group_start = (k // accum) * accum
        group_len = min(accum, n_batches - group_start)
        step_now = k + 1 == group_start + group_len
        x = images.to(device, non_blocking=True)
        y = labels[idx].to(device, non_blocking=True)
        sync = nullcontext() if step_now or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, amp):
                logits = model(x)
            loss = masked_loss(logits, y, task, weight)
            (loss / group_len).backward()
        if step_now:
            if clip:
                clip_grad_norm(model, params, clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        if on_batch:
            on_batch(total / count)
    sums = d.gather((total, count))
    return sum(s for s, _ in sums) / max(1, sum(c for _, c in sums))


@torch.no_grad()
def predict(model, loader, n: int, task: str, device, amp, d: Dist) -> np.ndarray:
    """Probabilities for all ``n`` samples of a split, gathered from every rank (padding dropped)."""
    model.eval()
    idx_all, probs_all = [], []
    for images, idx, errors in loader:
        _check(errors)
        with autocast(device, amp):
            logits = model(images.to(device, non_blocking=True)).float()
        p = torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=-1)
        idx_all += idx
        probs_all.append(p.cpu().numpy())
    mine = (idx_all, np.concatenate(probs_all) if probs_all else None)
    out = None
    for idx, probs in d.gather(mine):
        if probs is None:
            continue
        if out is None:
            out = np.zeros((n, probs.shape[1]), dtype=np.float64)
        out[idx] = probs
    return out
