"""Backbones: ``create_backbone(name)`` is the one door (like timm's ``create_model``).

It returns the model and its preprocessing together (as open_clip does), so the two never drift
apart. ``resolve_backbone`` does everything short of building the model — weights located and
checksummed, preprocessing fixed — which is all the cache fingerprint needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from PIL import Image

# each loader module registers itself in LOADERS on import
from medfm.backbones import (  # noqa: F401
    loader_blip, loader_dinov2_lc, loader_medical, loader_openclip, loader_sam2, loader_tinyvit, seem, vmamba,
)
from medfm.backbones import open_names  # noqa: F401 - registers the open-name schemes (timm:, open_clip:, hf:)
from medfm.backbones.adapters import hf, open_clip_hub  # noqa: F401 - loaders of open names
from medfm.backbones.entry import BackboneEntry
from medfm.backbones.features import FEATURE_KINDS, TokenOutput
from medfm.backbones.loaders import LOADERS
from medfm.backbones.names import find_backbone, is_backbone
from medfm.backbones.preprocess import (
    RESIZE_POLICIES, USER_POLICIES, PolicyGeometry, default_resize_size, policy_transform, sam_family_policy,
)
from medfm.backbones.weights import Weights, resolve_weights
from medfm.backbones.zoo import BACKBONES
from medfm.errors import MedfmError

GREY_TO_RGB = "grey repeated to RGB"
# How a grey image enters a 3-channel stem (the first study offers both; `--grey`).
GREY_MODES = {
    "repeat": GREY_TO_RGB,
    "red": "grey through the stem's red-channel filter only (1-channel stem)",
}
GREY_PIL_MODES = ("1", "L", "LA", "I", "I;16", "F")
# Which tokens attention heads read (`--tokens-from`): the ViT's patch tokens, or CoCa's attention-pooler outputs.
TOKEN_SOURCES = {
    "patch": "the backbone's patch tokens (its registry entry says: after the final norm, or DINOv2's last block)",
    "attn_pool": "CoCa: the projected pooled token + the attention pooler's other 255 outputs (study 1's DeiT-head "
                 "input, defaults/models.py Classifier.forward, CoCa branch)",
}


def to_rgb(img: Image.Image) -> Image.Image:
    """Grey (and palette, 16-bit, RGBA) images become 3-channel by repeating the grey channel."""
    if img.mode == "I;16" or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


@dataclass(frozen=True)
class BackboneSpec:
    """A fully resolved backbone request; ``identity()`` is what the cache fingerprint hashes."""

    entry: BackboneEntry
    weights: Weights
    feature: str
    img_size: int
    data_config: dict
    layers: int = 1  # feature of the last `layers` blocks, concatenated (1 = the model's output)
    grey: str = "repeat"  # a key of GREY_MODES
    drop_cutoff: int | None = None  # features from block `drop_cutoff` (0-based): the later blocks never run
    tokens_from: str = "patch"  # a key of TOKEN_SOURCES
    resize: str = "crop"  # a --resize policy (medfm.backbones.preprocess.USER_POLICIES)
    resize_size: int | None = None  # squash [round(img_size * 256 / 224)] / crop [the backbone's]: the side S
    # before the centre crop

    @property
    def tokens_source(self) -> str:
        """Where stored / head-read tokens come from: 'attn_pool', or the entry's 'output' / 'last_block'."""
        return "attn_pool" if self.tokens_from == "attn_pool" else self.entry.tokens_from

    @property
    def policy_name(self) -> str:
        """The registered resize policy this spec runs: ``crop`` means the backbone's own (the SAM family's is a policy)."""
        return policy_name(self.resize, self.resize_size, self.data_config)

    @property
    def default_preprocessing(self) -> bool:
        """The backbone's own transform, as before resize policies existed (``--resize crop`` without a size)."""
        return self.resize == "crop" and self.resize_size is None

    def resize_identity(self) -> dict:
        """The resize policy as recorded: name, recipe, sizes and interpolation."""
        policy = RESIZE_POLICIES.get(self.policy_name)
        side = (self.resize_size or default_resize_size(self.img_size)) if policy.target == "resize_size" else None
        return policy.identity(self.policy_name, self.img_size, side,
                               policy.interpolation or str(self.data_config["interpolation"]))

    def identity(self) -> dict:
        ident = {
            "name": self.entry.name,
            "loader": self.entry.loader,
            "model_id": self.entry.model_id,
            "weights": self.weights.identity(),
            "feature": self.feature,
            "preprocessing": {**self.data_config, "channels": GREY_MODES[self.grey]},
        }
        if not self.default_preprocessing:  # absent by default: caches made before --resize keep their fingerprint
            ident["preprocessing"]["resize"] = self.resize_identity()
        if self.entry.tag:
            ident["tag"] = self.entry.tag
        if self.entry.resolved:  # open names / user entries: the model configuration itself
            ident["model_config"] = self.entry.resolved
        if self.layers > 1:  # absent for 1, so caches made before --layers existed keep their fingerprint
            ident["layers"] = {"last": self.layers, "combine": "concatenate"}
        if self.drop_cutoff is not None:  # absent when unset: earlier caches keep their fingerprint
            ident["drop_cutoff"] = self.drop_cutoff
        if self.tokens_from != "patch":
            ident["tokens_from"] = self.tokens_from
        return ident

    @property
    def entry_native_size(self) -> int:
        """The input size of the pretrained config (518 for DINOv2), whatever size this spec uses."""
        return int(entry_data_config(self.entry)["input_size"][-1])

    def build(self, device: str | torch.device = "cpu") -> Backbone:
        net = LOADERS[self.entry.loader].build(self.entry, self.weights, self.img_size)
        net.eval().requires_grad_(False).to(device)
        return Backbone(self, net)


