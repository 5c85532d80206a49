"""``open_clip:<model>/<tag>`` and ``open_clip:hf-hub:<org>/<repo>``: any open_clip image tower.

A built-in model name takes its config from open_clip's own model configs and its preprocessing
from the pretrained tag's config (the ``open_clip`` loader of the built-in CLIP/CoCa entries); an
``hf-hub:`` repo carries both in its ``open_clip_config.json`` (``model_cfg`` / ``preprocess_cfg``),
read from the hub cache or downloaded. Towers built on a timm trunk (``timm_model_name``, e.g.
BiomedCLIP's ViT-B/16) are read through the trunk: tokens from its ``forward_features``, the
pooled output through the tower's own head.
"""

from __future__ import annotations

import json

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.features import TokenOutput
from medfm.backbones.loader_openclip import OpenClipLoader
from medfm.backbones.loaders import register_loader, resolve_blocks
from medfm.backbones.names import OPEN_NAMES
from medfm.backbones.weights import HubSource, hub_file
from medfm.errors import MedfmError, close_matches

HF_HUB = "hf-hub:"
HUB_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")


def _tower_fields(model_cfg: dict, name: str) -> dict:
    vision = model_cfg.get("vision_cfg", {})
    if isinstance(vision.get("layers"), (list, tuple)):
        raise MedfmError(f"{name!r} has a ResNet image tower, which medfm's open_clip loader does not read yet",
                         "use a ViT tower (open_clip:ViT-...), or timm:resnet50.* for a ResNet")
    patch = vision.get("patch_size") or 16
    resolved = {"model_cfg": {k: v for k, v in model_cfg.items() if k != "text_cfg"}}
    blocks = "trunk.blocks" if vision.get("timm_model_name") else None
    return dict(arch="vit", feature="pooled", dim=int(model_cfg["embed_dim"]), size_multiple=int(patch),
                resolved=resolved, blocks=blocks)


def open_clip_entry(rest: str, name: str) -> BackboneEntry:
    """``open_clip:<model>/<tag>`` (tag optional: then --weights PATH|random) or ``open_clip:hf-hub:<org>/<repo>``."""
    import open_clip

    if rest.startswith(HF_HUB):
        repo = rest.removeprefix(HF_HUB)
        cfg = _hub_config(repo, name)
        entry = BackboneEntry(name=name, family="open_clip", loader="open_clip_hub", model_id=rest, arch="vit",
                              licence="see the model card", notes="open name (open_clip, Hugging Face hub)",
                              **_tower_fields(cfg["model_cfg"], name))
        return entry
    model, _, tag = rest.partition("/")
    if model not in open_clip.list_models():
        sugg = close_matches(model, open_clip.list_models())
        did = f"did you mean {', '.join(repr('open_clip:' + s) for s in sugg)}? " if sugg else ""
        raise MedfmError(f"open_clip has no model {model!r} (backbone {name!r})", f"{did}`open_clip.list_models()` lists them")
    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag and tag not in tags:
        raise MedfmError(f"open_clip model {model} has no pretrained tag {tag!r}",
                         f"use one of: {', '.join(f'open_clip:{model}/{t}' for t in tags) or 'none (use --weights)'}")
    model_cfg = open_clip.get_model_config(model)
    fields = _tower_fields(model_cfg, name)
    loader = "open_clip_hub" if fields["blocks"] else "open_clip"  # a timm trunk is read by the tower-aware loader
    return BackboneEntry(name=name, family="open_clip", loader=loader, model_id=model, tag=tag or None,
                         licence="see the open_clip model card", notes="open name (open_clip)", **fields)


def _hub_config(repo: str, name: str) -> dict:
    path = hub_file(repo, "open_clip_config.json", name)
    cfg = json.loads(path.read_text())
    if "model_cfg" not in cfg:
        raise MedfmError(f"hf-hub:{repo}'s open_clip_config.json has no model_cfg", "is it an open_clip model?")
    return cfg


OPEN_NAMES.add("open_clip", open_clip_entry)


@register_loader("open_clip_hub")
class OpenClipTowerLoader(OpenClipLoader):
    """open_clip towers whose config may come from the hub and whose trunk may be a timm model."""

    def _cfgs(self, entry):
        if entry.model_id.startswith(HF_HUB):
            cfg = _hub_config(entry.model_id.removeprefix(HF_HUB), entry.name)
            return cfg["model_cfg"], cfg.get("preprocess_cfg", {})
        return super()._cfgs(entry)

    def hub(self, entry):
        if entry.model_id.startswith(HF_HUB):
            return HubSource(hf_repo=entry.model_id.removeprefix(HF_HUB), hf_files=HUB_FILES)
        return super().hub(entry)

    def data_config(self, entry):
        cfg = super().data_config(entry)
        model_cfg, _ = self._cfgs(entry)
        if model_cfg["vision_cfg"].get("image_size") is None:  # timm towers take the trunk's size
            cfg["input_size"] = (3, 224, 224)
        return cfg

    def tokens(self, net, x):
        trunk = getattr(net, "trunk", None)
        if trunk is None:
            return super().tokens(net, x)
        toks = trunk.forward_features(x)
        pooled = net.head(trunk.forward_head(toks))
        p = int(getattr(trunk, "num_prefix_tokens", 0) or 0)
        return TokenOutput(prefix=toks[:, :p], patches=toks[:, p:], pooled=pooled)

    def blocks(self, net, entry):
        if getattr(net, "trunk", None) is not None:
            return resolve_blocks(net, "trunk.blocks")
        return super().blocks(net, entry)

    def num_prefix(self, net):
        trunk = getattr(net, "trunk", None)
        return int(getattr(trunk, "num_prefix_tokens", 0) or 0) if trunk is not None else 1

    def final_norm(self, net):
        trunk = getattr(net, "trunk", None)
        return getattr(trunk, "norm", None) if trunk is not None else super().final_norm(net)

