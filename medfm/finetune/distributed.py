"""torchrun / torch.distributed plumbing: the library's DDP (or FSDP), not a home-made engine.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) medfm joins the process group (gloo on CPU, nccl on
CUDA), each process trains on its ``DistributedSampler`` share, evaluation outputs are gathered
from every rank, and only rank 0 writes checkpoints, results and the store row.
"""

from __future__ import annotations

import torch

from medfm.distributed import Dist
from medfm.errors import MedfmError


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, strategy: str) -> torch.nn.Module:
    """DDP over the trainable parameters, or FSDP (sharded parameters, for models too big per GPU).

    FSDP runs with ``use_orig_params=True`` so frozen and trainable parameters can share a unit.
    FSDP needs CUDA; it has not been run in this project's tests (CPU-only CI).
    """
    if not d.active:
        return model
    if not any(p.requires_grad for p in model.parameters()):
        raise MedfmError("nothing to train", "check --unfreeze and --head")
    if strategy == "fsdp":
        if device.type != "cuda":
            raise MedfmError("distributed: fsdp needs CUDA GPUs (PyTorch's FSDP has no CPU mode)",
                             "use distributed: ddp (the default) on CPU")
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP(model, use_orig_params=True, device_id=device)
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def _fsdp(wrapped):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP if isinstance(wrapped, FSDP) else None


def _full_state_ctx(FSDP, wrapped, rank0_only: bool):
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

    return FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT,
                                FullStateDictConfig(offload_to_cpu=True, rank0_only=rank0_only),
                                FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=rank0_only))


def model_state(wrapped, model) -> dict:
    """The unsharded ``state_dict`` (under FSDP a collective: every rank calls it, rank 0 gets it)."""
    FSDP = _fsdp(wrapped)
    if FSDP is None:
        return model.state_dict()
    with _full_state_ctx(FSDP, wrapped, rank0_only=True):
        return wrapped.state_dict()


def load_model_state(wrapped, model, state: dict) -> None:
    """Load a (partial) unsharded state into the model, sharded or not; every rank calls it."""
    FSDP = _fsdp(wrapped)
    if FSDP is None:
        result = model.load_state_dict(state, strict=False)
    else:
        with _full_state_ctx(FSDP, wrapped, rank0_only=False):
            result = wrapped.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"checkpoint has unknown keys: {result.unexpected_keys[:5]}")


def optimizer_state(wrapped, opt) -> dict:
    FSDP = _fsdp(wrapped)
    if FSDP is None:
        return opt.state_dict()
    with _full_state_ctx(FSDP, wrapped, rank0_only=True):
        return FSDP.optim_state_dict(wrapped, opt)


def load_optimizer_state(wrapped, opt, state: dict) -> None:
    FSDP = _fsdp(wrapped)
    if FSDP is not None:
        with _full_state_ctx(FSDP, wrapped, rank0_only=False):
            state = FSDP.optim_state_dict_to_load(wrapped, opt, state)
    opt.load_state_dict(state)


def clip_grad_norm(wrapped, params, max_norm: float) -> None:
    """Global grad-norm clipping; FSDP's own method sees every shard's gradients."""
    if _fsdp(wrapped) is not None:
        wrapped.clip_grad_norm_(max_norm)
    else:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
