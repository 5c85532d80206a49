"""open_clip image towers (CLIP, OpenCLIP, CoCa): the vision tower only, open_clip's own preprocess.

Only the tower is built (the text tower would triple the build time and is never used); a
checkpoint of the whole model loads by its ``visual.*`` keys. ``pooled`` is the tower's own output
(the projected image embedding / CoCa's attention-pooled latent); patch tokens are the
transformer's output tokens, layer-normed by ``ln_post`` where it has the tokens' width.

CoCa's tower also returns its attention pooler's outputs: ``extra['attn_pool']`` is the projected
pooled token followed by the pooler's other 255 outputs (after ``ln_post``), exactly what study 1's
code feeds its DeiT head (``--tokens-from attn_pool``; study 1 @02db977 ``defaults/models.py``: the
CoCa branch of ``Classifier.forward`` returns ``torch.cat((x_cls.unsqueeze(1), x_emb), dim=1)`` for
``x_cls, x_emb = self.backbone(x)``, the open_clip tower built with ``output_tokens``).
"""

from __future__ import annotations

import torch

from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import BaseLoader, load_strict, register_loader, seeded, torch_load, wrong_weights
from medfm.backbones.weights import HubSource


@register_loader("open_clip")
class OpenClipLoader(BaseLoader):
    requires = {"open_clip": "open_clip_torch"}
    default_blocks = "transformer.resblocks"

    def _cfgs(self, entry):
        import open_clip

        return open_clip.get_model_config(entry.model_id), (open_clip.get_pretrained_cfg(entry.model_id, entry.tag) if entry.tag else {})

    def data_config(self, entry):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        model_cfg, pre = self._cfgs(entry)
        size = model_cfg["vision_cfg"]["image_size"]
        return {
            "input_size": (3, size, size),
            "interpolation": pre.get("interpolation", "bicubic"),
            "mean": tuple(pre.get("mean", OPENAI_DATASET_MEAN)),
            "std": tuple(pre.get("std", OPENAI_DATASET_STD)),
            "crop_pct": 1.0,
            "crop_mode": "center",
            "resize_mode": pre.get("resize_mode", "shortest"),
        }

    def attn_pool_tokens(self, entry):
        return self._cfgs(entry)[0]["vision_cfg"].get("attentional_pool") is True  # CoCa's original pooler

    def hub(self, entry):
        _, pre = self._cfgs(entry)
        hf = (pre.get("hf_hub") or "").strip("/") or None
        return HubSource(hf_repo=hf, hf_files=("open_clip_pytorch_model.bin", "open_clip_model.safetensors"),
                         url=pre.get("url") or None) if (hf or pre.get("url")) else None

    def transform(self, spec):
        import open_clip

        cfg = spec.data_config
        return open_clip.image_transform(spec.img_size, is_train=False, mean=cfg["mean"], std=cfg["std"],
                                         resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"])

    def build(self, entry, weights, img_size):
        from open_clip.model import _build_vision_tower

        model_cfg, pre = self._cfgs(entry)
        vision_cfg = dict(model_cfg["vision_cfg"], image_size=img_size or model_cfg["vision_cfg"]["image_size"])
        quick_gelu = bool(model_cfg.get("quick_gelu", False) or pre.get("quick_gelu", False))
        state = None
        if weights.kind != "random":  # read the file first: a wrong one fails before the build
            state = torch_load(weights.path)
            state = {k.removeprefix("module.").removeprefix("visual."): v for k, v in state.items()
                     if k.removeprefix("module.").startswith("visual.")}
            if not state:
                raise wrong_weights(entry, weights, "no 'visual.*' keys (not an open_clip checkpoint)")
        net = seeded(lambda: _build_vision_tower(model_cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu))
        if state is None:
            return net
        pos = state.get("positional_embedding")
        if pos is not None and pos.shape != net.positional_embedding.shape:
            from timm.layers import resample_abs_pos_embed

            grid = net.grid_size
            state["positional_embedding"] = resample_abs_pos_embed(pos[None], list(grid), num_prefix_tokens=1)[0]
        return load_strict(net, state, entry, weights)

    def tokens(self, net, x):
        captured = {}
        handle = net.transformer.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
        try:
            out = net(x)
        finally:
            handle.remove()
        pooled = out[0] if isinstance(out, tuple) else out
        toks = captured["x"]
        if not getattr(net.transformer, "batch_first", True):
            toks = toks.transpose(0, 1)
        norm = self.final_norm(net)
        if norm is not None:
            toks = norm(toks)
        extra = {}
        if isinstance(out, tuple) and self.has_attn_pool(net):
            extra["attn_pool"] = torch.cat([pooled.unsqueeze(1), out[1]], dim=1)
        return TokenOutput(prefix=toks[:, :1], patches=toks[:, 1:], pooled=pooled, extra=extra)

    def has_attn_pool(self, net) -> bool:
        """CoCa's original open_clip pooler: queries -> ``ln_post`` -> token 0 pooled (projected), the rest tokens."""
        return getattr(net, "attn_pool", None) is not None and getattr(net, "attn_pool_contrastive", None) is None

    def final_norm(self, net):
        ln = getattr(net, "ln_post", None)
        width = net.transformer.width
        return ln if isinstance(ln, torch.nn.LayerNorm) and ln.normalized_shape[0] == width else None

    def num_prefix(self, net):
        return 1
