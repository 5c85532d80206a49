"""``hf:<org>/<repo>``: a Hugging Face ``transformers`` vision model (``AutoModel`` + ``AutoImageProcessor``).

The model's ``config.json`` and ``preprocessor_config.json`` lie beside its weights — in the hub
snapshot, or in a local folder written by ``save_pretrained`` (``--weights FOLDER``) — so this
loader completes its entry once the weights are located (``configure``). Preprocessing is the
processor's own settings (resize, centre crop, resample, mean/std) run through the same transform
builder as every other backbone; the cache identity holds ``config.json`` itself (minus the keys a
library upgrade rewrites), so a transformers upgrade that leaves the model alone keeps every cache.

Weights load through ``from_pretrained`` (so transformers' own key conversions apply) and strictly:
a missing, unexpected or mis-shaped tensor is an error, never a silently random layer.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import torch
from torch import nn

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import BaseLoader, register_loader, seeded, wrong_weights
from medfm.backbones.names import OPEN_NAMES
from medfm.backbones.open_names import architecture_digest
from medfm.backbones.weights import HubSource, Weights, hub_file
from medfm.errors import MedfmError

CONFIG = "config.json"
PROCESSOR = "preprocessor_config.json"
# config.json keys that say how or when the file was written, not what the model is
NOT_MODEL = ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype", "id2label", "label2id",
             "_attn_implementation_autoset")
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def hf_entry(rest: str, name: str) -> BackboneEntry:
    """An ``hf:`` entry before its config is read (``HfLoader.configure`` completes it)."""
    if rest.count("/") != 1 or not all(rest.split("/")):
        raise MedfmError(f"backbone name {name!r} is not hf:<org>/<repo>", "e.g. hf:facebook/dinov2-small")
    return BackboneEntry(name=name, family="transformers", loader="hf", model_id=rest, arch="vit", feature="cls",
                         licence="see the model card", notes="open name (Hugging Face transformers)")


OPEN_NAMES.add("hf", hf_entry)


def processor_data_config(folder: Path, name: str) -> dict:
    """The image processor's settings as medfm's data config (input size, crop, resample, mean/std)."""
    from transformers import AutoImageProcessor

    if not (folder / PROCESSOR).is_file():
        raise MedfmError(f"{folder} has no {PROCESSOR}, so {name!r} has no preprocessing of its own",
                         "save the model's image processor beside it (processor.save_pretrained(FOLDER))")
    p = AutoImageProcessor.from_pretrained(str(folder))
    size, crop = dict(p.size or {}), dict(getattr(p, "crop_size", None) or {})
    if getattr(p, "do_rescale", True) and abs(float(getattr(p, "rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise MedfmError(f"{name!r} rescales pixels by {p.rescale_factor}, not 1/255", "medfm reads 8-bit images as 0..1")
    center = bool(getattr(p, "do_center_crop", False)) and crop.get("height")
    if center:
        side = int(crop["height"])
        resize = size.get("shortest_edge") or size.get("height") or side
        crop_pct, mode = side / int(resize), "center"
    elif size.get("height"):
        side, crop_pct, mode = int(size["height"]), 1.0, "squash"  # resized to exactly H x W
    elif size.get("shortest_edge"):
        side, crop_pct, mode = int(size["shortest_edge"]), 1.0, "center"
        if getattr(p, "crop_pct", None) and side < 384:  # ConvNeXt's processor: resize to side / crop_pct, crop side
            crop_pct = float(p.crop_pct)
    else:
        raise MedfmError(f"cannot read the input size of {name!r} from its {PROCESSOR}", "use --img-size")
    normalize = getattr(p, "do_normalize", True)
    mean = tuple(float(v) for v in p.image_mean) if normalize else (0.0, 0.0, 0.0)
    std = tuple(float(v) for v in p.image_std) if normalize else (1.0, 1.0, 1.0)
    return {"input_size": (3, side, side), "interpolation": PIL_RESAMPLE.get(int(getattr(p, "resample", 3)), "bicubic"),
            "mean": mean, "std": std, "crop_pct": crop_pct, "crop_mode": mode}


def largest_block_list(net: nn.Module) -> str:
    """The model's main stack: the ModuleList holding the most parameters (``encoder.layer``, ``encoder.stages``)."""
    best, best_n = None, 0
    for path, mod in net.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 1:
            n = sum(p.numel() for p in mod.parameters())
            if n > best_n:
                best, best_n = path, n
    if best is None:
        raise MedfmError(f"{type(net).__name__} has no list of blocks", "register it in a user backbones file with `blocks`")
    return best