class Backbone:
    """A built, frozen backbone: ``transform`` for PIL images, ``embed`` for batches."""

    def __init__(self, spec: BackboneSpec, net: torch.nn.Module):
        self.spec = spec
        self.net = net
        self._loader = LOADERS[spec.entry.loader]
        self._feature = FEATURE_KINDS.get(spec.feature).fn

    @cached_property
    def transform(self):
        from torchvision import transforms

        return transforms.Compose([to_rgb, image_transform(self.spec)])

    def tokens(self, x: torch.Tensor) -> TokenOutput:
        return self._loader.tokens(self.net, x)

    def forward_tokens(self, x: torch.Tensor) -> TokenOutput:
        """The model's output; with ``drop_cutoff`` the output of that block instead, the later blocks never run.

        The cut-off block's output is read as ``--layers`` reads a block (ViTs: through the final norm, so
        ``cls`` is ``norm(x)[:, 0]`` after block ``drop_cutoff``, as study 1's DINOv2 ``new_forward_features``
        computes it, ``utils/transformers/dinov2_utils.py:L93-115`` @02db977).
        """
        if self.spec.drop_cutoff is None:
            return self.tokens(x)
        handle = self.blocks()[-1].register_forward_hook(_stop_forward)  # after any hook that reads this block
        try:
            self.tokens(x)
        except _StopForward as stop:
            return self._loader.cutoff_tokens(self.net, self.spec.entry, stop.output, self.spec.drop_cutoff)
        finally:
            handle.remove()
        raise MedfmError(f"block {self.spec.drop_cutoff} of {self.spec.entry.name} never ran in its forward pass",
                         "drop --drop-cutoff for this backbone")

    def embed(self, x: torch.Tensor, with_tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pooled features ``[B, D]`` (the spec's feature kind) and optionally patch tokens ``[B, T, D]``."""
        if self.spec.grey == "red":
            x = red_channel_only(x)
        last_block: list = []
        hook = None
        if with_tokens and self.spec.entry.tokens_from == "last_block":
            hook = self.blocks()[-1].register_forward_hook(lambda m, i, o: last_block.append(o))
        try:
            if self.spec.layers > 1:
                out, per_block = self.tokens_by_block(x, self.spec.layers)
                pooled = torch.cat([self._feature(o) for o in per_block], dim=1)
            else:
                out = self.forward_tokens(x)
                pooled = self._feature(out)
        finally:
            if hook is not None:
                hook.remove()
        if not with_tokens:
            return pooled, None
        if self.spec.tokens_from == "attn_pool":
            return pooled, out.extra["attn_pool"]
        if last_block:  # the last block's output, before the final norm: drop the class/register tokens
            return pooled, last_block[-1][:, self._loader.num_prefix(self.net):]
        return pooled, out.patches

    def tokens_by_block(self, x: torch.Tensor, last: int) -> tuple[TokenOutput, list[TokenOutput]]:
        """The model's output and the outputs of its last ``last`` blocks, in one forward pass."""
        blocks = self.blocks()
        if not 1 <= last <= len(blocks):
            raise MedfmError(f"--layers {last} is out of range: {self.spec.entry.name} has {len(blocks)} blocks",
                             f"use --layers 1..{len(blocks)}")
        captured: list = []
        handles = [b.register_forward_hook(lambda m, i, o: captured.append(o)) for b in blocks[-last:]]
        try:
            out = self.forward_tokens(x)
        finally:
            for h in handles:
                h.remove()
        per_block = [self._loader.block_tokens(self.net, self.spec.entry, o) for o in captured]
        return out, per_block

    def blocks(self) -> list[torch.nn.Module]:
        """Ordered blocks/stages, so 'unfreeze the last N' means the same for every architecture.

        With ``drop_cutoff`` only the blocks that run (0..drop_cutoff): the last N unfrozen, ``--layers``
        and the tokens all count from the cut-off block."""
        blocks = self._loader.blocks(self.net, self.spec.entry)
        cut = self.spec.drop_cutoff
        if cut is None:
            return blocks
        if cut >= len(blocks):
            raise MedfmError(f"--drop-cutoff {cut} is out of range: {self.spec.entry.name} has {len(blocks)} blocks "
                             f"(0..{len(blocks) - 1})", f"use --drop-cutoff 0..{len(blocks) - 1}")
        return blocks[: cut + 1]

    def dropped_blocks(self) -> list[torch.nn.Module]:
        """The blocks after ``drop_cutoff``, which never run (none without it): a fine-tune keeps them frozen."""
        return self._loader.blocks(self.net, self.spec.entry)[len(self.blocks()):]


class _StopForward(Exception):
    """Raised by the hook on the cut-off block: its output is the features, the rest of the model never runs."""

    def __init__(self, output):
        super().__init__("drop_cutoff")
        self.output = output


def _stop_forward(module, inputs, output):
    raise _StopForward(output)


def red_channel_only(x: torch.Tensor) -> torch.Tensor:
    """A normalised RGB batch with G and B set to 0: exactly a 1-channel stem keeping the red filter.

    Every backbone's stem (patch embedding or first conv) is linear in its input, so zero inputs
    on G and B leave only the red filter acting on the grey image (normalised with the red
    channel's mean/std), which is what the first study's rebuilt 1-input-channel stem computes.
    Doing it on the input keeps every loader, checkpoint and block list unchanged.
    """
    return torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], dim=1)


