"""Named sweep grids: each published study's backbones x datasets x heads, as data.

Every name is a registered backbone/dataset (tests/test_presets.py); a user's own preset may name
ones that are not, and the plan lists those while running them stops with the registry's error.
A preset's ``frozen`` rows are probes (``probe``: ProbeConfig settings); its ``unfrozen`` rows are
``medfm finetune`` runs, one per ``unfreeze`` value, with the study's training settings in
``finetune`` (FinetuneConfig keys). The values come from the studies' protocol notes (../shared/STUDIES.md) and
public code, as noted per preset; a SweepConfig's ``finetune`` / ``unfreeze`` override them.
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
    scenarios: tuple[str, ...] = ("frozen",)  # frozen: extract + probe rows; unfrozen: medfm finetune rows
    fidelity: str = "fast"  # what the preset runs unless --fidelity says otherwise (medfm.fidelity)
    code: str | None = None  # the study code `--fidelity exact` follows (a medfm.fidelity.STUDIES name), None: no exact
    probe: dict = field(default_factory=dict)  # ProbeConfig settings for every probe
    unfreeze: tuple[int | str, ...] = ("all",)  # unfrozen rows: last N blocks trained ('all' = full fine-tune), one row each
    finetune: dict = field(default_factory=dict)  # FinetuneConfig settings for every fine-tune
    img_size: int | None = None
    preprocess: dict = field(default_factory=dict)  # resize / resize_size / norm of every extract and fine-tune


PRESETS: Registry[Preset] = Registry("preset", "medfm sweep --list-presets")
STUDY_DATASETS = ("aptos2019", "isic2019", "cbis_ddsm", "chexpert")
# study 1's params.json (sajjad-sh33/Medical-Transfer-Learning): AdamW lr 1e-4, wd 1e-5, 1000-iteration linear
# warm-up, 100 epochs, grad clipping 1.0, mixed precision, train batch 64
STUDY1_TRAINING = {"epochs": 100, "batch_size": 64, "lr": 1e-4, "weight_decay": 1e-5, "warmup_steps": 1000,
                   "grad_clip": 1.0, "amp": True}


def add(**fields) -> Preset:
    p = Preset(**fields)
    return PRESETS.add(p.name, p)


add(name="mansoori2025",
    description="Mansoori et al. 2025 (arXiv 2505.19779): 7 foundation-model families, linear vs DeiT head, frozen vs unfrozen",
    backbones=("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14", "mae_vitb16", "mae_vitl16", "mae_vith14",
               "aimv2_l14", "aimv2_h14", "coca_vitb32", "coca_vitl14", "sam2_b", "sam2_l",
               "openclip_vitb16", "vmamba_b"),  # the code's CLIP: open_clip ViT-B-16 laion2b_s34b_b88k (clip.py:L8)
    datasets=STUDY_DATASETS, heads=("linear", "deit"), scenarios=("frozen", "unfrozen"), img_size=224,
    # unfrozen = the whole backbone trains (its code can also train from `partial.unfreeze_cutoff` on:
    # override `unfreeze` to reproduce such a partial run)
    probe={"solver": "grid"},  # the study trains its frozen heads with an optimiser, not to convergence
    unfreeze=("all",), finetune=STUDY1_TRAINING, fidelity="fast", code="study1")
add(name="huix2024",
    description="Huix et al., WACV 2024 (arXiv 2310.19522): {frozen, unfrozen} x {linear, appended DeiT head}",
    backbones=("sam_vitb", "seem_focalt", "dinov2_vitb14", "openclip_vitb16", "blip_vitb", "deit_b", "dino_vitb16",
               "resnet152"),
    datasets=STUDY_DATASETS, heads=("linear", "deit"), scenarios=("frozen", "unfrozen"), img_size=224,
    # unfrozen = end-to-end fine-tuning of the whole backbone; STUDIES.md lists no schedule of its own for
    # this study, so it trains with study 1's settings (same four datasets, same two heads)
    # exact: study 1's code (the DeiT head and trainer it shares; its own code is not read here)
    probe={"solver": "grid"}, unfreeze=("all",), finetune=STUDY1_TRAINING, fidelity="fast", code="study1")
add(name="huang2024",
    description="Huang et al., COMPSAC 2024 (arXiv 2402.07595): DINOv2 S/B/L vs ImageNet CNNs, 5,000-resample bootstrap CIs",
    backbones=("vgg16", "resnet50", "densenet121", "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14"),
    datasets=("kermany_cxr_224", "ichallenge_amd", "ham10000_224"), heads=("linear",), scenarios=("frozen", "unfrozen"),
    probe={"bootstrap": 5000, "solver": "grid"}, img_size=224,
    # GuanghuiFU/medical_dino_eval: unfrozen = no `--freeze` (every layer trains), Adam lr 1e-4 without weight
    # decay, scheduler or clipping, batch 32, 100 epochs, Resize 256 -> CenterCrop 224 only (no augmentation).
    # medfm's schedule is always warm-up + cosine; warm-up 0 leaves the cosine decay as the one difference.
    unfreeze=("all",), finetune={"epochs": 100, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.0, "warmup_steps": 0,
                                 "grad_clip": None, "augment": "none"},
    fidelity="fast", code="study3")
add(name="label_efficiency",
    description="label budgets 1/10/100 % x 3 seeds, linear + kNN, DINOv2-S vs MobileNetV2 on PneumoniaMNIST (minutes on a CPU)",
    backbones=("dinov2_vits14", "mobilenetv2"), datasets=("pneumoniamnist",), heads=("linear", "knn"),
    fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), img_size=112)


# ---- MedMNIST+ (Doerrich et al. 2024): the frozen grid, images zero-padded to the 224-px input ----
MEDMNIST_2D = ("pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
               "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist")
add(name="medmnist_plus",
    description="MedMNIST+ (Doerrich et al. 2024, arXiv 2404.15786): frozen linear probe + kNN (k = 11) on the 2D "
                "datasets at 28/64/128/224 px, each zero-padded (--resize pad) to the model's 224-px input",
    # the models of medfm/published/medmnist_plus.csv, by the names its rows use (so --published matches them)
    backbones=("dino_vitb16", "timm:vit_base_patch16_clip_224.openai", "timm:resnet18", "sam_vitb"),
    datasets=tuple(f"{d}{s}" for d in MEDMNIST_2D for s in ("", "_64", "_128", "_224")),
    heads=("linear", "knn"), seeds=(0, 1, 2), img_size=224, preprocess={"resize": "pad"},
    # MedMNIST+ trains its linear head with AdamW (lr 1e-4, 100 epochs, cosine, best epoch on val); medfm's grid
    # solver trains with Adam at lr 1e-4 for 100 epochs and picks its L2 on val: the head differs in optimiser.
    probe={"ks": [11], "solver": "grid", "lrs": [1e-4], "epochs": 100})