@register_loader("hf")
class HfLoader(BaseLoader):
    requires = {"transformers": "transformers"}
    config_beside_weights = True

    def hub(self, entry):
        return HubSource(hf_repo=entry.model_id)

    def _folder(self, entry: BackboneEntry, weights: Weights) -> Path:
        if weights.kind == "file" and not weights.origin.startswith("hf-hub:"):
            folder = weights.path.parent
            if not (folder / CONFIG).is_file():
                raise MedfmError(f"{folder} has no {CONFIG} beside {weights.path.name}",
                                 "pass --weights the folder written by model.save_pretrained (config.json + weights)")
            return folder
        cfg = hub_file(entry.model_id, CONFIG, entry.name)  # the hub snapshot: weights and configs side by side
        hub_file(entry.model_id, PROCESSOR, entry.name, required=False)
        return cfg.parent

    def configure(self, entry: BackboneEntry, weights: Weights) -> BackboneEntry:
        from transformers import AutoConfig, AutoModel

        folder = self._folder(entry, weights)
        try:
            config = AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError, KeyError) as exc:
            first = " ".join(str(exc).split())[:200]
            raise MedfmError(f"{folder / CONFIG} is not a transformers model config: {first}",
                             "pass the folder written by model.save_pretrained") from None
        with torch.device("meta"):
            net = AutoModel.from_config(config)
        names = net.state_dict().keys()
        has_cls = any(k.endswith(("cls_token", "class_embedding")) for k in names)
        patch = getattr(config, "patch_size", None)
        maps = self._outputs_maps(net, config)  # a CNN (ConvNeXt, ResNet) outputs [B, C, H, W]; token models [B, L, D]
        model_config = {k: v for k, v in json.loads((folder / CONFIG).read_text()).items() if k not in NOT_MODEL}
        return dataclasses.replace(
            entry, arch="cnn" if maps or not patch else "vit", feature="cls" if has_cls else "mean",
            block_layout="nchw" if maps else "nld",
            dim=int(getattr(config, "hidden_size", 0) or 0) or None, size_multiple=int(patch or 1) if not maps else 1,
            blocks=largest_block_list(net), params_m=round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
            params_source="counted (transformers build)", family=f"transformers {type(net).__name__}",
            model_kwargs={"folder": str(folder)},
            resolved={"config": model_config, "architecture": architecture_digest(net)["class"]})

    @staticmethod
    def _outputs_maps(net, config) -> bool:
        """Whether the model's output is a spatial map, from one forward pass on the meta device (no memory, no compute)."""
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else 224
        try:
            with torch.device("meta"):
                out = net(pixel_values=torch.empty(1, getattr(config, "num_channels", 3), size, size))
            return out.last_hidden_state.ndim == 4
        except Exception:  # a model the meta device cannot run: token models are the common case
            return False

    def data_config(self, entry):
        return processor_data_config(Path(entry.model_kwargs["folder"]), entry.name)

    def build(self, entry, weights, img_size):
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # medfm's own progress bars only
        folder = entry.model_kwargs["folder"]
        if weights.kind == "random":
            return seeded(lambda: AutoModel.from_config(AutoConfig.from_pretrained(folder)))
        if weights.path.name not in ("model.safetensors", "pytorch_model.bin"):
            raise MedfmError(f"{weights.path} is not the weights file of a save_pretrained folder",
                             "pass --weights the folder (config.json + model.safetensors)")
        try:
            net, info = AutoModel.from_pretrained(folder, output_loading_info=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise wrong_weights(entry, weights, exc) from None
        problems = [f"{k.replace('_', ' ')}: {', '.join(sorted(map(str, v))[:5])}" for k, v in info.items()
                    if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v]
        if problems:
            raise wrong_weights(entry, weights, "; ".join(problems))
        return net

    def _call(self, net, x):
        kwargs = {}
        if "interpolate_pos_encoding" in inspect.signature(net.forward).parameters:
            kwargs["interpolate_pos_encoding"] = True  # ViT-style models at sizes other than their table's
        return net(pixel_values=x, **kwargs)

    def tokens(self, net, x):
        out = self._call(net, x)
        hs = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            pooled = pooled.flatten(1)
        if hs.ndim == 4:  # a CNN's map [B, C, H, W]
            return TokenOutput(prefix=None, patches=hs.flatten(2).transpose(1, 2), pooled=pooled)
        p = self._prefix(net, x, hs.shape[1])
        return TokenOutput(prefix=hs[:, :p], patches=hs[:, p:], pooled=pooled)

    def _prefix(self, net, x, tokens: int) -> int:
        patch = int(getattr(net.config, "patch_size", 0) or 0)
        if not patch:
            return 0
        return max(0, tokens - (x.shape[-2] // patch) * (x.shape[-1] // patch))

    def blocks(self, net, entry):
        from medfm.backbones.loaders import resolve_blocks

        return resolve_blocks(net, entry.blocks)

    def num_prefix(self, net):
        cls = any(n.endswith(("cls_token", "class_embedding")) for n, _ in net.named_parameters())
        return int(cls) + int(getattr(net.config, "num_register_tokens", 0) or 0)

    def final_norm(self, net):
        for attr in ("layernorm", "post_layernorm", "norm"):
            norm = getattr(net, attr, None)
            if isinstance(norm, nn.LayerNorm):
                return norm
        return None
