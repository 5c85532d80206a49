"""Heads: the one registry of every head, shared by ``medfm probe`` and ``medfm finetune``.

Each entry declares, without building anything, what the head reads (``pooled``: one feature
vector per image ``[B, D]``; ``tokens``: the patch tokens ``[B, T, D]``) and the stages it runs in
(``probe``: trained on a feature cache; ``finetune``: trained end to end on top of a backbone).
The sweep and the CLI read these declarations; only a run builds a head.

A head's module (``medfm.heads.<name>``) provides ``for_probe(cfg, task, metric, device)`` (an
estimator with scikit-learn's ``fit`` / ``predict_proba`` / ``predict`` / ``score``, see
``base.Head``) for the probe stage, and ``for_finetune(dim, num_classes, cfg, num_tokens)`` (an
``nn.Module`` mapping what it reads to logits) for the fine-tune stage. Every head takes its
targets, masks and losses from ``medfm.targets``.

This module imports no torch, so listing heads stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from medfm.errors import MedfmError
from medfm.registry import Registry

STAGES = ("probe", "finetune")
READS = ("pooled", "tokens")
LIST_COMMAND = "medfm heads"


@dataclass(frozen=True)
class HeadSpec:
    name: str
    reads: str  # "pooled" or "tokens"
    stages: tuple[str, ...]  # of STAGES
    summary: str  # one line for `medfm heads`
    module: str  # where for_probe / for_finetune live

    def __post_init__(self):
        if self.reads not in READS or not set(self.stages) <= set(STAGES):
            raise ValueError(f"head {self.name}: reads one of {READS}, runs in stages of {STAGES}")

    def require(self, stage: str) -> None:
        """Refuse a stage this head does not run in, naming the heads that do."""
        if stage not in self.stages:
            raise MedfmError(f"the {self.name} head has no {stage} stage (it runs in: {', '.join(self.stages)})",
                             f"{stage} heads: {', '.join(heads_for(stage))}")

    def build_probe(self, cfg, task: str, metric: str, device):
        """The unfitted probe estimator, configured from a ``ProbeConfig``."""
        self.require("probe")
        return importlib.import_module(self.module).for_probe(cfg, task, metric, device)

    def build_module(self, dim: int, num_classes: int, cfg, num_tokens: int):
        """The ``nn.Module`` fine-tuning trains on top of the backbone, configured from a ``FinetuneConfig``."""
        self.require("finetune")
        return importlib.import_module(self.module).for_finetune(dim, num_classes, cfg, num_tokens)


HEADS: Registry[HeadSpec] = Registry("head", LIST_COMMAND)


def _add(name: str, reads: str, stages: tuple[str, ...], summary: str) -> None:
    HEADS.add(name, HeadSpec(name, reads, stages, summary, f"medfm.heads.{name}"))


_add("linear", "pooled", ("probe", "finetune"),
     "linear classifier; probe: a grid of lr x weight decay trained at once, best on val")
_add("logreg", "pooled", ("probe",), "scikit-learn logistic regression over the weight-decay grid (the reference)")
_add("knn", "pooled", ("probe",), "cosine k-nearest neighbours with temperature-weighted votes, k chosen on val")
_add("deit", "tokens", ("probe", "finetune"), "the studies' appended DeiT-B attention head on patch tokens")
_add("mlp", "pooled", ("finetune",), "Linear -> ReLU -> Linear (--mlp-hidden, 256: study 3's head on DINOv2's ImageNet logits)")


def heads_for(stage: str) -> Registry[HeadSpec]:
    """The heads that run in ``stage``, as a registry (``in``, iteration in order, ``get`` with "did you mean")."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
    kind = {"probe": "probe head", "finetune": "fine-tune head"}[stage]
    view: Registry[HeadSpec] = Registry(kind, LIST_COMMAND)
    for name, spec in HEADS.items():
        if stage in spec.stages:
            view.add(name, spec)
    return view


def needs_tokens(names) -> bool:
    """Whether any of these heads reads patch tokens (so an extraction must store them)."""
    return any(HEADS.get(n).reads == "tokens" for n in names)


def heads_help(stage: str) -> str:
    """'linear, logreg, knn, deit (tokens)' — the names a stage accepts, for help texts."""
    return ", ".join(f"{n} (tokens)" if s.reads == "tokens" else n for n, s in heads_for(stage).items())


__all__ = ["HEADS", "HeadSpec", "STAGES", "heads_for", "heads_help", "needs_tokens"]
