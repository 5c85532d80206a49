"""BLIP's ViT-B/16 image encoder as transformers' ``BlipVisionModel``, built from its config (no download).

Weights: a Hugging Face BLIP checkpoint (``vision_model.*`` keys) or Salesforce's original
``model_base.pth`` (``visual_encoder.*``, timm-style ViT keys, renamed here as transformers'
conversion script does).
"""

from __future__ import annotations

import re

from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import BaseLoader, load_strict, register_loader, seeded, torch_load, wrong_weights
from medfm.backbones.weights import HubSource

_SALESFORCE_RENAMES = (
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
)


def blip_vision_state(state: dict) -> dict:
    """``vision_model.*`` (HF) or ``visual_encoder.*`` (Salesforce) keys -> BlipVisionModel keys."""
    hf = {k.removeprefix("vision_model."): v for k, v in state.items() if k.startswith("vision_model.")}
    if hf:
        return hf
    out = {}
    for key, value in state.items():
        if not key.startswith("visual_encoder."):
            continue
        key = key.removeprefix("visual_encoder.")
        for pattern, repl in _SALESFORCE_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


@register_loader("blip")
class BlipLoader(BaseLoader):
    requires = {"transformers": "transformers"}
    default_blocks = "encoder.layers"

    def _config(self, entry):
        from transformers import BlipVisionConfig

        return BlipVisionConfig(**entry.model_kwargs)

    def data_config(self, entry):
        size = self._config(entry).image_size
        # BlipImageProcessor: bicubic squash-resize to 384, OpenAI CLIP mean/std
        return {"input_size": (3, size, size), "interpolation": "bicubic", "mean": (0.48145466, 0.4578275, 0.40821073),
                "std": (0.26862954, 0.26130258, 0.27577711), "crop_pct": 1.0, "crop_mode": "squash"}

    def hub(self, entry):
        return HubSource(hf_repo=entry.model_id)

    def build(self, entry, weights, img_size):
        from transformers import BlipVisionModel

        state = None
        if weights.kind != "random":  # read the file first: a wrong one fails before the build
            state = blip_vision_state(torch_load(weights.path))
            if not state:
                raise wrong_weights(entry, weights, "no 'vision_model.*' or 'visual_encoder.*' keys (not a BLIP checkpoint)")
        net = seeded(lambda: BlipVisionModel(self._config(entry)))
        if state is not None:
            load_strict(net, state, entry, weights)
        net.medfm_native_size = self._config(entry).image_size
        return net

    def tokens(self, net, x):
        interpolate = x.shape[-1] != net.medfm_native_size  # --img-size: resample the position table
        out = net(pixel_values=x, interpolate_pos_encoding=interpolate).last_hidden_state  # post-layernormed
        return TokenOutput(prefix=out[:, :1], patches=out[:, 1:])

    def num_prefix(self, net):
        return 1

    def final_norm(self, net):
        return net.post_layernorm
