"""A backbone registry entry: a few declarative fields, no code.

``loader`` names the library that builds it; ``model_id`` is that library's name for it (for timm:
``architecture.pretrained_tag``); ``feature`` is the pooled feature the source studies used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medfm.backbones.weights import HubSource, PackageFile


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    family: str
    loader: str  # key of LOADERS: 'timm', 'torchvision', ...
    model_id: str
    arch: str  # 'vit' (class/patch tokens, resizable position embedding) or 'cnn'
    feature: str = "cls"  # default feature kind
    img_size: int | None = None  # input size used by default; None = the pretrained config's
    params_m: float | None = None  # published parameter count (millions), checked in tests
    licence: str = ""
    hub: HubSource | None = None  # official weights; None = take it from the loader's own config
    offline_copies: tuple[PackageFile, ...] = ()
    model_kwargs: dict = field(default_factory=dict)
    notes: str = ""
