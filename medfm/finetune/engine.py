"""One training epoch and one evaluation pass; the schedule.

The loss is ``medfm.targets.masked_loss``, the one every probe head uses: ``mean_i(w[y_i] * CE_i)``
(class weights of mean 1 over the training set; all 1 without ``--class-weight``), or for
multilabel tasks BCE summed over the known entries / (B * C), ignored entries contributing zero.
Being a plain per-sample mean, DDP's gradient average over equal-sized rank shares equals the
single-process gradient of the global batch.
"""

from __future__ import annotations

import math
import warnings
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


def lr_at(schedule: str, step: int, peak: float, start: float, warmup: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) for a group whose peak rate is ``peak``.

    Both schedules warm up linearly from ``start``: step s uses ``start + (peak - start) * (s + 1) / warmup``.

    - ``cosine`` (medfm's): after ``warmup`` steps, a cosine from ``peak`` to 0 at ``total_steps``.
    - ``constant`` (study 1's ``LinearWarmup``, ``utils/_utils.py:L116-164`` @02db977, stepped once per
      iteration by ``MixedLRScheduler.step``, ``utils/_utils.py:L303``): the scheduler's constructor already
      takes one step, and ``get_lr`` keeps adding ``(peak - start) / warmup`` while its counter is
      ``<= warmup``, so step s uses ``start + (peak - start) * min(s + 1, warmup + 1) / warmup``: the rate
      reaches ``peak`` at step ``warmup - 1`` and holds ``peak + (peak - start) / warmup`` from step
      ``warmup`` on (the code's off-by-one, kept). No cap on ``warmup``: a warm-up longer than the run
      never finishes, as in the code. ``warmup = 0`` holds ``peak`` from the first step. The code has no
      such case: with neither warm-up set (``update_warmup``, ``classification.py:L103-112``, leaves both 0
      for every dataset but APTOS/DDSM/ISIC/CheXpert) it sets ``warmup_iters = 1``, i.e. ``peak`` at step 0
      and ``2 * peak - start`` after it; that is ``warmup = 1`` here.
    """
    if schedule == "constant":
        if not warmup:
            return peak
        return start + (peak - start) * min(step + 1, warmup + 1) / warmup
    if warmup and step < warmup:
        return start + (peak - start) * (step + 1) / warmup
    return peak * warmup_cosine(total_steps, warmup)(step)


def lr_lambdas(schedule: str, peaks: list[float], start: float, warmup: int, total_steps: int) -> list:
    """``LambdaLR`` multipliers, one per param group (``lr_at`` / the group's peak; the default cosine from 0
    is today's multiplier itself, so runs made before ``--schedule`` existed compute the same rates bit for bit)."""
    if schedule not in ("cosine", "constant"):
        raise MedfmError(f"unknown schedule {schedule!r}", "use cosine or constant")
    if schedule == "cosine" and start == 0:
        return [warmup_cosine(total_steps, warmup) for _ in peaks]
    return [lambda s, p=p: lr_at(schedule, s, p, start, warmup, total_steps) / p for p in peaks]


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: bool, dtype: str = "bf16"):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=AMP_DTYPES[dtype])
    return nullcontext()


def loss_scaler(device: torch.device, amp: bool, dtype: str, fsdp: bool):
    """fp16 on CUDA needs a dynamic loss scale (small gradients underflow in fp16; a step whose gradients
    overflow is skipped and the scale halved); bf16 has fp32's range and none. None = no scaling."""
    if not (device.type == "cuda" and amp and dtype == "fp16"):
        return None
    if fsdp:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler()
    return torch.amp.GradScaler("cuda")


def _check(errors: list[str]) -> None:
    if errors:
        more = f" (and {len(errors) - 1} more in this batch)" if len(errors) > 1 else ""
        raise MedfmError(errors[0] + more, "fix or remove that file, then rerun with --resume")


def train_epoch(model, loader, labels: torch.Tensor, opt, sched, *, task, weight, accum, clip, device, amp,
                d: Dist, on_batch=None, train_mode: bool = True, amp_dtype: str = "bf16", scaler=None) -> float:
    """One pass over this rank's share; returns the mean training loss over all ranks. ``train_mode=False``
    trains in eval mode (study 3 after its first validation: BatchNorm statistics fixed, dropout off).
    ``scaler`` (fp16): the loss is scaled before backward and the gradients unscaled before clipping, so
    the clip threshold applies to the true gradient norm (study 1's ``defaults/trainer.py:L108-123``)."""
    model.train(train_mode)
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
            with autocast(device, amp, amp_dtype):
                logits = model(x)
            loss = masked_loss(logits, y, task, weight)
            part = loss / group_len
            (part if scaler is None else scaler.scale(part)).backward()
        if step_now:
            if clip:
                if scaler is not None:
                    scaler.unscale_(opt)
                clip_grad_norm(model, params, clip)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)  # skipped when a gradient overflowed; the schedule still advances, as the code's
                scaler.update()
            with warnings.catch_warnings():  # torch warns when a skipped fp16 step precedes the schedule's
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                sched.step()
            opt.zero_grad(set_to_none=True)
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        if on_batch:
            on_batch(total / count)
    sums = d.gather((total, count))
    return sum(s for s, _ in sums) / max(1, sum(c for _, c in sums))


@torch.no_grad()
def predict(model, loader, n: int, task: str, device, amp, d: Dist, amp_dtype: str = "bf16") -> np.ndarray:
    """Probabilities for all ``n`` samples of a split, gathered from every rank (padding dropped)."""
    model.eval()
    idx_all, probs_all = [], []
    for images, idx, errors in loader:
        _check(errors)
        with autocast(device, amp, amp_dtype):
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
