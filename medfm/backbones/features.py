"""Feature kinds: how a backbone's token outputs become one vector per image.

Every loader reduces its model to ``TokenOutput`` — prefix (class/register) tokens, patch tokens
(a CNN's spatial map flattened), and the model's own pooled embedding when it has one — so the
kinds below are defined once for ViTs, CNNs, Hiera and CLIP towers alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from medfm.errors import MedfmError
from medfm.registry import Registry


@dataclass
class TokenOutput:
    prefix: torch.Tensor | None  # [B, P, D]: CLS (+ register) tokens of a ViT; None for CNNs
    patches: torch.Tensor  # [B, T, D]: patch tokens / flattened spatial map
    pooled: torch.Tensor | None = None  # [B, D']: the model's own pooled/projected output


@dataclass(frozen=True)
class FeatureKind:
    name: str
    fn: Callable[[TokenOutput], torch.Tensor]
    description: str


FEATURE_KINDS: Registry[FeatureKind] = Registry("feature kind", "medfm backbones --features")


def _kind(name: str, description: str):
    def wrap(fn):
        FEATURE_KINDS.add(name, FeatureKind(name, fn, description))
        return fn

    return wrap


def _cls(out: TokenOutput) -> torch.Tensor:
    if out.prefix is None or out.prefix.shape[1] == 0:
        raise MedfmError("this backbone has no class token", "use --feature mean (or pooled)")
    return out.prefix[:, 0]


@_kind("cls", "the (normed) class token — DINOv2's and DeiT's pooled feature")
def cls_feature(out: TokenOutput) -> torch.Tensor:
    return _cls(out)


@_kind("mean", "mean of the patch tokens (global average pool for CNNs) — MAE's and AIMv2's feature")
def mean_feature(out: TokenOutput) -> torch.Tensor:
    return out.patches.mean(dim=1)


@_kind("cls+mean", "class token concatenated with the patch-token mean (DINOv2 linear-eval recipe)")
def cls_mean_feature(out: TokenOutput) -> torch.Tensor:
    return torch.cat([_cls(out), out.patches.mean(dim=1)], dim=1)


@_kind("pooled", "the model's own pooled/projected output (CLIP/CoCa image embedding)")
def pooled_feature(out: TokenOutput) -> torch.Tensor:
    if out.pooled is None:
        raise MedfmError("this backbone has no pooled output of its own", "use --feature cls or mean")
    return out.pooled
