"""Checkpoint key remapping for weights published in another library's key names.

Each function takes the checkpoint's state dict and the freshly built target network and returns
a state dict the network loads with ``strict=True`` — so a mapping that leaves a key unused, or
a tensor of the wrong shape, fails loudly instead of leaving part of the model random.
"""

from __future__ import annotations

import re

from torch import nn

from medfm.registry import Registry

REMAPS: Registry = Registry("checkpoint key remapping", "medfm.backbones.remap")

# lukemelas EfficientNet-PyTorch names -> timm names. Blocks without an expansion conv (the first,
# depthwise-separable one) number their norms one lower than inverted-residual blocks.
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LUKEMELAS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LUKEMELAS_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}


@REMAPS.register("lukemelas_efficientnet")
def lukemelas_to_timm_efficientnet(state: dict, net: nn.Module) -> dict:
    """``_blocks.{k}.*`` (one flat list) -> timm's ``blocks.{stage}.{i}.*``, by walking timm's stages."""
    flat = [f"blocks.{s}.{i}" for s, stage in enumerate(net.blocks) for i in range(len(stage))]
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            k, module, rest = int(m.group(1)), m.group(2), m.group(3)
            if k >= len(flat):
                raise RuntimeError(f"checkpoint block {k} has no counterpart (the model has {len(flat)} blocks)")
            names = _LUKEMELAS_IR if k in expanded else _LUKEMELAS_DS
            out[f"{flat[k]}.{names.get(module, module)}.{rest}"] = value
            continue
        module, _, rest = key.partition(".")
        out[f"{_LUKEMELAS_TOP.get(module, module)}.{rest}"] = value
    if isinstance(getattr(net, "classifier", None), nn.Identity):  # features only (num_classes=0)
        out = {k: v for k, v in out.items() if not k.startswith("classifier.")}
    return out


@REMAPS.register("seem_backbone")
def seem_to_focalnet(state: dict, net: nn.Module) -> dict:
    """A SEEM / X-Decoder checkpoint -> its FocalNet backbone: keep ``[model.]backbone.*``, strip the prefix."""
    out = {}
    for key, value in state.items():
        m = re.match(r"(?:module\.)?(?:model\.)?backbone\.(.+)", key)
        if m:
            out[m.group(1)] = value
    if not out:
        raise RuntimeError("no 'backbone.*' keys: this is not a SEEM / X-Decoder checkpoint")
    return out


# Hugging Face transformers Dinov2Model names -> timm VisionTransformer names (per block, after 'encoder.layer.{i}.').
# Hub files of 2024 (microsoft/rad-dino) use 'attention.attention.query' / 'attention.output.dense'; transformers 5
# names the same tensors 'attention.q_proj' / 'attention.o_proj'. Both are read.
_HF_DINOV2_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
                    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "layer_scale1.lambda1": "ls1.gamma",
                    "layer_scale2.lambda1": "ls2.gamma"}
_HF_DINOV2_QKV = {"attention.attention.query": "q", "attention.attention.key": "k", "attention.attention.value": "v",
                  "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v"}


@REMAPS.register("hf_dinov2")
def hf_dinov2_to_timm(state: dict, net: nn.Module) -> dict:
    """A transformers ``Dinov2Model`` checkpoint (e.g. microsoft/rad-dino) -> timm ``vit_*_patch14_dinov2``.

    q, k and v are joined into timm's qkv; the class token's position is joined with the patches'
    (and resampled when the model is built for another input size); the mask token, used only in
    DINOv2's masked training, is dropped.
    """
    import torch

    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    if "embeddings.patch_embeddings.projection.weight" not in state:
        raise RuntimeError("no 'embeddings.patch_embeddings.*' keys: this is not a transformers Dinov2Model checkpoint")
    out = {"cls_token": state.pop("embeddings.cls_token"),
           "patch_embed.proj.weight": state.pop("embeddings.patch_embeddings.projection.weight"),
           "patch_embed.proj.bias": state.pop("embeddings.patch_embeddings.projection.bias"),
           "norm.weight": state.pop("layernorm.weight"), "norm.bias": state.pop("layernorm.bias")}
    state.pop("embeddings.mask_token", None)
    pos = state.pop("embeddings.position_embeddings")
    if pos.shape != net.pos_embed.shape:
        from timm.layers import resample_abs_pos_embed

        pos = resample_abs_pos_embed(pos, list(net.patch_embed.grid_size), num_prefix_tokens=1)
    out["pos_embed"] = pos
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key in list(state):
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$", key)
        if not m:
            continue
        i, module, kind = m.groups()
        if module in _HF_DINOV2_QKV:
            qkv.setdefault((i, kind), {})[_HF_DINOV2_QKV[module]] = state.pop(key)
            continue
        name = _HF_DINOV2_BLOCK.get(module if kind != "lambda1" else f"{module}.lambda1")
        if name is None:
            raise RuntimeError(f"checkpoint key {key} has no timm counterpart")
        out[f"blocks.{i}.{name}" if kind == "lambda1" else f"blocks.{i}.{name}.{kind}"] = state.pop(key)
    for (i, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise RuntimeError(f"block {i} has {sorted(parts)} of q, k, v ({kind})")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    out.update(state)  # anything left over is unexpected: the strict load names it
    return out
