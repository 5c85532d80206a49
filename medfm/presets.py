"""Named sweep grids: each published study's backbones x datasets x heads, as data.

Every name is a registered backbone/dataset (tests/test_presets.py); a user's own preset may name
ones that are not, and the plan lists those while running them stops with the registry's error.
``unfrozen`` rows belong to ``medfm finetune`` (one run per row); ``medfm sweep`` plans them but
runs only the frozen-backbone probes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medfm.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    backbones: tuple[str, ...]
    datasets: tuple[str, ...]
    heads: tuple[str, ...] = ("linear",)
    fractions: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0,)
    scenarios: tuple[str, ...] = ("frozen",)  # frozen (medfm sweep) / unfrozen (medfm finetune)
    probe: dict = field(default_factory=dict)  # ProbeConfig settings for every probe
    img_size: int | None = None


PRESETS: Registry[Preset] = Registry("preset", "medfm sweep --list-presets")
STUDY_DATASETS = ("aptos2019", "isic2019", "cbis_ddsm", "chexpert")


def add(**fields) -> Preset:
    p = Preset(**fields)
    return PRESETS.add(p.name, p)


add(name="mansoori2025",
    description="Mansoori et al. 2025 (arXiv 2505.19779): 7 foundation-model families, linear vs DeiT head, frozen vs unfrozen",
    backbones=("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14", "mae_vitb16", "mae_vitl16", "mae_vith14",
               "aimv2_l14", "aimv2_h14", "coca_vitb32", "coca_vitl14", "sam2_b", "sam2_l",
               "clip_vitb16", "vmamba_b"),
    datasets=STUDY_DATASETS, heads=("linear", "deit"), scenarios=("frozen", "unfrozen"), img_size=224)
add(name="huix2024",
    description="Huix et al., WACV 2024 (arXiv 2310.19522): {frozen, unfrozen} x {linear, appended DeiT head}",
    backbones=("sam_vitb", "seem_focalt", "dinov2_vitb14", "openclip_vitb16", "blip_vitb", "deit_b", "dino_vitb16",
               "resnet152"),
    datasets=STUDY_DATASETS, heads=("linear", "deit"), scenarios=("frozen", "unfrozen"), img_size=224)
add(name="huang2024",
    description="Huang et al., COMPSAC 2024 (arXiv 2402.07595): DINOv2 S/B/L vs ImageNet CNNs, 5,000-resample bootstrap CIs",
    backbones=("vgg16", "resnet50", "densenet121", "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14"),
    datasets=("kermany_cxr_224", "ichallenge_amd", "ham10000_224"), heads=("linear",), scenarios=("frozen", "unfrozen"),
    probe={"bootstrap": 5000}, img_size=224)
add(name="label_efficiency",
    description="label budgets 1/10/100 % x 3 seeds, linear + kNN, DINOv2-S vs MobileNetV2 on PneumoniaMNIST (minutes on a CPU)",
    backbones=("dinov2_vits14", "mobilenetv2"), datasets=("pneumoniamnist",), heads=("linear", "knn"),
    fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), img_size=112)
