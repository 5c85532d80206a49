"""The model being fine-tuned: a backbone whose last N blocks train, plus a head.

"Unfreeze the last N" goes through ``Backbone.blocks()`` so it means the same for ViT blocks,
CNN stages, Hiera stages or CLIP towers. What trains when N >= 1: every parameter of those N
blocks (their norm layers included) **and** the backbone's parameters registered after its last
block — the final norm of a ViT (DINOv2's CLS feature is taken after it), so the head never sees a
frozen normalisation of trained blocks. With N = 0 the whole backbone is frozen (the probe's
setting). Frozen modules stay in eval mode (dropout off, BatchNorm statistics fixed) and have
``requires_grad=False``, so their parameters and buffers are bit-identical after training.
"""

from __future__ import annotations

import torch
from torch import nn

from medfm.backbones import Backbone
from medfm.errors import MedfmError

NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "mask_token", "dist_token")


class FinetuneModel(nn.Module):
    """Backbone + head (built by the head registry, ``medfm.heads``); ``head_inputs`` is what the head
    reads ('pooled' or 'tokens'). ``train()`` keeps the frozen parts in eval mode."""

    def __init__(self, backbone: Backbone, head: nn.Module, head_inputs: str, unfreeze: int, backbone_eval: bool = False):
        super().__init__()
        self.net = backbone.net  # registered, so state_dict / DDP / FSDP see it
        self.head = head
        self._backbone = backbone  # plain attribute: feature/tokens logic, not a submodule
        self.head_inputs = head_inputs
        self.unfreeze = unfreeze
        self.backbone_eval = backbone_eval
        self.frozen_modules, self.trainable_names = freeze_all_but_last(backbone, unfreeze)
        self.layer_of = layer_ids(backbone)  # parameter name in net -> layer id for lr decay
        self.num_layers = len(backbone.blocks())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, tokens = self._backbone.embed(x, with_tokens=self.head_inputs == "tokens")
        return self.head(tokens if self.head_inputs == "tokens" else pooled)

    def train(self, mode: bool = True) -> FinetuneModel:
        """Frozen modules stay in eval mode, as study 1's forwards re-freeze its frozen backbones on every
        call (``Classifier.forward``: ``self.backbone.eval()``, ``defaults/models.py:L292-296``; the
        ``Ymodel_*`` forwards: ``freeze_foundation``, ``defaults/models.py:L549-960`` @02db977). With
        ``backbone_eval`` the trained blocks run in eval mode too: study 1's ``Classifier.forward`` puts the
        whole backbone in eval whenever ``freeze_backbone`` is set, partially unfrozen blocks included."""
        super().train(mode)
        for m in self.frozen_modules:
            m.eval()
        if self.backbone_eval:
            self.net.eval()
        return self


def freeze_all_but_last(backbone: Backbone, n: int) -> tuple[list[nn.Module], list[str]]:
    """Freeze the backbone except its last ``n`` blocks (+ what follows them); return frozen modules.

    The returned modules are the maximal frozen subtrees, which ``FinetuneModel.train`` puts back
    into eval mode. With ``--drop-cutoff`` the blocks counted are those that run, and the dropped
    blocks after them stay frozen (they never run, so they would get no gradient).
    """
    frozen, names = _freeze_all_but_last(backbone, n)
    dropped = backbone.dropped_blocks()
    if not dropped:
        return frozen, names
    for b in dropped:
        b.requires_grad_(False)
    return frozen + dropped, [nm for nm, p in backbone.net.named_parameters() if p.requires_grad]


