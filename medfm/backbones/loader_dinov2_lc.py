"""DINOv2 with its ImageNet linear classifier: torch.hub's ``dinov2_vit{s,b,l,g}14_lc``, as study 3 loads it.

The hub model (``facebookresearch/dinov2``, ``dinov2/hub/classifiers.py``) is the backbone plus
``nn.Linear(5 * dim, 1000)`` on ``cat(CLS of each of the last 4 blocks, mean patch token of the last
block)``, every block output through the final LayerNorm (``get_intermediate_layers(n=4,
return_class_token=True)``, the default ``layers=4``). Study 3 (``GuanghuiFU/medical_dino_eval``
``utils.py:L86-97``) trains its MLP on those 1,000 logits. Here the model is timm's DINOv2 plus that
linear layer; its ``pooled`` feature is the logits, and ``--unfreeze all`` trains the linear layer too,
as the study's unfrozen rows do.

Weights, as torch.hub fetches them: the head file ``dinov2_vits14_linear4_head.pth`` (the entry's hub
source) with the backbone file ``dinov2_vits14_pretrain.pth`` beside it (torch.hub keeps both in its
``checkpoints`` folder; a missing backbone file is downloaded there, or is one error offline). Or one
file holding the whole hub model's ``state_dict()`` (``backbone.*`` and ``linear_head.*`` keys). The
backbone file's sha256 joins the identity (the weights' own sha256 is the head file's).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import TimmLoader, register_loader, seeded, torch_load, wrong_weights
from medfm.backbones.weights import HubSource, sha256_file
from medfm.errors import MedfmError

BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"
LAYERS = 4  # the hub's default: dinov2_vit*14_lc(layers=4)
CLASSES = 1000


def hub_name(entry) -> str:
    """``dinov2_vits14`` for ``dinov2_vits14_lc``: the hub's model name, which names its files."""
    return entry.model_kwargs.get("hub_name") or entry.name.removesuffix("_lc")


def head_url(name: str) -> str:
    return f"{BASE_URL}/{name}/{name}_linear{LAYERS}_head.pth"


def backbone_url(name: str) -> str:
    return f"{BASE_URL}/{name}/{name}_pretrain.pth"


class DinoV2LinearClassifier(nn.Module):
    """timm's DINOv2 ViT (``vit``) and the hub's ImageNet linear layer (``linear_head``)."""

    def __init__(self, vit: nn.Module, linear_head: nn.Linear):
        super().__init__()
        self.vit = vit
        self.linear_head = linear_head

    def forward_lc(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the final normed tokens [B, 1 + R + T, D], the 1,000 logits), in one pass."""
        vit = self.vit
        taken: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda m, i, o: taken.append(o)) for b in vit.blocks[-LAYERS:]]
        try:
            out = vit.forward_features(x)
        finally:
            for h in hooks:
                h.remove()
        normed = [vit.norm(o) for o in taken]
        p = vit.num_prefix_tokens
        linear_input = torch.cat([o[:, 0] for o in normed] + [normed[-1][:, p:].mean(dim=1)], dim=1)
        return out, self.linear_head(linear_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_lc(x)[1]


@register_loader("dinov2_lc")
class DinoV2LinearClassifierLoader(TimmLoader):
    default_blocks = "vit.blocks"
    config_beside_weights = True  # configure() records the backbone file's sha256

    def hub(self, entry):
        return HubSource(url=head_url(hub_name(entry)))

    def configure(self, entry, weights):
        if weights.kind != "file" or not _head_only(torch_load(weights.path, mmap=True)):  # keys only
            return entry
        path = self.backbone_file(entry, weights)
        resolved = {**entry.resolved, "backbone_weights": {"file": path.name, "sha256": sha256_file(path)}}
        return dataclasses.replace(entry, resolved=resolved)

    def backbone_file(self, entry, weights) -> Path:
        """The backbone checkpoint beside a head-only file (torch.hub's layout), fetched into torch.hub's cache
        when missing (one error offline)."""
        name = hub_name(entry)
        beside = weights.path.parent / f"{name}_pretrain.pth"
        if beside.is_file():
            return beside
        from medfm.backbones.weights import _download

        try:
            return _download(HubSource(url=backbone_url(name)), entry.name)
        except MedfmError as exc:
            raise MedfmError(f"{weights.path.name} is {name}'s ImageNet linear head alone, and its backbone file "
                             f"{name}_pretrain.pth is not beside it ({exc.problem})",
                             f"put {name}_pretrain.pth beside it, or pass one file holding the hub model's "
                             "state_dict() (backbone.* and linear_head.* keys), or --weights random") from None

    def build(self, entry, weights, img_size):
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        kwargs = dict(num_classes=0, **{k: v for k, v in entry.model_kwargs.items() if k != "hub_name"})
        if img_size:
            kwargs["img_size"] = img_size
        vit = seeded(lambda: timm.create_model(entry.model_id, pretrained=False, **kwargs))
        head = seeded(lambda: nn.Linear((1 + LAYERS) * vit.embed_dim, CLASSES))
        net = DinoV2LinearClassifier(vit, head)
        if weights.kind == "random":
            return net
        state = torch_load(weights.path)
        if _head_only(state):
            head_state, backbone_state = state, torch_load(self.backbone_file(entry, weights))
        elif any(k.startswith("linear_head.") for k in state):
            head_state = {k.removeprefix("linear_head."): v for k, v in state.items() if k.startswith("linear_head.")}
            backbone_state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        else:
            raise wrong_weights(entry, weights, "neither the hub's linear-head file (weight, bias) nor a whole "
                                                "dinov2_*_lc state_dict (backbone.*, linear_head.*)")
        try:
            vit.load_state_dict(checkpoint_filter_fn(backbone_state, vit), strict=True)
            head.load_state_dict(head_state, strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise wrong_weights(entry, weights, exc) from None
        return net

    def tokens(self, net, x):
        out, logits = net.forward_lc(x)
        p = self.num_prefix(net)
        return TokenOutput(prefix=out[:, :p], patches=out[:, p:], pooled=logits)

    def num_prefix(self, net):
        return int(net.vit.num_prefix_tokens)

    def final_norm(self, net):
        return net.vit.norm


def _head_only(state: dict) -> bool:
    return set(state) == {"weight", "bias"}
