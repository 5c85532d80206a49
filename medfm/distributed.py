"""Process placement: which device this process runs on, and its place in a torchrun job.

``medfm extract`` and ``medfm finetune`` both run unchanged under ``torchrun``: with
``WORLD_SIZE`` > 1 they join torch's process group (gloo on CPU, nccl on CUDA, one GPU per local
rank) and use the collectives below; without torchrun ``Dist()`` is a world of one whose
collectives are no-ops, so the single-process path has no special case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medfm.errors import MedfmError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedfmError(f"--device {name} asked for, but torch sees no CUDA device", "use --device cpu or auto")
    return torch.device(name)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, obj):
        """Every rank's ``obj`` (a list, rank order) on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()


def setup(device_name: str) -> tuple[Dist, torch.device]:
    """Join torchrun's process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if torch.cuda.device_count() <= local:
            raise MedfmError(f"torchrun local rank {local} but only {torch.cuda.device_count()} CUDA devices",
                             "use --nproc-per-node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, started), device