def _freeze_all_but_last(backbone: Backbone, n: int) -> tuple[list[nn.Module], list[str]]:
    net = backbone.net
    blocks = backbone.blocks()
    if n < 0 or n > len(blocks):
        raise MedfmError(f"--unfreeze {n}: this backbone has {len(blocks)} blocks", f"use 0..{len(blocks)} or 'all'")
    net.requires_grad_(False)
    if n == len(blocks):
        net.requires_grad_(True)
        return [], [name for name, _ in net.named_parameters()]
    if n == 0:
        return [net], []
    trainable_mods = set()
    for b in blocks[len(blocks) - n :]:
        trainable_mods.update(id(m) for m in b.modules())
    names = list(dict(net.named_parameters()))
    block_param_ids = {id(p) for b in blocks for p in b.parameters()}
    params = dict(net.named_parameters())
    last_block_pos = max(i for i, nm in enumerate(names) if id(params[nm]) in block_param_ids)
    after = set(names[last_block_pos + 1 :])  # registered after the last block: the final norm
    for b in blocks[len(blocks) - n :]:
        b.requires_grad_(True)
    for nm in after:
        params[nm].requires_grad_(True)
    trainable_mods.update(id(m) for nm, m in net.named_modules() if any(p.requires_grad for p in m.parameters(recurse=False)))
    # frozen = maximal subtrees none of whose modules train
    frozen: list[nn.Module] = []

    def visit(mod: nn.Module) -> None:
        if not any(id(m) in trainable_mods for m in mod.modules()):
            frozen.append(mod)
            return
        for child in mod.children():
            visit(child)

    visit(net)
    return frozen, [nm for nm, p in net.named_parameters() if p.requires_grad]


def layer_ids(backbone: Backbone) -> dict[str, int]:
    """Layer id per backbone parameter: 0 = stem (before the first block), i + 1 = block i,
    L + 1 = after the last block (final norm). The order of registration decides stem vs tail."""
    blocks = backbone.blocks()
    owner = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    ids, seen_block, L = {}, False, len(blocks)
    for name, p in backbone.net.named_parameters():
        if id(p) in owner:
            ids[name] = owner[id(p)] + 1
            seen_block = True
        else:
            ids[name] = L + 1 if seen_block else 0
    return ids


def exempt_from_decay(name: str, p: torch.Tensor, rule: str = "biases_norms_tokens") -> bool:
    """Whether a parameter trains without weight decay.

    ``biases_norms_tokens`` (medfm, as timm and DINOv2): 0-/1-D parameters (biases, norm weights) and
    position / CLS / register / mask tokens. ``biases_norms`` (study 1's ``get_params_groups``,
    ``defaults/wrappers.py:L235-251`` @02db977, from DINO): ``name.endswith(".bias") or len(shape) == 1``;
    the DeiT head's ``cls_token`` [1, 1, 768] and ``pos_embed`` [1, 197, 768] are decayed there.
    """
    if rule == "biases_norms":
        return name.endswith(".bias") or p.ndim == 1
    return p.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES


def param_groups(model: FinetuneModel, lr: float, head_lr: float, weight_decay: float, layer_decay: float,
                 no_decay: str = "biases_norms_tokens") -> list[dict]:
    """AdamW groups with layer-wise lr decay: the last block gets ``lr``, block ``i`` of L gets
    ``lr * layer_decay**(L - 1 - i)``, the stem ``lr * layer_decay**L``; the tail (final norm)
    gets ``lr``, the head ``head_lr``. No weight decay on what ``exempt_from_decay(no_decay)`` names.
    Frozen parameters are left out, as study 1 filters ``requires_grad`` when it builds its groups."""
    L = model.num_layers
    groups: dict[tuple, dict] = {}

    def add(name: str, p: torch.nn.Parameter, scale_lr: float) -> None:
        no_wd = exempt_from_decay(name, p, no_decay)
        key = (scale_lr, no_wd)
        g = groups.setdefault(key, {"params": [], "names": [], "lr": scale_lr, "weight_decay": 0.0 if no_wd else weight_decay})
        g["params"].append(p)
        g["names"].append(name)

    for name, p in model.net.named_parameters():
        if not p.requires_grad:
            continue
        layer = model.layer_of[name]
        scale = 1.0 if layer == L + 1 else layer_decay ** (L - layer)
        add("net." + name, p, lr * scale)
    for name, p in model.head.named_parameters():
        if p.requires_grad:
            add("head." + name, p, head_lr)
    out = list(groups.values())
    for g in out:
        g["initial_lr"] = g["lr"]
    return out
