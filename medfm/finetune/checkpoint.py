"""Per-epoch checkpoints, written atomically (temp file + ``os.replace``): a kill never leaves half a file.

A checkpoint holds what continuing needs and nothing the weights file already has: the trainable
parameters and all buffers (frozen parameters are rebuilt from the weights), the optimiser and
scheduler, every RNG state (torch, CUDA, numpy, python, the data loader's generator), the epoch,
the best validation score with its epoch, and the per-epoch history.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"


def trainable_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys a checkpoint keeps: trainable parameters + buffers (e.g. BatchNorm statistics)."""
    return {n for n, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}


def trainable_state(state: dict[str, torch.Tensor], keys: set[str]) -> dict[str, torch.Tensor]:
    """Detached CPU copies of ``keys`` from a full state_dict."""
    return {k: v.detach().cpu().clone() for k, v in state.items() if k in keys}


def rng_state(loader_gen: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "loader": loader_gen.get_state(),
    }


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    loader_gen.set_state(state["loader"])


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
