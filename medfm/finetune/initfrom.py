"""``--init-from``: start a fine-tune from the weights of an earlier one (study 1's ``transfer_learning_params``).

Study 1 (``defaults/wrappers.py:L184-200``, ``utils/pretrained_loader.py:L20-30`` @02db977) loads a saved
checkpoint's ``state_dict`` into the new model's backbone with ``strict=True`` before training (only in
``DefaultWrapper.init_model``; the foundation-model wrappers override it and never load one);
``--init-from-parts backbone`` does that (the head starts fresh, so the class count may differ), ``all``
(the default) also takes the head, so the same state gives the same predictions.

Strict means: every tensor of the file lands in the model (no unknown name, no other shape), and a full
``model.pt`` must supply every tensor of the model. A ``best.pt`` holds only what its run trained, plus
buffers; the rest (that run's frozen parameters) comes from ``--weights``, as it did in that run. The
file's path and sha256 are part of the run's identity and key, so a different file is a different run.
"""

from __future__ import annotations

import hashlib
import zipfile
from functools import lru_cache
from pathlib import Path

import torch

from medfm.errors import MedfmError

FIX = "pass the model.pt or best.pt of an earlier `medfm finetune` run"


def init_identity(path: str) -> dict:
    """``{"path", "sha256"}`` of an ``--init-from`` file (refused at once when it is not a file)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MedfmError(f"--init-from {path} not found", FIX)
    if not zipfile.is_zipfile(p):  # torch.save's format: refused here, before any model is built (sweeps check keys first)
        raise MedfmError(f"--init-from {path} is not a readable medfm checkpoint (not a torch.save file)", FIX)
    st = p.stat()
    return {"path": str(p.resolve()), "sha256": _sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)}


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a model.pt (full: True) or a best.pt / last.pt checkpoint (``{"model": ...}``; full: False)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise MedfmError(f"--init-from {path} is not a readable medfm checkpoint ({why})", FIX) from None
    full = True
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj, full = obj["model"], False
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise MedfmError(f"--init-from {path} holds no state_dict of named tensors", FIX)
    return obj, full


def load_init(model: torch.nn.Module, path: str, parts: str = "all") -> dict:
    """Load ``path`` into ``model`` (a ``FinetuneModel``) strictly; returns what was loaded, for the record."""
    p = Path(path).expanduser()
    state, full = _read(p)
    target = model.state_dict()
    if parts == "backbone":
        state = {k: v for k, v in state.items() if k.startswith("net.")}
        target = {k: v for k, v in target.items() if k.startswith("net.")}
        if not state:
            raise MedfmError(f"--init-from {path} holds no backbone tensors (net.*)", FIX)
    unknown = [k for k in state if k not in target]
    if unknown:
        raise MedfmError(f"--init-from {path} does not fit this model: it has {len(unknown)} tensors this model lacks "
                         f"({', '.join(unknown[:3])})", "use the same --backbone and --head as the saved run")
    for k, v in state.items():
        if tuple(v.shape) != tuple(target[k].shape):
            fix = ("pass --init-from-parts backbone to start a new head" if k.startswith("head.")
                   else "use the same --backbone, --img-size and --head as the saved run")
            raise MedfmError(f"--init-from {path}: {k} has shape {tuple(v.shape)}, this model needs {tuple(target[k].shape)}",
                             fix)
    missing = [k for k in target if k not in state]
    if missing and full:
        raise MedfmError(f"--init-from {path} lacks {len(missing)} tensors of this model ({', '.join(missing[:3])})",
                         "use the same --backbone and --head as the saved run")
    model.load_state_dict(state, strict=False)
    return {"parts": parts, "tensors_loaded": len(state), "tensors_from_weights": len(missing)}