def is_grey(img: Image.Image) -> bool:
    """A grey image: a grey PIL mode, or RGB whose three channels are equal (grey saved as RGB)."""
    if img.mode in GREY_PIL_MODES:
        return True
    if img.mode != "RGB":
        return False
    import numpy as np

    a = np.asarray(img)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def check_grey_mode(grey: str, dataset) -> None:
    """``--grey red`` keeps only the red filter, so it would silently drop G and B of colour images: refuse them.

    The first image of the dataset is checked (cheap, and catches a colour dataset)."""
    if grey == "repeat":
        return
    split = next((s for s in dataset.splits.values() if len(s)), None)
    if split is not None and not is_grey(img := split.images.load(0)):
        raise MedfmError(f"--grey red is for grey images, but {split.images.describe(0)} is colour ({img.mode})",
                         "use --grey repeat (the default) for colour datasets")


def entry_data_config(entry: BackboneEntry) -> dict:
    """The entry's preprocessing: its loader's config with the entry's own (the authors') settings over it."""
    return {**LOADERS[entry.loader].data_config(entry), **entry.preprocess}


def image_transform(spec: BackboneSpec):
    """RGB PIL image -> the model's normalised input, by the spec's resize policy.

    ``crop`` on a timm / open_clip backbone is its library's own eval transform (unchanged since
    before policies existed); every other policy, the SAM family's own included, is a ``policy_transform``.
    """
    name = spec.policy_name
    if not RESIZE_POLICIES.get(name).own:
        return policy_transform(RESIZE_POLICIES.get(name), spec.img_size, spec.data_config, spec.resize_size)
    own = LOADERS[spec.entry.loader].transform(spec)  # open_clip's
    if own is not None:
        return own
    import timm.data

    cfg = spec.data_config
    return timm.data.create_transform(
        input_size=cfg["input_size"],
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=cfg["crop_pct"],
        crop_mode=cfg.get("crop_mode", "center"),
        is_training=False,
    )


