"""A backbone registry entry: a few declarative fields, no code.

``loader`` names the library that builds it; ``model_id`` is that library's name for it (for timm:
``architecture.pretrained_tag``; for open_clip: the model name, with ``tag`` its pretrained tag);
``feature`` is the pooled feature the source studies used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medfm.backbones.weights import HubSource, PackageFile


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    family: str
    loader: str  # key of LOADERS: 'timm', 'torchvision', 'open_clip', 'sam2', 'blip', 'vmamba', 'seem'
    model_id: str
    arch: str  # 'vit' (class/patch tokens, resizable position embedding) or 'cnn' (any input size)
    feature: str = "cls"  # default feature kind
    dim: int | None = None  # length of the default feature vector (checked in tests)
    img_size: int | None = None  # input size used by default; None = the pretrained config's
    params_m: float | None = None  # published parameter count (millions), checked in tests
    params_source: str = ""  # where params_m was published
    licence: str = ""
    hub: HubSource | None = None  # official weights; None = take it from the loader's own config
    offline_copies: tuple[PackageFile, ...] = ()
    model_kwargs: dict = field(default_factory=dict)
    tag: str | None = None  # open_clip pretrained tag
    blocks: str | None = None  # dotted path(s) of the block list, ',' separated, '*' globs names
    block_layout: str | None = None  # layout of a block's output: 'nld', 'nchw', 'nhwc' (None: from arch)
    size_multiple: int = 1  # --img-size must be a multiple of this (the patch size of a ViT)
    remap: str | None = None  # name of a checkpoint key-remapping function (medfm.backbones.remap)
    # which patch tokens `--tokens` stores (and attention heads read): 'output' = the model's output
    # (after its final norm), 'last_block' = the last block's output before that norm (DINOv2's, as the
    # first study's DeiT head reads them)
    tokens_from: str = "output"
    notes: str = ""
    # Open names and user entries (see names.py): the resolved model configuration (architecture
    # arguments), hashed into the cache identity so a cache says exactly which model made it; and a
    # user entry's own default checkpoint (a local file), used when --weights is not given.
    resolved: dict = field(default_factory=dict)
    weights_file: str | None = None
    # the authors' own preprocessing where the loader's config differs (merged over it; 'source' says where from)
    preprocess: dict = field(default_factory=dict)
    gated: bool = False  # the official weights need an access request (shown by `medfm backbones`)
    access: str = ""  # how to obtain the weights when that takes more than a download; added to weights errors
