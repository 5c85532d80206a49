"""Feature kinds: how a backbone's token outputs become one vector per image.

Every loader reduces its model to ``TokenOutput`` — prefix (class/register) tokens, patch tokens
(a CNN's or SAM2's spatial map flattened), the model's own pooled embedding when it has one, and
named alternative maps (SAM2's Hiera trunk) — so the kinds below are defined once for ViTs, CNNs,
Hiera, VMamba and CLIP towers alike.

``--layers k`` applies the chosen kind to each of the last k blocks' outputs and **concatenates**
them (DINOv2's linear-eval recipe concatenates the last 4 blocks); ViT block outputs go through the
model's final norm first, as DINOv2's ``get_intermediate_layers(norm=True)`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from medfm.errors import MedfmError
from medfm.registry import Registry


@dataclass
class TokenOutput:
    prefix: torch.Tensor | None  # [B, P, D]: CLS (+ register) tokens of a ViT; None for CNNs
    patches: torch.Tensor  # [B, T, D]: patch tokens / flattened spatial map
    pooled: torch.Tensor | None = None  # [B, D']: the model's own pooled/projected output
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, T', D'] alternative maps


@dataclass(frozen=True)
class FeatureKind:
    name: str
    fn: Callable[[TokenOutput], torch.Tensor]
    description: str
    pooled: bool = True  # False: per-token output (stored with --tokens, not as --feature)
    per_block: bool = True  # meaningful on intermediate block outputs (--layers)


FEATURE_KINDS: Registry[FeatureKind] = Registry("feature kind", "medfm backbones --features")


def _kind(name: str, description: str, pooled: bool = True, per_block: bool = True):
    def wrap(fn):
        FEATURE_KINDS.add(name, FeatureKind(name, fn, description, pooled, per_block))
        return fn

    return wrap


def _cls(out: TokenOutput) -> torch.Tensor:
    if out.prefix is None or out.prefix.shape[1] == 0:
        raise MedfmError("this backbone has no class token", "use --feature mean (or pooled)")
    return out.prefix[:, 0]


@_kind("cls", "the (normed) class token — DINOv2's, DeiT's, DINOv1's and BLIP's pooled feature")
def cls_feature(out: TokenOutput) -> torch.Tensor:
    return _cls(out)


@_kind("mean", "mean of the patch tokens (global average pool for CNNs, H×W mean of SAM2's neck map)")
def mean_feature(out: TokenOutput) -> torch.Tensor:
    return out.patches.mean(dim=1)


@_kind("cls+mean", "class token concatenated with the patch-token mean (DINOv2 linear-eval recipe)")
def cls_mean_feature(out: TokenOutput) -> torch.Tensor:
    return torch.cat([_cls(out), out.patches.mean(dim=1)], dim=1)


@_kind("pooled", "the model's own pooled/projected output (CLIP/CoCa image embedding)", per_block=False)
def pooled_feature(out: TokenOutput) -> torch.Tensor:
    if out.pooled is None:
        raise MedfmError("this backbone has no pooled output of its own", "use --feature cls or mean")
    return out.pooled


@_kind("trunk", "H×W mean of the trunk's last-stage map (SAM2's Hiera trunk, as timm's sam2_hiera_*)", per_block=False)
def trunk_feature(out: TokenOutput) -> torch.Tensor:
    if "trunk" not in out.extra:
        raise MedfmError("this backbone has no separate trunk output", "use --feature mean")
    return out.extra["trunk"].mean(dim=1)


@_kind("tokens", "patch tokens [T, D] (spatial maps flattened for CNNs/SAM2): stored by `extract --tokens`", pooled=False)
def tokens_feature(out: TokenOutput) -> torch.Tensor:
    return out.patches


def block_output_to_tokens(out, layout: str, num_prefix: int = 0, norm=None) -> TokenOutput:
    """One block's raw output (whatever the library returns) as ``TokenOutput``."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if layout == "nchw":
        return TokenOutput(prefix=None, patches=out.flatten(2).transpose(1, 2))
    if layout == "nhwc":
        return TokenOutput(prefix=None, patches=out.flatten(1, 2))
    if norm is not None:
        out = norm(out)
    return TokenOutput(prefix=out[:, :num_prefix], patches=out[:, num_prefix:])