def augmentable_geometry(spec: BackboneSpec) -> list:
    """PIL -> PIL steps a fine-tune's random augmentation starts from: none for ``crop`` (the augmentation's
    random crop is taken from the whole image, as before policies existed), the policy's geometry otherwise
    (squash's 256 -> 224 crop, pad's black canvas), so augmentation acts on what the model would see."""
    if spec.default_preprocessing:
        return []
    policy = RESIZE_POLICIES.get(spec.policy_name)
    return [PolicyGeometry(policy, spec.img_size, policy.interpolation or str(spec.data_config["interpolation"]),
                           spec.resize_size)]


def policy_name(resize: str, resize_size: int | None, data_config: dict) -> str:
    """The registered policy a request runs: ``crop`` is the backbone's own (the SAM family's own policy), or
    ``crop_shorter`` with a ``--resize-size``; ``squash`` and ``pad`` are themselves."""
    if resize != "crop":
        return resize
    if resize_size is not None:
        return "crop_shorter"
    return sam_family_policy(data_config) or "crop"


def _check_resize(resize: str, resize_size: int | None, size: int) -> None:
    if resize not in USER_POLICIES:
        raise MedfmError(f"--resize {resize!r} is not a resize policy", f"use one of: {', '.join(USER_POLICIES)}")
    if resize_size is not None and RESIZE_POLICIES.get(policy_name(resize, resize_size, {})).target != "resize_size":
        raise MedfmError(f"--resize-size is the side before the centre crop (squash, crop), but --resize is {resize}",
                         "drop --resize-size, or use --resize squash or crop")
    if resize_size is not None and resize_size < size:
        raise MedfmError(f"--resize-size {resize_size} is smaller than the input size {size}: the centre crop "
                         "would pad", f"use --resize-size >= {size} (default {default_resize_size(size)})")


