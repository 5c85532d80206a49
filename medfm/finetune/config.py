"""``FinetuneConfig``: every ``medfm finetune`` option is a key (config files use a ``finetune:`` section)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from medfm.config import _BackboneDatasetConfig


class FinetuneConfig(_BackboneDatasetConfig):  # feature: the linear head's input, as on the probe path
    SECTION: ClassVar[str] = "finetune"
    unfreeze: int | Literal["all"] = 0  # last N blocks train; 0 = frozen backbone; -1 or 'all' = full fine-tune
    head: Literal["linear", "deit"] = "linear"
    head_depth: int = Field(12, ge=1)  # DeiT-head blocks (study 1 uses all 12)
    deit_weights: str | None = None  # DeiT-B checkpoint for the DeiT head [random init]
    metric: str | None = None  # early-stopping / best-checkpoint metric [the dataset's headline]
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)  # global batch per step (split over torchrun processes)
    grad_accum: int = Field(1, ge=1)  # steps accumulated per optimiser update
    lr: float = Field(1e-4, gt=0)  # peak learning rate of the last unfrozen block (study 1: 1e-4)
    head_lr: float | None = Field(None, gt=0)  # head learning rate [lr]
    weight_decay: float = Field(1e-5, ge=0)  # AdamW decoupled decay (study 1: 1e-5); none on norms/biases/tokens
    layer_decay: float = Field(1.0, gt=0, le=1)  # block i of L gets lr * layer_decay**(L - 1 - i)
    warmup_steps: int = Field(1000, ge=0)  # linear warm-up (optimiser steps; capped at a tenth of the run)
    grad_clip: float | None = Field(1.0, gt=0)  # max global grad norm; None = off
    amp: bool = True  # bf16 autocast on CUDA (CPU always trains in fp32)
    grad_checkpointing: bool = False
    augment: str = "auto"  # augmentation policy: 'auto' (by dataset modality), 'none', or a policy name
    colour_jitter: float | None = Field(None, ge=0)  # override the policy's jitter (grey modalities: 0 unless set)
    class_weight: bool = False  # inverse-frequency class weights in the loss
    balanced_sampling: bool = False  # draw training samples with equal class probability instead
    keep: Literal["best", "last"] = "best"  # weights tested: the best epoch on val, or the last epoch
    early_stop_patience: int = Field(0, ge=0)  # epochs without val improvement before stopping; 0 = off
    fraction: float = Field(1.0, gt=0, le=1)  # label budget: stratified share of train (>= 1 per class)
    seed: int = 0  # training seed (label budget, init of the head, order, augmentation)
    device: str = "auto"
    num_workers: int | None = Field(None, ge=0)
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: DDP, or FSDP for models too big per GPU
    deterministic: bool = False  # deterministic kernels (resume = uninterrupted run, bit for bit on CPU)
    out: str | None = None
    resume: bool = True  # continue from the run folder's last checkpoint when there is one
    overwrite: bool = False
    save_model: bool = True  # write the best model's full state_dict to <out>/model.pt
    results: str | None = None  # results store (SQLite) to append to [$MEDFM_RUNS/results.sqlite]

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze_range(cls, v):
        if isinstance(v, int) and v < -1:
            raise ValueError("must be >= 0, or -1 / 'all' for a full fine-tune")
        return v

    def blocks_to_unfreeze(self, total: int) -> int:
        """How many of ``total`` blocks train."""
        if self.unfreeze == "all" or self.unfreeze == -1:
            return total
        return min(int(self.unfreeze), total)
