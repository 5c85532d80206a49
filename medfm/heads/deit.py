"""The "appended DeiT" attention head of the first two studies, and a probe that trains it from a token cache.

``DeiTHead`` maps cached backbone tokens ``(B, N, in_dim)`` to logits: Linear(in_dim -> 768) +
LayerNorm replace DeiT-B's patch embedding; DeiT-B's CLS token and its position embedding
(resampled from 14 x 14 to the token grid) are added; then ``depth`` DeiT-B blocks, the final norm,
the CLS token and a linear classifier. The DeiT parts start from ImageNet DeiT-B
(``deit_base_patch16_224.fb_in1k``, timm keys) by default, as the studies' appended DeiT-B does, or
from random init when ``--deit-weights random`` says so (``medfm.heads.deit_weights`` finds the file
and says how to pass it when it is missing). ``medfm finetune --head deit`` trains the same module
(``for_finetune``).

``DeiTProbe`` is the scikit-learn-shaped wrapper: AdamW with a cosine schedule, bf16 autocast on
GPU, mini-batches streamed chunk by chunk from the on-disk token array (``TokenRows``), and the
epoch with the best validation metric kept.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medfm.errors import MedfmError
from medfm.heads.base import Head
from medfm.heads.deit_weights import DEIT_ID, HOW_TO, DeitInit, resolve_deit_weights
from medfm.probe.tokens import TokenRows, as_token_rows
from medfm.targets import class_weights, masked_loss

DEIT_DIM = 768
DEIT_GRID = 14  # DeiT-B/16 at 224 px: 14 x 14 patches (+ CLS) in its position embedding


class DeiTHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, depth: int = 12, num_tokens: int | None = None,
                 init: DeitInit = DeitInit("random")):
        super().__init__()
        import timm

        if not 1 <= depth <= 12:
            raise MedfmError(f"--head-depth {depth} is out of range", "DeiT-B has 12 blocks: use 1..12")
        deit = timm.create_model("deit_base_patch16_224", pretrained=False, depth=depth, num_classes=0)
        if init.kind != "random":
            load_deit_weights(deit, init.path)
        self.proj = nn.Sequential(nn.Linear(in_dim, DEIT_DIM), nn.LayerNorm(DEIT_DIM))
        self.cls_token = deit.cls_token
        self.pos_embed = deit.pos_embed  # [1, 1 + 14*14, 768]
        self.blocks = deit.blocks
        self.norm = deit.norm
        self.fc = nn.Linear(DEIT_DIM, num_classes)
        self.num_tokens = num_tokens
        self.depth = depth

    def _pos(self, n: int) -> torch.Tensor:
        """Position embedding for n tokens: 2-D bicubic resample for square grids, 1-D linear otherwise."""
        if n == DEIT_GRID * DEIT_GRID:
            return self.pos_embed
        side = math.isqrt(n)
        if side * side == n:
            from timm.layers import resample_abs_pos_embed

            return resample_abs_pos_embed(self.pos_embed, [side, side], num_prefix_tokens=1)
        grid = self.pos_embed[:, 1:].transpose(1, 2)  # [1, 768, 196]
        patches = nn.functional.interpolate(grid, size=n, mode="linear", align_corners=False).transpose(1, 2)
        return torch.cat([self.pos_embed[:, :1], patches], dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        pos = self._pos(n)
        x = self.proj(tokens) + pos[:, 1:]
        cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)
        x = self.blocks(torch.cat([cls, x], dim=1))
        return self.fc(self.norm(x)[:, 0])


def load_deit_weights(model: nn.Module, path: str | Path) -> None:
    """Load an ImageNet DeiT-B checkpoint (timm keys; a ``model``/``state_dict`` wrapper is unwrapped), strictly.

    Every key of the file must be a ``deit_base_patch16_224`` key with its shape (a distilled DeiT, a
    DeiT-S or an unrelated file is refused), and every key but the ImageNet classifier's must be there. Only the
    patch embedding (replaced by the head's projection), the ImageNet classifier and the blocks past
    ``--head-depth`` are not loaded.
    """
    import timm

    p = Path(path)
    if not p.is_file():
        raise MedfmError(f"DeiT-B weights {p} not found", HOW_TO)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MedfmError(f"cannot read DeiT-B weights {p}: {' '.join(str(exc).split())[:200]}",
                         "pass a .pth/.safetensors DeiT-B checkpoint") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise MedfmError(f"{p} holds no state dict", f"use timm's {DEIT_ID} weights")
    with torch.device("meta"):  # the full architecture's keys and shapes, nothing allocated
        full = timm.create_model("deit_base_patch16_224", pretrained=False).state_dict()
    unexpected = [k for k in state if k not in full]
    if unexpected:
        raise MedfmError(f"{p} is not a {DEIT_ID} checkpoint with timm keys (unexpected {', '.join(unexpected[:3])} ...)",
                         f"use timm's {DEIT_ID} weights")
    wanted = {k: v for k, v in model.state_dict().items() if not k.startswith(("patch_embed.", "head"))}
    missing = [k for k in full if k not in state and not k.startswith("head.")]  # the classifier may be dropped
    if missing:
        raise MedfmError(f"{p} is not a {DEIT_ID} checkpoint with timm keys (missing {', '.join(missing[:3])} ...)",
                         f"use timm's {DEIT_ID} weights")
    bad = [k for k in state if tuple(state[k].shape) != tuple(full[k].shape)]
    if bad:
        raise MedfmError(f"{p}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, DeiT-B needs {tuple(full[bad[0]].shape)}",
                         "use a DeiT-B (768-dim, patch 16, 224 px) checkpoint")
    result = model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    left = [k for k in result.missing_keys if not k.startswith(("patch_embed.", "head"))]
    assert not left and not result.unexpected_keys, (left, result.unexpected_keys)  # wanted came from the model


class DeiTProbe(Head):
    """Trains a ``DeiTHead`` on cached token rows (``TokenRows``); ``fit``/``predict_proba``/``predict``/``score``."""

    def __init__(self, task: str, metric: str, depth: int = 12, init: DeitInit = DeitInit("random"), epochs: int = 10,
                 batch_size: int = 64, lr: float = 1e-4, weight_decay: float = 1e-5, warmup_frac: float = 0.1,
                 grad_clip: float = 1.0, class_weight: bool = False, seed: int = 0, device="cpu"):
        self.task, self.metric, self.depth, self.init = task, metric, depth, init
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.warmup_frac, self.grad_clip, self.class_weight, self.seed = warmup_frac, grad_clip, class_weight, seed
        self.device = torch.device(device)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def fit(self, X, y, X_val, y_val, num_classes: int | None = None) -> DeiTProbe:
        rows, rows_val = as_token_rows(X), as_token_rows(X_val)
        y, y_val = np.asarray(y), np.asarray(y_val)
        self.num_classes_ = self._num_classes(y, y_val, num_classes)
        torch.manual_seed(self.seed)
        n_tok, dim = rows.token_shape
        self.model_ = DeiTHead(dim, self.num_classes_, self.depth, n_tok, self.init).to(self.device)
        opt = torch.optim.AdamW(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * math.ceil(len(rows) / self.batch_size)
        warm = max(1, int(self.warmup_frac * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
        weight = None
        if self.class_weight:
            weight = torch.as_tensor(class_weights(y, self.num_classes_, self.task), device=self.device)
        rng = np.random.Generator(np.random.PCG64(self.seed))
        best, self.history_ = (-math.inf, None, 0), []
        for epoch in range(self.epochs):
            start, total, seen = time.perf_counter(), 0.0, 0
            self.model_.train()
            for xb, pos in rows.batches(self.batch_size, rng=rng):
                xb = torch.as_tensor(xb, dtype=torch.float32, device=self.device)
                yb = torch.as_tensor(y[pos], device=self.device)
                with self._autocast():
                    logits = self.model_(xb)
                loss = masked_loss(logits, yb, self.task, weight)  # ignored entries: zero loss and gradient
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model_.parameters(), self.grad_clip)
                opt.step()
                sched.step()
                total, seen = total + loss.item() * len(pos), seen + len(pos)
            val = self._metric(y_val, self._predict_rows(rows_val))
            self.history_.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val": float(val),
                                  "seconds": round(time.perf_counter() - start, 2)})
            if np.isfinite(val) and val > best[0]:
                best = (val, copy.deepcopy(self.model_.state_dict()), epoch + 1)
        if best[1] is not None:
            self.model_.load_state_dict(best[1])
        self.best_params_ = {"lr": self.lr, "weight_decay": self.weight_decay, "depth": self.depth,
                             "best_epoch": best[2], "epochs": self.epochs,
                             "init": self.init.label, "deit_weights": self.init.identity()}
        return self

    def _predict_rows(self, rows: TokenRows) -> np.ndarray:
        self.model_.eval()
        out = np.zeros((len(rows), self.num_classes_), dtype=np.float32)
        with torch.no_grad(), self._autocast():
            for xb, pos in rows.batches(max(self.batch_size, 256), rng=None):
                logits = self.model_(torch.as_tensor(xb, dtype=torch.float32, device=self.device)).float()
                p = torch.sigmoid(logits) if self.task == "multilabel" else torch.softmax(logits, -1)
                out[pos] = p.cpu().numpy()
        return out

    def predict_proba(self, X) -> np.ndarray:
        return self._predict_rows(as_token_rows(X))


def for_probe(cfg, task: str, metric: str, device) -> DeiTProbe:
    return DeiTProbe(task=task, metric=metric, depth=cfg.head_depth, init=resolve_deit_weights(cfg.deit_weights), epochs=cfg.epochs,
                     batch_size=cfg.head_batch_size, lr=cfg.head_lr, class_weight=cfg.class_weight, seed=cfg.seed,
                     device=device)


def for_finetune(dim: int, num_classes: int, cfg, num_tokens: int) -> DeiTHead:
    return DeiTHead(dim, num_classes, depth=cfg.head_depth, num_tokens=num_tokens,
                    init=resolve_deit_weights(cfg.deit_weights))