def resolve_backbone(
    name: str, weights: str | None = None, img_size: int | None = None, feature: str | None = None,
    layers: int | None = None, grey: str = "repeat", backbones_file: str | None = None,
    drop_cutoff: int | None = None, tokens_from: str = "patch",
    resize: str = "crop", resize_size: int | None = None,
) -> BackboneSpec:
    if grey not in GREY_MODES:
        raise MedfmError(f"--grey {grey!r} is not a grey-image mode", f"use one of: {', '.join(GREY_MODES)}")
    entry = find_backbone(name, backbones_file)
    loader = LOADERS[entry.loader]
    loader.check_installed(entry)
    weights = weights or entry.weights_file  # a user entry's own checkpoint is its default
    resolved = None
    if loader.config_beside_weights:  # hf: the model's config and preprocessing lie beside its weights
        resolved = _resolve_weights(weights, entry, loader)
        entry = loader.configure(entry, resolved)
    feature = feature or entry.feature
    kind = FEATURE_KINDS.get(feature)  # unknown kinds fail here, before any work
    if not kind.pooled:
        raise MedfmError(f"--feature {feature} is not one vector per image",
                         "keep a pooled --feature (cls, mean, ...) and add --tokens to store the patch tokens")
    layers = layers or 1
    if layers > 1 and not kind.per_block:
        raise MedfmError(f"--feature {feature} is only defined on the model's final output, not per block",
                         "use --layers with cls, mean or cls+mean")
    _check_cutoff_and_tokens(entry, loader, feature, kind, drop_cutoff, tokens_from)
    if img_size is not None:
        if entry.arch != "vit" and img_size < 32:
            raise MedfmError(f"--img-size {img_size} is too small for a CNN", "use at least 32")
        if img_size % entry.size_multiple:
            raise MedfmError(f"--img-size {img_size} is not a multiple of {name}'s patch size {entry.size_multiple}",
                             f"use e.g. {img_size - img_size % entry.size_multiple or entry.size_multiple}")
    data_config = entry_data_config(entry)
    size = img_size or entry.img_size or int(data_config["input_size"][-1])
    data_config["input_size"] = (3, size, size)
    _check_resize(resize, resize_size, size)
    resolved = resolved or _resolve_weights(weights, entry, loader)
    return BackboneSpec(entry, resolved, feature, size, data_config, layers, grey, drop_cutoff, tokens_from,
                        resize=resize, resize_size=resize_size)


def _check_cutoff_and_tokens(entry, loader, feature, kind, drop_cutoff, tokens_from) -> None:
    """Refuse, before any work, a ``--drop-cutoff`` or ``--tokens-from`` the backbone cannot honour."""
    if tokens_from not in TOKEN_SOURCES:
        raise MedfmError(f"--tokens-from {tokens_from!r} is not a token source", f"use one of: {', '.join(TOKEN_SOURCES)}")
    if drop_cutoff is not None:
        if drop_cutoff < 0:
            raise MedfmError(f"--drop-cutoff {drop_cutoff} is negative", "give the 0-based index of the last block to run")
        if not kind.per_block:
            raise MedfmError(f"--feature {feature} is the model's own final output, which --drop-cutoff drops",
                             "use --feature cls or mean with --drop-cutoff")
    if tokens_from == "attn_pool":
        if not loader.attn_pool_tokens(entry):
            raise MedfmError(f"--tokens-from attn_pool: {entry.name} has no attention pooler",
                             "use it with coca_vitb32 or coca_vitl14, or --tokens-from patch")
        if drop_cutoff is not None:
            raise MedfmError("--tokens-from attn_pool reads the attention pooler after the last block, which "
                             "--drop-cutoff drops", "use one of the two")


def _resolve_weights(weights: str | None, entry: BackboneEntry, loader) -> Weights:
    """The entry's weights; an error for official weights that take more than a download says how to get them."""
    try:
        return resolve_weights(weights, entry.name, entry.hub or loader.hub(entry), entry.offline_copies)
    except MedfmError as exc:
        if not entry.access or weights not in (None, "pretrained"):
            raise
        raise MedfmError(exc.problem, f"{entry.access}; or {exc.fix}" if exc.fix else entry.access) from None


def create_backbone(name: str, weights: str | None = None, img_size: int | None = None, feature: str | None = None,
                    device="cpu", layers: int | None = None, grey: str = "repeat",
                    backbones_file: str | None = None, drop_cutoff: int | None = None,
                    tokens_from: str = "patch", resize: str = "crop", resize_size: int | None = None) -> Backbone:
    return resolve_backbone(name, weights, img_size, feature, layers, grey, backbones_file, drop_cutoff,
                            tokens_from, resize, resize_size).build(device)


__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "create_backbone", "resolve_backbone", "find_backbone", "is_backbone",
           "FEATURE_KINDS"]
