"""``open_clip:<model>/<tag>`` and ``open_clip:hf-hub:<org>/<repo>``: any open_clip image tower.

A built-in model name takes its config from open_clip's own model configs and its preprocessing
from the pretrained tag's config (the ``open_clip`` loader of the built-in CLIP/CoCa entries); an
``hf-hub:`` repo carries both in its ``open_clip_config.json`` (``model_cfg`` / ``preprocess_cfg``),
read from the hub cache or downloaded. Towers built on a timm trunk (``timm_model_name``, e.g.
BiomedCLIP's ViT-B/16) are read through the trunk: tokens from its ``forward_features``, the
pooled output through the tower's own head.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.features import TokenOutput
from medfm.backbones.loader_openclip import OpenClipLoader
from medfm.backbones.loaders import register_loader, resolve_blocks
from medfm.backbones.names import OPEN_NAMES
from medfm.backbones.weights import HubSource, Weights, hub_file
from medfm.errors import MedfmError, close_matches

HF_HUB = "hf-hub:"
HUB_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
HUB_CONFIG = "open_clip_config.json"


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

    if rest.startswith(HF_HUB):  # the config lies beside the weights: OpenClipTowerLoader.configure completes it
        if rest.count("/") != 1 or not all(rest.removeprefix(HF_HUB).split("/")):
            raise MedfmError(f"backbone name {name!r} is not open_clip:hf-hub:<org>/<repo>",
                             "e.g. open_clip:hf-hub:timm/ViT-B-16-SigLIP")
        return BackboneEntry(name=name, family="open_clip", loader="open_clip_hub", model_id=rest, arch="vit",
                             feature="pooled", licence="see the model card",
                             notes="open name (open_clip, Hugging Face hub)")
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


def _config_file(entry: BackboneEntry, weights: Weights) -> Path:
    """The ``open_clip_config.json`` of an ``hf-hub:`` entry: beside a local weights file, else the hub's."""
    if weights.kind == "file" and not weights.origin.startswith(HF_HUB):
        beside = weights.path.parent / HUB_CONFIG
        if not beside.is_file():
            raise MedfmError(f"{weights.path.parent} has no {HUB_CONFIG} beside {weights.path.name}, so "
                             f"{entry.name!r} has no model config",
                             f"pass --weights the repo folder downloaded from the hub ({HUB_CONFIG} + weights)")
        return beside
    return hub_file(entry.model_id.removeprefix(HF_HUB), HUB_CONFIG, entry.name)


def _read_config(path: Path, name: str) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedfmError(f"{path} is not a readable JSON file ({type(exc).__name__}: {exc})",
                         f"put the hub's own {HUB_CONFIG} there") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict) \
            or not isinstance(cfg["model_cfg"].get("vision_cfg"), dict) or "embed_dim" not in cfg["model_cfg"]:
        raise MedfmError(f"{path} has no model_cfg with vision_cfg and embed_dim ({name!r})",
                         "is it an open_clip model? its repo's open_clip_config.json has them")
    return cfg


OPEN_NAMES.add("open_clip", open_clip_entry)


@register_loader("open_clip_hub")
class OpenClipTowerLoader(OpenClipLoader):
    """open_clip towers whose config may come from the hub and whose trunk may be a timm model."""

    config_beside_weights = True  # hf-hub: open_clip_config.json beside the weights (see configure)

    def configure(self, entry, weights):
        if not entry.model_id.startswith(HF_HUB):
            return entry
        cfg = _read_config(_config_file(entry, weights), entry.name)
        fields = _tower_fields(cfg["model_cfg"], entry.name)  # resolved: the image tower's config (the identity's)
        return dataclasses.replace(entry, **fields, model_kwargs={"preprocess_cfg": cfg.get("preprocess_cfg", {})})

    def _cfgs(self, entry):
        if entry.model_id.startswith(HF_HUB):  # read once in configure: what is built is what the identity says
            return entry.resolved["model_cfg"], dict(entry.model_kwargs["preprocess_cfg"])
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

