"""Open names: a registry entry made on the fly from a library's own name for a model.

Each scheme reads what the library publishes about the model — its pretrained config (input size,
interpolation, mean/std, crop), its architecture (built on the meta device: no weights, no memory)
— and fills the same declarative fields a built-in entry has: the pooled feature the model itself
uses, the patch size that input sizes must be a multiple of, the ordered block list
``finetune --unfreeze N`` counts, and ``resolved``, the model configuration hashed into the cache
identity. Building then goes through the library's loader exactly as for a built-in entry.

``hf:`` entries are completed once their weights are located (their config lies beside them): see
``adapters/hf.py``.
"""

from __future__ import annotations

import hashlib
import inspect

import torch
from torch import nn

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.names import OPEN_NAMES
from medfm.errors import MedfmError, close_matches


def architecture_digest(net: nn.Module) -> dict:
    """What the built architecture is, library-version-proof: its class, every tensor's name and shape, the count."""
    h = hashlib.sha256()
    state = net.state_dict()
    for key in sorted(state):
        h.update(f"{key}:{tuple(state[key].shape)}\n".encode())
    return {"class": type(net).__name__, "tensors": h.hexdigest()[:16],
            "params": sum(int(p.numel()) for p in net.parameters())}


def exact_block(path: str) -> str:
    """``layer1`` as a block spec that names exactly that module (``layer[1]``: a glob, so it is not expanded)."""
    *parents, last = path.split(".")
    return ".".join([*parents, f"{last[:-1]}[{last[-1]}]"])


def block_spec(net: nn.Module) -> str:
    """The ordered block list of a timm model, from its ``feature_info`` (the stages timm itself exposes).

    When every stage lives in one container (``blocks``, ``stages``, ``layers``) the container's
    children are the blocks (all 12 of a ViT-S, all 7 stages of an EfficientNet); otherwise the
    stages are named one by one (a ResNet's ``layer1``..``layer4``).
    """
    modules = [f["module"] for f in getattr(net, "feature_info", []) or []]
    parents = {m.split(".")[0] for m in modules if "." in m}
    if modules and len(parents) == 1 and all("." in m for m in modules):
        return parents.pop()
    if modules:
        return ",".join(exact_block(m) for m in modules)
    for container in ("blocks", "stages", "layers"):
        if isinstance(getattr(net, container, None), (nn.ModuleList, nn.Sequential)):
            return container
    raise MedfmError(f"timm model {type(net).__name__} lists no stages (feature_info)",
                     "register it in a user backbones file with its `blocks` path (README 'Your own backbones')")


def _timm_model_id(rest: str, name: str) -> str:
    import timm
    from timm.models._registry import get_arch_pretrained_cfgs

    arch, _, tag = rest.partition(".")
    if not timm.is_model(arch):
        sugg = close_matches(arch, timm.list_models())
        did = f"did you mean {', '.join(repr('timm:' + s) for s in sugg)}? " if sugg else ""
        raise MedfmError(f"timm has no model {arch!r} (backbone {name!r})", f"{did}`timm.list_models()` lists them")
    tags = list(get_arch_pretrained_cfgs(arch))
    if tag:
        if f"{arch}.{tag}" not in tags:
            raise MedfmError(f"timm model {arch} has no pretrained tag {tag!r}",
                             f"use one of: {', '.join('timm:' + t for t in tags) or f'timm:{arch} --weights PATH|random'}")
        return f"{arch}.{tag}"
    return tags[0] if tags else arch  # the default tag is timm's first


def timm_entry(rest: str, name: str) -> BackboneEntry:
    """``timm:<model>[.<tag>]``: any timm model; preprocessing from its pretrained config."""
    import timm

    model_id = _timm_model_id(rest, name)
    with torch.device("meta"):
        net = timm.create_model(model_id, pretrained=False, num_classes=0)
    tokens = hasattr(net, "patch_embed")  # a token model (ViT, Swin, ...): blocks output [B, L, D] or NHWC maps
    # 'vit' = takes --img-size at build time (position tables resampled); token models without that stay fixed-size
    vit = tokens and "img_size" in inspect.signature(type(net).__init__).parameters
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", (1,))
    if isinstance(patch, int):
        patch = (patch,)
    pool = getattr(net, "global_pool", None)
    has_cls = int(getattr(net, "num_prefix_tokens", 0) or 0) > 0 and getattr(net, "cls_token", None) is not None
    feature = "cls" if has_cls and pool == "token" else "mean"
    layout = "nhwc" if getattr(net, "output_fmt", "") == "NHWC" else ("nld" if tokens else None)
    return BackboneEntry(
        name=name, family="timm", loader="timm", model_id=model_id, arch="vit" if vit else "cnn", feature=feature,
        dim=int(net.num_features), size_multiple=int(patch[0]) if vit else 1, blocks=block_spec(net), block_layout=layout,
        params_m=round(sum(p.numel() for p in net.parameters()) / 1e6, 2), params_source="counted (timm build)",
        licence=str(getattr(net, "pretrained_cfg", {}).get("license", "") or "see the timm model card"),
        resolved={"architecture": architecture_digest(net)}, notes="open name (timm)")


OPEN_NAMES.add("timm", timm_entry)
